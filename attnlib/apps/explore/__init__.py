"""Dataset summaries for the exploration notebooks, one module per dataset; figures are returned, never shown.

- :mod:`~attnlib.apps.explore.common`: class balance and a cue's association with the label (every dataset).
- :mod:`~attnlib.apps.explore.mean_images`: per-class mean images and their differences (paper 2's sets).
- :mod:`~attnlib.apps.explore.egd_cxr`: EGD-CXR (paper 1): DICOM headers, gaze statistics, generator truth.
- :mod:`~attnlib.apps.explore.structured`: paper 2's data sources and the synthetic structured set.
- :mod:`~attnlib.apps.explore.idrid`: IDRiD Disease Grading: counts, balance, crop lines, right-eye flip.
- :mod:`~attnlib.apps.explore.jaffe`: JAFFE: ratings, labels, kept and skipped files, samples.
- :mod:`~attnlib.apps.explore.cub`: CUB-200-2010 (paper 3): classes, segmentations, boxes, bubbles.
- :mod:`~attnlib.apps.explore.clickme`: ClickMe (paper 4, GALA) and its ClickMe-like synthetic default.

The players' inter-rater reliability lives in :mod:`attnlib.evaluation.alignment`. This package re-exports
nothing: import the module a notebook needs.
"""
