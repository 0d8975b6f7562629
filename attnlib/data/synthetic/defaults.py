"""The default data of every notebook: a real root when given, else the profile's synthetic set.

A profile's synthetic section must set every knob of :data:`KNOBS` (the ones that shape a result: size, evidence,
cues, annotators); the generators' other fields (seeds, split fractions, codec shares) are design constants.
An unknown, missing or mistyped knob is an error naming the profile file and key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from attnlib.core.paths import data_dir
from attnlib.core.profiles import load_profile, profile_name
from attnlib.core.settings import from_mapping
from attnlib.data.real.egd_cxr import EGDCXRPaths
from attnlib.data.synthetic.cxr import SyntheticCXRConfig, generate_synthetic_egd_cxr
from attnlib.data.synthetic.finegrained import FineGrainedConfig, generate_finegrained
from attnlib.data.synthetic.structured import StructuredConfig, generate_structured

#: Per synthetic section of a profile: its generator's config and the knobs every profile must set.
KNOBS: dict[str, tuple[type, tuple[str, ...]]] = {
    "egd_cxr_synthetic": (SyntheticCXRConfig, ("n_images", "rows", "cols", "evidence_strength")),
    "global_attention_synthetic": (StructuredConfig, (
        "n_images", "size", "channels", "n_classes", "evidence_strength", "region_size", "cue", "cue_correlation_train",
    )),
    "abn_synthetic": (FineGrainedConfig, (
        "n_images", "size", "n_classes", "evidence_strength", "part_radius", "distractor_size",
        "distractor_correlation_train", "n_annotators", "bubbles_per_annotator", "annotator_jitter", "annotator_miss",
    )),
}
KNOBS["gala_synthetic"] = KNOBS["abn_synthetic"]


def synthetic_config(section: str, profile: str | None = None, **overrides: Any) -> Any:
    """The generator config of the profile's synthetic ``section`` (checked: :data:`KNOBS`), with ``overrides``."""
    if section not in KNOBS:
        raise ValueError(f"unknown synthetic section {section!r}; choose from {sorted(KNOBS)}")
    cls, knobs = KNOBS[section]
    name = profile_name(profile)
    config = from_mapping(cls, load_profile(name).get(section, {}), f"{name}.yaml: {section}", required=knobs)
    return dataclasses.replace(config, **overrides) if overrides else config


def synthetic_egd_cxr_config(profile: str | None = None, **overrides: Any) -> SyntheticCXRConfig:
    """The profile's synthetic EGD-CXR knobs, with ``overrides`` (e.g. ``cue="marker_position"``)."""
    return synthetic_config("egd_cxr_synthetic", profile, **overrides)


def synthetic_egd_cxr(profile: str | None = None, root: Path | None = None, **overrides: Any) -> Path:
    """Folder of the synthetic EGD-CXR set for this profile and these knobs, generated on first use.

    The folder name carries a hash of the configuration, so different knobs never share a folder
    and the same knobs are generated once (deterministically) and then reused.
    """
    config = synthetic_egd_cxr_config(profile, **overrides)
    return generate_synthetic_egd_cxr(_folder(root, "egd-cxr", config.to_dict()), config)


def synthetic_structured_config(profile: str | None = None, **overrides: Any) -> StructuredConfig:
    """The profile's synthetic structured-image knobs (global attention), with ``overrides`` (e.g. ``cue=True``)."""
    return synthetic_config("global_attention_synthetic", profile, **overrides)


def synthetic_structured(profile: str | None = None, root: Path | None = None, **overrides: Any) -> Path:
    """Folder of the synthetic structured set for this profile and these knobs, generated on first use."""
    config = synthetic_structured_config(profile, **overrides)
    return generate_structured(_folder(root, "structured", config.to_dict()), config)


def synthetic_finegrained_config(
    profile: str | None = None, section: str = "abn_synthetic", **overrides: Any
) -> FineGrainedConfig:
    """The profile's synthetic fine-grained knobs, with ``overrides``; ``section`` "abn_synthetic" (ABN +
    edited maps) or "gala_synthetic" (the ClickMe-like default of GALA)."""
    return synthetic_config(section, profile, **overrides)


def synthetic_finegrained(
    profile: str | None = None, root: Path | None = None, section: str = "abn_synthetic", **overrides: Any
) -> Path:
    """Folder of the synthetic fine-grained set for this profile, section and knobs, generated on first use."""
    config = synthetic_finegrained_config(profile, section, **overrides)
    return generate_finegrained(_folder(root, "finegrained", config.to_dict()), config)


def _folder(root: Path | None, kind: str, config: dict[str, Any]) -> Path:
    """``<root or data_dir()/synthetic>/<kind>-<hash of config>``: one folder per distinct configuration."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    return (root or data_dir() / "synthetic") / f"{kind}-{digest}"


def egd_cxr_paths(
    data_root: str | Path | None = None,
    mimic_root: str | Path | None = None,
    profile: str | None = None,
    **synthetic: Any,
) -> EGDCXRPaths:
    """Real EGD-CXR paths when ``data_root`` is given, otherwise the synthetic default's."""
    if data_root is None:
        if mimic_root is not None:
            raise ValueError("mimic_root was given without data_root")
        return EGDCXRPaths.from_root(synthetic_egd_cxr(profile, **synthetic))
    if synthetic:
        raise ValueError(f"synthetic knobs {sorted(synthetic)} apply only when data_root is None")
    return EGDCXRPaths.from_root(data_root, mimic_root)
