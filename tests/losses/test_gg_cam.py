"""GG-CAM's losses (Eq. 9-11, the fixed-weight schedule) against hand values; the scalar Adam simulation against
torch.optim.Adam; the budget-curriculum init against the simulation and torch.optim.Adam; the measured balance."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from attnlib.losses.gg_cam import (
    DIRECT_FLOOR,
    PositiveScalar,
    balance_step,
    balanced_loss,
    curriculum_sigma_sm_init,
    fixed_weight_loss,
    history_balance,
    public_code_map_mse,
    selective_mse,
    simulate_scalar_adam,
    simulated_balance_step,
    weighted_terms,
)

LN3 = math.log(3)


def two_class_example() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Omega (2 samples x 2 classes x 2 x 2), labels [0, 1] and heat maps (2 x 1 x 2 x 2).

    With alpha = 2 the true-class maps give sigmoid values [[.5, .75], [.25, .5]] (sample 0, class 0)
    and [[.9, .1], [.5, .5]] (sample 1, class 1).
    """
    omega = torch.zeros(2, 2, 2, 2)
    omega[0, 0] = torch.tensor([[0.0, LN3 / 2], [-LN3 / 2, 0.0]])
    omega[0, 1] = torch.tensor([[5.0, -5.0], [5.0, -5.0]])
    omega[1, 0] = torch.tensor([[7.0, 7.0], [-7.0, 0.0]])
    omega[1, 1] = torch.tensor([[math.log(9) / 2, -math.log(9) / 2], [0.0, 0.0]])
    psi = torch.tensor([[[0.5, 1.0], [0.0, 0.25]], [[1.0, 0.0], [0.5, 0.0]]]).unsqueeze(1)
    return omega, torch.tensor([0, 1]), psi


def test_selective_mse_hand_value():
    omega, labels, psi = two_class_example()
    # sample 0: diffs 0, -.25, .25, -.25 -> 3/16 / 4; sample 1: -.1, .1, 0, .5 -> .27 / 4
    expected = ((3 / 16) / 4 + 0.27 / 4) / 2
    got = selective_mse(omega, labels, psi, torch.tensor(2.0))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    unsqueezed = selective_mse(omega, labels, psi[:, 0], torch.tensor(2.0))  # B x h x w heat maps
    assert unsqueezed.item() == pytest.approx(expected, rel=1e-6)


def test_selective_mse_uses_only_the_true_class_map():
    omega, labels, psi = two_class_example()
    alpha = torch.tensor(2.0)
    before = selective_mse(omega, labels, psi, alpha)
    changed = omega.clone()
    changed[0, 1] = 100.0  # sample 0 is class 0: its class-1 map does not count
    changed[1, 0] = -100.0
    assert torch.equal(selective_mse(changed, labels, psi, alpha), before)
    changed[0, 0, 0, 0] = 1.0
    assert selective_mse(changed, labels, psi, alpha) > before
    omega.requires_grad_(True)
    selective_mse(omega, labels, psi, alpha).backward()
    assert omega.grad[0, 1].abs().sum() == 0 and omega.grad[1, 0].abs().sum() == 0
    assert omega.grad[0, 0].abs().sum() > 0 and omega.grad[1, 1].abs().sum() > 0


def test_selective_mse_alpha_scales_the_map():
    omega, labels, psi = two_class_example()
    # alpha = 1 on twice the maps is alpha = 2 on the maps
    assert selective_mse(2 * omega, labels, psi, torch.tensor(1.0)).item() == pytest.approx(
        selective_mse(omega, labels, psi, torch.tensor(2.0)).item(), rel=1e-6
    )


def test_public_code_map_mse_is_class_zero_raw():
    omega, labels, psi = two_class_example()
    # class 0's raw maps for both samples, whatever the label:
    # sample 0: (0 - .5)^2 + (ln3/2 - 1)^2 + (-ln3/2)^2 + (0 - .25)^2; sample 1: 36 + 49 + 56.25 + 0
    s0 = 0.25 + (LN3 / 2 - 1) ** 2 + (LN3 / 2) ** 2 + 0.0625
    s1 = 36.0 + 49.0 + 56.25 + 0.0
    assert public_code_map_mse(omega, psi).item() == pytest.approx((s0 + s1) / 8, rel=1e-6)
    changed = omega.clone()
    changed[:, 1] = 0.0
    assert torch.equal(public_code_map_mse(changed, psi), public_code_map_mse(omega, psi))


def test_map_losses_reject_a_heat_map_off_the_grid():
    omega, labels, _ = two_class_example()
    with pytest.raises(ValueError, match=r"\(2, 1, 4, 4\).*\(2, 2, 2, 2\)"):
        selective_mse(omega, labels, torch.zeros(2, 1, 4, 4), torch.tensor(1.0))
    with pytest.raises(ValueError, match="omega has shape"):
        public_code_map_mse(omega, torch.zeros(3, 2, 2))


