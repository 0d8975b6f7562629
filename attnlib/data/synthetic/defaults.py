"""The default data of every notebook: a real root when given, else the profile's synthetic set."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from attnlib.data.real.egd_cxr import EGDCXRPaths
from attnlib.data.synthetic.cxr import SyntheticCXRConfig, generate_synthetic_egd_cxr
from attnlib.data.synthetic.finegrained import FineGrainedConfig, generate_finegrained
from attnlib.data.synthetic.structured import StructuredConfig, generate_structured
from attnlib.core.paths import data_dir
from attnlib.core.profiles import load_profile


def synthetic_egd_cxr_config(profile: str | None = None, **overrides: Any) -> SyntheticCXRConfig:
    """The profile's synthetic EGD-CXR knobs, with ``overrides`` (e.g. ``cue="marker_position"``)."""
    return SyntheticCXRConfig(**{**load_profile(profile)["egd_cxr_synthetic"], **overrides})


def synthetic_egd_cxr(profile: str | None = None, root: Path | None = None, **overrides: Any) -> Path:
    """Folder of the synthetic EGD-CXR set for this profile and these knobs, generated on first use.

    The folder name carries a hash of the configuration, so different knobs never share a folder
    and the same knobs are generated once (deterministically) and then reused.
    """
    config = synthetic_egd_cxr_config(profile, **overrides)
    return generate_synthetic_egd_cxr(_folder(root, "egd-cxr", config.to_dict()), config)


def synthetic_structured_config(profile: str | None = None, **overrides: Any) -> StructuredConfig:
    """The profile's synthetic structured-image knobs (global attention), with ``overrides`` (e.g. ``cue=True``)."""
    return StructuredConfig(**{**load_profile(profile).get("global_attention_synthetic", {}), **overrides})


def synthetic_structured(profile: str | None = None, root: Path | None = None, **overrides: Any) -> Path:
    """Folder of the synthetic structured set for this profile and these knobs, generated on first use."""
    config = synthetic_structured_config(profile, **overrides)
    return generate_structured(_folder(root, "structured", config.to_dict()), config)


def synthetic_finegrained_config(
    profile: str | None = None, section: str = "abn_synthetic", **overrides: Any
) -> FineGrainedConfig:
    """The profile's synthetic fine-grained knobs, with ``overrides``; ``section`` "abn_synthetic" (ABN +
    edited maps) or "gala_synthetic" (the ClickMe-like default of GALA)."""
    return FineGrainedConfig(**{**load_profile(profile).get(section, {}), **overrides})


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
