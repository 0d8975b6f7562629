"""GGCAM and CAMClassifier on a stand-in CAM network (model(img) -> (logits, omega)); one trainer run."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from attnlib.engine.executor import make_loaders
from attnlib.engine.trainer import TrainConfig, Trainer
from attnlib.methods.gg_cam import GGCAM, CAMClassifier, GGCAMConfig, backbone_family

NUM_CLASSES = 3


class StandInCAM(nn.Module):
    """A CAM network in miniature: 1 x 8 x 8 images -> features 4 x 4 x 4 -> (logits, omega 3 x 4 x 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2))
        self.weight = nn.Parameter(torch.randn(NUM_CLASSES, 4) * 0.5)
        self.bias = nn.Parameter(torch.zeros(NUM_CLASSES))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        omega = torch.einsum("ck,bkhw->bchw", self.weight, self.features(x))
        return omega.mean(dim=(2, 3)) + self.bias, omega


class GazeBlobs(Dataset):
    """Random images with labels and 1 x 4 x 4 heat maps in [0, 1] (the EGD-CXR item contract)."""

    def __init__(self, n: int, seed: int, hmap_size: int = 4) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = np.arange(n) % NUM_CLASSES
        self.images = torch.randn(n, 1, 8, 8, generator=g) + torch.as_tensor(self.labels).view(-1, 1, 1, 1)
        self.hmaps = torch.rand(n, 1, hmap_size, hmap_size, generator=g)
        self.metadata = pd.DataFrame({"id": [f"s{i:02d}" for i in range(n)], "label": self.labels})

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {
            "idx": i,
            "id": self.metadata.id[i],
            "img": self.images[i],
            "lab": int(self.labels[i]),
            "hmap": self.hmaps[i],
        }


def batch_of(dataset: Dataset, n: int = 6) -> dict:
    return next(iter(make_loaders({"val": dataset}, batch_size=n, seed=0)["val"]))


def method(config: GGCAMConfig | None = None) -> GGCAM:
    torch.manual_seed(0)
    return GGCAM(StandInCAM(), config)


def test_step_is_eq11_of_its_parts():
    gg = method(GGCAMConfig(sigma_sm_init=0.3, sigma_ce_init=2.0, alpha_init=1.5))
    batch = batch_of(GazeBlobs(6, seed=0))
    out = gg.step(batch)
    logits, omega = gg.model(batch["img"])
    assert torch.equal(out.outputs["logits"], logits) and torch.equal(out.outputs["omega"], omega)
    labels, psi = batch["lab"], batch["hmap"][:, 0]
    ce = F.cross_entropy(logits, labels)
    sm = ((torch.sigmoid(1.5 * omega[torch.arange(6), labels]) - psi) ** 2).mean()
    losses = {k: v.item() for k, v in out.losses.items()}
    assert losses["ce"] == pytest.approx(ce.item(), rel=1e-6)
    assert losses["sm"] == pytest.approx(sm.item(), rel=1e-6)
    assert losses["term_sm"] == pytest.approx(sm.item() / (2 * 0.3**2), rel=1e-6)
    assert losses["term_ce"] == pytest.approx(ce.item() / 2.0**2, rel=1e-6)
    expected = losses["term_sm"] + losses["term_ce"] + math.log(1.3) + math.log(3.0)
    assert losses["loss"] == pytest.approx(expected, rel=1e-6)
    assert gg.scalars() == pytest.approx({"sigma_sm": 0.3, "sigma_ce": 2.0, "alpha": 1.5})
    out.losses["loss"].backward()
    assert all(s.raw.grad is not None for s in (gg.sigma_sm, gg.sigma_ce, gg.alpha))


def test_fixed_schedule_is_ce_plus_weight_times_sm():
    gg = method(GGCAMConfig(schedule="fixed", fixed_weight=2.5, alpha_init=1.5))
    batch = batch_of(GazeBlobs(6, seed=0))
    out = gg.step(batch)
    logits, omega = gg.model(batch["img"])
    labels, psi = batch["lab"], batch["hmap"][:, 0]
    ce = F.cross_entropy(logits, labels).item()
    sm = ((torch.sigmoid(1.5 * omega[torch.arange(6), labels]) - psi) ** 2).mean().item()
    losses = {k: v.item() for k, v in out.losses.items()}
    assert losses == pytest.approx({"loss": ce + 2.5 * sm, "ce": ce, "sm": sm, "term_sm": 2.5 * sm, "term_ce": ce},
                                   rel=1e-6)
    # no sigmas: no ln(sigma + 1) terms, nothing to log or train but alpha
    assert gg.sigma_sm is None and gg.sigma_ce is None and gg.scalars() == pytest.approx({"alpha": 1.5})
    assert not any("sigma" in k for k in gg.state_dict())
    out.losses["loss"].backward()
    assert gg.alpha.raw.grad is not None and gg.alpha.raw.grad.item() != 0
    _, scalar_group = gg.param_groups(1e-3)
    assert [id(p) for p in scalar_group["params"]] == [id(gg.alpha.raw)]
    # the public code's loss has no alpha either: one group, the network's
    public = method(GGCAMConfig.public_code("resnet"))
    public_fixed = method(dataclasses.replace(public.config, schedule="fixed"))
    assert len(public_fixed.param_groups(1e-3)) == 1 and public_fixed.scalars() == {}
    zero = method(GGCAMConfig(schedule="fixed", fixed_weight=0.0)).step(batch).losses
    assert zero["loss"].item() == pytest.approx(zero["ce"].item())


