"""GG-CAM's losses: selective MSE to the gaze heat map (Eq. 9-10) and the balanced loss (Eq. 11).

Also the trainable positive scalars of Eq. 11 (``PositiveScalar``) and a scalar Adam simulation of
Eq. 11 (``simulate_scalar_adam``) that shows how long its "curriculum" lasts: while s_sm is tiny the
weighted gaze term L_sm / (2 s_sm^2) dominates; Adam grows s_sm until the two weighted terms balance.
``curriculum_sigma_sm_init`` inverts that simulation (the initial s_sm whose balance falls at a chosen
step), ``history_balance`` reads the balance measured in a training history, and ``fixed_weight_loss``
is the schedule without Eq. 11 (issue 24).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Literal

import pandas as pd
import torch
from torch import Tensor, nn

Parameterisation = Literal["direct", "log"]
PARAMETERISATIONS: tuple[str, ...] = Parameterisation.__args__
#: Lower bound of a ``"direct"`` PositiveScalar (see there).
DIRECT_FLOOR = 1e-12
#: Lower end of ``curriculum_sigma_sm_init``'s search, in log sigma_sm (e^-50 ~ 2e-22, below Table 1's inits).
CURRICULUM_LOG_INIT_FLOOR = -50.0


def _target_maps(psi: Tensor, omega: Tensor) -> Tensor:
    """``psi`` as B x h x w, checked against omega's (B x C x h x w) batch size and grid."""
    maps = psi[:, 0] if psi.dim() == 4 and psi.shape[1] == 1 else psi
    if maps.dim() != 3 or maps.shape[0] != omega.shape[0] or maps.shape[-2:] != omega.shape[-2:]:
        raise ValueError(
            f"the heat map psi has shape {tuple(psi.shape)} but omega has shape {tuple(omega.shape)}: "
            "psi must be B x 1 x h x w or B x h x w on omega's h x w grid"
        )
    return maps


def selective_mse(omega: Tensor, labels: Tensor, psi: Tensor, alpha: Tensor) -> Tensor:
    """Eq. 9-10, selective MSE: mean over pixels and batch of (sigmoid(alpha * Omega[b, Y_b]) - Psi_b)^2.

    Only the true class's map ``omega[b, labels[b]]`` is compared with the heat map ``psi`` (B x 1 x h x w
    or B x h x w, values in [0, 1]); the other classes' maps get no gradient from this loss.
    ``alpha`` (a positive scalar tensor) sharpens the sigmoid. Computed in at least float32.
    """
    maps = _target_maps(psi, omega)
    chosen = omega[torch.arange(omega.shape[0], device=omega.device), labels]
    prediction = torch.sigmoid(alpha * chosen.float())
    return (prediction - maps.to(prediction.dtype)).pow(2).mean()


def public_code_map_mse(omega: Tensor, psi: Tensor) -> Tensor:
    """The authors' public code's replacement of Eq. 9-10 (not the paper's loss; an explicit variant).

    Differences from ``selective_mse``: (a) the map compared with ``psi`` is class 0's for every sample,
    whatever its label (the code indexes with int(sigmoid(label * e^k)), which is always 0); (b) the raw
    map enters the MSE, without sigmoid and without alpha. Mean over pixels and batch of
    (Omega[b, 0] - Psi_b)^2.
    """
    maps = _target_maps(psi, omega)
    chosen = omega[:, 0].float()
    return (chosen - maps.to(chosen.dtype)).pow(2).mean()


def weighted_terms(l_sm: Tensor, l_ce: Tensor, s_sm: Tensor, s_ce: Tensor) -> tuple[Tensor, Tensor]:
    """The two weighted loss terms of Eq. 11: ``(L_sm / (2 s_sm^2), L_ce / s_ce^2)``."""
    return l_sm / (2 * s_sm**2), l_ce / s_ce**2


