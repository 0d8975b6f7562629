"""The shared write-once, atomic folder of the synthetic generators."""

from __future__ import annotations

import json

import pytest

from attnlib.data.synthetic.generated import CONFIG_FILE, generate_folder


def _write(folder):
    (folder / "data.txt").write_text("x")
    return {"items": 1}


def test_written_once_then_reused(tmp_path):
    out = tmp_path / "gen"
    assert generate_folder(out, kind="test data", config={"a": 1}, version="1", write=_write) == out
    saved = json.loads((out / CONFIG_FILE).read_text())
    assert saved == {"config": {"a": 1}, "generator_version": "1", "counts": {"items": 1}}
    calls = []
    generate_folder(out, kind="test data", config={"a": 1}, version="1", write=lambda f: calls.append(f) or {})
    assert calls == []  # same configuration: untouched


def test_other_config_or_version_is_refused(tmp_path):
    out = tmp_path / "gen"
    generate_folder(out, kind="test data", config={"a": 1}, version="1", write=_write)
    with pytest.raises(FileExistsError, match=r"gen: holds a test data dataset .*differs in \['a'\]"):
        generate_folder(out, kind="test data", config={"a": 2}, version="1", write=_write)
    with pytest.raises(FileExistsError, match="generator_version '1' != '2'"):
        generate_folder(out, kind="test data", config={"a": 1}, version="2", write=_write)


def test_failure_leaves_nothing(tmp_path):
    def boom(folder):
        (folder / "half.txt").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        generate_folder(tmp_path / "gen", kind="test data", config={}, version="1", write=boom)
    assert list(tmp_path.iterdir()) == []
