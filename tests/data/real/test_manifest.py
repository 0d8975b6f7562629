"""`attnlib data verify|split|generate` and the manifest checks, on a synthetic copy of the real layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from attnlib.cli import main
from attnlib.data.real.egd_cxr import GAZE_COLUMNS, MASTER_SHEET_COLUMNS, EGDCXRPaths
from attnlib.data.real.egd_cxr_verify import verify_egd_cxr
from attnlib.data.real.manifest import load_manifest
from attnlib.data.synthetic.defaults import synthetic_egd_cxr


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return synthetic_egd_cxr("smoke", root=tmp_path_factory.mktemp("syn"), n_images=6, rows=64, cols=64)


@pytest.fixture
def copy(pristine, tmp_path) -> EGDCXRPaths:
    shutil.copytree(pristine, tmp_path / "ds")
    return EGDCXRPaths.from_root(tmp_path / "ds")


def _errors(paths: EGDCXRPaths, deep: bool = False) -> list[str]:
    return [str(p) for p in verify_egd_cxr(paths, deep=deep) if p.severity == "error"]


def test_manifest_loads_with_the_real_schema():
    manifest = load_manifest("egd-cxr")
    assert manifest["doi"] == "10.13026/qfdz-zr67"
    assert len(manifest["files"]["fixations.csv"]["columns"]) == 37
    assert manifest["files"]["eye_gaze.csv"]["columns"] == manifest["files"]["fixations.csv"]["columns"]
    assert "mediastanum.png" in manifest["files"]["per_image"]["masks"]


def test_manifest_columns_match_the_loader_constants():
    manifest = load_manifest("egd-cxr")
    assert manifest["files"]["fixations.csv"]["columns"] == list(GAZE_COLUMNS)
    sheet = manifest["files"]["master_sheet.csv"]
    assert all(c in MASTER_SHEET_COLUMNS for c in sheet["required_columns"])
    assert sheet["n_columns"] == len(MASTER_SHEET_COLUMNS) == 59


def test_clean_copy_has_only_the_count_warning(copy):
    problems = verify_egd_cxr(copy, deep=True)
    assert [p.severity for p in problems] == ["warning"]
    assert "6 images, the release has 1083" in problems[0].message


def test_every_problem_is_listed_with_its_file(copy):
    sheet = pd.read_csv(copy.master_sheet, dtype=str)
    first, second = sheet["dicom_id"][0], sheet["dicom_id"][1]
    (copy.egd_root / "audio_segmentation_transcripts" / first / "mediastanum.png").unlink()
    (copy.mimic_root / sheet["path"][1]).unlink()
    gaze = pd.read_csv(copy.gaze_table("eye_gaze")).rename(columns={"FPOGD": "FPOG_D"})
    gaze.to_csv(copy.gaze_table("eye_gaze"), index=False)
    errors = _errors(copy)
    assert len(errors) == 3
    assert any(f"{first}/mediastanum.png: mask not found" in e for e in errors)
    assert any(f"{second}.dcm: DICOM of {second} not found" in e for e in errors)
    assert any("eye_gaze.csv: columns differ: missing ['FPOGD'], unexpected ['FPOG_D']" in e for e in errors)


def test_labels_and_missing_gaze(copy):
    sheet = pd.read_csv(copy.master_sheet, dtype={"dicom_id": str})
    sheet.loc[0, ["Normal", "CHF", "pneumonia"]] = [1, 1, 0]
    sheet.to_csv(copy.master_sheet, index=False)
    fix = pd.read_csv(copy.gaze_table("fixations"), dtype={"DICOM_ID": str})
    fix[fix["DICOM_ID"] != sheet["dicom_id"][2]].to_csv(copy.gaze_table("fixations"), index=False)
    errors = _errors(copy)
    assert any(f"{sheet['dicom_id'][0]}: labels are not one-hot" in e for e in errors)
    assert any(f"fixations.csv: {sheet['dicom_id'][2]}: no gaze for this image" in e for e in errors)


def test_deep_check_decodes_every_dicom(copy):
    sheet = pd.read_csv(copy.master_sheet, dtype=str)
    dicom = copy.mimic_root / sheet["path"][0]
    dicom.write_bytes(dicom.read_bytes()[: dicom.stat().st_size // 2])  # truncated pixel data
    assert _errors(copy) == []  # the shallow check only sees that the file exists ...
    notes = [p for p in verify_egd_cxr(copy) if p.severity == "note"]  # ... and says so
    assert [n.message for n in notes] == ["6 DICOMs not decoded; run with --deep to check them"]
    errors = _errors(copy, deep=True)
    assert len(errors) == 1 and str(dicom) in errors[0]
    assert not [p for p in verify_egd_cxr(copy, deep=True) if p.severity == "note"]


def test_cli_verify_ends_with_what_it_did_not_check(copy, capsys):
    assert main(["data", "verify", "egd-cxr", "--root", str(copy.egd_root.parent)]) == 0
    out = capsys.readouterr().out
    assert "NOTE" in out and "6 DICOMs not decoded; run with --deep to check them" in out
    assert out.rstrip().endswith("0 errors, 1 warnings")


def test_cli_verify_exit_codes(copy, capsys):
    assert main(["data", "verify", "egd-cxr", "--root", str(copy.egd_root.parent)]) == 0
    (copy.egd_root / "master_sheet.csv").unlink()
    assert main(["data", "verify", "egd-cxr", "--root", str(copy.egd_root.parent)]) == 1
    assert "master sheet not found" in capsys.readouterr().err


def test_cli_split_writes_a_balanced_file(copy, tmp_path, capsys):
    out = tmp_path / "split.csv"
    assert main(["data", "split", "egd-cxr", "--root", str(copy.egd_root.parent), "--seed", "0", "--out", str(out)]) == 0
    counts = pd.read_csv(out).groupby(["label", "split"]).size().unstack(fill_value=0)
    # 2 images per class: round(0.7 * 2) = 1 train, round(0.8 * 2) - 1 = 1 val, none left for test
    assert counts.to_dict("index") == {k: {"train": 1, "val": 1} for k in (0, 1, 2)}


def test_cli_generate_is_deterministic_and_reused(tmp_path, capsys):
    args = ["data", "generate", "egd-cxr", "--profile", "smoke", "--out", str(tmp_path), "--n-images", "3"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out.split(" (")[0] == first.split(" (")[0]  # same folder, not regenerated
    assert len(list(tmp_path.iterdir())) == 1


def test_cli_generate_structured_with_and_without_cue(tmp_path, capsys):
    import json

    base = ["data", "generate", "structured", "--profile", "smoke", "--out", str(tmp_path), "--n-images", "12"]
    assert main(base) == 0 and main([*base, "--cue", "corner"]) == 0
    configs = sorted(json.loads((d / "synthetic_config.json").read_text())["config"]["cue"] for d in tmp_path.iterdir())
    assert configs == [False, True]
    with pytest.raises(SystemExit, match="does not apply to structured"):
        main([*base, "--cue", "marker_position"])


def test_cli_generate_finegrained(tmp_path, capsys):
    import json

    args = ["data", "generate", "finegrained", "--profile", "smoke", "--out", str(tmp_path), "--evidence-strength", "2"]
    assert main(args) == 0
    (folder,) = tmp_path.iterdir()
    config = json.loads((folder / "synthetic_config.json").read_text())["config"]
    assert config["evidence_strength"] == 2.0 and config["n_images"] == 48  # smoke profile's size, the override
    with pytest.raises(SystemExit, match="does not apply to finegrained"):
        main([*args, "--cue", "corner"])
