"""The attention-map editor as a Jupyter widget (anywidget): canvas and brush in the browser, state in Python.

The browser side (``editor.js``, a self-contained ES module: no CDN import, nothing fetched at run
time) draws the image, the colour-mapped edited map at an adjustable opacity and the brush trail while
the mouse is down; when a stroke ends it sends the stroke (image coordinates, mode, radius, strength)
to the kernel. :meth:`AttentionEditor.handle` applies it to the :class:`EditorSession` with the shared
edit module and synchronises the new map, overlay and top-k predictions back as traitlets. Painting
therefore never round-trips through the kernel on mouse moves, and everything the widget does to the
data goes through :meth:`handle`, which the tests call directly.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import traitlets
from matplotlib import colormaps
from PIL import Image

from attnlib.apps.editor.session import EditorSession

ACTIONS = ("stroke", "undo", "redo", "reset", "save", "next", "previous")
HEADLESS = (
    "This is the interactive attention-map editor. It renders in JupyterLab 4 (anywidget); where widgets "
    "cannot render (papermill, nbconvert, nbval) only this text shows. The same session is scriptable "
    "from Python: editor.session.paint(...), .save(), .next()."
)


class AttentionEditor(anywidget.AnyWidget):
    """Paint attention in / out of the current sample's map; see the module docstring."""

    _esm = Path(__file__).with_name("editor.js")
    _css = Path(__file__).with_name("editor.css")

    image = traitlets.Unicode("").tag(sync=True)  # PNG data URL of the current image
    overlay = traitlets.Unicode("").tag(sync=True)  # PNG data URL of the colour-mapped edited map
    image_size = traitlets.List(traitlets.Int(), [1, 1]).tag(sync=True)
    grid_size = traitlets.List(traitlets.Int(), [1, 1]).tag(sync=True)
    edited_map = traitlets.List(traitlets.Float(), []).tag(sync=True)  # row-major, grid_size
    sample_id = traitlets.Unicode("").tag(sync=True)
    position = traitlets.Unicode("").tag(sync=True)
    true_label = traitlets.Unicode("").tag(sync=True)
    predictions = traitlets.List(traitlets.Dict(), []).tag(sync=True)  # with the edited map
    network_predictions = traitlets.List(traitlets.Dict(), []).tag(sync=True)  # with M
    n_strokes = traitlets.Int(0).tag(sync=True)
    can_undo = traitlets.Bool(False).tag(sync=True)
    can_redo = traitlets.Bool(False).tag(sync=True)
    saved = traitlets.Bool(False).tag(sync=True)
    dirty = traitlets.Bool(False).tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)
    revision = traitlets.Int(0).tag(sync=True)  # +1 after every handled action
    mode = traitlets.Unicode("add").tag(sync=True)
    radius = traitlets.Float(4.0).tag(sync=True)  # image pixels
    strength = traitlets.Float(1.0).tag(sync=True)
    opacity = traitlets.Float(0.5).tag(sync=True)
    display_size = traitlets.Int(384).tag(sync=True)  # CSS pixels of the canvas' longer side
    colormap = traitlets.Unicode("jet").tag(sync=False)

    def __init__(self, session: EditorSession, **kwargs: Any) -> None:
        if "radius" not in kwargs:
            kwargs["radius"] = max(1.0, round(max(session.image_size) / 12))
        super().__init__(**kwargs)
        self.session = session
        self.on_msg(self._on_msg)
        self._refresh()

    def handle(self, content: Mapping[str, Any]) -> None:
        """Apply one action from the browser: ``{"action": "stroke", "stroke": {...}}``, or ``undo``,
        ``redo``, ``reset``, ``save``, ``next``, ``previous``. A bad action or stroke is reported in
        ``message`` (the kernel keeps running and nothing saved is touched)."""
        action = content.get("action")
        note = ""
        try:
            if action not in ACTIONS:
                raise ValueError(f"unknown editor action {action!r}; expected one of {ACTIONS}")
            if action == "stroke":
                self.session.paint(content.get("stroke") or {})
            elif action == "save":
                path = self.session.save()
                note = f"saved {path.name} ({len(self.session.strokes)} strokes)"
            else:
                getattr(self.session, action)()
        except (ValueError, IndexError, OSError) as exc:
            note = f"error: {exc}"
        self._refresh(note)

    def __repr__(self) -> str:
        session = self.session
        return (
            f"AttentionEditor(sample {session.sample_id!r}, {session.index + 1} of {len(session.ids)}, "
            f"saving to {session.store.root / session.folder})\n{HEADLESS}"
        )

    # ------------------------------------------------------------------------------------------ private

    def _on_msg(self, _widget: Any, content: Mapping[str, Any], _buffers: Any) -> None:
        self.handle(content)

    def _refresh(self, note: str = "") -> None:
        session = self.session
        with self.hold_sync():
            self.image = _png(_display_image(session.image.numpy()))
            self.overlay = _png(colormaps[self.colormap](session.display_map, bytes=True)[..., :3])
            self.image_size = list(session.image_size)
            self.grid_size = list(session.grid_size)
            self.edited_map = [float(v) for v in session.edited_map.ravel()]
            self.sample_id = session.sample_id
            self.position = f"{session.index + 1} / {len(session.ids)}"
            self.true_label = session.label_name
            self.predictions = _top(session.predictions(edited=True))
            self.network_predictions = _top(session.predictions(edited=False))
            self.n_strokes = len(session.strokes)
            self.can_undo, self.can_redo = session.can_undo, session.can_redo
            self.saved, self.dirty = session.saved, session.dirty
            self.message = note or session.notice
            self.revision += 1


def _top(predictions: list[tuple[str, float]]) -> list[dict[str, Any]]:
    return [{"label": label, "probability": round(p, 4)} for label, p in predictions]


def _display_image(image: np.ndarray) -> np.ndarray:
    """C x H x W float (any range) -> H x W (x 3) uint8, stretched to the image's own min..max."""
    array = image[0] if image.shape[0] == 1 else np.moveaxis(image[:3], 0, -1)
    low, high = float(array.min()), float(array.max())
    scaled = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return (scaled * 255).round().astype(np.uint8)


def _png(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