def balanced_loss(l_sm: Tensor, l_ce: Tensor, s_sm: Tensor, s_ce: Tensor) -> Tensor:
    """Eq. 11, balanced loss: L_sm / (2 s_sm^2) + L_ce / s_ce^2 + ln(s_sm + 1) + ln(s_ce + 1)."""
    term_sm, term_ce = weighted_terms(l_sm, l_ce, s_sm, s_ce)
    return term_sm + term_ce + torch.log1p(s_sm) + torch.log1p(s_ce)


def fixed_weight_loss(l_sm: Tensor, l_ce: Tensor, weight: float) -> Tensor:
    """Eq. 11 replaced by a fixed weight (no sigmas, no curriculum): L_ce + weight * L_sm."""
    return l_ce + weight * l_sm


class PositiveScalar(nn.Module):
    """A trainable scalar s > 0 (the sigmas of Eq. 11, alpha of Eq. 10); ``forward()`` returns s.

    ``"direct"`` (as Eq. 11 is written): the parameter is s itself. Adam's first step moves it by about
    the learning rate whatever the gradient's size, so it can cross zero; ``forward`` floors s at
    ``DIRECT_FLOOR`` (1e-12) with a straight-through gradient: below the floor the value is the floor but
    the gradient still reaches the parameter (a plain ``clamp_min`` would give it zero gradient there and
    leave s stuck at the floor for good). ``"log"`` (the public code): s = exp(p), positive by construction.

    The parameter is float64: Adam squares the gradient, and for a tiny s that square overflows float32
    (e.g. s_sm = 2e-9, L_sm = 0.05: dL/ds = L_sm / s^3 ~ 6e24, squared ~ 4e49 > 3.4e38), which makes the
    second moment infinite and freezes s at its initial value for ever.
    """

    def __init__(self, init: float, parameterisation: Parameterisation) -> None:
        super().__init__()
        if parameterisation not in PARAMETERISATIONS:
            raise ValueError(f"parameterisation must be one of {PARAMETERISATIONS}, got {parameterisation!r}")
        if not init > 0:
            raise ValueError(f"a positive scalar needs a positive initial value, got {init}")
        self.parameterisation = parameterisation
        raw = init if parameterisation == "direct" else math.log(init)
        self.raw = nn.Parameter(torch.tensor(raw, dtype=torch.float64))

    def forward(self) -> Tensor:
        if self.parameterisation == "log":
            return self.raw.exp()
        floor = self.raw.new_tensor(DIRECT_FLOOR)
        return torch.where(self.raw >= floor, self.raw, floor + (self.raw - self.raw.detach()))

    def extra_repr(self) -> str:
        return f"parameterisation={self.parameterisation!r}, value={self().item():.4g}"


def _scalar_value(raw: float, parameterisation: Parameterisation) -> float:
    """s of a PositiveScalar whose parameter is ``raw`` (same floor as ``PositiveScalar.forward``)."""
    return math.exp(raw) if parameterisation == "log" else max(raw, DIRECT_FLOOR)


def _raw_gradient(ds: float, s: float, parameterisation: Parameterisation) -> float:
    """dL/d(parameter) from dL/ds: ds/dp is s under ``"log"``, 1 under ``"direct"`` (straight-through)."""
    return ds * s if parameterisation == "log" else ds


class _ScalarAdam:
    """``torch.optim.Adam`` (no weight decay, no amsgrad) on one float, in plain Python float64 arithmetic."""

    def __init__(self, raw: float, lr: float, betas: tuple[float, float], eps: float) -> None:
        self.raw, self.lr, self.betas, self.eps = raw, lr, betas, eps
        self.m = self.v = 0.0
        self.t = 0

    def step(self, grad: float) -> None:
        beta1, beta2 = self.betas
        self.t += 1
        self.m = beta1 * self.m + (1 - beta1) * grad
        self.v = beta2 * self.v + (1 - beta2) * grad * grad
        step_size = self.lr / (1 - beta1**self.t)
        denom = math.sqrt(self.v) / math.sqrt(1 - beta2**self.t) + self.eps
        self.raw -= step_size * self.m / denom


def _check_parameterisation(parameterisation: str) -> None:
    if parameterisation not in PARAMETERISATIONS:
        raise ValueError(f"parameterisation must be one of {PARAMETERISATIONS}, got {parameterisation!r}")


