"""Loaders and verifiers of the real datasets, each for its published file layout (EGD-CXR with MIMIC-CXR
DICOMs, IDRiD, JAFFE, CUB-200-2010 with bubbles, ClickMe), and small samples written in those layouts."""
