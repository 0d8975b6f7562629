"""The package's layers: a module never imports a higher layer, and no two modules import each other in a cycle.

Layers, lowest first: core, data, models, losses, methods, evaluation, reporting, engine, papers, apps, cli. Every
``import`` counts, including those inside functions (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import attnlib

PACKAGE = Path(attnlib.__file__).parent
LAYERS = ("core", "data", "models", "losses", "methods", "evaluation", "reporting", "engine", "papers", "apps", "cli")


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The attnlib modules ``path`` imports (``from attnlib.x import y`` counts y when it is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("attnlib.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("attnlib"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if _exists(sub) else node.module)
    return {m for m in found if m != "attnlib"}


def _exists(module: str) -> bool:
    base = PACKAGE.parent.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


GRAPH = {_module(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def test_every_module_sits_in_a_layer():
    assert not [m for m in GRAPH if m != "attnlib" and _layer(m) is None]


def test_no_module_imports_a_higher_layer():
    upward = sorted(f"{m} -> {d}" for m, deps in GRAPH.items() for d in deps
                    if _layer(m) is not None and _layer(d) is not None and _layer(d) > _layer(m))
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(GRAPH.get(module, ())):
            if state.get(dep) == 1:
                cycles.append(" -> ".join([*path[path.index(dep):], dep]) if dep in path else f"{module} -> {dep}")
            elif dep in GRAPH and dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)
