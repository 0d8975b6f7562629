"""Backbone registry: every registered model is built, adapted and loaded the same way (never downloads)."""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from attnlib.models import registry
from attnlib.models.registry import create_model, feature_layer, list_models, register_backbone, weight_path

PAPER_BACKBONES = {
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet152",
    "efficientnet_v2_s",
    "densenet161",
    "vgg16",
    "googlenet",
}
#: building + saving + loading these takes seconds (hundreds of MB of weights)
_HEAVY = {"vgg16", "resnet152"}


def _models(heavy_slow: bool = False) -> list:
    return [
        pytest.param(name, marks=pytest.mark.slow) if heavy_slow and name in _HEAVY else name
        for name in list_models()
        if registry.get_backbone(name).weights is not None  # weightless: see test_local_attention.py
    ]


@pytest.fixture(autouse=True)
def empty_hub(tmp_path, monkeypatch) -> Iterator[Path]:
    """An empty torch.hub cache, so no test sees (or needs) real downloaded weights."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    hub = Path(torch.hub.get_dir())
    assert hub.is_relative_to(tmp_path), f"torch.hub.set_dir() was called elsewhere: {hub}"
    yield hub
    shutil.rmtree(hub, ignore_errors=True)  # fake weight files are large; pytest keeps tmp dirs


def _imagenet_reference(name: str) -> nn.Module:
    """torchvision's own architecture for ``name``, shaped like its ImageNet weight file."""
    if name == "googlenet":  # the weight file carries the auxiliary heads
        return tvm.googlenet(weights=None, aux_logits=True, init_weights=True)
    # GALA- and SE-ResNets load their plain ResNet's file
    return tvm.get_model(name.removeprefix("gala_").removeprefix("se"), weights=None)


def test_paper_backbones_are_registered():
    assert set(list_models()) >= PAPER_BACKBONES
    assert list_models() == sorted(list_models())


@pytest.mark.parametrize("name", _models())
def test_forward_shape_and_auto_falls_back_to_random(name, empty_hub, caplog):
    with caplog.at_level(logging.WARNING, logger="attnlib.models.registry"):
        model = create_model(name, num_classes=5, pretrained="auto")
    assert "RANDOM weights" in caplog.text and str(weight_path(name)) in caplog.text
    assert weight_path(name).is_relative_to(empty_hub)
    assert model.attnlib_weights == "random"
    assert model.attnlib_backbone == name
    model.get_submodule(feature_layer(name))  # the CAM layer's anchor exists
    with torch.no_grad():
        out = model.eval()(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 5)


@pytest.mark.parametrize("name", _models(heavy_slow=True))
def test_cached_weight_file_is_loaded(name, caplog):
    reference = _imagenet_reference(name).state_dict()
    path = weight_path(name)
    path.parent.mkdir(parents=True)
    torch.save(reference, path)
    spec = registry.get_backbone(name)
    with caplog.at_level(logging.WARNING):
        model = create_model(name, num_classes=4, in_chans=1, pretrained=True)
    assert caplog.text == ""
    assert model.attnlib_weights == f"imagenet:{path}"
    state = model.state_dict()
    stem, head = f"{spec.stem}.weight", f"{spec.head}."
    assert torch.equal(state[stem], reference[stem].sum(dim=1, keepdim=True))
    assert state[f"{spec.head}.weight"].shape[0] == 4
    compared = [k for k in state if k != stem and not k.startswith(head) and k in reference]
    assert compared and all(torch.equal(state[k], reference[k]) for k in compared)
    assert all(".attention." in k for k in set(state) - set(reference))  # only GALA / SE modules are new
    with torch.no_grad():
        assert model.eval()(torch.rand(2, 1, 64, 64)).shape == (2, 4)


@pytest.mark.parametrize("name", _models())
def test_pretrained_true_without_file_names_the_path(name):
    with pytest.raises(FileNotFoundError, match=re.escape(str(weight_path(name)))):
        create_model(name, num_classes=2, pretrained=True)


def test_pretrained_false_ignores_a_present_file():
    path = weight_path("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(tvm.resnet18().state_dict(), path)
    assert create_model("resnet18", 2, pretrained=False).attnlib_weights == "random"
    assert create_model("resnet18", 2, pretrained="auto").attnlib_weights == f"imagenet:{path}"


def test_grey_stem_sums_rgb_kernels_of_the_same_weights():
    torch.manual_seed(0)
    rgb = create_model("resnet18", 3, in_chans=3, pretrained=False)
    torch.manual_seed(0)
    grey = create_model("resnet18", 3, in_chans=1, pretrained=False)
    assert torch.equal(grey.conv1.weight, rgb.conv1.weight.sum(dim=1, keepdim=True))
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():  # a grey image through the grey stem = its RGB copy through the RGB stem
        assert torch.allclose(grey.conv1(x), rgb.conv1(x.expand(1, 3, 32, 32)), atol=1e-6)


def test_bad_arguments():
    with pytest.raises(KeyError, match="resnet18"):
        create_model("resnet19", 2)
    with pytest.raises(ValueError, match="in_chans"):
        create_model("resnet18", 2, in_chans=2)
    with pytest.raises(ValueError, match="pretrained"):
        create_model("resnet18", 2, pretrained="yes")
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("resnet18", weights=None, stem="conv1", head="fc", feature_layer="layer4")(
            tvm.resnet18
        )


def test_register_custom_backbone(monkeypatch, caplog):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_backbone("tiny", weights=None, stem="0", head="3", feature_layer="1")
    def tiny(*, weights):
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))

    assert "tiny" in list_models() and feature_layer("tiny") == "1"
    with caplog.at_level(logging.WARNING):
        model = create_model("tiny", 3, in_chans=1)
    assert caplog.text == "" and model.attnlib_weights == "random"
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 3)
    with pytest.raises(ValueError, match="no pretrained weights"):
        create_model("tiny", 3, pretrained=True)


def test_missing_weights_warn_once_per_process(empty_hub, caplog):
    with caplog.at_level(logging.INFO, logger="attnlib.models.registry"):
        create_model("resnet18", 2, pretrained="auto")
        create_model("resnet18", 2, pretrained="auto")
    levels = [r.levelno for r in caplog.records if "RANDOM weights" in r.getMessage()]
    assert levels == [logging.WARNING, logging.INFO]


def test_heads_are_registered_and_checked_before_building():
    assert registry.list_heads() == ["abn", "cam", "gala"]
    with pytest.raises(KeyError, match="unknown head 'vit'; registered: abn, cam, gala"):
        registry.create_model("resnet18", 3, pretrained=False, head="vit")
    with pytest.raises(TypeError, match=r"options \['channel_mean'\] are for a head"):
        registry.create_model("resnet18", 3, pretrained=False, channel_mean=True)
    with pytest.raises(ValueError, match="no ABN for backbone 'vgg16'"):
        registry.create_model("vgg16", 3, pretrained=False, head="abn")
    cam = registry.create_model("resnet18", 3, in_chans=1, pretrained=False, head="cam", channel_mean=True)
    assert type(cam).__name__ == "CAMNet" and cam.head.channel_mean
    gala = registry.create_model("resnet18", 3, pretrained=False, head="gala", variant="public")
    assert gala.attnlib_backbone == "gala_resnet18" and gala.attnlib_gala_variant == "public"
