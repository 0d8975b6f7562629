"""Per-image tables: master-sheet rows, report transcripts, DICOM formats and cue positions."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from attnlib.data.real.egd_cxr import CHEXPERT_COLUMNS, FINDING_COLUMNS, LABEL_COLUMNS
from attnlib.data.synthetic.cxr.anatomy import _Drawn
from attnlib.data.synthetic.cxr.config import MARKER_POSITIONS, PRESENCE_POSITION, SyntheticCXRConfig, _rng
from attnlib.data.synthetic.cxr.gaze import _Screen

_DX = {
    "Normal": [("Chest pain, unspecified", "R079"), ("Syncope and collapse", "R55"), ("Cough", "R05")],
    "CHF": [
        ("Congestive heart failure, unspecified", "4280"),
        ("Heart failure, unspecified", "I509"),
        ("Acute on chronic diastolic heart failure", "I5033"),
    ],
    "pneumonia": [
        ("Pneumonia, unspecified organism", "J189"),
        ("Pneumonia, organism unspecified", "486"),
        ("Lobar pneumonia, unspecified organism", "J181"),
    ],
}
_DX_OTHER = [
    ("Essential (primary) hypertension", "I10"),
    ("Hypertension NOS", "4019"),
    ("Type 2 diabetes mellitus without complications", "E119"),
    ("Atrial fibrillation", "I4891"),
    ("Chronic kidney disease, unspecified", "N189"),
    ("Fever, unspecified", "R509"),
    ("Dyspnea, unspecified", "R0600"),
]
_INDICATIONS = ["shortness of breath", "cough and fever", "chest pain", "hypoxia", "leg swelling, dyspnea"]
_QUESTIONS = ["eval for pneumonia", "r/o acute process", "eval for CHF", "evaluate for infiltrate"]


def _count(fraction: float, n: int) -> int:
    """``fraction * n`` rounded half up: the exact number of images given a property."""
    return int(math.floor(fraction * n + 0.5))


def _transcript(label: int, drawn: _Drawn, seconds: float) -> dict[str, Any]:
    """Report phrases spread over the second half of the reading."""
    name = LABEL_COLUMNS[label]
    if name == "Normal":
        phrases = [
            "Heart size is normal.",
            "The lungs are clear.",
            "No pleural effusion or pneumothorax.",
            "No acute cardiopulmonary process.",
        ]
    elif name == "CHF":
        phrases = [
            "The heart is enlarged.",
            "There is mild pulmonary vascular congestion.",
            "No focal consolidation.",
            "Findings are consistent with congestive heart failure.",
        ]
    else:
        x, y, _ = drawn.opacities[0]
        side = "right" if x < drawn.pixels.shape[1] / 2 else "left"
        level = ("upper", "mid", "lower")[int(np.digitize(y / drawn.pixels.shape[0], [0.4, 0.6]))]
        phrases = [
            "Heart size is normal.",
            f"There is a patchy opacity in the {side} {level} lung.",
            "Findings are concerning for pneumonia.",
        ]
    edges = np.linspace(0.4 * seconds, 0.95 * seconds, len(phrases) + 1)
    stamped = [
        {"phrase": p, "begin_time": round(float(a), 3), "end_time": round(float(b) - 0.1, 3)}
        for p, a, b in zip(phrases, edges[:-1], edges[1:], strict=True)
    ]
    return {"full_text": " ".join(phrases), "time_stamped_text": stamped}


def _master_rows(labels: np.ndarray, config: SyntheticCXRConfig, screen: _Screen) -> list[dict[str, Any]]:
    """The master-sheet rows (ids, demographics, diagnoses, findings) of every image."""
    n = len(labels)
    meta = _rng(config.seed, "meta")
    step = 9_999_999 // n
    patients = 10_000_000 + np.arange(n) * step + meta.integers(0, step, n)
    studies = 50_000_000 + np.arange(n) * step + meta.integers(0, step, n)
    stays = 30_000_000 + np.arange(n) * step + meta.integers(0, step, n)
    ids = ["-".join(meta.bytes(20).hex()[k : k + 8] for k in range(0, 40, 8)) for _ in range(n)]
    if len(set(ids)) != n:
        raise RuntimeError("dicom_id collision; choose another seed")
    rows = []
    for i, label in enumerate(labels):
        rng = _rng(config.seed, "person", i)
        name = LABEL_COLUMNS[int(label)]
        gender = "F" if rng.random() < 0.5 else "M"
        decade = int(rng.integers(2, 9)) * 10
        dx = [_DX[name][int(rng.integers(len(_DX[name])))]]
        dx += [_DX_OTHER[int(k)] for k in rng.choice(len(_DX_OTHER), int(rng.integers(0, 4)), replace=False)]
        row: dict[str, Any] = {
            "dicom_id": ids[i],
            "path": f"files/p{str(patients[i])[:2]}/p{patients[i]}/s{studies[i]}/{ids[i]}.dcm",
            "study_id": int(studies[i]),
            "patient_id": int(patients[i]),
            "stay_id": int(stays[i]),
            "gender": gender,
            "anchor_age": f"{decade} - {decade + 10}",
            "image_top_pad": screen.top,
            "image_bottom_pad": screen.bottom,
            "image_left_pad": screen.left,
            "image_right_pad": screen.right,
            "normal_reports": int(name == "Normal"),
            "cxr_exam_indication": f"___-year-old {'woman' if gender == 'F' else 'man'} with "
            f"{_INDICATIONS[int(rng.integers(len(_INDICATIONS)))]}, "
            f"{_QUESTIONS[int(rng.integers(len(_QUESTIONS)))]}",
        }
        for k in range(1, 10):
            text, icd = dx[k - 1] if k <= len(dx) else (None, None)
            row[f"dx{k}"], row[f"dx{k}_icd"] = text, icd
        for k, cls in enumerate(LABEL_COLUMNS):
            row[cls] = int(label == k)
        findings = dict.fromkeys(FINDING_COLUMNS, 0)
        chx: dict[str, int | None] = dict.fromkeys(CHEXPERT_COLUMNS)
        if name == "Normal":
            findings["normal_anatomically"], chx["no_finding__chx"] = 1, 1
        elif name == "CHF":
            findings["enlarged_cardiac_silhouette"] = 1
            findings["pulmonary_edema__hazy_opacity"] = int(rng.random() < 0.5)
            findings["vascular_redistribution"] = int(rng.random() < 0.5)
            chx["cardiomegaly__chx"] = 1
            chx["edema__chx"] = [1, -1, None][int(rng.integers(3))]
        else:
            findings["consolidation"] = int(rng.random() < 0.6)
            findings["not_otherwise_specified_opacity___pleural__parenchymal_opacity__"] = 1
            chx["pneumonia__chx"] = [1, -1][int(rng.integers(2))]
            chx["lung_opacity__chx"] = 1
            chx["consolidation__chx"] = [1, 0, None][int(rng.integers(3))]
        chx["pleural_effusion__chx"] = [0, None, None][int(rng.integers(3))]
        chx["support_devices__chx"] = 1 if rng.random() < 0.2 else None
        rows.append({**row, **findings, **chx})
    return rows


def _formats(n: int, config: SyntheticCXRConfig) -> list[dict[str, Any]]:
    """Per image: photometric interpretation, transfer syntax, window, modality, view, date (exact counts)."""
    rng = _rng(config.seed, "format")
    mono1 = np.zeros(n, dtype=bool)
    mono1[rng.permutation(n)[: _count(config.fraction_monochrome1, n)]] = True
    n_j2k, n_rle = _count(config.fraction_jpeg2000, n), _count(config.fraction_rle, n)
    syntax = np.full(n, ExplicitVRLittleEndian, dtype=object)
    order = rng.permutation(n)
    syntax[order[:n_j2k]] = JPEG2000Lossless
    syntax[order[n_j2k : n_j2k + n_rle]] = RLELossless
    windowed = np.zeros(n, dtype=bool)
    windowed[rng.permutation(n)[: _count(config.fraction_windowed, n)]] = True
    return [
        {
            "photometric": "MONOCHROME1" if mono1[i] else "MONOCHROME2",
            "transfer_syntax": syntax[i],
            "windowed": bool(windowed[i]),
            "modality": "CR" if rng.random() < 0.5 else "DX",
            "view": "PA" if rng.random() < 0.6 else "AP",
            "date": "21%02d%02d%02d" % (rng.integers(10, 90), rng.integers(1, 13), rng.integers(1, 29)),
        }
        for i in range(n)
    ]


def _cue(label: int, split: str, config: SyntheticCXRConfig, i: int) -> str | None:
    """Where the cue tag goes for this image (None: no tag)."""
    if config.cue is None:
        return None
    rng = _rng(config.seed, "cue", i)
    p = {"train": config.cue_correlation_train, "val": config.cue_correlation_val}.get(split)
    if config.cue == "marker_presence":
        target = LABEL_COLUMNS[label] == config.cue_class
        present = rng.random() < 0.5 if p is None else (target if rng.random() < p else not target)
        return PRESENCE_POSITION if present else None
    if p is None:
        return MARKER_POSITIONS[int(rng.integers(3))]
    agree = rng.random() < p
    return MARKER_POSITIONS[label if agree else (label + 1 + int(rng.integers(2))) % 3]
