"""Code fingerprints: static import closure within the package, syntax trees without docstrings."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from attnlib.core.provenance import code_fingerprint, import_closure, module_file, package_fingerprint

FAKE = {
    "fake/__init__.py": "",
    "fake/a.py": (
        '"""Module a."""\n'
        "import os\n"
        "import numpy as np\n"
        "from . import b\n"
        "from .sub import c\n\n\n"
        "def load():\n"
        "    import fake.d as d  # imported inside a function\n\n"
        "    return d\n"
    ),
    "fake/b.py": "X = 1\n",
    "fake/d.py": "from fake.sub.e import Y\n",
    "fake/unused.py": "import fake.a\n",
    "fake/sub/__init__.py": "",
    "fake/sub/c.py": "from ..b import X\nfrom fake.sub import f, missing_name\n",
    "fake/sub/e.py": (
        "class Point:\n"
        '    """A point."""\n\n'
        "    def norm(self):\n"
        '        """Its norm."""\n'
        "        return 1  # one\n\n\n"
        "Y = Point()\n"
    ),
    "fake/sub/f.py": "Z = 3\n",
    "fake/sub/g.py": "Z = 4\n",
}


def make_package(root: Path, changes: dict[str, str] | None = None) -> Path:
    """The fake package under ``root``, with ``changes`` (file -> text) applied."""
    files = {**FAKE, **(changes or {})}
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_import_closure_follows_relative_absolute_nested_and_submodule_imports(tmp_path):
    root = make_package(tmp_path)
    assert import_closure("fake.a", root) == (
        "fake",
        "fake.a",
        "fake.b",
        "fake.d",  # imported inside a function
        "fake.sub",  # parent package of fake.sub.c, whose __init__ runs first
        "fake.sub.c",  # from .sub import c: a submodule
        "fake.sub.e",  # through fake.d
        "fake.sub.f",  # from fake.sub import f: a submodule, missing_name is not one
    )
    assert import_closure("fake.sub.f", root) == ("fake", "fake.sub", "fake.sub.f")
    assert module_file("fake.sub", root) == root / "fake/sub/__init__.py"
    assert (
        module_file("fake.sub.g", root) == root / "fake/sub/g.py" and module_file("fake.nope", root) is None
    )
    with pytest.raises(ModuleNotFoundError, match="fake.nope"):
        code_fingerprint("fake.nope", root)


def test_docstrings_comments_and_formatting_do_not_change_the_fingerprint(tmp_path):
    base = code_fingerprint("fake.a", make_package(tmp_path / "base"))
    assert len(base) == 16 and int(base, 16) >= 0
    reworded = {
        "fake/a.py": FAKE["fake/a.py"].replace('"""Module a."""', '"""Module a, reworded."""'),
        "fake/sub/e.py": (
            '"""A new module docstring."""\n\n'
            "class Point:\n"
            "    def norm(self):\n"
            '        """Its length, in other words."""\n'
            "        # a new comment\n"
            "        return (\n"
            "            1\n"
            "        )\n\n\n"
            "Y = Point()  # reformatted\n"
        ),
    }
    reworded = make_package(tmp_path / "reworded", reworded)
    assert code_fingerprint("fake.a", reworded) == base
    assert package_fingerprint("fake", reworded) == package_fingerprint("fake", tmp_path / "base")


def test_code_changes_in_the_closure_change_the_fingerprint(tmp_path):
    base_root = make_package(tmp_path / "base")
    base = code_fingerprint("fake.a", base_root)
    changed = {
        "imported_twice_removed": {"fake/sub/e.py": FAKE["fake/sub/e.py"].replace("return 1", "return 2")},
        "submodule_by_name": {"fake/sub/f.py": "Z = 30\n"},
        "parent_package": {"fake/sub/__init__.py": "FLAG = True\n"},
        "the_module": {"fake/a.py": FAKE["fake/a.py"] + "\nW = 0\n"},
    }
    for name, changes in changed.items():
        assert code_fingerprint("fake.a", make_package(tmp_path / name, changes)) != base, name
    outside = make_package(
        tmp_path / "outside", {"fake/sub/g.py": "Z = 40\n", "fake/unused.py": "import os\n"}
    )
    assert code_fingerprint("fake.a", outside) == base  # modules fake.a does not import
    assert package_fingerprint("fake", outside) != package_fingerprint("fake", base_root)


def test_fingerprint_is_cached_per_process(tmp_path):
    root = make_package(tmp_path)
    before = code_fingerprint("fake.a", root)
    (root / "fake/b.py").write_text("X = 2\n")  # not re-read: the process runs the code it imported
    assert code_fingerprint("fake.a", root) == before
    shutil.rmtree(root / "fake")
    assert code_fingerprint("fake.a", root) == before


def test_attnlib_study_closures():
    closure = import_closure("attnlib.papers.gg_cam")
    assert {"attnlib", "attnlib.papers", "attnlib.losses.gg_cam", "attnlib.engine.trainer"} <= set(closure)
    assert "attnlib.papers.abn" not in closure and "attnlib.cli" not in closure
    fingerprints = {
        code_fingerprint(f"attnlib.papers.{s}") for s in ("abn", "gala", "gg_cam", "global_attention")
    }
    assert len(fingerprints | {package_fingerprint()}) == 5
