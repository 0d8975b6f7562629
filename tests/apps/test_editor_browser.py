"""End to end in a real browser: JupyterLab on localhost runs notebook 04, a mouse drag edits the map.

Headless Debian Chromium (``make test`` installs the ``chromium`` package when it runs as root), driven by
Playwright for Python through ``executable_path`` (Playwright's own browser download is not used). The
test starts JupyterLab with a temporary root, no token and an isolated attnlib home, runs every cell,
erases attention across the image with the mouse, checks that the top-3 display changed, saves, and
compares the map on disk with the drag's stroke replayed by ``attnlib.data.maps.editing``. The screenshot is kept
at ``$ATTNLIB_ARTIFACTS/attention_editor.png`` (default ``runs/test-artifacts``).

Skipped, with the reason, where Chromium, Playwright or JupyterLab is missing; under ``CI`` it fails instead.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import numpy as np
import pytest
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "04_attention_editor.ipynb"
CHROMIUM_FLAGS = [
    "--no-sandbox",  # root in a container
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # the machine's network is closed: no update or sync requests
    "--disable-component-update",
    "--disable-sync",
]
PARAMETERS = {
    "profile": "smoke",
    "order": "lowest_confidence",
    "limit": 3,
    "editor_name": "browser test",
    "demo_edits": 0,
    "fine_tune_edits": False,
}


def _chromium() -> str | None:
    candidates = [
        os.environ.get("ATTNLIB_CHROMIUM"),
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ]
    return next((c for c in candidates if c and Path(c).is_file()), None)


def _missing() -> str | None:
    if _chromium() is None:
        return "no Chromium (install Debian's `chromium` package, e.g. `make browser` as root, or set ATTNLIB_CHROMIUM)"
    for module, extra in (("playwright", "playwright"), ("jupyterlab", "jupyterlab")):
        if importlib.util.find_spec(module) is None:
            return f"{extra} is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture
def lab(tmp_path, monkeypatch):
    """A JupyterLab server on localhost serving a parameterised copy of notebook 04; yields (url, home)."""
    reason = _missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test: {reason}")
        pytest.skip(reason)
    home, served = tmp_path / "home", tmp_path / "lab"
    served.mkdir()
    notebook = parameterize_notebook(load_notebook_node(str(NOTEBOOK)), PARAMETERS)
    nbformat.write(notebook, served / NOTEBOOK.name)
    lab_settings = {  # no news requests; start the notebook's kernel without the "Select Kernel" dialog
        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        "notebook-extension/tracker": {"autoStartDefaultKernel": True},
    }
    for name, values in lab_settings.items():
        path = tmp_path / "lab-settings" / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = {
        **os.environ,
        "ATTNLIB_HOME": str(home),
        "ATTNLIB_PROFILE": "smoke",
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab-workspaces"),
    }
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path / "jupyterlab.log").open("w")
    command = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}", "--ServerApp.port_retries=0", "--IdentityProvider.token=",
        "--ServerApp.password=", f"--ServerApp.root_dir={served}", "--LabApp.news_url=",
        "--LabApp.extension_manager=readonly", *(["--allow-root"] if os.geteuid() == 0 else []),
    ]  # fmt: skip
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=served)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"JupyterLab did not start:\n{(tmp_path / 'jupyterlab.log').read_text()[-3000:]}"
                    )
                time.sleep(0.5)
        monkeypatch.setenv("ATTNLIB_HOME", str(home))
        yield url, home, tmp_path / "jupyterlab.log"
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_paint_in_jupyterlab_changes_the_prediction_and_saves_the_stroke(lab):
    from playwright.sync_api import sync_playwright

    url, home, log = lab
    artifacts = Path(os.environ.get("ATTNLIB_ARTIFACTS", ROOT / "runs" / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        try:
            page.goto(f"{url}/lab/tree/{NOTEBOOK.name}")
            page.locator(".jp-NotebookPanel").wait_for(timeout=90_000)
            widget = page.locator(".attnlib-editor")
            canvas = widget.locator("canvas.ae-paint")
            _run_all_cells(
                page, canvas, timeout=240
            )  # kernel start, data generation, the smoke ABN's training
            widget.locator(".ae-top3 td").first.wait_for(timeout=30_000)
            widget.scroll_into_view_if_needed()
            before = widget.locator(".ae-top3").inner_text()

            widget.locator(".ae-mode[data-mode=remove]").click()
            widget.locator("input[data-trait=radius]").fill("16")
            box = canvas.bounding_box()
            y = box["y"] + 0.5 * box["height"]
            page.mouse.move(box["x"] + 0.1 * box["width"], y)
            page.mouse.down()
            page.mouse.move(box["x"] + 0.9 * box["width"], y, steps=12)
            started = time.perf_counter()
            _then_synced(page, widget, page.mouse.up)
            latency = time.perf_counter() - started
            after = widget.locator(".ae-top3").inner_text()
            assert after != before, f"top-3 display did not change after the stroke:\n{before}"
            print(f"stroke end -> new top-3 in the browser: {1000 * latency:.0f} ms")
            assert latency < 5, f"the stroke took {latency:.1f} s to come back"
            for action, expected in (("undo", before), ("redo", after)):  # the toolbar, through the kernel
                _then_synced(page, widget, widget.locator(f".ae-button[data-action={action}]").click)
                assert widget.locator(".ae-top3").inner_text() == expected, action

            widget.locator(".ae-button[data-action=save]").click()
            widget.locator(".ae-status[data-state=saved]").wait_for(timeout=30_000)
            page.screenshot(path=str(artifacts / "attention_editor.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(artifacts / "attention_editor_failure.png"), full_page=True)
            print(log.read_text()[-5000:])
            raise
        finally:
            browser.close()

    _check_saved_stroke(home, box)


def _run_all_cells(page, canvas, timeout: float) -> None:
    """Run > Run All Cells once the kernel is idle, then wait for the editor. A kernel dialog is accepted,
    and the command is repeated while no cell has started (the menu item is inert until the notebook's
    session is ready)."""
    dialog = page.locator(".jp-Dialog button.jp-mod-accept")
    started = page.locator(".jp-InputPrompt", has_text=re.compile(r"\[(\*|\d+)\]"))
    page.get_by_text(re.compile(r"\| Idle$")).first.wait_for(timeout=90_000)
    deadline, retry = time.monotonic() + timeout, 0.0
    while not canvas.count():
        if dialog.count():
            dialog.first.click()
        if not started.count() and time.monotonic() > retry:
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
            retry = time.monotonic() + 10
        if time.monotonic() > deadline:
            raise TimeoutError(f"the editor did not appear within {timeout} s")
        page.wait_for_timeout(500)
    canvas.wait_for()


def _then_synced(page, widget, act) -> None:
    """Run ``act`` and wait until the kernel has handled it (the widget's revision changed)."""
    revision = widget.get_attribute("data-revision")
    act()
    page.wait_for_function(
        "rev => document.querySelector('.attnlib-editor').dataset.revision !== rev",
        arg=revision,
        timeout=30_000,
    )


def _check_saved_stroke(home: Path, box: dict[str, float]) -> None:
    """The one saved record: source editor, the drag's stroke, and the map the stroke gives on M."""
    import torch

    from attnlib.data.maps.edited_maps import EditedMapStore
    from attnlib.data.maps.editing import edit_map
    from attnlib.papers import abn

    records = sorted((home / "runs" / "edited_maps").glob("*/*.json"))
    assert len(records) == 1, records
    store = EditedMapStore(records[0].parent.parent)
    saved = store.load(records[0].parent.name, records[0].stem)
    provenance = saved.provenance
    assert provenance.source == "editor" and provenance.editor == "browser test"
    (stroke,) = provenance.strokes
    height, width = provenance.image_size
    assert stroke.mode == "remove" and stroke.radius == 16 and stroke.strength == 1
    start, end = np.array(stroke.points[0]), np.array(stroke.points[-1])
    np.testing.assert_allclose(start, [0.5 * height - 0.5, 0.1 * width - 0.5], atol=1.0)
    np.testing.assert_allclose(end, [0.5 * height - 0.5, 0.9 * width - 0.5], atol=1.0)

    study = abn.ABNStudy.create("smoke", None, "cpu")
    base = study.base(0)  # the kernel's run, loaded
    assert provenance.model_key == base.spec.key
    train, _ = study.data.replicate(0)
    model = study.network(base)
    image = train.images[train.ids.index(records[0].stem)]
    with torch.no_grad():
        network_map = model(image[None]).predicted_map[0, 0].numpy()
    expected = edit_map(network_map, (height, width), [stroke])[0]
    np.testing.assert_allclose(saved.map, expected, atol=1e-5)
    assert not np.allclose(saved.map, network_map, atol=1e-3)  # the stroke did change the map