def test_public_code_variant_uses_class_zero_raw_and_no_alpha():
    gg = method(GGCAMConfig.public_code("resnet50"))
    batch = batch_of(GazeBlobs(6, seed=0))
    out = gg.step(batch)
    omega = out.outputs["omega"]
    raw_class0 = ((omega[:, 0] - batch["hmap"][:, 0]) ** 2).mean()
    assert out.losses["sm"].item() == pytest.approx(raw_class0.item())
    assert gg.alpha is None and set(gg.scalars()) == {"sigma_sm", "sigma_ce"}
    assert not any("alpha" in k for k in gg.state_dict())
    assert gg.scalars() == pytest.approx({"sigma_sm": math.exp(-23), "sigma_ce": math.exp(7)})
    assert gg.sigma_sm.raw.item() == pytest.approx(-23) and gg.sigma_ce.raw.item() == pytest.approx(7)


def test_configs():
    effnet = GGCAMConfig.public_code("effnet")
    assert (effnet.variant, effnet.sigma_parameterisation) == ("public_code", "log")
    assert math.log(effnet.sigma_sm_init) == pytest.approx(-16)
    assert GGCAMConfig.public_code("efficientnet_v2_s") == effnet
    default = GGCAMConfig()
    assert default.sigma_sm_init == 2.0e-9  # Table 1's ResNet value (attnlib.papers.gg_cam.TABLE1)
    assert (default.variant, default.sigma_parameterisation) == ("paper", "log")
    assert default.sigma_ce_init == 1.0
    assert backbone_family("ResNet18") == "resnet"
    with pytest.raises(ValueError, match="ResNets and EfficientNets"):
        backbone_family("vgg16")
    with pytest.raises(ValueError, match="variant"):
        GGCAMConfig(variant="authors")
    with pytest.raises(ValueError, match="sigma_sm_init"):
        GGCAMConfig(sigma_sm_init=0.0)
    assert (default.schedule, default.fixed_weight) == ("eq11", 1.0)
    with pytest.raises(ValueError, match="schedule must be one of"):
        GGCAMConfig(schedule="budget")
    with pytest.raises(ValueError, match="fixed_weight"):
        GGCAMConfig(schedule="fixed", fixed_weight=-1.0)


@pytest.mark.parametrize("scalar_lr", [None, 0.02])
def test_param_groups(scalar_lr):
    gg = method(GGCAMConfig(scalar_lr=scalar_lr))
    model_group, scalar_group = gg.param_groups(0.001)
    assert model_group["lr"] == 0.001 and "name" not in model_group
    assert [id(p) for p in model_group["params"]] == [id(p) for p in gg.model.parameters()]
    assert scalar_group["name"] == "scalars" and scalar_group["weight_decay"] == 0.0
    assert scalar_group["lr"] == (0.001 if scalar_lr is None else scalar_lr)
    scalars = [gg.sigma_sm.raw, gg.sigma_ce.raw, gg.alpha.raw]
    assert [id(p) for p in scalar_group["params"]] == [id(p) for p in scalars]
    public = method(GGCAMConfig.public_code("resnet"))
    assert len(public.param_groups(0.001)[1]["params"]) == 2  # no alpha


@pytest.mark.parametrize(("parameterisation", "init"), [("direct", 2.0e-9), ("log", math.exp(-23))])
def test_one_adam_step_moves_the_sigmas_by_the_scalar_lr(parameterisation, init):
    """Adam's first step has size lr whatever the gradient: s_sm (direct) or log s_sm (log) grows by it."""
    gg = method(GGCAMConfig(sigma_parameterisation=parameterisation, sigma_sm_init=init, scalar_lr=0.01))
    optimizer = torch.optim.Adam(gg.param_groups(1e-3))
    gg.step(batch_of(GazeBlobs(6, seed=0))).losses["loss"].backward()
    optimizer.step()
    raw = init if parameterisation == "direct" else math.log(init)
    assert gg.sigma_sm.raw.item() == pytest.approx(raw + 0.01, rel=1e-6)