def test_balanced_loss_hand_value():
    l_sm, l_ce, s_sm, s_ce = (torch.tensor(v) for v in (0.5, 2.0, 0.5, 2.0))
    # 0.5 / (2 * 0.25) + 2 / 4 + ln 1.5 + ln 3
    assert balanced_loss(l_sm, l_ce, s_sm, s_ce).item() == pytest.approx(1.5 + math.log(4.5), rel=1e-6)
    term_sm, term_ce = weighted_terms(l_sm, l_ce, s_sm, s_ce)
    assert (term_sm.item(), term_ce.item()) == pytest.approx((1.0, 0.5))


def test_fixed_weight_loss_hand_value():
    l_sm, l_ce = torch.tensor(0.2, requires_grad=True), torch.tensor(1.5, requires_grad=True)
    loss = fixed_weight_loss(l_sm, l_ce, 2.5)
    assert loss.item() == pytest.approx(1.5 + 2.5 * 0.2)  # 2.0
    loss.backward()
    assert (l_sm.grad.item(), l_ce.grad.item()) == pytest.approx((2.5, 1.0))


@pytest.mark.parametrize("parameterisation", ["direct", "log"])
def test_positive_scalar_values_and_gradient(parameterisation):
    s = PositiveScalar(0.25, parameterisation)
    assert s().dtype == torch.float64 and s().item() == pytest.approx(0.25)
    expected_raw = 0.25 if parameterisation == "direct" else math.log(0.25)
    assert s.raw.item() == pytest.approx(expected_raw)
    s().backward()
    assert s.raw.grad.item() == pytest.approx(1.0 if parameterisation == "direct" else 0.25)
    # Eq. 11 pulls a tiny sigma up: negative gradient on its parameter
    tiny = PositiveScalar(1e-9, parameterisation)
    balanced_loss(torch.tensor(0.05), torch.tensor(1.0), tiny(), torch.tensor(1.0)).backward()
    assert tiny.raw.grad.item() < 0


def test_positive_scalar_log_and_direct_floor():
    log_s = PositiveScalar(1.0, "log")
    with torch.no_grad():
        log_s.raw.fill_(-50.0)
    assert log_s().item() == pytest.approx(math.exp(-50.0)) and log_s().item() > 0
    direct = PositiveScalar(1.0, "direct")
    with torch.no_grad():
        direct.raw.fill_(-0.3)  # e.g. an Adam step past zero
    s = direct()
    assert s.item() == DIRECT_FLOOR
    # straight-through: the gradient still reaches the parameter and pushes it back up
    balanced_loss(torch.tensor(0.05), torch.tensor(1.0), s, torch.tensor(1.0)).backward()
    assert direct.raw.grad.item() < 0
    with pytest.raises(ValueError, match="positive"):
        PositiveScalar(0.0, "log")
    with pytest.raises(ValueError, match="parameterisation"):
        PositiveScalar(1.0, "softplus")


def torch_adam_trajectory(
    parameterisation: str, s_sm_init: float, s_ce_init: float, lr: float, steps: int, train_s_ce: bool
) -> list[tuple[float, float]]:
    """The same problem as ``simulate_scalar_adam`` through PositiveScalar, Eq. 11, autograd and Adam."""
    l_sm, l_ce = torch.tensor(0.05, dtype=torch.float64), torch.tensor(LN3, dtype=torch.float64)
    sm, ce = PositiveScalar(s_sm_init, parameterisation), PositiveScalar(s_ce_init, parameterisation)
    ce.raw.requires_grad_(train_s_ce)
    params = [sm.raw, ce.raw] if train_s_ce else [sm.raw]
    optimizer = torch.optim.Adam(params, lr=lr)
    values = [(sm().item(), ce().item())]
    for _ in range(steps):
        optimizer.zero_grad()
        balanced_loss(l_sm, l_ce, sm(), ce()).backward()
        optimizer.step()
        values.append((sm().item(), ce().item()))
    return values


