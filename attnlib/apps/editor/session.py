"""The attention-map editor's state, with no display: the sample queue, strokes, undo/redo, save, predictions.

The widget (:mod:`attnlib.apps.editor.widget`) only renders this object and forwards the user's actions to
it, so everything the editor does can be driven and tested without a browser.

An edit is the list of strokes painted on the network's own map M of the current sample; the edited
map is always recomputed from M and that list with :func:`attnlib.data.maps.editing.edit_map` (upsample M to the
image, paint, area-average back to M's grid), so the map the widget shows, the one fed to the network
and the one saved are the same function of the strokes, and a saved record replays exactly. Undo pops
the last stroke, redo re-applies it, reset clears the list (redo brings the strokes back). Edits of
every visited sample are kept in memory until saved; ``save`` writes one sample atomically to the
:class:`~attnlib.data.maps.edited_maps.EditedMapStore` (source "editor", the strokes, who, when, which run and
checkpoint), so a kernel restart loses at most the unsaved strokes of the samples not yet saved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from attnlib.data.arrays import ArrayDataset
from attnlib.data.maps.edited_maps import EditedMapStore, Provenance
from attnlib.data.maps.editing import Stroke, edit_map, upsample
from attnlib.methods.abn import table1_errors
from attnlib.models.abn import ABNet


class EditorSession:
    """Edit the attention maps of ``ids`` (in that order) of ``dataset`` against ``model``.

    Maps are saved to ``store`` under ``folder``; ``model_key`` / ``checkpoint`` name the run and
    weights the maps are edited against, ``editor`` the person (all recorded with every save).
    """

    def __init__(
        self,
        model: ABNet,
        dataset: ArrayDataset,
        store: EditedMapStore,
        folder: str,
        ids: Sequence[str] | None = None,
        *,
        model_key: str | None = None,
        checkpoint: str | None = None,
        editor: str | None = None,
        device: str | torch.device | None = None,
        top_k: int = 3,
    ) -> None:
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.model = model.to(self.device).eval()
        self.dataset = dataset
        self.store = store
        self.folder = folder
        self.model_key, self.checkpoint, self.editor = model_key, checkpoint, editor
        self.top_k = min(int(top_k), len(dataset.label_names))
        self._position = {sample_id: i for i, sample_id in enumerate(dataset.ids)}
        self.ids = list(dataset.ids if ids is None else ids)
        unknown = [i for i in self.ids if i not in self._position]
        if unknown:
            raise ValueError(
                f"sample ids not in the dataset: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}"
            )
        if not self.ids:
            raise ValueError("no samples to edit")
        self._network_maps: dict[str, np.ndarray] = {}
        self._strokes: dict[str, list[Stroke]] = {}
        self._redo: dict[str, list[Stroke]] = {}
        self._saved: dict[str, tuple[Stroke, ...]] = {}
        self.notice = ""
        self.index = 0
        self.open(0)

    # ------------------------------------------------------------------------------- the current sample

    @property
    def sample_id(self) -> str:
        """Id of the sample being edited."""
        return self.ids[self.index]

    @property
    def image(self) -> torch.Tensor:
        """The current image (C x H x W, as the network sees it)."""
        return self.dataset.images[self._position[self.sample_id]]

    @property
    def label(self) -> int:
        """The current sample's true class index."""
        return int(self.dataset.labels[self._position[self.sample_id]])

    @property
    def label_name(self) -> str:
        """The current sample's true class name."""
        return self.dataset.label_names[self.label]

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the images; stroke coordinates refer to it."""
        return tuple(self.dataset.images.shape[2:])  # type: ignore[return-value]

    @property
    def network_map(self) -> np.ndarray:
        """The network's own attention map M of the current sample (grid h x w)."""
        return self._network_maps[self.sample_id]

    @property
    def grid_size(self) -> tuple[int, int]:
        """(h, w) of the attention map."""
        return tuple(self.network_map.shape)  # type: ignore[return-value]

    @property
    def strokes(self) -> tuple[Stroke, ...]:
        """The current sample's strokes, in the order painted."""
        return tuple(self._strokes[self.sample_id])

    @property
    def edited_map(self) -> np.ndarray:
        """M edited by the current strokes (grid h x w, float32): what the network is fed and what is saved."""
        if not self.strokes:
            return self.network_map.copy()
        return edit_map(self.network_map, self.image_size, self.strokes)[0]

    @property
    def display_map(self) -> np.ndarray:
        """The edited map upsampled to the image (bilinear), as overlaid on it."""
        return upsample(self.edited_map, self.image_size)

    @property
    def can_undo(self) -> bool:
        return bool(self._strokes[self.sample_id])

    @property
    def can_redo(self) -> bool:
        return bool(self._redo[self.sample_id])

    @property
    def saved(self) -> bool:
        """Whether the current sample has a map in the store."""
        return self.sample_id in self._saved

    @property
    def dirty(self) -> bool:
        """Whether the current strokes differ from the saved ones (no saved map: any stroke)."""
        return self.strokes != self._saved.get(self.sample_id, ())

    # --------------------------------------------------------------------------------------- navigation

    def open(self, which: int | str) -> None:
        """Make sample ``which`` (a position in ``ids`` or a sample id) current; a saved edit is reloaded."""
        if isinstance(which, str):
            if which not in self.ids:
                raise ValueError(f"sample {which!r} is not in this session's queue")
            which = self.ids.index(which)
        if not 0 <= which < len(self.ids):
            raise IndexError(f"sample position {which} outside 0..{len(self.ids) - 1}")
        self.index = int(which)
        sample_id = self.sample_id
        self.notice = ""
        if sample_id not in self._network_maps:
            self._network_maps[sample_id] = self._network_map(self.image)
        if sample_id not in self._strokes:
            self._strokes[sample_id], self._redo[sample_id] = [], []
            if sample_id in self.store.ids(self.folder):
                self._reload(sample_id)

    def next(self) -> None:
        """The next sample of the queue (stays on the last)."""
        self.open(min(self.index + 1, len(self.ids) - 1))

    def previous(self) -> None:
        """The previous sample of the queue (stays on the first)."""
        self.open(max(self.index - 1, 0))

    # ------------------------------------------------------------------------------------------ editing

    def paint(self, stroke: Stroke | Mapping[str, Any]) -> None:
        """Add a stroke (a :class:`Stroke` or its ``to_dict`` form); ValueError when it leaves the image."""
        stroke = stroke if isinstance(stroke, Stroke) else Stroke.from_dict(stroke)
        stroke.check_inside(self.image_size)
        self._strokes[self.sample_id].append(stroke)
        self._redo[self.sample_id].clear()

    def undo(self) -> bool:
        """Remove the last stroke; False when there is none."""
        if not self.can_undo:
            return False
        self._redo[self.sample_id].append(self._strokes[self.sample_id].pop())
        return True

    def redo(self) -> bool:
        """Re-apply the last undone stroke; False when there is none."""
        if not self.can_redo:
            return False
        self._strokes[self.sample_id].append(self._redo[self.sample_id].pop())
        return True

    def reset(self) -> None:
        """Back to the network's map; redo brings the strokes back one by one."""
        strokes = self._strokes[self.sample_id]
        self._redo[self.sample_id].extend(reversed(strokes))
        strokes.clear()

    def save(self) -> Path:
        """Write the current edited map and its provenance to the store (atomic); returns the record path."""
        provenance = Provenance(
            "editor",
            self.grid_size,
            self.image_size,
            self.strokes,
            self.editor,
            self.model_key,
            self.checkpoint,
        )
        path = self.store.save(self.folder, self.sample_id, self.edited_map, provenance)
        self._saved[self.sample_id] = self.strokes
        return path

    # -------------------------------------------------------------------------------------- predictions

    @torch.no_grad()
    def predictions(self, edited: bool = True, k: int | None = None) -> list[tuple[str, float]]:
        """Top-k (default ``top_k``; class name, probability) of the perception branch, fed the edited
        map (``edited``) or M."""
        x = self.image[None].to(self.device)
        attention = torch.from_numpy(self.edited_map)[None, None].to(self.device) if edited else None
        probs = self.model(x, attention_map=attention).perception_logits.softmax(1)[0].cpu()
        top = probs.topk(k or self.top_k)
        names = self.dataset.label_names
        return [(names[int(i)], float(p)) for p, i in zip(top.values, top.indices, strict=True)]

    def table1(self) -> dict[str, float]:
        """The paper's Table 1 on this folder's saved edits: top-1 error of those samples with M (before)
        and with their edited maps fed in its place (after), no training; ``n`` = 0 before any save."""
        saved = {k: v for k, v in self.store.load_all(self.folder).items() if k in self._position}
        if not saved:
            return {"n": 0, "error_before": float("nan"), "error_after": float("nan")}
        index = [self._position[k] for k in saved]
        maps = torch.from_numpy(np.stack([m.map for m in saved.values()]))[:, None]
        labels = torch.as_tensor(self.dataset.labels[index])
        return table1_errors(self.model, self.dataset.images[index], labels, maps, self.device)

    def saved_edits(self) -> pd.DataFrame:
        """One row per saved edit of this session's samples: true class, strokes, editor, time, and the
        top-1 prediction with M and with the edited map."""
        current, rows = self.index, []
        try:
            for sample_id, record in self.store.load_all(self.folder).items():
                if sample_id not in self.ids:
                    continue
                self.open(sample_id)
                with_m, with_edit = self.predictions(edited=False)[0], self.predictions()[0]
                rows.append(
                    {
                        "id": sample_id,
                        "true": self.label_name,
                        "strokes": len(record.provenance.strokes),
                        "editor": record.provenance.editor,
                        "saved_utc": record.provenance.created_utc,
                        "pred_with_M": with_m[0],
                        "pred_with_edit": with_edit[0],
                        "p_true_with_M": self._probability(edited=False),
                        "p_true_with_edit": self._probability(edited=True),
                    }
                )
        finally:
            self.open(current)
        return pd.DataFrame(rows)

    def overview(self, n: int = 4) -> dict[str, Any]:
        """Images, [M, edited map] per image and titles of the first ``n`` saved edits, for ``plots.map_grid``."""
        current, out = self.index, {"images": [], "maps": [], "row_titles": []}
        try:
            for sample_id in [i for i in self.store.ids(self.folder) if i in self.ids][:n]:
                self.open(sample_id)
                saved = self.store.load(self.folder, sample_id).map
                out["images"].append(self.image.permute(1, 2, 0).numpy())
                out["maps"].append([self.network_map, saved])
                out["row_titles"].append(
                    f"{sample_id}: true {self.label_name}\nwith M {self.predictions(False)[0][0]}, "
                    f"edited {self.predictions()[0][0]}"
                )
        finally:
            self.open(current)
        return {**out, "col_titles": ["network's map (M)", "saved edit (M')"]}

    # ------------------------------------------------------------------------------------------ private

    def _probability(self, edited: bool) -> float:
        """Probability of the true class with the edited map (``edited``) or M."""
        return dict(self.predictions(edited, k=len(self.dataset.label_names)))[self.label_name]

    @torch.no_grad()
    def _network_map(self, image: torch.Tensor) -> np.ndarray:
        return self.model(image[None].to(self.device)).predicted_map[0, 0].float().cpu().numpy()

    def _reload(self, sample_id: str) -> None:
        """Take the saved strokes of ``sample_id``; say so when they no longer give the saved map."""
        record = self.store.load(self.folder, sample_id)
        provenance = record.provenance
        self._saved[sample_id] = tuple(provenance.strokes)
        if provenance.image_size not in (None, self.image_size) or provenance.grid_size != self.grid_size:
            self.notice = (
                f"the saved edit of {sample_id} was painted on a {provenance.image_size} image with a "
                f"{provenance.grid_size} map, this data has {self.image_size} / {self.grid_size}: "
                "starting from the network's map (saving replaces it)"
            )
            return
        self._strokes[sample_id] = list(provenance.strokes)
        if not np.allclose(self.edited_map, record.map, atol=1e-5):
            self.notice = (
                f"the saved edit of {sample_id} was made against {provenance.model_key} "
                f"({provenance.checkpoint}); its strokes are replayed on this model's map"
            )
