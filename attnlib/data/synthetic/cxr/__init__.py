"""A deterministic synthetic EGD-CXR: chest radiographs, eye gaze and masks in the real file layout.

``generate_synthetic_egd_cxr(out, config)`` writes, from ``config.seed`` alone, the files the real
loader reads (the layout documented in ``data_manifests/egd_cxr.yaml``)::

    out/egd-cxr/master_sheet.csv, fixations.csv, eye_gaze.csv, bounding_boxes.csv
    out/egd-cxr/audio_segmentation_transcripts/<dicom_id>/{left_lung,right_lung,mediastanum,aortic_knob}.png
    out/egd-cxr/audio_segmentation_transcripts/<dicom_id>/transcript.json
    out/egd-cxr/inclusion_exclusion_criteria_outputs/{CHF,normals,pneumonia}.csv
    out/mimic-cxr/files/p1X/p1XXXXXXX/sXXXXXXXX/<dicom_id>.dcm
    out/synthetic_config.json, out/split.csv, out/synthetic_truth.csv

The audio files (``audio.wav``, ``audio.mp3``) are not written. Everything goes to a hidden
temporary sibling folder that is renamed to ``out`` at the end, so ``out`` exists only complete.

Images are frontal radiographs (body, lungs, mediastinum, heart, spine, ribs, noise, per-image
size/position/rotation). Evidence is local: CHF enlarges the heart (cardiothoracic ratio 0.40-0.48
for the others, 0.55-0.62 for CHF at ``evidence_strength`` 1), pneumonia adds 1-3 faint textured
opacities inside a lung. Radiological convention: the patient's left lung is on the image's right.

Gaze: a survey scan over both lungs, then fixations that favour the evidence (heart border and
silhouette for CHF, the opacities for pneumonia, lungs and heart for normals). It does not depend
on ``evidence_strength``: at 0 the gaze still visits where the evidence would be. Screen mapping
(1920x1080 screen, image fitted and centred, ``image_*_pad`` in screen pixels):
``FPOGX = (left_pad + x * (1920 - left_pad - right_pad) / cols) / 1920`` (``y`` alike with the
top/bottom pads and rows), ``X_ORIGINAL = floor(x)``; off-image gaze is stored as -1, except that
some glances left of the image keep their (negative) mapped values. Calibration screens carry a
``DICOM_ID`` that is the first 39 characters of the session's next image id (only exact matching
drops them). Raw samples: ``BPOGX/BPOGY`` is the jittered sample, ``FPOGX/FPOGY`` the running mean
of the current fixation (so a fixation's last sample holds its mean, ``FPOGD`` its duration);
saccade samples have ``FPOGV`` 0, ``FPOGD`` 0 and the coming fixation's ``FPOGID``. Boxes
(``bounding_boxes.csv``, opacity boxes) are pixel ranges ``[x1, x2) x [y1, y2)``.

``synthetic_truth.csv``, one row per image (columns :data:`TRUTH_COLUMNS`): ``label`` (index into
:data:`attnlib.data.real.egd_cxr.LABEL_COLUMNS`, as in ``split.csv``), ``split``, ``photometric``,
``transfer_syntax`` (UID), ``windowed`` (0/1), ``ctr``, ``n_opacities``, ``opacity_boxes`` (JSON
list of ``{x1, x2, y1, y2}``), ``cue_present`` (0/1), ``cue_x``/``cue_y`` (tag centre, blank
without a tag), ``cue_position`` (index into :data:`MARKER_POSITIONS` for the position cue, else -1).

Random numbers come from separate per-image streams (anatomy, noise, evidence, gaze, cue, ...),
so e.g. ``evidence_strength`` 0 and 1 with the same seed give the same anatomy, noise and gaze.

Modules: ``config`` (knobs, random streams), ``anatomy`` (image rendering), ``gaze`` (gaze
simulation, screen mapping), ``tables`` (master sheet, transcripts, formats, cue), ``writer`` (files).
"""

from attnlib.data.synthetic.cxr.config import (
    CUES,
    GENERATOR_VERSION,
    MARKER_POSITIONS,
    MAX_LEVEL,
    PRESENCE_POSITION,
    SyntheticCXRConfig,
)
from attnlib.data.synthetic.cxr.writer import (
    TRUTH_COLUMNS,
    TRUTH_FILE,
    generate_synthetic_egd_cxr,
    read_truth,
)

__all__ = [
    "CUES",
    "GENERATOR_VERSION",
    "MARKER_POSITIONS",
    "MAX_LEVEL",
    "PRESENCE_POSITION",
    "TRUTH_COLUMNS",
    "TRUTH_FILE",
    "SyntheticCXRConfig",
    "generate_synthetic_egd_cxr",
    "read_truth",
]
