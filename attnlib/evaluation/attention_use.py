"""Does a trained network use what a human map points at? Per-cell scores of the benchmark's test loaders.

Over a loader of the synthetic benchmark (items with ``img``, ``lab``, ``evidence``, ``clean_map``, ``cue``):
how often the network follows the spurious cue, how much of its input-gradient saliency falls in the evidence
region (against the region's area, the chance level), and how well the saliency ranks pixels like the clean
human map (GALA's alignment, methods.md 5, as a fraction of the inter-rater ceiling).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from attnlib.evaluation.metrics import spearman_per_image
from attnlib.methods.base import Method

#: The executor's evaluator signature (attnlib.engine.executor.Evaluator, a higher layer).
Evaluator = Callable[[Method, DataLoader, torch.device], dict[str, float]]


def input_gradient_saliency(method: Method, batch: Mapping[str, Any]) -> Tensor:
    """|d logit_lab / d img| summed over channels (B x H x W) for ``batch`` on the method's device.

    One backward pass for the whole batch: right when each image's logits depend on that image alone (eval
    mode; batch-norm in training mode mixes the batch).
    """
    return _saliency_and_logits(method, batch)[0]


def attention_use_evaluator(ceiling: float | None) -> Evaluator:
    """An evaluator (the executor's signature) of the attention-use scores, in one pass over the loader.

    Runs ``method`` in eval mode on ``device`` (full precision) and returns:
    ``cue_following`` (among images with a cue, ``cue >= 0``, that names another class than ``lab``: the share
    predicted as the cue's class; NaN when there is none), ``evidence_mass`` (per image, the share of the
    :func:`input_gradient_saliency` inside ``evidence``, averaged over the images with any saliency),
    ``evidence_area`` (the mean share of the image that ``evidence`` covers: evidence_mass at chance),
    ``alignment`` (the mean per-image Spearman rho between the saliency and ``clean_map``, images where it is
    undefined, e.g. a blank map, left out) and ``alignment_fraction`` (alignment / ``ceiling``, the clean maps'
    inter-rater reliability; NaN when ``ceiling`` is None).
    """
    if ceiling is not None and not ceiling > 0:
        raise ValueError(f"the inter-rater ceiling must be positive, got {ceiling}")

    def evaluate(method: Method, loader: DataLoader, device: torch.device) -> dict[str, float]:
        method.to(device)
        method.eval()
        followed, cued, masses, areas, rhos = 0, 0, [], [], []
        for batch in loader:
            batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
            saliency, logits = _saliency_and_logits(method, batch)
            lab, cue = batch["lab"], batch["cue"]
            other_cue = (cue >= 0) & (cue != lab)
            followed += int((logits.argmax(dim=1) == cue)[other_cue].sum())
            cued += int(other_cue.sum())
            evidence = batch["evidence"][:, 0] > 0.5
            total = saliency.sum(dim=(1, 2))
            inside = (saliency * evidence).sum(dim=(1, 2))
            masses.append((inside[total > 0] / total[total > 0]).double().cpu().numpy())
            areas.append(evidence.double().mean(dim=(1, 2)).cpu().numpy())
            rhos.append(spearman_per_image(saliency.double().cpu().numpy(),
                                           batch["clean_map"][:, 0].double().cpu().numpy()))
        alignment = _mean(np.concatenate([np.zeros(0), *rhos]))
        return {
            "cue_following": followed / cued if cued else math.nan,
            "evidence_mass": _mean(np.concatenate([np.zeros(0), *masses])),
            "evidence_area": _mean(np.concatenate([np.zeros(0), *areas])),
            "alignment": alignment,
            "alignment_fraction": alignment / ceiling if ceiling is not None else math.nan,
        }

    return evaluate


def _saliency_and_logits(method: Method, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
    """The input-gradient saliency (B x H x W) and the logits (detached) of one batch; gradients reach the
    input only (a clone of ``img``), never the parameters' ``.grad``."""
    with torch.enable_grad():
        img = batch["img"].detach().clone().requires_grad_(True)
        logits = method.step({**batch, "img": img}).outputs["logits"]
        chosen = logits.gather(1, batch["lab"].view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(chosen, img)
    return grad.abs().sum(dim=1), logits.detach()


def _mean(values: np.ndarray) -> float:
    """Mean of the finite values; NaN when there is none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else math.nan
