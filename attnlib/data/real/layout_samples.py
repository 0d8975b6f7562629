"""Tiny, clearly synthetic samples of the IDRiD, JAFFE, CUB-200-2010 and ClickMe layouts, with known content.

They serve the loaders' tests and the exploration notebooks' out-of-the-box runs (a user with the
real data points a notebook at it instead). The files sit where, and are named as, in the real
distributions (``data_manifests/idrid.yaml``, ``data_manifests/jaffe.yaml``,
``data_manifests/cub200_2010.yaml``, ``data_manifests/clickme.yaml``), but the pictures are drawings: a
fundus as an orange disc with a vessel, an optic disc on one side and grade-dependent spots (lesion
patches in the segmentation part); a face as a cartoon whose brows, eyes and mouth follow the posed
expression; a bird as a coloured ellipse on a sky; a ClickMe object as an ellipse on a gradient, its map
a bump on it. The quirks of the real files are always there (IDRiD: a BOM, padded column names, an
empty trailing column and row, lesion masks of {0, 76} and one with three channels, images lacking some
lesion files; JAFFE: text around the ratings table, the "Fear Excluded" table after it, a second README
without ratings, a rated key without an image, 8- and 16-bit TIFFs; CUB: a ``._`` resource fork listed
in ``lists/train.txt``, beside its image and in ``annotations-mat``); the defects a loader must survive
are keyword options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import scipy.io
from PIL import Image, ImageDraw
from tfrecord.example_pb2 import Example

from attnlib.data.real.clickme import encode_example, write_tfrecord
from attnlib.data.real.cub import ANNOTATIONS_DIR, IMAGES_DIR, LISTS_DIR, annotation_file, class_file
from attnlib.data.real.idrid import image_dir, label_file
from attnlib.data.real.idrid_lesions import lesion_file, segmentation_image_dir

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
#: Well-formed, rated images: file name -> label (index into ``attnlib.data.real.jaffe.LABEL_NAMES``).
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


#: Segmentation-part images of the IDRiD sample: split -> id -> (optic-disc side, lesion -> (x0, y0, x1, y1)
#: patch in the 428 x 284 image). IDRiD_01 is a right eye with haemorrhage and exudates on the image's left;
#: IDRiD_03 has only microaneurysms and an all-zero HE mask (not diseased); the others lack some lesion files.
IDRID_SEGMENTATION: dict[str, dict[str, tuple[str, dict[str, tuple[int, int, int, int]]]]] = {
    "train": {
        "IDRiD_01": ("right", {"HE": (90, 120, 120, 150), "EX": (150, 60, 170, 80),
                               "SE": (200, 200, 220, 215)}),
        "IDRiD_02": ("left", {"EX": (250, 100, 280, 130)}),
        "IDRiD_03": ("left", {"MA": (200, 140, 204, 144), "HE": ()}),
    },
    "test": {
        "IDRiD_55": ("left", {"SE": (260, 150, 290, 170)}),
        "IDRiD_56": ("right", {"HE": (180, 90, 200, 110), "MA": (150, 150, 153, 153)}),
    },
}
#: The one mask written with three channels (lesion = red), as some real masks read.
IDRID_RGB_MASK = ("train", "IDRiD_02", "EX")
#: Lesion colours drawn into the photographs (haemorrhage dark red, exudates yellow / pale).
IDRID_LESION_COLOURS = {"MA": (90, 15, 10), "HE": (70, 10, 5), "EX": (230, 210, 80), "SE": (245, 235, 200)}


def write_idrid_segmentation_sample(root: str | Path, **grading_defects: bool) -> Path:
    """Write the IDRiD sample's ``A. Segmentation`` part and (:func:`write_idrid_sample`, with
    ``grading_defects``) its ``B. Disease Grading`` part under ``root``; returns ``root``.

    Images and masks of :data:`IDRID_SEGMENTATION`: each lesion a filled patch, drawn into the photograph
    and written as a ``{0, 76}`` TIFF (:data:`IDRID_RGB_MASK` as RGB), an empty box as an all-zero mask;
    every image has its optic-disc mask.
    """
    root = write_idrid_sample(root, **grading_defects)
    w, h = IDRID_SIZE
    for split, images in IDRID_SEGMENTATION.items():
        folder = segmentation_image_dir(root, split)
        folder.mkdir(parents=True, exist_ok=True)
        for image_id, (side, lesions) in images.items():
            im = _fundus(split, image_id, side, (0, 0))
            draw = ImageDraw.Draw(im)
            cx = 330 if side == "right" else 100
            masks = {"OD": (cx - 22, 120, cx + 22, 164)}
            for lesion, box in lesions.items():
                if box:
                    draw.rectangle(box, fill=IDRID_LESION_COLOURS[lesion])
                masks[lesion] = box
            im.save(folder / f"{image_id}.jpg", quality=95)
            for lesion, box in masks.items():
                mask = Image.new("L", (w, h), 0)
                if box:
                    ImageDraw.Draw(mask).rectangle(box, fill=76)
                if (split, image_id, lesion) == IDRID_RGB_MASK:
                    empty = Image.new("L", (w, h), 0)
                    mask = Image.merge("RGB", (mask.point(lambda v: 255 if v else 0), empty, empty))
                path = lesion_file(root, split, image_id, lesion)
                path.parent.mkdir(parents=True, exist_ok=True)
                mask.save(path, format="TIFF")
    return root


#: The CUB sample: relative path -> (split, (W, H), bird box (left, top, right, bottom), 0-based inclusive).
#: Three classes, two training and one test image each, of different sizes.
CUB_IMAGES: dict[str, tuple[str, tuple[int, int], tuple[int, int, int, int]]] = {
    "001.Black_footed_Albatross/Black_footed_Albatross_0001_796111.jpg":
        ("train", (120, 90), (20, 15, 90, 70)),
    "001.Black_footed_Albatross/Black_footed_Albatross_0002_55.jpg":
        ("train", (96, 128), (10, 30, 80, 100)),
    "001.Black_footed_Albatross/Black_footed_Albatross_0003_796136.jpg":
        ("test", (100, 100), (30, 30, 70, 80)),
    "002.Laysan_Albatross/Laysan_Albatross_0001_545.jpg": ("train", (128, 96), (60, 10, 120, 60)),
    "002.Laysan_Albatross/Laysan_Albatross_0002_1027.jpg": ("train", (110, 80), (5, 20, 60, 75)),
    "002.Laysan_Albatross/Laysan_Albatross_0003_1033.jpg": ("test", (90, 120), (20, 40, 70, 110)),
    "003.Sooty_Albatross/Sooty_Albatross_0001_796338.jpg": ("train", (100, 75), (40, 5, 95, 50)),
    "003.Sooty_Albatross/Sooty_Albatross_0002_1059.jpg": ("train", (80, 100), (10, 10, 60, 60)),
    "003.Sooty_Albatross/Sooty_Albatross_0003_796339.jpg": ("test", (120, 100), (50, 45, 110, 95)),
}
CUB_CLASSES = ("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross")
#: A macOS resource fork: beside the first image, in ``annotations-mat`` and listed in ``lists/train.txt``.
CUB_HIDDEN = "001.Black_footed_Albatross/._Black_footed_Albatross_0001_796111.jpg"
#: Bubbles (image, worker, x, y, radius) of every training image: two players, two bubbles each, in the bird's
#: box.
CUB_BUBBLES: list[tuple[str, str, float, float, float]] = [
    row
    for rel, (split, _, (left, top, right, bottom)) in CUB_IMAGES.items() if split == "train"
    for row in (
        (rel, "w1", (left + right) / 2, (top + bottom) / 2, 8.0),
        (rel, "w1", left + (right - left) / 4, (top + bottom) / 2, 5.0),
        (rel, "w2", (left + right) / 2, top + (bottom - top) / 4, 6.5),
        (rel, "w2", right - 3.0, bottom - 3.0, 4.0),
    )
]
#: Defect rows of :func:`write_cub_bubbles`: an image in no list, and a centre right of its image.
CUB_BUBBLE_UNKNOWN = ("004.Groove_billed_Ani/Groove_billed_Ani_0001_1711.jpg", "w1", 10.0, 10.0, 5.0)
CUB_BUBBLE_OUTSIDE = ("002.Laysan_Albatross/Laysan_Albatross_0001_545.jpg", "w3", 131.5, 20.0, 5.0)


def cub_segmentation(size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """The sample bird's ``seg`` (uint8 H x W, 1 = bird): the ellipse inscribed in ``box``, touching it."""
    width, height = size
    left, top, right, bottom = box
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    # half a pixel more than the half-sides: the extreme pixels lie on the ellipse for either parity
    cx, cy, rx, ry = (left + right) / 2, (top + bottom) / 2, (right - left + 1) / 2, (bottom - top + 1) / 2
    return (((cols - cx) / rx) ** 2 + ((rows - cy) / ry) ** 2 <= 1.0).astype(np.uint8)


