"""The results digest: what each paper claims, next to this run's number, its spread and its test.

A paper notebook's report pass records its claims with :func:`save_claims` (``claims.json`` in the folder
that ``$ATTNLIB_OUTPUT_DIR`` names: ``attnlib reproduce`` and ``attnlib sweep`` set it for the report pass
only, so a notebook run by hand or a seed pass writes nothing). ``attnlib reproduce`` then heads
``summary.md`` with :func:`summary_digest`: per notebook, one table per paper (:func:`digest_markdown`).

``claims.json``: ``{"format": 1, "claims": [{<the fields of Claim>}, ...]}``; a float that is not finite
(a NaN p-value: no test) is written as null.

Standard library only, so a kernel imports it at no cost.
"""

from __future__ import annotations

import json
import math
import operator
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import quote

from attnlib.core.io import atomic_write_json

#: The output folder of a notebook's report pass, in the environment of the kernel that runs it.
OUTPUT_DIR_ENV = "ATTNLIB_OUTPUT_DIR"
#: The claims a report pass records in its output folder (removed before a sweep, so never stale).
CLAIMS_FILE = "claims.json"

FORMAT = 1
COLUMNS = ("claim", "paper", "this run (± spread, n)", "test", "p", "checkpoint", "outcome")
NO_CLAIMS = "no claims recorded"


@dataclass(frozen=True)
class Claim:
    """One claim of a paper, checked against this run.

    ``paper``: the paper's short name ("GG-CAM"); ``claim``: one sentence, what the paper says;
    ``metric``: what is compared ("test AUC"); ``paper_value``: the paper's number as printed there ("" if
    it gives none); ``value``: this run's figure for the method, ``reference``: the baseline's (None
    without one); ``spread``: how ``value`` varies ("± 0.012 (std over 5 seeds)"); ``n``: seeds;
    ``test``: the statistical test ("one-way ANOVA (statsmodels)"); ``p``: its p-value (NaN: no test);
    ``checkpoint``: which weights ("best validation loss"); ``outcome``: the verdict in words ("not
    reproduced: lower, p = 0.03").
    """

    paper: str
    claim: str
    metric: str
    paper_value: str
    value: float
    reference: float | None
    spread: str
    n: int
    test: str
    p: float
    checkpoint: str
    outcome: str


class ClaimsFileError(ValueError):
    """A claims file whose content is not a list of claims; the message names the file."""


_TEXT = tuple(f.name for f in fields(Claim) if f.name not in ("value", "reference", "n", "p"))
_FIELDS = tuple(f.name for f in fields(Claim))


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def _record(claim: Claim) -> dict[str, Any]:
    """``claim`` as JSON-ready values (numbers coerced: numpy scalars welcome); TypeError when it is not
    a Claim or a field has the wrong type."""
    if not isinstance(claim, Claim):
        raise TypeError(f"not a Claim: {claim!r}")
    for name in _TEXT:
        if not isinstance(getattr(claim, name), str):
            raise TypeError(f"Claim.{name} must be text, got {getattr(claim, name)!r}")
    try:
        return {
            **{name: getattr(claim, name) for name in _TEXT},
            "value": _finite_or_none(float(claim.value)),
            "reference": None if claim.reference is None else _finite_or_none(float(claim.reference)),
            "n": operator.index(claim.n),
            "p": _finite_or_none(float(claim.p)),
        }
    except (TypeError, ValueError) as err:
        raise TypeError(f"claim {claim.claim!r}: {err}") from err


def save_claims(claims: Sequence[Claim], folder: str | os.PathLike[str] | None = None) -> Path | None:
    """Write ``claims`` to ``<folder>/claims.json`` (folder created), or with no folder to the folder in
    ``$ATTNLIB_OUTPUT_DIR``; returns the file, or None (writing nothing) when neither is given."""
    if folder is None:
        folder = os.environ.get(OUTPUT_DIR_ENV) or None
        if folder is None:
            return None
    records = [_record(claim) for claim in claims]
    return atomic_write_json(Path(folder) / CLAIMS_FILE, {"format": FORMAT, "claims": records})


def _number(path: Path, index: int, name: str, value: Any, *, optional: bool = False) -> float | None:
    if value is None:
        return None if optional else math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ClaimsFileError(f"{path}: claim {index}: {name} must be a number or null, got {value!r}")
    return float(value)


