"""Tiny, clearly synthetic samples of the real IDRiD and JAFFE layouts, with exactly known content.

They serve the loaders' tests and the structured-data exploration notebook's out-of-the-box run (a
user with the real data points the notebook at it instead). The files sit where, and are named as, in
the real distributions (``data_manifests/idrid.yaml``, ``data_manifests/jaffe.yaml``), but the
pictures are drawings: a fundus as an orange disc with a vessel, an optic disc on one side and
grade-dependent spots; a face as a cartoon whose brows, eyes and mouth follow the posed expression.
The quirks of the real files are always there (IDRiD: a BOM, padded column names, an empty trailing
column and row; JAFFE: text around the ratings table, the "Fear Excluded" table after it, a second
README without ratings, a rated key without an image, 8- and 16-bit TIFFs); the defects a loader must
survive are keyword options.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from attnlib.data.idrid import image_dir, label_file

#: Width and height of the sample fundus photographs: a tenth of the real 4288 x 2848.
IDRID_SIZE = (428, 284)
#: Optic-disc side of every image the IDRiD sample can hold, per split. Training IDRiD_004 is a right eye
#: by its disc but not in the paper's right-eye list (index 3); IDRiD_008 is the image without a CSV row.
IDRID_DISC: dict[str, dict[str, str]] = {
    "train": {"IDRiD_001": "right", "IDRiD_002": "left", "IDRiD_003": "left", "IDRiD_004": "right",
              "IDRiD_005": "left", "IDRiD_006": "left", "IDRiD_008": "left"},
    "test": {"IDRiD_001": "left", "IDRiD_002": "right", "IDRiD_003": "left"},
}
#: Grading CSV rows (id, retinopathy grade, macular-edema risk) per split; training IDRiD_007 has no image.
IDRID_ROWS: dict[str, list[tuple[str, int, int]]] = {
    "train": [("IDRiD_001", 0, 0), ("IDRiD_002", 1, 1), ("IDRiD_003", 2, 2), ("IDRiD_004", 3, 0),
              ("IDRiD_005", 4, 1), ("IDRiD_006", 2, 2), ("IDRiD_007", 0, 1)],
    "test": [("IDRiD_001", 1, 0), ("IDRiD_002", 0, 0), ("IDRiD_003", 3, 2)],
}
IDRID_ROW_WITHOUT_IMAGE = ("train", "IDRiD_007")
IDRID_IMAGE_WITHOUT_ROW = ("train", "IDRiD_008")
IDRID_CORRUPT = ("test", "IDRiD_003")

#: First ratings table of the JAFFE sample: key -> (HAP, SAD, SUR, ANG, DIS, FEA). NM-SU2 ties SUR and
#: DIS (SUR comes first); YM-HA3 is rated but has no image.
JAFFE_RATINGS: dict[str, tuple[float, ...]] = {
    "KA-AN1": (1.50, 1.80, 1.60, 4.20, 3.10, 2.00),
    "KA-HA1": (4.80, 1.20, 2.30, 1.10, 1.20, 1.30),
    "KL-SA1": (1.40, 4.10, 1.50, 2.20, 2.60, 2.50),
    "KM-SU1": (2.10, 1.30, 4.60, 1.20, 1.40, 2.90),
    "KR-DI1": (1.30, 2.40, 1.50, 3.20, 3.90, 2.70),
    "MK-FE1": (1.20, 2.80, 3.10, 1.80, 2.90, 3.60),
    "NA-NE1": (2.87, 2.52, 2.10, 1.97, 1.97, 2.06),
    "NM-SU2": (1.90, 2.20, 3.40, 1.70, 3.40, 2.10),
    "TM-AN2": (1.60, 2.10, 1.40, 3.80, 3.50, 1.90),
    "UY-SA1": (1.70, 3.70, 1.60, 2.30, 2.40, 3.10),
    "YM-FE1": (1.10, 2.00, 2.80, 1.50, 3.20, 3.30),
    "KA-SA2": (1.30, 3.90, 1.20, 1.90, 2.20, 2.40),
    "YM-HA3": (4.10, 1.10, 2.00, 1.00, 1.10, 1.20),
}
#: The "Fear Excluded" table (HAP SAD SUR ANG DIS): every label here differs from the first table's.
JAFFE_FEAR_EXCLUDED: dict[str, tuple[float, ...]] = {
    "KA-AN1": (4.5, 1.0, 1.0, 1.0, 1.0),
    "YM-FE1": (1.0, 1.0, 1.0, 1.0, 4.9),
    "KM-SU1": (1.0, 4.4, 1.0, 1.0, 1.0),
}
#: Well-formed, rated images: file name -> label (index into ``attnlib.data.jaffe.LABEL_NAMES``).
JAFFE_IMAGES: dict[str, int] = {
    "KA.AN1.39.tiff": 3,
    "KA.HA1.29.tiff": 0,
    "KL.SA1.41.tiff": 1,
    "KM.SU1.16.tiff": 2,
    "KR.DI1.27.tiff": 4,
    "MK.FE1.131.tiff": 5,
    "NA.NE1.202.tiff": 0,
    "NM.SU2.99.tiff": 2,
    "TM.AN2.191.tiff": 3,
    "UY.SA1.140.tiff": 1,
    "YM.FE1.66.tiff": 5,
}
#: Rated (sadness); a valid TIFF, or garbage after a TIFF signature with ``corrupt_image``.
JAFFE_CORRUPT = "KA.SA2.34.tiff"
JAFFE_UNRATED = "YM.DI3.60.tiff"
JAFFE_BADLY_NAMED = "KA_AN3_40.tiff"
JAFFE_README = "README_FIRST.txt"


def write_grading_csv(path: Path, rows: list[tuple[str, int, int]]) -> Path:
    """Write an IDRiD grading CSV with the real quirks: BOM, padded names, empty last column and row."""
    lines = ["Image name,Retinopathy grade ,Risk of macular edema  ,"]
    lines += [f"{image_id},{dr},{me}," for image_id, dr, me in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n,,,\n", encoding="utf-8-sig")
    return path


def _fundus(split: str, image_id: str, side: str, grades: tuple[int, int]) -> Image.Image:
    """A drawn fundus with its optic disc on ``side`` and spots for its (retinopathy, edema) grades.

    One vessel keeps every image from being mirror-symmetric; two dark red spots per retinopathy
    grade and two small yellow ones per macular-edema risk level sit in the middle of the disc.
    """
    w, h = IDRID_SIZE
    im = Image.new("RGB", (w, h), (0, 0, 0))
    draw = ImageDraw.Draw(im)
    draw.ellipse((40, 0, w - 40, h), fill=(150, 60, 30))
    draw.line((60, 40, 360, 250), fill=(90, 20, 10), width=4)
    rng = np.random.default_rng([0 if split == "train" else 1, int(image_id.split("_")[1])])
    for count, radius, colour in ((2 * grades[0], 4, (70, 10, 5)), (2 * grades[1], 2, (225, 200, 90))):
        for x, y in zip(rng.uniform(150, 280, count), rng.uniform(60, 224, count), strict=True):
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
    cx = 330 if side == "right" else 100
    draw.ellipse((cx - 22, 120, cx + 22, 164), fill=(250, 230, 180))
    return im


def write_idrid_sample(
    root: str | Path,
    *,
    corrupt_image: bool = False,
    row_without_image: bool = False,
    image_without_row: bool = False,
) -> Path:
    """Write the IDRiD sample (images, both grading CSVs) under ``root/B. Disease Grading``; returns ``root``.

    Holds :data:`IDRID_ROWS` and the images of :data:`IDRID_DISC`, less the defects not asked for:
    ``corrupt_image`` makes :data:`IDRID_CORRUPT` a broken JPEG, ``row_without_image`` keeps the CSV
    row of :data:`IDRID_ROW_WITHOUT_IMAGE`, ``image_without_row`` writes :data:`IDRID_IMAGE_WITHOUT_ROW`.
    """
    root = Path(root)
    grading = root / "B. Disease Grading"
    for split, discs in IDRID_DISC.items():
        grades = {image_id: (dr, me) for image_id, dr, me in IDRID_ROWS[split]}
        folder = image_dir(grading, split)
        folder.mkdir(parents=True, exist_ok=True)
        for image_id, side in discs.items():
            path = folder / f"{image_id}.jpg"
            if (split, image_id) == IDRID_IMAGE_WITHOUT_ROW:
                if image_without_row:
                    _fundus(split, image_id, side, (0, 0)).save(path, quality=95)
            elif (split, image_id) == IDRID_CORRUPT and corrupt_image:
                path.write_bytes(b"\xff\xd8not a jpeg")
            else:
                _fundus(split, image_id, side, grades[image_id]).save(path, quality=95)
        rows = [r for r in IDRID_ROWS[split] if row_without_image or (split, r[0]) != IDRID_ROW_WITHOUT_IMAGE]
        write_grading_csv(label_file(grading, split), rows)
    return root


def jaffe_rating_lines(table: dict[str, tuple[float, ...]]) -> list[str]:
    """Rows of a README ratings table: ``<row> <ratings, 2 decimals> <key>``, numbered from 1."""
    rows = enumerate(table.items(), 1)
    return [f"{i} {' '.join(f'{v:.2f}' for v in vals)} {key}" for i, (key, vals) in rows]


def jaffe_readme_text(first_rows: list[str] | None = None) -> str:
    """The sample README, with ``first_rows`` (default: :data:`JAFFE_RATINGS`) as the first table.

    Notes, the padded ratings header on line 6, the rows from line 8 with a blank line after the
    fifth, then the "Fear Excluded" table (:data:`JAFFE_FEAR_EXCLUDED`) and a closing line.
    """
    rows = first_rows or jaffe_rating_lines(JAFFE_RATINGS)
    return "\n".join(
        [
            "The Japanese Female Facial Expression (JAFFE) Database",
            "",
            "3 notes: 60 Japanese raters scored each image on a 5-level scale.",
            "Semantic ratings (averages):",
            "",
            "#  HAP  SAD  SUR  ANG  DIS  FEA  PIC   ",
            "",
            *rows[:5],
            "",
            *rows[5:],
            "",
            "Fear Excluded",
            "",
            "# HAP SAD SUR ANG DIS PIC",
            *jaffe_rating_lines(JAFFE_FEAR_EXCLUDED),
            "",
            "End of file.",
        ]
    )


#: Cartoon features per posed expression: brow tilt (inner end up > 0), brow lift, eye half-height,
#: mouth shape and its height (px).
_FACE = {
    "AN": (-6, 0, 5, "line", 0),
    "DI": (-3, -3, 3, "wave", 4),
    "FE": (5, 6, 9, "open", 10),
    "HA": (0, 2, 4, "smile", 14),
    "NE": (0, 0, 5, "line", 0),
    "SA": (6, 0, 5, "frown", 10),
    "SU": (0, 10, 10, "open", 22),
}


def _face(name: str) -> np.ndarray:
    """A 256 x 256 uint8 cartoon face for file ``name`` (``<SUBJ>.<POSE>...``) on a background of 128."""
    subject, pose = name[:2], name[3:5]
    tilt, lift, eye, mouth, height = _FACE.get(pose, _FACE["NE"])
    width = 56 + 4 * (sum(map(ord, subject)) % 5)
    im = Image.new("L", (256, 256), 128)
    draw = ImageDraw.Draw(im)
    draw.ellipse((128 - width, 40, 128 + width, 220), fill=190)
    for cx, sign in ((100, 1), (156, -1)):
        draw.ellipse((cx - 10, 110 - eye, cx + 10, 110 + eye), fill=40)
        inner, outer = cx + sign * 12, cx - sign * 12
        draw.line((outer, 90 - lift, inner, 90 - lift - tilt), fill=60, width=4)
    box = (100, 170 - height // 2, 156, 170 + height // 2 + 1)
    if mouth == "smile":
        draw.arc(box, 0, 180, fill=50, width=4)
    elif mouth == "frown":
        draw.arc(box, 180, 360, fill=50, width=4)
    elif mouth == "open":
        draw.ellipse((114, box[1], 142, box[3]), fill=50)
    elif mouth == "wave":
        draw.line((100, 172, 114, 166, 128, 174, 142, 166, 156, 172), fill=50, width=4)
    else:
        draw.line((104, 170, 152, 170), fill=50, width=4)
    return np.array(im)


def write_jaffe_sample(
    root: str | Path,
    *,
    corrupt_image: bool = False,
    unrated_image: bool = False,
    badly_named_image: bool = False,
) -> Path:
    """Write the JAFFE sample into ``root`` and return ``root``.

    The folder holds :data:`JAFFE_README` (:func:`jaffe_readme_text`), a README.md without ratings,
    :data:`JAFFE_IMAGES` and :data:`JAFFE_CORRUPT` (a valid image unless ``corrupt_image``);
    ``unrated_image`` adds :data:`JAFFE_UNRATED` (no ratings row), ``badly_named_image`` adds
    :data:`JAFFE_BADLY_NAMED`. Images alternate 8-bit (128 background) and 16-bit (32768 background),
    starting with 8-bit in the order images, unrated, badly named, corrupt; pixel (0, 0) is the
    type's maximum and (0, 1) zero.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / JAFFE_README).write_text(jaffe_readme_text(), encoding="utf-8")
    (root / "README.md").write_text("# JAFFE mirror\nNo ratings here.\n", encoding="utf-8")
    wanted = {JAFFE_UNRATED: unrated_image, JAFFE_BADLY_NAMED: badly_named_image}
    for k, name in enumerate([*JAFFE_IMAGES, JAFFE_UNRATED, JAFFE_BADLY_NAMED, JAFFE_CORRUPT]):
        if not wanted.get(name, True):
            continue
        if name == JAFFE_CORRUPT and corrupt_image:
            (root / name).write_bytes(b"II*\x00" + b"\x13\x37" * 50)
            continue
        face = _face(name)
        pixels = face if k % 2 == 0 else face.astype(np.uint16) * 256
        pixels[0, 0], pixels[0, 1] = np.iinfo(pixels.dtype).max, 0
        Image.fromarray(pixels).save(root / name, format="TIFF")
    return root