def write_cub_sample(
    root: str | Path, *, corrupt_image: bool = False, missing_annotation: bool = False
) -> Path:
    """Write the CUB-200-2010 sample (:data:`CUB_IMAGES`) into ``root`` and return ``root``.

    ``images/<class>/<file>.jpg`` (a sky-blue picture with the bird, a class-coloured ellipse),
    ``lists/{train,test}.txt`` (with :data:`CUB_HIDDEN` among the training lines), ``lists/classes.txt``
    (:data:`CUB_CLASSES`, one per line), and
    ``annotations-mat/<class>/<stem>.mat`` holding ``seg`` (:func:`cub_segmentation`) and ``bbox`` (a struct
    of doubles ``left, top, right, bottom``), as :func:`scipy.io.savemat` writes a MATLAB struct.
    ``corrupt_image`` makes the first test image a broken JPEG; ``missing_annotation`` leaves out the
    first test image's ``.mat``.
    """
    root = Path(root)
    colours = dict(zip(CUB_CLASSES, ((40, 40, 40), (235, 235, 225), (110, 80, 60)), strict=True))
    first_test = next(rel for rel, (split, _, _) in CUB_IMAGES.items() if split == "test")
    for rel, (_, size, box) in CUB_IMAGES.items():
        path = root / IMAGES_DIR / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        seg = cub_segmentation(size, box)
        if corrupt_image and rel == first_test:
            path.write_bytes(b"\xff\xd8not a jpeg")
        else:
            pixels = np.empty((size[1], size[0], 3), dtype=np.uint8)
            pixels[:] = (120, 170, 230)
            pixels[seg > 0] = colours[rel.split("/")[0]]
            Image.fromarray(pixels).save(path, quality=95)
        if not (missing_annotation and rel == first_test):
            mat = annotation_file(root, rel)
            mat.parent.mkdir(parents=True, exist_ok=True)
            bbox = dict(zip(("left", "top", "right", "bottom"), map(float, box), strict=True))
            scipy.io.savemat(mat, {"seg": seg, "bbox": bbox})
    for folder in (IMAGES_DIR, ANNOTATIONS_DIR):
        (root / folder / CUB_HIDDEN).with_suffix(".jpg" if folder == IMAGES_DIR else ".mat").write_bytes(
            b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    (root / LISTS_DIR).mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        rels = [rel for rel, (s, _, _) in CUB_IMAGES.items() if s == split]
        if split == "train":
            rels.insert(1, CUB_HIDDEN)
        (root / LISTS_DIR / f"{split}.txt").write_text("\n".join(rels) + "\n", encoding="utf-8")
    class_file(root).write_text("\n".join(CUB_CLASSES) + "\n", encoding="utf-8")
    return root


def write_cub_bubbles(path: str | Path, *, unknown_image: bool = False, outside_centre: bool = False) -> Path:
    """Write :data:`CUB_BUBBLES` as a bubbles CSV (``image,worker,x,y,radius``) and return ``path``;
    ``unknown_image`` / ``outside_centre`` append :data:`CUB_BUBBLE_UNKNOWN` / :data:`CUB_BUBBLE_OUTSIDE`."""
    path = Path(path)
    rows = [*CUB_BUBBLES, *([CUB_BUBBLE_UNKNOWN] if unknown_image else []),
            *([CUB_BUBBLE_OUTSIDE] if outside_centre else [])]
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["image,worker,x,y,radius", *(f"{i},{w},{x:g},{y:g},{r:g}" for i, w, x, y, r in rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


#: The ClickMe sample's images, in item order: (split, ImageNet label, click count, bbox (ymin, xmin, ymax,
#: xmax) of the object in pixels of the 256 x 256 image). The JPEG form stores neither count nor bbox.
CLICKME_IMAGES: list[tuple[str, int, int, tuple[int, int, int, int]]] = [
    ("train", 1, 12, (40, 60, 150, 200)),
    ("train", 207, 7, (100, 20, 230, 120)),
    ("train", 954, 20, (10, 10, 120, 120)),
    ("val", 1, 9, (130, 140, 250, 250)),
    ("val", 409, 15, (60, 90, 200, 170)),
]
CLICKME_SIZE = 256
#: Files of each ClickMe form (relative to the sample's root) -> indices into :data:`CLICKME_IMAGES`: one
#: .npz per image; GALA-era raw float32 TFRecords as TPU-style shards without a suffix; the later release's
#: JPEG TFRecords in ``train/`` and ``val/``.
CLICKME_FILES: dict[str, dict[str, list[int]]] = {
    "npz": {
        "train/00000.npz": [0], "train/00001.npz": [1], "train/00002.npz": [2], "val/00003.npz": [3],
        "val/00004.npz": [4],
    },
    "raw": {"train-00000-of-00002": [0, 1], "train-00001-of-00002": [2], "val-00000-of-00001": [3, 4]},
    "jpeg": {
        "train/train-0.tfrecords": [0, 1], "train/train-1.tfrecords": [2], "val/val-0.tfrecords": [3, 4],
    },
}


def clickme_arrays(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Image ``k`` of :data:`CLICKME_IMAGES`: (256 x 256 x 3 float32 in [0, 1], 256 x 256 float32 map, max 1).

    The image: a vertical grey-blue gradient with the object, a label-coloured ellipse filling the bbox.
    The map: a Gaussian bump (peak 1) at the bbox's centre, its spreads a quarter of the bbox's sides.
    """
    _, label, _, (top, left, bottom, right) = CLICKME_IMAGES[k]
    rows, cols = np.mgrid[0:CLICKME_SIZE, 0:CLICKME_SIZE].astype(np.float64)
    image = np.empty((CLICKME_SIZE, CLICKME_SIZE, 3))
    image[:] = np.stack([0.3 + 0.4 * rows / CLICKME_SIZE, 0.4 + 0.3 * rows / CLICKME_SIZE,
                         np.full_like(rows, 0.8)], axis=-1)
    cy, cx, ry, rx = (top + bottom) / 2, (left + right) / 2, (bottom - top) / 2, (right - left) / 2
    inside = ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1
    image[inside] = ((label * 37) % 200 / 255 + 0.1, (label * 91) % 200 / 255 + 0.1, (label * 53) % 200 / 255)
    heatmap = np.exp(-(((rows - cy) / (ry / 2)) ** 2 + ((cols - cx) / (rx / 2)) ** 2) / 2)
    return image.astype(np.float32), heatmap.astype(np.float32)


def write_clickme_sample(
    root: str | Path,
    form: Literal["npz", "raw", "jpeg"],
    *,
    truncated: bool = False,
    corrupt_crc: bool = False,
    missing_feature: str | None = None,
) -> Path:
    """Write the ClickMe sample (:data:`CLICKME_IMAGES`) in ``form`` into ``root`` and return ``root``.

    Files as in :data:`CLICKME_FILES`; contents from :func:`clickme_arrays` with
    :func:`attnlib.data.real.clickme.encode_example` (``raw``: float32 bytes with ``click_count`` and an int64
    ``bbox``; ``jpeg``: JPEG bytes and the label only) or :func:`numpy.savez` (``npz``: ``image``,
    ``heatmap``, ``label``, ``click_count``). Defects: ``truncated`` cuts the first training file's last
    record (record 1) in the middle of its data; ``corrupt_crc`` flips a data byte of the first validation
    file's record 0 (its header stays intact); ``missing_feature`` leaves that key out of the first
    validation image. The first two apply to the TFRecord forms only.
    """
    if form == "npz" and (truncated or corrupt_crc):
        raise ValueError("truncated and corrupt_crc apply to the TFRecord forms (raw, jpeg) only")
    root = Path(root)
    first_val = CLICKME_IMAGES.index(next(row for row in CLICKME_IMAGES if row[0] == "val"))
    for n, (rel, indices) in enumerate(CLICKME_FILES[form].items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if form == "npz":
            (k,) = indices
            image, heatmap = clickme_arrays(k)
            _, label, clicks, _ = CLICKME_IMAGES[k]
            arrays = {"image": image, "heatmap": heatmap, "label": np.int64(label),
                      "click_count": np.int64(clicks)}
            if k == first_val and missing_feature is not None:
                arrays.pop(missing_feature)
            with path.open("wb") as f:
                np.savez(f, **arrays)
            continue
        records = []
        for k in indices:
            image, heatmap = clickme_arrays(k)
            _, label, clicks, bbox = CLICKME_IMAGES[k]
            extra = {"click_count": clicks, "bbox": bbox} if form == "raw" else {}
            data = encode_example(image, heatmap, label, jpeg=form == "jpeg", **extra)
            if k == first_val and missing_feature is not None:
                example = Example.FromString(data)
                del example.features.feature[missing_feature]
                data = example.SerializeToString()
            records.append(data)
        write_tfrecord(path, records)
        if truncated and n == 0:
            path.write_bytes(path.read_bytes()[: -(len(records[-1]) // 2)])
        if corrupt_crc and indices[0] == first_val:
            raw = bytearray(path.read_bytes())
            raw[12 + len(records[0]) // 2] ^= 0xFF
            path.write_bytes(bytes(raw))
    return root