@pytest.mark.parametrize(
    ("parameterisation", "s_sm_init", "s_ce_init", "train_s_ce"),
    [
        ("log", math.exp(-23), 1.0, False),
        ("log", math.exp(-16), math.exp(7), True),
        ("direct", 1e-11, 1.0, True),
    ],
)
def test_simulation_matches_torch_adam(parameterisation, s_sm_init, s_ce_init, train_s_ce):
    steps, lr = 300, 5e-3
    frame = simulate_scalar_adam(
        0.05, s_sm_init, lr=lr, steps=steps, parameterisation=parameterisation, l_ce=LN3,
        s_ce_init=s_ce_init, train_s_ce=train_s_ce,
    )
    reference = torch_adam_trajectory(parameterisation, s_sm_init, s_ce_init, lr, steps, train_s_ce)
    assert frame["step"].tolist() == list(range(steps + 1))
    assert frame["s_sm"].to_numpy() == pytest.approx([v[0] for v in reference], rel=1e-9)
    assert frame["s_ce"].to_numpy() == pytest.approx([v[1] for v in reference], rel=1e-9)
    assert frame["term_sm"].to_numpy() == pytest.approx(0.05 / (2 * frame["s_sm"].to_numpy() ** 2))
    assert frame["term_ce"].to_numpy() == pytest.approx(LN3 / frame["s_ce"].to_numpy() ** 2)


def test_log_sigma_curriculum_numbers():
    """methods.md: log s_sm from -23 at lr 5e-3, L_sm = 0.05: -19.8 after 4,400 steps, -18.4 after 10,000,
    balance with the CE term after ~78,000 (s_ce = 1, L_ce = ln 3)."""
    frame = simulate_scalar_adam(0.05, math.exp(-23), lr=5e-3, steps=100_000, parameterisation="log")
    log_s = frame.set_index("step")["s_sm"].map(math.log)
    assert log_s[4_400] == pytest.approx(-19.8, abs=0.1)
    assert log_s[10_000] == pytest.approx(-18.4, abs=0.1)
    balance = balance_step(frame)
    assert 70_000 <= balance <= 90_000
    assert frame["term_sm"][balance - 1] > frame["term_ce"][balance - 1]
    # near balance s_sm is of the order of L_sm^(1/3) ~ 0.37, not "lr per step" (500 after 100,000 steps)
    assert 0.1 < frame["s_sm"][balance] < 0.5


def test_public_code_sigma_ce_falls_to_its_equilibrium_in_about_1500_steps():
    """methods.md: log sigma_ce falls from 7 (CE weight e^-14 ~ 1e-6) to balance in ~1,300-1,600 steps."""
    for lr in (5e-3, 6e-3):
        frame = simulate_scalar_adam(
            0.05, math.exp(-23), lr=lr, steps=4_000, parameterisation="log",
            s_ce_init=math.exp(7), train_s_ce=True,
        )
        log_ce = frame["s_ce"].map(math.log)
        settled = int(frame["step"][(log_ce - log_ce.iloc[-1]).abs() < 0.05].iloc[0])
        assert 1_200 <= settled <= 1_700


def test_direct_sigma_forgets_a_tiny_init_in_one_step():
    """With s itself as Adam's parameter, the first step is ~lr whatever the gradient: 1e-11 -> ~5e-3."""
    frame = simulate_scalar_adam(0.05, 1e-11, lr=5e-3, steps=3, parameterisation="direct")
    assert frame["s_sm"][1] == pytest.approx(5e-3, rel=1e-6)
    assert frame["term_sm"][1] < 1e-15 * frame["term_sm"][0]


def test_direct_sigma_then_stalls_until_adam_forgets_the_first_gradient():
    """Table 1's ResNet set-up, direct: the first gradient's momentum carries s_sm to ~6 lr in ~50 steps;
    then the second moment still holds that gradient (-L_sm / s^3 ~ 6e24, ~1e22 times the later ones) and
    s_sm stays put for over 60,000 steps: the gaze weight stays ~280, balance comes at ~90,000."""
    frame = simulate_scalar_adam(0.05, 2.0e-9, lr=7e-3, steps=100_000, parameterisation="direct")
    s = frame["s_sm"]
    assert s[50] == pytest.approx(0.042, abs=0.001)
    assert s[60_000] == pytest.approx(s[100], rel=1e-3)
    assert 1 / (2 * s[60_000] ** 2) == pytest.approx(280, rel=0.05)
    assert 85_000 <= balance_step(frame) <= 95_000


def test_balance_step_none_when_never_balanced():
    frame = simulate_scalar_adam(0.05, math.exp(-23), lr=5e-3, steps=10, parameterisation="log")
    assert balance_step(frame) is None
    assert balance_step(simulate_scalar_adam(0.05, 1.0, lr=5e-3, steps=2)) == 0


@pytest.mark.parametrize(
    ("parameterisation", "s_sm_init", "train_s_ce", "lr"),
    [("log", math.exp(-4), False, 5e-3), ("log", 0.1, True, 1e-3), ("direct", 0.05, False, 1e-2)],
)
def test_simulated_balance_step_is_the_frames(parameterisation, s_sm_init, train_s_ce, lr):
    options = {"lr": lr, "parameterisation": parameterisation, "train_s_ce": train_s_ce}
    frame = simulate_scalar_adam(0.05, s_sm_init, steps=4_000, **options)
    expected = balance_step(frame)
    assert expected is not None and expected > 0
    assert simulated_balance_step(0.05, s_sm_init, max_steps=4_000, **options) == expected
    assert simulated_balance_step(0.05, s_sm_init, max_steps=expected - 1, **options) is None
    assert simulated_balance_step(0.05, s_sm_init, max_steps=expected, **options) == expected


