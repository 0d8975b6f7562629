"""Fixtures shared by the structured-image tests: the synthetic structured set with and without evidence."""

from __future__ import annotations

import dataclasses

import pytest

from attnlib.data.synthetic.structured import StructuredConfig, StructuredDataset, generate_structured


@pytest.fixture(scope="module")
def structured_pair(tmp_path_factory):
    """The same synthetic structured set with and without evidence (identical outside the region)."""
    base = tmp_path_factory.mktemp("structured")
    config = StructuredConfig(n_images=150, size=32, region_size=8, evidence_strength=4.0)  # as in the profiles
    with_evidence = generate_structured(base / "evidence", config, progress=False)
    flat = dataclasses.replace(config, evidence_strength=0.0)
    without = generate_structured(base / "none", flat, progress=False)
    return StructuredDataset(with_evidence, "train"), StructuredDataset(without, "train")
