"""An editing session on a replicate of the ABN study (notebook 04): its trained ABN, its training images in
the order they are edited, and the folder the study fine-tunes on with ``human_edits=True``."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from attnlib.apps.editor.session import EditorSession
from attnlib.methods.abn import select_samples
from attnlib.papers.abn import ABNStudy, checkpoint_words


def edit_queue(predictions: pd.DataFrame, order: str | Sequence[str], limit: int | None = None) -> list[str]:
    """Sample ids to edit, from a network's training predictions (``Trainer.predict``'s frame).

    ``order``: "misclassified" (the wrong predictions first, then the others least confident first),
    "lowest_confidence" (all, least confident in the true class first), or a list of sample ids;
    ``limit`` keeps the first that many.
    """
    if not isinstance(order, str):
        return [str(i) for i in order][:limit]
    ids = select_samples(predictions, order)  # type: ignore[arg-type]
    if order == "misclassified":
        wrong = set(ids)
        ids += [i for i in select_samples(predictions, "lowest_confidence") if i not in wrong]
    return ids[:limit]


def study_session(
    study: ABNStudy,
    replicate: int,
    order: str | Sequence[str] = "misclassified",
    limit: int | None = None,
    editor: str | None = None,
) -> EditorSession:
    """An editing session on ``replicate``'s training images (:func:`edit_queue` of its ABN's training
    predictions) against its ABN (trained, or loaded when stored), saving to the study's
    :meth:`~attnlib.papers.abn.ABNStudy.human_edits_folder`; ``editor`` names the person."""
    base = study.base(replicate)
    ids = edit_queue(base.predictions["train"], order, limit)
    if not ids:
        raise ValueError(
            f"replicate {replicate}: the order {order!r} selects no training image (an empty list or limit 0)"
        )
    train, _ = study.data.replicate(replicate)
    return EditorSession(
        study.network(base),  # its own copy: the session keeps it on its device
        train,
        study.maps_store,
        study.human_edits_folder(replicate),
        ids,
        model_key=base.spec.key,
        checkpoint=checkpoint_words(base),
        editor=editor,
        device=study.context.device,
    )