def test_heat_map_off_the_grid_is_a_clear_error():
    gg = method()
    batch = batch_of(GazeBlobs(6, seed=0, hmap_size=8))
    shapes = r"batch\['hmap'\] has shape \(6, 1, 8, 8\) but omega has shape \(6, 3, 4, 4\)"
    with pytest.raises(ValueError, match=shapes):
        gg.step(batch)


def test_cam_classifier_is_cross_entropy_with_maps():
    torch.manual_seed(0)
    cam = CAMClassifier(StandInCAM())
    batch = batch_of(GazeBlobs(6, seed=0))
    out = cam.step(batch)
    logits, omega = cam.model(batch["img"])
    assert set(out.losses) == {"loss"} and out.outputs["omega"].shape == (6, NUM_CLASSES, 4, 4)
    assert out.losses["loss"].item() == pytest.approx(F.cross_entropy(logits, batch["lab"]).item())


def test_trainer_logs_the_curriculum(tmp_path):
    datasets = {"train": GazeBlobs(12, seed=1), "val": GazeBlobs(6, seed=2)}
    loaders = make_loaders(datasets, batch_size=4, seed=0)
    gg = method(GGCAMConfig(sigma_parameterisation="direct", scalar_lr=0.01))
    fit = Trainer(TrainConfig(epochs=2, batch_size=4, progress=False), device="cpu").fit(
        gg, loaders["train"], loaders["val"], tmp_path, seed=0
    )
    h = fit.history
    names = ("loss", "ce", "sm", "term_sm", "term_ce")
    logged = {f"{split}_{name}" for split in ("train", "val") for name in names}
    assert logged | {"sigma_sm", "sigma_ce", "alpha", "lr_scalars"} <= set(h.columns)
    assert h.lr_scalars.tolist() == [0.01, 0.01]
    assert np.isfinite(h[sorted(logged)].to_numpy()).all()
    # direct sigma_sm from 2e-9 grows by about the scalar lr per step (3 steps per epoch); the gaze term falls
    assert 0.01 < h.sigma_sm.iloc[0] < h.sigma_sm.iloc[1] <= 0.061
    assert h.train_term_sm.iloc[1] < h.train_term_sm.iloc[0]
    assert h.alpha.iloc[-1] != 1.0


def test_trainer_logs_the_fixed_schedule(tmp_path):
    datasets = {"train": GazeBlobs(12, seed=1), "val": GazeBlobs(6, seed=2)}
    loaders = make_loaders(datasets, batch_size=4, seed=0)
    gg = method(GGCAMConfig(schedule="fixed", fixed_weight=3.0))
    h = Trainer(TrainConfig(epochs=2, batch_size=4, progress=False), device="cpu").fit(
        gg, loaders["train"], loaders["val"], tmp_path, seed=0
    ).history
    assert {"train_term_sm", "train_term_ce", "val_term_sm", "alpha", "lr_scalars"} <= set(h.columns)
    assert not {"sigma_sm", "sigma_ce"} & set(h.columns)
    assert h.train_term_sm.to_numpy() == pytest.approx(3.0 * h.train_sm.to_numpy())
    assert h.train_loss.to_numpy() == pytest.approx(h.train_ce.to_numpy() + 3.0 * h.train_sm.to_numpy())


def last_model_step(gg: GGCAM, steps: int, lr: float) -> float:
    """Largest change of a network weight in the last of ``steps`` Adam steps on one batch."""
    optimizer = torch.optim.Adam(gg.param_groups(lr))
    batch = batch_of(GazeBlobs(12, seed=0), 12)
    for _ in range(steps):
        before = [p.detach().clone() for p in gg.model.parameters()]
        optimizer.zero_grad()
        gg.step(batch).losses["loss"].backward()
        optimizer.step()
    return max((p.detach() - b).abs().max().item() for p, b in zip(gg.model.parameters(), before))


def test_tiny_direct_sigma_stalls_the_network_too():
    """The network's gradients carry the weight 1/(2 sigma_sm^2): ~1e17 on the first step with Table 1's
    2e-9, ~300 once sigma_sm has moved. Adam's second moment remembers the first, so the network's steps
    die out after the first momentum (as sigma_sm's own do); with sigma_sm = 1 they stay about lr."""
    lr = 7e-3
    direct = {"sigma_parameterisation": "direct"}
    assert last_model_step(method(GGCAMConfig(sigma_sm_init=2.0e-9, **direct)), 200, lr) < 1e-3 * lr
    assert last_model_step(method(GGCAMConfig(sigma_sm_init=1.0, **direct)), 200, lr) > 0.1 * lr


def test_log_sigma_keeps_the_network_learning():
    """Why the default is "log": from the same 2e-9, sigma_sm grows by at most ~lr in log space per step,
    the gradient scale changes slowly, and the network's Adam steps stay of the order of lr."""
    lr = 7e-3
    assert last_model_step(method(GGCAMConfig(sigma_sm_init=2.0e-9)), 200, lr) > 0.1 * lr
