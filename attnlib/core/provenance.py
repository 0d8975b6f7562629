"""Code provenance: a fingerprint of a module and of every project module it imports.

A run's key includes one (``RunSpec.code``), so a fix to a loss, model, method, trainer or loader
makes new runs instead of silently reusing stale ones. Only syntax counts: each module enters as
``ast.dump`` of its tree without docstrings, so comments, docstrings and formatting leave the
fingerprint alone. Imports are followed statically (``import`` and ``from ... import`` anywhere in a
module, relative ones included) within the module's top-level package; importing ``a.b.c`` also runs
``a`` and ``a.b``, so those packages count too. Third-party code is not covered (its versions are in
each run's ``spec.json``). Results are cached per process, like the imported code itself.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

#: The folder that holds the ``attnlib`` package.
ROOT = Path(__file__).resolve().parents[2]


@cache
def code_fingerprint(module: str, root: Path = ROOT) -> str:
    """16 hex digits of sha256 over the syntax trees of ``import_closure(module, root)``.

    ModuleNotFoundError when ``module`` has no source file under ``root``.
    """
    return _fingerprint([(m, _source(m, root)) for m in import_closure(module, root)])


@cache
def package_fingerprint(package: str = "attnlib", root: Path = ROOT) -> str:
    """Like ``code_fingerprint`` over every module of ``package`` (all ``.py`` files in its folder)."""
    folder = root.joinpath(*package.split("."))
    modules = []
    for file in folder.rglob("*.py"):
        parts = file.relative_to(root).with_suffix("").parts
        modules.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), file))
    if not modules:
        raise ModuleNotFoundError(f"no package {package!r} under {root}")
    return _fingerprint(sorted(modules))


@cache
def import_closure(module: str, root: Path = ROOT) -> tuple[str, ...]:
    """``module`` and every module of its top-level package it imports, directly or not, sorted."""
    _source(module, root)
    top = module.split(".")[0]
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += _ancestors(name)
        file = module_file(name, root)
        if file is not None:
            todo += [m for m in _imports(name, file) if m.split(".")[0] == top]
    return tuple(sorted(m for m in seen if module_file(m, root) is not None))


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """``<root>/a/b/__init__.py`` or ``<root>/a/b.py`` for module ``a.b``; None when neither exists."""
    base = root.joinpath(*module.split("."))
    for file in (base / "__init__.py", base.with_name(base.name + ".py")):
        if file.is_file():
            return file
    return None


def _source(module: str, root: Path) -> Path:
    file = module_file(module, root)
    if file is None:
        raise ModuleNotFoundError(f"no source of {module!r} under {root}")
    return file


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _imports(module: str, file: Path) -> set[str]:
    """Every module name ``file`` (module ``module``) may import: the targets of its import statements.

    ``from p import n`` yields ``p`` and ``p.n`` (the caller keeps ``p.n`` only if it is a module).
    """
    package = module if file.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(_tree(file)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


@cache
def _tree(file: Path) -> ast.Module:
    """The parsed module without docstrings (a module's, class's or function's leading string)."""
    tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(getattr(first.value, "value", None), str):
                node.body = node.body[1:]
    return tree


@cache
def _dump(file: Path) -> str:
    return ast.dump(_tree(file))


def _fingerprint(modules: list[tuple[str, Path]]) -> str:
    """16 hex digits of sha256 over (name, syntax tree) of each ``(module, file)``."""
    digest = hashlib.sha256()
    for module, file in modules:
        digest.update(f"{module}\0{_dump(file)}\0".encode())
    return digest.hexdigest()[:16]