def load_claims(path: str | os.PathLike[str]) -> list[Claim]:
    """The claims in ``path`` (written by :func:`save_claims`); :class:`ClaimsFileError` naming the file
    and the problem when the content is not claims (OSError when it cannot be read)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ClaimsFileError(f"{path}: not UTF-8 text: {err}") from err
    except json.JSONDecodeError as err:
        raise ClaimsFileError(f"{path}: not JSON: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
        raise ClaimsFileError(f'{path}: expected {{"format": {FORMAT}, "claims": [...]}}')
    if data.get("format") != FORMAT:
        raise ClaimsFileError(f"{path}: format {data.get('format')!r}, this attnlib reads format {FORMAT}")
    claims = []
    for index, record in enumerate(data["claims"]):
        if not isinstance(record, dict):
            raise ClaimsFileError(f"{path}: claim {index} is not an object: {record!r}")
        missing = [name for name in _FIELDS if name not in record]
        unknown = sorted(set(record) - set(_FIELDS))
        if missing or unknown:
            problems = ([f"missing {', '.join(missing)}"] if missing else []) + (
                [f"unknown {', '.join(unknown)}"] if unknown else [])
            raise ClaimsFileError(f"{path}: claim {index}: {'; '.join(problems)}")
        for name in _TEXT:
            if not isinstance(record[name], str):
                raise ClaimsFileError(f"{path}: claim {index}: {name} must be text, got {record[name]!r}")
        n = record["n"]
        if isinstance(n, bool) or not isinstance(n, int):
            raise ClaimsFileError(f"{path}: claim {index}: n must be a whole number, got {n!r}")
        claims.append(Claim(
            **{name: record[name] for name in _TEXT},
            value=_number(path, index, "value", record["value"]),
            reference=_number(path, index, "reference", record["reference"], optional=True),
            n=n,
            p=_number(path, index, "p", record["p"]),
        ))
    return claims


def format_p(p: float) -> str:
    """A p-value with 2 significant digits (``0.031``, ``0.50``, ``4.0e-05``); ``no test`` for NaN."""
    return "no test" if math.isnan(p) else f"{p:#.2g}"


def _figure(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4g}"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _row(claim: Claim) -> str:
    this_run = " ".join(filter(None, [_figure(claim.value), claim.spread])) + f", n = {claim.n}"
    if claim.reference is not None:
        this_run += f"; baseline {_figure(claim.reference)}"
    cells = [f"{claim.claim} ({claim.metric})" if claim.metric else claim.claim, claim.paper_value or "none",
             this_run, claim.test or "none", format_p(claim.p), claim.checkpoint, claim.outcome]
    return "| " + " | ".join(map(_cell, cells)) + " |"


def digest_markdown(sections: Sequence[tuple[str, str, list[Claim] | str]]) -> str:
    """The digest: for each (notebook name, relative link to its report notebook or "", claims) one
    markdown table per paper, in the order the papers first appear; no claims give the line "no claims
    recorded", and text in place of the claims (a problem with the claims file) is shown as it is."""
    intro = ("Each paper's claims against this run (the report notebooks' claims.json); every notebook's "
             "status, files and times follow under Runs.")
    lines = ["## Results", "", intro, ""]
    for notebook, link, claims in sections:
        where = f"{notebook}, [report]({quote(link)})" if link else notebook
        if isinstance(claims, str) or not claims:
            lines += [f"### {where}", "", _cell(claims) if isinstance(claims, str) else NO_CLAIMS, ""]
            continue
        papers = list(dict.fromkeys(claim.paper for claim in claims))
        for paper in papers:
            lines += [f"### {paper} ({where})", "", "| " + " | ".join(COLUMNS) + " |",
                      "|" + "---|" * len(COLUMNS)]
            lines += [_row(claim) for claim in claims if claim.paper == paper]
            lines.append("")
    return "\n".join(lines)


def summary_digest(rows: Sequence[Mapping[str, Any]], root: str | os.PathLike[str]) -> str:
    """The digest of ``attnlib reproduce``'s summary rows (notebook, kind, status, folder, executed,
    report): each notebook's ``claims.json`` from its folder, linked to its report (a run-once notebook: its
    executed notebook) relative to ``root``, the folder of summary.md. A missing, unreadable or corrupt
    claims file is named in the digest with its problem; a failed notebook is marked so in its heading."""
    sections: list[tuple[str, str, list[Claim] | str]] = []
    for row in rows:
        name, folder = str(row.get("notebook", "")), str(row.get("folder") or "")
        if row.get("status") != "ok":
            name += " (failed in this pass: see Runs)"
        target = row.get("report") if row.get("kind") == "sweep" else row.get("executed")
        link = os.path.relpath(Path(folder) / str(target), root) if folder and target else ""
        claims: list[Claim] | str = []
        path = Path(folder) / CLAIMS_FILE
        if folder and path.is_file():
            try:
                claims = load_claims(path)
            except (OSError, ValueError) as err:
                claims = f"claims not read: {err}"
        elif folder and path.exists():
            claims = f"claims not read: {path} is not a file"
        sections.append((name, Path(link).as_posix() if link else "", claims))
    return digest_markdown(sections)
