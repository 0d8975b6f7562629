"""A deterministic synthetic fine-grained set: the default data of the ABN + edited-maps paper.

Paper 3 (methods.md section 3) fine-tunes an Attention Branch Network with human maps on CUB birds,
whose species is decided by small parts. ``generate_finegrained(out, config)`` writes::

    out/images/<id>.png        RGB, size x size
    out/labels.csv             id, label, split (train/test), distractor (colour index of the distractor)
    out/parts.csv              id, part_row, part_col, part_radius, distractor_row0, distractor_col0, distractor_size
    out/bubbles.csv            image, worker, x, y, radius  (the CUB bubble CSV form; image = id)
    out/synthetic_config.json  the knobs, the generator version and counts

Each image shows a "bird" on a textured background: a grey-brown body (an ellipse of random position,
size and orientation) with a round head (the part, radius ``part_radius``) at one end. The class is
decided by the head only: its colour is shifted by a faint class-specific, zero-sum colour vector
(``evidence_strength`` 1 = a shift of 0.06 per channel, about 15 grey levels, under pixel noise of
0.05). A distractor -- a saturated square of side ``distractor_size`` away from the bird -- has one of
``n_classes`` colours; in the training split its colour index equals the label with probability
``distractor_correlation_train`` (otherwise another index), in the test split it is uniform and
independent of the label. A network that latches onto the distractor therefore fails on the test split.

Human maps: ``n_annotators`` simulated players each open ``bubbles_per_annotator`` bubbles aimed at the
head (centre jittered by ``annotator_jitter`` x part radius, radius 0.8-1.6 x part radius); with
probability ``annotator_miss`` a bubble lands on a random point of the body instead. The bubbles are
stored in the CUB bubble CSV form, so :func:`attnlib.data.maps.sources.bubble_map` turns both into maps.
All random streams are independent of ``evidence_strength`` and of the distractor correlation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from attnlib.core.progress import tqdm
from attnlib.data.contract import LabelledDataset
from attnlib.data.splits import balanced_split
from attnlib.data.synthetic.generated import CONFIG_FILE, GeneratorConfig, generate_folder

GENERATOR_VERSION = "1"
SPLITS = ("train", "test")
LABEL_COLUMNS = ("id", "label", "split", "distractor")
PART_COLUMNS = (
    "id",
    "part_row",
    "part_col",
    "part_radius",
    "distractor_row0",
    "distractor_col0",
    "distractor_size",
)
BUBBLE_COLUMNS = ("image", "worker", "x", "y", "radius")
#: Head colour shift at ``evidence_strength`` 1 (image values in [0, 1]).
EVIDENCE_AMPLITUDE = 0.06
NOISE = 0.05
_STREAMS = {"labels": 1, "scene": 2, "distractor": 3, "bubbles": 4}


def _rng(seed: int, stream: str, index: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAMS[stream], index])


class FineGrainedFormatError(ValueError):
    """A file of a synthetic fine-grained folder is missing or malformed."""


@dataclass(frozen=True)
class FineGrainedConfig(GeneratorConfig):
    """Knobs of the synthetic fine-grained set (all saved in ``synthetic_config.json``).

    n_images (at least 2 per class), size (px, >= 48), n_classes (2-10), evidence_strength (>= 0),
    part_radius (px, 2 to size // 8), distractor_size (px, 4 to size // 3), distractor_correlation_train
    in [0, 1], n_annotators and bubbles_per_annotator (>= 1), annotator_jitter (>= 0, in part radii),
    annotator_miss in [0, 1], split_fractions (train, test), split_seed and seed.
    """

    n_images: int = 600
    size: int = 96
    n_classes: int = 4
    evidence_strength: float = 1.0
    part_radius: int = 7
    distractor_size: int = 18
    distractor_correlation_train: float = 0.9
    n_annotators: int = 3
    bubbles_per_annotator: int = 2
    annotator_jitter: float = 0.6
    annotator_miss: float = 0.15
    split_fractions: tuple[float, float] = (0.7, 0.3)
    split_seed: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "split_fractions", tuple(float(f) for f in self.split_fractions))
        checks = {
            "n_classes must lie in [2, 10]": 2 <= self.n_classes <= 10,
            "n_images must be at least 2 per class": self.n_images >= 2 * self.n_classes,
            "size must be at least 48": self.size >= 48,
            "evidence_strength must be >= 0": self.evidence_strength >= 0,
            "part_radius must lie in [2, size // 8]": 2 <= self.part_radius <= self.size // 8,
            "distractor_size must lie in [4, size // 3]": 4 <= self.distractor_size <= self.size // 3,
            "distractor_correlation_train must lie in [0, 1]": 0 <= self.distractor_correlation_train <= 1,
            "n_annotators and bubbles_per_annotator must be >= 1": min(
                self.n_annotators, self.bubbles_per_annotator
            )
            >= 1,
            "annotator_jitter must be >= 0": self.annotator_jitter >= 0,
            "annotator_miss must lie in [0, 1]": 0 <= self.annotator_miss <= 1,
            "split_fractions must be (train, test), positive, summing to 1": len(self.split_fractions) == 2
            and min(self.split_fractions) > 0
            and abs(sum(self.split_fractions) - 1) < 1e-9,
            "seed and split_seed must be >= 0": min(self.seed, self.split_seed) >= 0,
        }
        problems = [f"{rule} ({self._shown(rule)})" for rule, ok in checks.items() if not ok]
        if problems:
            raise ValueError("invalid FineGrainedConfig: " + "; ".join(problems))

    def _shown(self, rule: str) -> str:
        names = [f.name for f in dataclasses.fields(self) if f.name in rule]
        return ", ".join(f"{n}={getattr(self, n)!r}" for n in names)


def class_colours(n_classes: int) -> np.ndarray:
    """The head's zero-sum colour shift per class (n_classes x 3, unit max-norm): hues around the wheel."""
    angles = 2 * np.pi * np.arange(n_classes) / n_classes
    basis = np.array([[1.0, -0.5, -0.5], [0.0, np.sqrt(3) / 2, -np.sqrt(3) / 2]])
    shifts = np.cos(angles)[:, None] * basis[0] + np.sin(angles)[:, None] * basis[1]
    return shifts / np.abs(shifts).max(axis=1, keepdims=True)


def distractor_colours(n_classes: int) -> np.ndarray:
    """Saturated colours of the distractor, one per index (n_classes x 3 in [0, 1])."""
    return 0.5 + 0.45 * class_colours(n_classes)


def _distractor_index(labels: np.ndarray, split: np.ndarray, config: FineGrainedConfig) -> np.ndarray:
    rng = _rng(config.seed, "distractor")
    k = config.n_classes
    out = rng.integers(0, k, size=len(labels))  # test: uniform, independent of the label
    agree = rng.random(len(labels)) < config.distractor_correlation_train
    other = (labels + rng.integers(1, k, size=len(labels))) % k
    train = split == "train"
    out[train] = np.where(agree, labels, other)[train]
    return out


def _scene(index: int, config: FineGrainedConfig) -> dict[str, Any]:
    """The label-independent geometry of image ``index``: body, head and distractor placement."""
    rng = _rng(config.seed, "scene", index)
    s, r = config.size, config.part_radius
    for _ in range(100):
        centre = rng.uniform(0.3 * s, 0.7 * s, size=2)
        angle = rng.uniform(0, 2 * np.pi)
        axes = (rng.uniform(0.16, 0.22) * s, rng.uniform(0.08, 0.11) * s)
        head = centre + (axes[0] + 0.6 * r) * np.array([np.sin(angle), np.cos(angle)])
        d = config.distractor_size
        corner = rng.integers(1, s - d - 1, size=2)
        box_centre = corner + d / 2
        clear = np.linalg.norm(box_centre - centre) > axes[0] + d * 0.75 + r
        inside = (head - r >= 1).all() and (head + r <= s - 2).all()
        if clear and inside:
            break
    else:  # pragma: no cover - 100 failed draws would mean an impossible config
        raise RuntimeError(f"could not place the bird and the distractor of image {index} in {s} px")
    return {
        "centre": centre,
        "angle": angle,
        "axes": axes,
        "head": head,
        "corner": corner,
        "tint": rng.uniform(0.35, 0.6),
        "background": rng.normal(size=(s, s, 3)),
        "bg_colour": rng.uniform(0.25, 0.6, size=3),
        "noise": rng.normal(size=(s, s, 3)),
    }


def _render(scene: dict[str, Any], label: int, distractor: int, config: FineGrainedConfig) -> np.ndarray:
    s, r, d = config.size, config.part_radius, config.distractor_size
    rows, cols = np.mgrid[0:s, 0:s].astype(float)
    texture = gaussian_filter(scene["background"], sigma=(3, 3, 0))
    image = scene["bg_colour"] + 0.6 * texture
    dy, dx = rows - scene["centre"][0], cols - scene["centre"][1]
    ca, sa = np.cos(scene["angle"]), np.sin(scene["angle"])
    along, across = dy * sa + dx * ca, dy * ca - dx * sa
    body = (along / scene["axes"][0]) ** 2 + (across / scene["axes"][1]) ** 2 <= 1
    bird = np.array([1.0, 0.85, 0.7]) * scene["tint"]
    image[body] = bird
    head = (rows - scene["head"][0]) ** 2 + (cols - scene["head"][1]) ** 2 <= r**2
    shift = EVIDENCE_AMPLITUDE * config.evidence_strength * class_colours(config.n_classes)[label]
    image[head] = bird + shift
    r0, c0 = scene["corner"]
    image[r0 : r0 + d, c0 : c0 + d] = distractor_colours(config.n_classes)[distractor]
    image = image + NOISE * scene["noise"]
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def _bubbles(image_id: str, index: int, scene: dict[str, Any], config: FineGrainedConfig) -> list[tuple]:
    rng = _rng(config.seed, "bubbles", index)
    r, s = config.part_radius, config.size
    rows = []
    for worker in range(config.n_annotators):
        for _ in range(config.bubbles_per_annotator):
            if rng.random() < config.annotator_miss:
                t, u = rng.uniform(-1, 1, size=2) * 0.8
                ca, sa = np.cos(scene["angle"]), np.sin(scene["angle"])
                a, b = t * scene["axes"][0], u * scene["axes"][1]
                row, col = scene["centre"][0] + a * sa + b * ca, scene["centre"][1] + a * ca - b * sa
            else:
                row, col = scene["head"] + rng.normal(scale=config.annotator_jitter * r, size=2)
            radius = rng.uniform(0.8, 1.6) * r
            rows.append(
                (
                    image_id,
                    f"w{worker}",
                    float(np.clip(col, 0, s - 1)),
                    float(np.clip(row, 0, s - 1)),
                    float(radius),
                )
            )
    return rows


def _write_dataset(root: Path, config: FineGrainedConfig, progress: bool) -> dict[str, Any]:
    n, k = config.n_images, config.n_classes
    labels = _rng(config.seed, "labels").permutation(np.arange(n) % k)
    ids = [f"f{i:0{max(4, len(str(n - 1)))}d}" for i in range(n)]
    train, test = config.split_fractions
    split = balanced_split(ids, labels.tolist(), config.split_seed, (train, 0.0, test))["split"].to_numpy()
    distractor = _distractor_index(labels, split, config)
    (root / "images").mkdir()
    parts, bubbles = [], []
    for i in tqdm(range(n), desc="synthetic fine-grained", disable=not progress, leave=False):
        scene = _scene(i, config)
        pixels = _render(scene, int(labels[i]), int(distractor[i]), config)
        Image.fromarray(pixels).save(root / "images" / f"{ids[i]}.png", format="PNG", compress_level=6)
        parts.append((ids[i], *scene["head"], config.part_radius, *scene["corner"], config.distractor_size))
        bubbles.extend(_bubbles(ids[i], i, scene, config))
    pd.DataFrame({"id": ids, "label": labels, "split": split, "distractor": distractor}).to_csv(
        root / "labels.csv", index=False
    )
    pd.DataFrame(parts, columns=list(PART_COLUMNS)).to_csv(root / "parts.csv", index=False)
    pd.DataFrame(bubbles, columns=list(BUBBLE_COLUMNS)).to_csv(root / "bubbles.csv", index=False)
    agree = distractor == labels
    return {
        "images": n,
        "per_class": [int((labels == c).sum()) for c in range(k)],
        "per_split": {name: int((split == name).sum()) for name in SPLITS},
        "distractor_agrees": {name: round(float(agree[split == name].mean()), 4) for name in SPLITS},
        "bubbles": len(bubbles),
    }


def generate_finegrained(
    out: Path, config: FineGrainedConfig = FineGrainedConfig(), progress: bool = True
) -> Path:
    """Write the synthetic fine-grained set for ``config`` to ``out`` (layout: module docstring); returns ``out``.

    Deterministic; an ``out`` holding the same config's output is returned untouched, anything else
    raises ``FileExistsError``; written to a temporary sibling renamed at the end.
    """
    return generate_folder(
        out,
        kind="synthetic fine-grained",
        config=config.to_dict(),
        version=GENERATOR_VERSION,
        write=lambda staging: _write_dataset(staging, config, progress),
    )


@dataclass(eq=False)
class FineGrainedDataset(LabelledDataset):
    """A synthetic fine-grained set in attnlib's dataset contract (``idx, id, img`` float32 3 x H x W in
    [0, 1], ``lab``), ``split`` "train", "test" or None (all). ``evidence_mask(i)``, ``distractor_mask(i)``
    and ``bubbles(i)`` give the true part, the distractor and the simulated players' bubbles."""

    root: Path
    split: str | None = None

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if self.split is not None and self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or None, got {self.split!r}")
        config_path = self.root / CONFIG_FILE
        if not config_path.is_file():
            raise FineGrainedFormatError(f"{config_path}: not found (not a synthetic fine-grained folder)")
        try:
            self.config = FineGrainedConfig.from_dict(
                json.loads(config_path.read_text(encoding="utf-8"))["config"]
            )
        except (ValueError, KeyError, TypeError) as err:
            raise FineGrainedFormatError(f"{config_path}: unreadable configuration ({err})") from err
        self.label_names = [f"species_{k}" for k in range(self.config.n_classes)]
        labels = self._table("labels.csv", LABEL_COLUMNS)
        parts = self._table("parts.csv", PART_COLUMNS)
        table = labels.merge(parts, on="id", how="left", validate="one_to_one")
        if table["part_row"].isna().any():
            raise FineGrainedFormatError(
                f"{self.root / 'parts.csv'}: no part for ids {table.loc[table['part_row'].isna(), 'id'].tolist()[:5]}"
            )
        if self.split is not None:
            table = table[table["split"] == self.split]
        self.metadata = table.reset_index(drop=True)
        self.labels = self.metadata["label"].to_numpy(dtype=np.int64)
        self._bubbles = self._table("bubbles.csv", BUBBLE_COLUMNS, id_column="image")

    def _table(self, name: str, columns: tuple[str, ...], id_column: str = "id") -> pd.DataFrame:
        path = self.root / name
        if not path.is_file():
            raise FineGrainedFormatError(f"{path}: not found")
        table = pd.read_csv(path, dtype={id_column: str, "split": str, "worker": str})
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise FineGrainedFormatError(f"{path}: missing columns {missing}")
        return table


    def image(self, i: int) -> np.ndarray:
        """Image ``i`` as float32 3 x H x W in [0, 1]."""
        path = self.root / "images" / f"{self.metadata.at[i, 'id']}.png"
        try:
            with Image.open(path) as im:
                pixels = np.asarray(im.convert("RGB"))
        except (OSError, SyntaxError, ValueError) as err:
            raise FineGrainedFormatError(f"{path}: unreadable image ({err})") from err
        if pixels.shape[:2] != (self.config.size, self.config.size):
            raise FineGrainedFormatError(
                f"{path}: expected {self.config.size} x {self.config.size} px, got {pixels.shape[:2]}"
            )
        return (pixels.transpose(2, 0, 1).astype(np.float32) / 255.0).copy()

    def __getitem__(self, i: int) -> dict[str, object]:
        return {
            "idx": i,
            "id": self.metadata.at[i, "id"],
            "img": torch.from_numpy(self.image(i)),
            "lab": int(self.labels[i]),
        }

    def evidence_mask(self, i: int) -> np.ndarray:
        """The head (the class evidence) of image ``i`` as an H x W bool mask."""
        row = self.metadata.iloc[i]
        rows, cols = np.mgrid[0 : self.config.size, 0 : self.config.size]
        return (rows - row["part_row"]) ** 2 + (cols - row["part_col"]) ** 2 <= row["part_radius"] ** 2

    def distractor_mask(self, i: int) -> np.ndarray:
        """The distractor square of image ``i`` as an H x W bool mask."""
        row = self.metadata.iloc[i]
        mask = np.zeros((self.config.size, self.config.size), dtype=bool)
        r0, c0, d = int(row["distractor_row0"]), int(row["distractor_col0"]), int(row["distractor_size"])
        mask[r0 : r0 + d, c0 : c0 + d] = True
        return mask

    def bubbles(self, i: int) -> pd.DataFrame:
        """The simulated players' bubbles on image ``i`` (columns ``image, worker, x, y, radius``)."""
        return self._bubbles[self._bubbles["image"] == self.metadata.at[i, "id"]].reset_index(drop=True)

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of the selected rows and the config."""
        digest = hashlib.sha256(self.metadata[list(LABEL_COLUMNS)].to_csv(index=False).encode())
        digest.update((self.root / CONFIG_FILE).read_bytes())
        return digest.hexdigest()[:12]