def _scalar_trajectory(
    l_sm: float,
    s_sm_init: float,
    *,
    lr: float,
    parameterisation: Parameterisation,
    l_ce: float,
    s_ce_init: float,
    train_s_ce: bool,
    betas: tuple[float, float],
    eps: float,
) -> Iterator[tuple[float, float]]:
    """``(s_sm, s_ce)`` after 0, 1, 2, ... Adam steps on the scalars of Eq. 11 (see ``simulate_scalar_adam``)."""
    to_raw = float if parameterisation == "direct" else math.log
    sm = _ScalarAdam(to_raw(s_sm_init), lr, betas, eps)
    ce = _ScalarAdam(to_raw(s_ce_init), lr, betas, eps)
    s_sm, s_ce = _scalar_value(sm.raw, parameterisation), _scalar_value(ce.raw, parameterisation)
    while True:
        yield s_sm, s_ce
        sm.step(_raw_gradient(-l_sm / s_sm**3 + 1 / (s_sm + 1), s_sm, parameterisation))
        if train_s_ce:
            ce.step(_raw_gradient(-2 * l_ce / s_ce**3 + 1 / (s_ce + 1), s_ce, parameterisation))
            s_ce = _scalar_value(ce.raw, parameterisation)
        s_sm = _scalar_value(sm.raw, parameterisation)


