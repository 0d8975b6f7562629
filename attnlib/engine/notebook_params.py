"""What a notebook execution is given: its parameters, its seeds, its output folder.

A notebook's cell tagged ``parameters`` assigns the names it takes (read with :mod:`ast` by
:func:`declared_parameters`: papermill's own reader fails on lines with trailing comments). Command-line
values are read as YAML (:func:`parse_parameter`), seeds as ``0-4`` / ``0,2,5`` (:func:`parse_seeds`).
Executions with the same parameters (``seeds`` aside) share the folder :func:`notebook_out_dir` names.

The report pass's kernel finds that folder in ``$ATTNLIB_OUTPUT_DIR`` and may write its claims there
(:func:`attnlib.reporting.digest.save_claims`).

Only the standard library is imported at module level (``yaml``, ``nbformat`` and IPython where they are
used): the command line imports this module to read ``--seeds`` and must stay fast.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnlib import UsageError
from attnlib.core.paths import runs_dir

DEFAULT_SEEDS = "0-4"
#: Parameters the sweep sets itself (given with ``--profile`` and ``--seeds``).
IMPLICIT = ("profile", "seeds")

_SEED_PART = re.compile(r"(\d+)(?:-(\d+))?")
_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


@dataclass(frozen=True)
class DeclaredParameters:
    """What a notebook's ``parameters`` cell assigns: the names in order, and the literal defaults."""

    names: tuple[str, ...]
    defaults: Mapping[str, Any]

    def is_default(self, name: str, value: Any) -> bool:
        """Whether ``value`` is ``name``'s literal default (compared as JSON: ``1`` is not ``True``)."""
        return name in self.defaults and canonical(self.defaults[name]) == canonical(value)


def parse_seeds(text: str) -> list[int]:
    """Seeds from ``"0-4"``, ``"0,2,5"``, ``"3"`` or mixes like ``"0-2,7"`` (order kept, repeats dropped)."""
    seeds: list[int] = []
    for part in text.split(","):
        match = _SEED_PART.fullmatch(part.strip())
        if match is None:
            raise ValueError(f"seeds {text!r}: {part.strip()!r} is not N or N-M")
        low = int(match[1])
        high = int(match[2]) if match[2] is not None else low
        if high < low:
            raise ValueError(f"seeds {text!r}: range {part.strip()!r} is empty")
        seeds.extend(range(low, high + 1))
    return list(dict.fromkeys(seeds))


def seeds_label(seeds: Sequence[int]) -> str:
    """Seeds for a file name, order kept: ``[0, 1, 2, 3, 4]`` -> ``0-4``, ``[0, 2, 5]`` -> ``0_2_5``,
    ``[0, 1, 2, 7]`` -> ``0-2_7``."""
    parts, start = [], 0
    for end in range(1, len(seeds) + 1):
        if end == len(seeds) or seeds[end] != seeds[end - 1] + 1:
            parts.append(str(seeds[start]) if end - start == 1 else f"{seeds[start]}-{seeds[end - 1]}")
            start = end
    return "_".join(parts)


def parse_parameter(text: str) -> Any:
    """A ``-p NAME VALUE`` value, read as YAML (papermill -y): ``null``, ``true``, ``0.001``, ``[1]``.

    Also ``None`` (papermill's ``-p`` spelling) is None and ``1e-3`` (a string in YAML 1.1) is a float;
    values YAML reads as other types (dates) stay text.
    """
    import yaml

    if text == "None":
        return None
    try:
        value = yaml.safe_load(text)
        json.dumps(value)
    except (yaml.YAMLError, TypeError, ValueError):
        return text
    if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(text):
        return float(text)
    return value


def parse_parameters(pairs: Iterable[Sequence[str]]) -> dict[str, Any]:
    """``-p NAME VALUE`` pairs as a dict, each value read by :func:`parse_parameter`."""
    return {name: parse_parameter(value) for name, value in pairs}


def declared_parameters(notebook: Path) -> DeclaredParameters:
    """The names assigned at the top level of the notebook's first cell tagged ``parameters`` (none
    without one), with the defaults that ``ast.literal_eval`` reads; other values (``os.environ.get(...)``)
    give a name without a default. IPython magics are allowed in the cell."""
    import nbformat
    from IPython.core.inputtransformer2 import TransformerManager

    nb = nbformat.read(Path(notebook), as_version=4)
    cell = next((c for c in nb.cells if "parameters" in c.metadata.get("tags", [])), None)
    if cell is None:
        return DeclaredParameters((), {})
    try:
        tree = ast.parse(TransformerManager().transform_cell(cell.source))
    except SyntaxError as err:
        raise UsageError(f"{notebook}: parameters cell line {err.lineno}: {err.msg}") from err
    names: dict[str, None] = {}
    defaults: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name):
                names[target.id] = None
                try:
                    defaults[target.id] = ast.literal_eval(value)
                except (ValueError, TypeError):
                    defaults.pop(target.id, None)  # a later non-literal assignment wins
            elif isinstance(target, (ast.Tuple, ast.List)):
                names.update((elt.id, None) for elt in target.elts if isinstance(elt, ast.Name))
    return DeclaredParameters(tuple(names), defaults)


def check_parameters(notebook: Path, declared: DeclaredParameters, names: Iterable[str]) -> None:
    """:class:`attnlib.UsageError` when a name is not assigned by ``notebook``'s parameters cell: one line
    with the unknown names, the closest known name and the known names."""
    unknown = [name for name in names if name not in declared.names]
    if unknown:
        raise UsageError(
            f"{Path(notebook).name}: unknown parameter {', '.join(map(repr, unknown))}"
            f"{did_you_mean(unknown[0], declared.names)}; "
            f"its parameters: {', '.join(declared.names) or 'none'}"
        )


def non_default(declared: DeclaredParameters, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """``parameters`` less those given with their literal default (they change nothing), ``profile`` and
    ``seeds`` always kept."""
    return {k: v for k, v in parameters.items() if k in IMPLICIT or not declared.is_default(k, v)}


def notebook_out_dir(
    notebook: Path, profile: str, parameters: Mapping[str, Any], root: Path | None = None
) -> Path:
    """Where a notebook's executions with ``parameters`` go: ``<root or runs_dir()>/notebooks/<stem>/
    <profile>-<hash>``, the hash (8 hex digits) over ``parameters`` without ``seeds``."""
    digest = hashlib.sha256(canonical(without_seeds(parameters)).encode()).hexdigest()[:8]
    root = root if root is not None else runs_dir()
    return root / "notebooks" / Path(notebook).stem / f"{profile}-{digest}"


def is_sweep_notebook(notebook: Path) -> bool:
    """Whether the notebook declares ``metadata["attnlib"]["sweep"]`` true (it trains one run per seed)."""
    import nbformat

    nb = nbformat.read(Path(notebook), as_version=4)
    return bool(nb.metadata.get("attnlib", {}).get("sweep", False))


def notebook_sha256(notebook: Path) -> str:
    """SHA-256 of the notebook file's bytes."""
    return hashlib.sha256(Path(notebook).read_bytes()).hexdigest()


def canonical(value: Any) -> str:
    """``value`` as key-sorted JSON, for comparisons and hashes."""
    return json.dumps(value, sort_keys=True, default=str)


def jsonable(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as the notebook and the done marker see them (paths as text, tuples as lists)."""
    return json.loads(json.dumps(dict(parameters), default=str))


def without_seeds(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """``parameters`` less ``seeds``."""
    return {name: value for name, value in parameters.items() if name != "seeds"}


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or nothing."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
