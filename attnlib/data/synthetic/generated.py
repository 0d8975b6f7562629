"""Generated datasets on disk: written once, atomically, and reused only for the same configuration.

Shared by the synthetic generators. A generator's output folder holds ``synthetic_config.json``
(its configuration, generator version and counts). It is written into a temporary sibling folder
that is renamed to the target when complete, so a killed generation leaves nothing half-written,
and two processes generating the same data at once both end with one complete folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

CONFIG_FILE = "synthetic_config.json"
_Config = TypeVar("_Config", bound="GeneratorConfig")


class GeneratorConfig:
    """Mixin of the generators' frozen config dataclasses: their JSON form, as saved in :data:`CONFIG_FILE`."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready knobs (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls: type[_Config], data: dict[str, Any]) -> _Config:
        """The config of :meth:`to_dict`'s output; unknown keys raise ``ValueError``."""
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}")
        return cls(**data)


def check_generated(out: Path, kind: str, config: Mapping[str, Any], version: str) -> None:
    """Raise ``FileExistsError`` unless ``out`` holds ``kind`` output of this ``config`` and ``version``."""
    path = out / CONFIG_FILE
    if not path.is_file():
        raise FileExistsError(
            f"{out}: exists but is not a {kind} folder (no {CONFIG_FILE}); delete it or choose another folder"
        )
    saved = json.loads(path.read_text(encoding="utf-8"))
    stored = saved.get("config", {})
    differ = sorted(k for k in set(stored) | set(config) if stored.get(k) != config.get(k))
    if saved.get("generator_version") != version:
        differ.append(f"generator_version {saved.get('generator_version')!r} != {version!r}")
    if differ:
        raise FileExistsError(
            f"{out}: holds a {kind} dataset generated with another configuration "
            f"(differs in {differ}); delete it or choose another folder"
        )


def generate_folder(
    out: Path,
    *,
    kind: str,
    config: Mapping[str, Any],
    version: str,
    write: Callable[[Path], Mapping[str, Any]],
) -> Path:
    """Run ``write(staging)`` (which returns counts) into a temporary folder and rename it to ``out``.

    An existing ``out`` with the same configuration is returned untouched; anything else there
    raises ``FileExistsError`` naming it (an empty folder is replaced). On any error the temporary
    folder is removed.
    """
    out = Path(out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        check_generated(out, kind, config, version)
        log.info("%s: %s already generated with this configuration", out, kind)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        staging.chmod(0o755)
        counts = write(staging)
        record = {"config": dict(config), "generator_version": version, "counts": counts}
        (staging / CONFIG_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(staging, out)
        except OSError:
            if not out.exists():
                raise
            check_generated(out, kind, config, version)  # another process finished the same data first
            shutil.rmtree(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("%s: wrote the %s in %.1f s", out, kind, time.perf_counter() - start)
    return out