def simulate_scalar_adam(
    l_sm: float,
    s_sm_init: float,
    *,
    lr: float,
    steps: int,
    parameterisation: Parameterisation = "log",
    l_ce: float = math.log(3),
    s_ce_init: float = 1.0,
    train_s_ce: bool = False,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> pd.DataFrame:
    """Adam on the scalars of Eq. 11 alone, with the losses held constant: how s_sm (and s_ce) evolve.

    The network is left out: L_sm and L_ce are constants, so only the Eq. 11 terms in the scalars act
    (dL/ds_sm = -L_sm / s_sm^3 + 1 / (s_sm + 1), dL/ds_ce = -2 L_ce / s_ce^3 + 1 / (s_ce + 1)).
    s_sm is always trained; s_ce stays at ``s_ce_init`` unless ``train_s_ce`` (then it has its own Adam
    state, as in one optimiser group). ``l_ce`` defaults to ln 3, the cross-entropy of a 3-class guess.
    Each scalar is parameterised as in ``PositiveScalar`` and stepped exactly as ``torch.optim.Adam``.

    Returns one row per step (step 0 = the initial values): ``step, s_sm, s_ce, term_sm`` (= L_sm / (2
    s_sm^2)) and ``term_ce`` (= L_ce / s_ce^2). See ``balance_step``.
    """
    _check_parameterisation(parameterisation)
    trajectory = _scalar_trajectory(
        l_sm, s_sm_init, lr=lr, parameterisation=parameterisation, l_ce=l_ce, s_ce_init=s_ce_init,
        train_s_ce=train_s_ce, betas=betas, eps=eps,
    )
    rows = list(itertools.islice(trajectory, steps + 1))
    frame = pd.DataFrame({"step": range(steps + 1), "s_sm": [r[0] for r in rows], "s_ce": [r[1] for r in rows]})
    frame["term_sm"] = l_sm / (2 * frame["s_sm"] ** 2)
    frame["term_ce"] = l_ce / frame["s_ce"] ** 2
    return frame


def balance_step(frame: pd.DataFrame) -> int | None:
    """First step of a ``simulate_scalar_adam`` frame whose gaze term has fallen to the CE term, or None."""
    reached = frame.loc[frame["term_sm"] <= frame["term_ce"], "step"]
    return int(reached.iloc[0]) if len(reached) else None


def simulated_balance_step(
    l_sm: float,
    s_sm_init: float,
    *,
    lr: float,
    max_steps: int,
    parameterisation: Parameterisation = "log",
    l_ce: float = math.log(3),
    s_ce_init: float = 1.0,
    train_s_ce: bool = False,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> int | None:
    """``balance_step(simulate_scalar_adam(..., steps=max_steps))`` without the frame: the simulation stops at
    the balance (None: not within ``max_steps``)."""
    _check_parameterisation(parameterisation)
    trajectory = _scalar_trajectory(
        l_sm, s_sm_init, lr=lr, parameterisation=parameterisation, l_ce=l_ce, s_ce_init=s_ce_init,
        train_s_ce=train_s_ce, betas=betas, eps=eps,
    )
    for step, (s_sm, s_ce) in enumerate(itertools.islice(trajectory, max_steps + 1)):
        if l_sm / (2 * s_sm**2) <= l_ce / s_ce**2:
            return step
    return None


def curriculum_sigma_sm_init(
    total_steps: int,
    fraction: float,
    *,
    l_sm: float,
    lr: float,
    parameterisation: Parameterisation = "log",
    l_ce: float = math.log(3),
    s_ce_init: float = 1.0,
    train_s_ce: bool = False,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> float:
    """The initial sigma_sm whose Eq. 11 curriculum ends at ``fraction`` of ``total_steps``.

    The target is step T = round(fraction * total_steps); the balance is ``simulated_balance_step`` with
    the other arguments (those of ``simulate_scalar_adam``; L_sm and L_ce held constant). A smaller init
    balances later, so the init is found by bisection on log sigma_sm between e^-50
    (``CURRICULUM_LOG_INIT_FLOOR``) and e times the init that is balanced at step 0 (sqrt(L_sm s_ce^2 /
    (2 L_ce))), keeping an upper end that balances by step T and a lower end that balances after it. The
    result balances at T exactly, or (where the balance jumps over T between two inits closer than 1e-12
    in log) at the last step before T that an init reaches. Raises ``ValueError`` when T rounds to 0, or
    when even e^-50 balances by step T (the scalars' lr is too large for so late a balance).
    """
    if total_steps < 1 or not 0 < fraction <= 1:
        raise ValueError(f"need total_steps >= 1 and 0 < fraction <= 1, got {total_steps} and {fraction}")
    target = round(fraction * total_steps)
    if target < 1:
        raise ValueError(f"fraction {fraction} of {total_steps} steps rounds to step 0: no curriculum to place")

    def balance(log_init: float) -> int | None:
        return simulated_balance_step(
            l_sm, math.exp(log_init), lr=lr, max_steps=target, parameterisation=parameterisation, l_ce=l_ce,
            s_ce_init=s_ce_init, train_s_ce=train_s_ce, betas=betas, eps=eps,
        )

    low, high = CURRICULUM_LOG_INIT_FLOOR, 0.5 * math.log(l_sm / (2 * l_ce)) + math.log(s_ce_init) + 1.0
    earliest = balance(low)
    if earliest is not None:
        raise ValueError(
            f"no initial sigma_sm down to e^{low:g} balances as late as step {target} ({fraction} of "
            f"{total_steps}): e^{low:g} balances at step {earliest} at lr {lr} ({parameterisation}); "
            "use a smaller scalar lr or fraction"
        )
    while high - low > 1e-12:
        middle = (low + high) / 2
        step = balance(middle)
        if step == target:
            return math.exp(middle)
        if step is None:
            low = middle
        else:
            high = middle
    return math.exp(high)


def history_balance(history: pd.DataFrame, steps_per_epoch: int) -> tuple[int, int] | None:
    """The Eq. 11 balance measured in a training history: ``(epoch, epoch * steps_per_epoch)`` of the first
    epoch whose mean weighted gaze term ``train_term_sm`` is at most its mean ``train_term_ce``, or None.

    Both columns are means over the epoch's batches (with the same weights), so some step of that epoch had
    term_sm <= term_ce: the step returned, the epoch's last, bounds the first such step from above.
    """
    crossed = history.loc[history["train_term_sm"] <= history["train_term_ce"], "epoch"]
    if not len(crossed):
        return None
    epoch = int(crossed.iloc[0])
    return epoch, epoch * steps_per_epoch
