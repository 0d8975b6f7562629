"""GG-CAM (gaze-guided class activation maps) and its CAM baseline as training methods.

Both train a CAM network: any module whose ``model(img)`` returns ``(logits B x C, omega B x C x h x w)``,
e.g. ``create_model(..., head="cam")``. ``GGCAM`` adds the selective MSE of the true class's map to
the gaze heat map and balances it with cross-entropy by Eq. 11 (or, as a control, by a fixed weight);
``CAMClassifier`` is the standard network (cross-entropy only) with the same head, so its maps can be
scored too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch.nn.functional as F
from torch import nn

from attnlib.losses.gg_cam import (
    PARAMETERISATIONS,
    Parameterisation,
    PositiveScalar,
    balanced_loss,
    fixed_weight_loss,
    public_code_map_mse,
    selective_mse,
    weighted_terms,
)
from attnlib.methods.base import Method, StepOutput

Variant = Literal["paper", "public_code"]
VARIANTS: tuple[str, ...] = Variant.__args__
Schedule = Literal["eq11", "fixed"]
SCHEDULES: tuple[str, ...] = Schedule.__args__

#: log sigma_sm of the public code per backbone family (log sigma_ce is 7 for both).
_PUBLIC_LOG_SIGMA_SM = {"resnet": -23.0, "effnet": -16.0}
_PUBLIC_LOG_SIGMA_CE = 7.0


def backbone_family(backbone: str) -> str:
    """``"resnet"`` or ``"effnet"`` from a family or backbone name (e.g. ``"efficientnet_v2_s"``)."""
    name = backbone.lower()
    if name.startswith("resnet"):
        return "resnet"
    if name.startswith(("effnet", "efficientnet")):
        return "effnet"
    raise ValueError(f"GG-CAM's settings exist for ResNets and EfficientNets only, got {backbone!r}")


@dataclass
class GGCAMConfig:
    """GG-CAM's loss set-up (the network's learning rate and schedule live in ``TrainConfig``).

    ``variant``: ``"paper"`` (selective MSE, Eq. 9-10) or ``"public_code"`` (``public_code_map_mse``:
    class 0's raw map for every sample; alpha unused). ``sigma_parameterisation``: how the two sigmas of
    Eq. 11 are trained (``PositiveScalar``): ``"direct"``, the sigmas themselves, as Eq. 11 and Table 1's
    initial values are written, or ``"log"``, exp(log sigma) as in the public code. The default is
    ``"log"``: under ``"direct"`` the network stops learning (below), measured on a stand-in model
    (weight updates exactly 0 after 200 Adam steps from 2e-9), while under ``"log"`` sigma grows smoothly
    and training goes on in a gaze-dominated phase whose length the notebook measures. The choice, the
    init and ``scalar_lr`` (Adam lr of sigma_sm, sigma_ce and alpha; None: the network's) decide how the
    "curriculum" of Eq. 11 runs (``simulate_scalar_adam``, L_sm = 0.05): under ``"log"`` from e^-23 the gaze
    term dominates for ~78,000 steps at lr 5e-3. Under ``"direct"`` Adam's first step (~lr) erases a tiny
    init, momentum carries sigma_sm to ~6 lr, and then it stalls for over 60,000 steps, because Adam's second
    moment remembers the first gradient (L_sm / sigma^3 ~ 1e25 from 2e-9). The network's gradients carry
    the same weight 1/(2 sigma_sm^2) (~1e17 on the first step from 2e-9), so its Adam steps stall likewise.
    From 1.4e-11 or e^-23 a randomly initialised ResNet-50's first gradients reach ~1e21 and overflow
    float32 Adam's second moment for some weights (infinite: they never move again). alpha (Eq. 10) is
    always exp(log alpha): positive, and its initial value 1 is far from 0.

    ``schedule``: how the two losses are balanced. ``"eq11"``: Eq. 11 with the trainable sigmas above.
    ``"fixed"``: no Eq. 11 and no sigmas (their settings are unused), L = L_ce + ``fixed_weight`` * L_sm
    (``fixed_weight_loss``); alpha stays trainable. Eq. 11 with an init chosen for a training budget is
    ``"eq11"`` with ``sigma_sm_init`` from ``curriculum_sigma_sm_init``.
    """

    variant: Variant = "paper"
    sigma_parameterisation: Parameterisation = "log"
    sigma_sm_init: float = 2.0e-9
    sigma_ce_init: float = 1.0
    alpha_init: float = 1.0
    scalar_lr: float | None = None
    schedule: Schedule = "eq11"
    fixed_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not (math.isfinite(self.fixed_weight) and self.fixed_weight >= 0):
            raise ValueError(f"fixed_weight must be finite and non-negative, got {self.fixed_weight}")
        if self.sigma_parameterisation not in PARAMETERISATIONS:
            raise ValueError(
                f"sigma_parameterisation must be one of {PARAMETERISATIONS}, "
                f"got {self.sigma_parameterisation!r}"
            )
        for name in ("sigma_sm_init", "sigma_ce_init", "alpha_init"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.scalar_lr is not None and self.scalar_lr < 0:
            raise ValueError(f"scalar_lr must be non-negative, got {self.scalar_lr}")

    @classmethod
    def public_code(cls, backbone: str) -> GGCAMConfig:
        """The authors' public code: its loss variant and sigmas exp(log sigma) from its initial values.

        log sigma_ce = 7 (sigma_ce ~ 1100), log sigma_sm = -23 (ResNet) / -16 (EfficientNet). Pair it with
        the code's channel-mean CAM layer, ``create_model(..., channel_mean=True, head="cam")``. The code also
        trains with Adam at lr 5e-3 (ResNet) / 6e-3 (EfficientNet), plateau patience 40, batch 4, early
        stop after 83 epochs without improvement: those belong in ``TrainConfig``.
        """
        return cls(
            variant="public_code",
            sigma_parameterisation="log",
            sigma_sm_init=math.exp(_PUBLIC_LOG_SIGMA_SM[backbone_family(backbone)]),
            sigma_ce_init=math.exp(_PUBLIC_LOG_SIGMA_CE),
        )


class GGCAM(Method):
    """GG-CAM: cross-entropy plus selective MSE to the gaze heat map, balanced by Eq. 11.

    ``step`` reads ``img``, ``lab`` and ``hmap`` (the heat map, already on omega's h x w grid). Losses:
    ``loss`` (Eq. 11 total, optimised), ``ce``, ``sm`` (L_sm), ``term_sm`` (L_sm / (2 sigma_sm^2)) and
    ``term_ce`` (L_ce / sigma_ce^2); outputs ``logits`` and ``omega``. The trainable scalars sigma_sm,
    sigma_ce and (paper variant only; the public code's loss has no alpha) alpha are logged by
    ``scalars()`` and optimised in their own parameter group ``"scalars"`` without weight decay.
    The validation ``loss`` is the Eq. 11 total too, so its scale falls as sigma_sm grows.
    Under the ``"fixed"`` schedule there are no sigmas: ``loss`` is L_ce + w L_sm, ``term_sm`` = w L_sm,
    ``term_ce`` = L_ce (w = ``fixed_weight``), and the group ``"scalars"`` holds alpha alone (none without it).
    """

    def __init__(self, model: nn.Module, config: GGCAMConfig | None = None) -> None:
        super().__init__()
        self.model = model
        self.config = config or GGCAMConfig()
        self.sigma_sm: PositiveScalar | None = None
        self.sigma_ce: PositiveScalar | None = None
        if self.config.schedule == "eq11":
            self.sigma_sm = PositiveScalar(self.config.sigma_sm_init, self.config.sigma_parameterisation)
            self.sigma_ce = PositiveScalar(self.config.sigma_ce_init, self.config.sigma_parameterisation)
        self.alpha = PositiveScalar(self.config.alpha_init, "log") if self.config.variant == "paper" else None

    def step(self, batch: Mapping[str, Any]) -> StepOutput:
        logits, omega = self.model(batch["img"])
        labels, hmap = batch["lab"], batch["hmap"]
        h, w = omega.shape[-2:]
        if tuple(hmap.shape) not in ((len(labels), 1, h, w), (len(labels), h, w)):
            raise ValueError(
                f"batch['hmap'] has shape {tuple(hmap.shape)} but omega has shape {tuple(omega.shape)}: the "
                f"heat map must be B x 1 x {h} x {w} (omega's grid); build the data with "
                "hmap_size = attnlib.models.cam.cam_grid(model, image_size)"
            )
        l_ce = F.cross_entropy(logits, labels)
        if self.alpha is None:
            l_sm = public_code_map_mse(omega, hmap)
        else:
            l_sm = selective_mse(omega, labels, hmap, self.alpha())
        if self.sigma_sm is None or self.sigma_ce is None:
            weight = self.config.fixed_weight
            loss, term_sm, term_ce = fixed_weight_loss(l_sm, l_ce, weight), weight * l_sm, l_ce
        else:
            s_sm, s_ce = self.sigma_sm(), self.sigma_ce()
            loss = balanced_loss(l_sm, l_ce, s_sm, s_ce)
            term_sm, term_ce = weighted_terms(l_sm, l_ce, s_sm, s_ce)
        return StepOutput(
            losses={
                "loss": loss,
                "ce": l_ce,
                "sm": l_sm,
                "term_sm": term_sm,
                "term_ce": term_ce,
            },
            outputs={"logits": logits, "omega": omega},
        )

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """The network at ``lr``; the scalars in a group ``"scalars"`` at ``scalar_lr`` (None: ``lr``), if any."""
        scalar_lr = lr if self.config.scalar_lr is None else self.config.scalar_lr
        network = {"params": [p for p in self.model.parameters() if p.requires_grad], "lr": lr}
        scalars = [m.raw for m in self._scalars().values()]
        if not scalars:
            return [network]
        return [network, {"params": scalars, "lr": scalar_lr, "weight_decay": 0.0, "name": "scalars"}]

    def scalars(self) -> dict[str, float]:
        return {name: module().item() for name, module in self._scalars().items()}

    def _scalars(self) -> dict[str, PositiveScalar]:
        """The trainable scalars this configuration has, by name."""
        named = {"sigma_sm": self.sigma_sm, "sigma_ce": self.sigma_ce, "alpha": self.alpha}
        return {name: module for name, module in named.items() if module is not None}


class CAMClassifier(Method):
    """The standard network with a CAM head: cross-entropy only; outputs ``logits`` and ``omega``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def step(self, batch: Mapping[str, Any]) -> StepOutput:
        logits, omega = self.model(batch["img"])
        return StepOutput(
            losses={"loss": F.cross_entropy(logits, batch["lab"])},
            outputs={"logits": logits, "omega": omega},
        )
