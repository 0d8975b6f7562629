"""Tests of attnlib.reporting.digest: claims files, the digest's markdown, and the digest heading the summary
of ``attnlib reproduce`` (papermill faked: the fake "kernel" records claims through $ATTNLIB_OUTPUT_DIR)."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import nbformat
import numpy as np
import papermill
import pytest

from attnlib.cli import main as cli_main
from attnlib.reporting.digest import (
    Claim,
    ClaimsFileError,
    digest_markdown,
    format_p,
    load_claims,
    save_claims,
)

PROBE = Path(__file__).parents[1] / "engine" / "notebooks" / "sweep_probe.ipynb"

ANOVA = Claim(
    paper="GG-CAM", claim="GG-CAM raises test AUC over the standard head.", metric="test AUC",
    paper_value="0.866", value=0.8123456, reference=0.79, spread="± 0.012 (std over 5 seeds)", n=5,
    test="one-way ANOVA (statsmodels)", p=0.0312, checkpoint="best validation loss",
    outcome="reproduced: higher, p = 0.031",
)
NO_TEST = Claim(
    paper="GG-CAM", claim="CAMs | overlap the gaze", metric="IoU", paper_value="", value=0.41, reference=None,
    spread="", n=1, test="", p=math.nan, checkpoint="last epoch", outcome="not tested",
)


def test_claims_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    numpy_claim = Claim(**{**ANOVA.__dict__, "value": np.float32(0.5), "n": np.int64(3), "p": np.float64(1e-5)})
    path = save_claims([ANOVA, NO_TEST, numpy_claim], tmp_path / "new")
    assert path == tmp_path / "new" / "claims.json"
    loaded = load_claims(path)
    assert loaded[0] == ANOVA and loaded[2] == Claim(**{**ANOVA.__dict__, "value": 0.5, "n": 3, "p": 1e-5})
    assert math.isnan(loaded[1].p) and loaded[1] == Claim(**{**NO_TEST.__dict__, "p": loaded[1].p})
    assert json.loads(path.read_text())["claims"][1]["p"] is None  # strict JSON: NaN is written as null

    monkeypatch.delenv("ATTNLIB_OUTPUT_DIR", raising=False)
    assert save_claims([ANOVA]) is None and not list(Path.cwd().glob("claims.json"))  # by hand: nothing
    monkeypatch.setenv("ATTNLIB_OUTPUT_DIR", str(tmp_path / "report"))  # what a report pass's kernel has
    assert save_claims([ANOVA]) == tmp_path / "report" / "claims.json"
    assert load_claims(tmp_path / "report" / "claims.json") == [ANOVA]
    with pytest.raises(TypeError, match="Claim.outcome must be text"):
        save_claims([Claim(**{**ANOVA.__dict__, "outcome": None})], tmp_path)


@pytest.mark.parametrize(("p", "text"), [(0.0312, "0.031"), (0.5, "0.50"), (4.2e-5, "4.2e-05"), (1.0, "1.0"),
                                         (0.000999, "0.0010"), (math.nan, "no test")])
def test_p_has_two_significant_digits(p: float, text: str) -> None:
    assert format_p(p) == text


def test_digest_markdown() -> None:
    other = Claim(**{**ANOVA.__dict__, "paper": "ABN", "p": 0.5})
    markdown = digest_markdown([
        ("01_gg_cam.ipynb", "notebooks/01_gg_cam/quick-1234abcd/report_seeds-0-4.ipynb", [ANOVA, NO_TEST, other]),
        ("02 plain.ipynb", "notebooks/02 plain/quick-1/02 plain.ipynb", []),
        ("03_abn.ipynb (failed in this pass: see Runs)", "", "claims not read: /x/claims.json: not JSON"),
    ])
    lines = markdown.splitlines()
    assert lines[0] == "## Results"
    gg_cam = lines.index("### GG-CAM (01_gg_cam.ipynb, [report](notebooks/01_gg_cam/quick-1234abcd/"
                         "report_seeds-0-4.ipynb))")
    assert lines[gg_cam + 2: gg_cam + 6] == [
        "| claim | paper | this run (± spread, n) | test | p | checkpoint | outcome |",
        "|---|---|---|---|---|---|---|",
        ("| GG-CAM raises test AUC over the standard head. (test AUC) | 0.866 | 0.8123 ± 0.012 (std over 5 "
         "seeds), n = 5; baseline 0.79 | one-way ANOVA (statsmodels) | 0.031 | best validation loss | "
         "reproduced: higher, p = 0.031 |"),
        "| CAMs \\| overlap the gaze (IoU) | none | 0.41, n = 1 | none | no test | last epoch | not tested |",
    ]
    abn = lines.index("### ABN (01_gg_cam.ipynb, [report](notebooks/01_gg_cam/quick-1234abcd/"
                      "report_seeds-0-4.ipynb))")  # one table per paper
    assert abn > gg_cam + 6 and "| 0.50 |" in lines[abn + 4]
    assert "### 02 plain.ipynb, [report](notebooks/02%20plain/quick-1/02%20plain.ipynb)\n\nno claims recorded" in (
        markdown)
    assert "### 03_abn.ipynb (failed in this pass: see Runs)\n\nclaims not read: /x/claims.json: not JSON" in (
        markdown)


@pytest.mark.parametrize(
    ("content", "problem"),
    [("{not json", "not JSON"), ("[]", 'expected {"format": 1, "claims": [...]}'),
     ('{"format": 2, "claims": []}', "format 2, this attnlib reads format 1"),
     ('{"format": 1, "claims": [{"paper": "x"}]}', "claim 0: missing claim, metric"),
     ("REPLACE_N", "claim 0: n must be a whole number, got 2.5"),
     ("REPLACE_P", "claim 0: p must be a number or null, got '0.01'"),
     ("REPLACE_EXTRA", "claim 0: unknown seed")],
)
def test_bad_claims_file_names_the_file(tmp_path: Path, content: str, problem: str) -> None:
    good = json.loads(save_claims([ANOVA], tmp_path).read_text())
    replaced = {"REPLACE_N": {"n": 2.5}, "REPLACE_P": {"p": "0.01"}, "REPLACE_EXTRA": {"seed": 1}}
    if content in replaced:
        content = json.dumps({**good, "claims": [{**good["claims"][0], **replaced[content]}]})
    path = tmp_path / "claims.json"
    path.write_text(content)
    with pytest.raises(ClaimsFileError) as error:
        load_claims(path)
    assert str(error.value).startswith(f"{path}: ") and problem in str(error.value)


def _notebook(path: Path, params: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]})]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["attnlib"] = {"sweep": False}
    nbformat.write(nb, path)
    return path


def test_reproduce_heads_the_summary_with_the_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """a_claims records claims in its report pass, b_corrupt writes a broken claims.json, c_once none;
    summary.md shows the claims, names the broken file, and still has every notebook's row."""
    notebooks, root = tmp_path / "notebooks", tmp_path / "runs"
    notebooks.mkdir()
    shutil.copy(PROBE, notebooks / "a_claims.ipynb")
    shutil.copy(PROBE, notebooks / "b_corrupt.ipynb")
    _notebook(notebooks / "c_once.ipynb", "profile = None\nseeds = [0]")
    monkeypatch.delenv("ATTNLIB_OUTPUT_DIR", raising=False)

    def fake_execute(input_path: Path, output_path: Path, **kwargs: object) -> None:
        """The "kernel": what a paper notebook's report cell does, save_claims(claims)."""
        nbformat.write(nbformat.v4.new_notebook(), output_path)
        folder = os.environ.get("ATTNLIB_OUTPUT_DIR")
        if Path(input_path).name == "a_claims.ipynb":
            save_claims([ANOVA, NO_TEST])  # writes only in the report pass
        elif Path(input_path).name == "b_corrupt.ipynb" and folder:
            (Path(folder) / "claims.json").write_text('{"format": 1, "claims": [')

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    argv = ["reproduce", "--notebooks", str(notebooks), "--profile", "smoke", "--seeds", "0-1", "--out", str(root)]
    assert cli_main(argv) == 0
    assert capsys.readouterr().out.strip() == str(root / "summary.md")
    markdown = (root / "summary.md").read_text()
    title, rest = markdown.split("\n## Results\n")
    digest, runs = rest.split("\n## Runs\n")
    runs, timings = runs.split("\n## Where the time went\n")
    assert "| a_claims | 3 |" in timings and "| c_once | 1 |" in timings
    assert title.startswith("# attnlib reproduce: profile smoke, seeds [0, 1]")
    a_folder, b_folder = (next((root / "notebooks" / stem).iterdir()) for stem in ("a_claims", "b_corrupt"))
    report = (a_folder / "report_seeds-0-1.ipynb").relative_to(root)
    assert f"### GG-CAM (a_claims.ipynb, [report]({report}))" in digest
    assert "| one-way ANOVA (statsmodels) | 0.031 | best validation loss |" in digest
    assert "| none | no test | last epoch | not tested |" in digest
    assert f"claims not read: {b_folder / 'claims.json'}: not JSON" in digest
    assert "c_once.ipynb, [report](notebooks/c_once/" in digest and digest.count("no claims recorded") == 1
    assert runs.count("\n| ") == 4 and "| a_claims.ipynb | sweep | ok |" in runs
    assert "| c_once.ipynb | once | ok |" in runs