@pytest.mark.parametrize(
    ("parameterisation", "lr", "total_steps", "fraction", "train_s_ce"),
    [
        ("log", 1e-3, 112, 0.5, True),  # the quick profile's budget: 8 epochs x 14 steps
        ("log", 5e-3, 3_000, 0.5, False),
        ("log", 5e-3, 3_000, 0.2, True),
        ("direct", 7e-3, 1_000, 0.5, False),
        ("direct", 1e-3, 2_000, 0.3, True),
    ],
)
def test_curriculum_init_balances_at_the_requested_step(parameterisation, lr, total_steps, fraction, train_s_ce):
    options = {"lr": lr, "parameterisation": parameterisation, "train_s_ce": train_s_ce}
    init = curriculum_sigma_sm_init(total_steps, fraction, l_sm=0.05, **options)
    target = round(fraction * total_steps)
    # the documented tolerance: the balance falls at the target, or one step before it
    reached = balance_step(simulate_scalar_adam(0.05, init, steps=total_steps, **options))
    assert target - 1 <= reached <= target
    # the curriculum is placed there: a 10% smaller init balances after the target, a 10% larger one before it
    later = balance_step(simulate_scalar_adam(0.05, init * 0.9, steps=total_steps, **options))
    assert later is None or later > target
    assert balance_step(simulate_scalar_adam(0.05, init * 1.1, steps=total_steps, **options)) < target


@pytest.mark.parametrize(("parameterisation", "train_s_ce"), [("log", True), ("direct", False)])
def test_curriculum_init_against_torch_adam(parameterisation, train_s_ce):
    """The init's balance step, found again with PositiveScalar, Eq. 11, autograd and torch.optim.Adam."""
    init = curriculum_sigma_sm_init(200, 0.5, l_sm=0.05, lr=5e-3, parameterisation=parameterisation,
                                    train_s_ce=train_s_ce)
    trajectory = torch_adam_trajectory(parameterisation, init, 1.0, 5e-3, 200, train_s_ce)
    balanced = [0.05 / (2 * sm**2) <= LN3 / ce**2 for sm, ce in trajectory]
    assert balanced.index(True) in (99, 100)


@pytest.mark.parametrize("parameterisation", ["log", "direct"])
def test_a_smaller_init_balances_later_and_a_later_target_needs_a_smaller_init(parameterisation):
    log_inits = [-30.0, -20.0, -12.0, -8.0, -5.0, -3.0, -2.0]
    steps = [simulated_balance_step(0.05, math.exp(x), lr=5e-3, max_steps=200_000, parameterisation=parameterisation)
             for x in log_inits]
    assert all(a >= b for a, b in zip(steps, steps[1:])), steps
    assert steps[0] > steps[-1]
    inits = [curriculum_sigma_sm_init(2_000, f, l_sm=0.05, lr=5e-3, parameterisation=parameterisation)
             for f in (0.25, 0.5, 0.75)]
    assert inits[0] > inits[1] > inits[2]
    # all below the init that is balanced at step 0: sqrt(L_sm / (2 L_ce)) with sigma_ce = 1
    assert inits[0] < math.sqrt(0.05 / (2 * LN3))


def test_curriculum_init_errors():
    # direct: Adam's first step sets sigma_sm to about lr = 0.5 > sqrt(0.05 / (2 ln 3)) ~ 0.15, whatever the init
    with pytest.raises(ValueError, match=r"no initial sigma_sm down to e\^-50 balances as late as step 50"):
        curriculum_sigma_sm_init(100, 0.5, l_sm=0.05, lr=0.5, parameterisation="direct")
    with pytest.raises(ValueError, match="rounds to step 0"):
        curriculum_sigma_sm_init(10, 0.01, l_sm=0.05, lr=1e-3)
    with pytest.raises(ValueError, match="0 < fraction <= 1"):
        curriculum_sigma_sm_init(10, 1.5, l_sm=0.05, lr=1e-3)


def test_history_balance_first_epoch_and_its_last_step():
    history = pd.DataFrame({"epoch": [1, 2, 3, 4], "train_term_sm": [3.0, 1.2, 1.0, 0.4],
                            "train_term_ce": [1.0, 1.1, 1.0, 1.0]})
    assert history_balance(history, 14) == (3, 42)  # equal terms count as balanced
    history["train_term_sm"] = 2.0
    assert history_balance(history, 14) is None
