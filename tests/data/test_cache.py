"""Tests for attnlib.data.cache.ArrayCache."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from attnlib.data.cache import ArrayCache


class Counting:
    """A compute function that records how often it ran."""

    def __init__(self, value: np.ndarray) -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> np.ndarray:
        self.calls += 1
        return self.value


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "image.bin"
    path.write_bytes(b"original contents")
    return path


@pytest.fixture
def cache(tmp_path: Path) -> ArrayCache:
    return ArrayCache(tmp_path / "cache")


def test_miss_then_hit(cache: ArrayCache, source: Path) -> None:
    value = np.arange(12, dtype=np.float32).reshape(3, 4)
    fn = Counting(value)
    first = cache.get_or_compute(source, {"scale": 0.5}, fn)
    second = cache.get_or_compute(source, {"scale": 0.5}, fn)
    assert fn.calls == 1 and (cache.misses, cache.hits) == (1, 1)
    np.testing.assert_array_equal(first, value)
    np.testing.assert_array_equal(second, value)
    assert second.dtype == np.float32 and second.shape == (3, 4)


def test_entry_layout(cache: ArrayCache, source: Path) -> None:
    cache.get_or_compute(source, {}, Counting(np.zeros(2)))
    key = cache.key(source, {})
    assert len(key) == 64 and all(c in "0123456789abcdef" for c in key)
    entry = cache.root / key[:2] / f"{key}.npy"
    assert cache.entry_path(key) == entry and entry.is_file()
    assert sorted(p for p in cache.root.rglob("*") if p.is_file()) == [entry]


def test_key_depends_on_params_not_their_order(cache: ArrayCache, source: Path) -> None:
    base = cache.key(source, {"scale": 0.5, "voi": True})
    assert cache.key(source, {"voi": True, "scale": 0.5}) == base
    assert cache.key(source, {"scale": 0.25, "voi": True}) != base
    assert cache.key(source, {"scale": 0.5, "voi": False}) != base
    assert cache.key(source, {"scale": 0.5}) != base


def test_key_depends_on_file_path_size_and_mtime(cache: ArrayCache, source: Path, tmp_path: Path) -> None:
    base = cache.key(source, {})
    other = tmp_path / "other.bin"
    other.write_bytes(source.read_bytes())
    os.utime(other, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns))
    assert cache.key(other, {}) != base

    stat = source.stat()
    source.write_bytes(b"modified contents")  # same size
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    touched = cache.key(source, {})
    assert touched != base

    source.write_bytes(b"longer modified contents")
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # same mtime, new size
    assert cache.key(source, {}) not in (base, touched)


def test_rewritten_file_is_recomputed(cache: ArrayCache, source: Path) -> None:
    cache.get_or_compute(source, {}, Counting(np.zeros(3)))
    source.write_bytes(b"new contents, new size")
    fn = Counting(np.ones(3))
    np.testing.assert_array_equal(cache.get_or_compute(source, {}, fn), np.ones(3))
    assert fn.calls == 1 and cache.misses == 2


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_entry_is_recomputed_and_overwritten(
    cache: ArrayCache, source: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    value = np.arange(100, dtype=np.float64)
    cache.get_or_compute(source, {}, Counting(value))
    entry = cache.entry_path(cache.key(source, {}))
    good = entry.read_bytes()
    damaged = {"garbage": b"not an array" * 10, "truncated": good[: len(good) // 2], "empty": b""}
    entry.write_bytes(damaged[damage])
    fn = Counting(value)
    with caplog.at_level(logging.WARNING, logger="attnlib.data.cache"):
        out = cache.get_or_compute(source, {}, fn)
    assert fn.calls == 1
    np.testing.assert_array_equal(out, value)
    assert "unreadable" in caplog.text and str(entry) in caplog.text
    np.testing.assert_array_equal(np.load(entry), value)  # overwritten with a good entry
    cache.get_or_compute(source, {}, fn)
    assert fn.calls == 1 and cache.hits == 1  # the repaired entry is now served


def test_write_failure_is_logged_not_fatal(
    cache: ArrayCache, source: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with caplog.at_level(logging.WARNING, logger="attnlib.data.cache"):
        out = cache.get_or_compute(source, {}, Counting(np.ones(4)))
    np.testing.assert_array_equal(out, np.ones(4))
    assert "could not store cache entry" in caplog.text
    assert not [p for p in cache.root.rglob("*") if p.is_file()]  # no entry, no temporary file
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="attnlib.data.cache"):  # a read-only cache: said once
        for k in range(5):
            ArrayCache(cache.root).get_or_compute(source, {"k": k}, Counting(np.ones(4)))
    assert "could not store cache entry" not in caplog.text


def test_failing_compute_leaves_nothing(cache: ArrayCache, source: Path) -> None:
    def fail() -> np.ndarray:
        raise RuntimeError("decoder exploded")

    with pytest.raises(RuntimeError, match="decoder exploded"):
        cache.get_or_compute(source, {}, fail)
    assert not cache.root.exists() or not [p for p in cache.root.rglob("*") if p.is_file()]


def test_concurrent_writers_leave_one_complete_entry(cache: ArrayCache, source: Path) -> None:
    value = np.random.default_rng(0).random((64, 64))
    barrier = threading.Barrier(6)
    results: list[np.ndarray] = []

    def worker() -> None:
        own = ArrayCache(cache.root)
        barrier.wait()
        results.append(own.get_or_compute(source, {"k": 1}, lambda: value))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 6 and all(np.array_equal(r, value) for r in results)
    files = [p for p in cache.root.rglob("*") if p.is_file()]
    assert files == [cache.entry_path(cache.key(source, {"k": 1}))]
    np.testing.assert_array_equal(np.load(files[0]), value)


def test_params_must_be_json(cache: ArrayCache, source: Path) -> None:
    with pytest.raises(TypeError, match="JSON-serialisable"):
        cache.key(source, {"bad": object()})


def test_missing_source_raises(cache: ArrayCache, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        cache.get_or_compute(tmp_path / "absent.bin", {}, Counting(np.zeros(1)))


def test_default_root_follows_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTNLIB_CACHE_DIR", str(tmp_path / "somewhere"))
    assert ArrayCache().root == (tmp_path / "somewhere").resolve() / "arrays"
