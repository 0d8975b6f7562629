"""Local-attention baselines (VGG-att3, ResAttNet-56/92): shapes, maps, parameter counts, registry use."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from attnlib.models.local_attention import MIN_SIDE, VGGAtt3
from attnlib.models.registry import create_model, feature_layer, get_backbone, list_models

LOCAL_ATTENTION = ("vgg_att3", "resattnet56", "resattnet92")
#: pytorchcv's own expected weight counts at 1000 classes, 3 channels (pytorchcv/models/resattnet.py, _test)
PYTORCHCV_WEIGHT_COUNT = {"resattnet56": 31810728, "resattnet92": 52466344}


@pytest.fixture(scope="module")
def built() -> dict[tuple[str, int], nn.Module]:
    """3-class models in eval mode, built once per (backbone, in_chans) for the shape tests."""
    return {}


def _model(built: dict, name: str, in_chans: int) -> nn.Module:
    if (name, in_chans) not in built:
        torch.manual_seed(0)
        built[name, in_chans] = create_model(name, 3, in_chans=in_chans, pretrained=False).eval()
    return built[name, in_chans]


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registered_without_weights(caplog):
    assert set(LOCAL_ATTENTION) <= set(list_models())
    for name in LOCAL_ATTENTION:
        assert get_backbone(name).weights is None
        with pytest.raises(ValueError, match="no pretrained weights"):
            create_model(name, 3, pretrained=True)
    with caplog.at_level(logging.WARNING):  # no weights to miss: "auto" is silent
        model = create_model("vgg_att3", 3, in_chans=1, pretrained="auto")
    assert caplog.text == "" and model.attnlib_weights == "random"
    assert model.attnlib_backbone == "vgg_att3"


@pytest.mark.parametrize("name", ["vgg_att3", "resattnet56"])
@pytest.mark.parametrize("in_chans", [1, 3])
def test_output_shapes(built, name, in_chans):
    model = _model(built, name, in_chans)
    spec = get_backbone(name)
    stem = model.get_submodule(spec.stem)
    assert isinstance(stem, nn.Conv2d) and stem.in_channels == in_chans
    model.get_submodule(feature_layer(name))
    with torch.no_grad():
        for side in (32, 64):
            assert model(torch.rand(2, in_chans, side, side)).shape == (2, 3)


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("size", [(32, 32), (64, 64), (32, 48)])
def test_vgg_att3_maps_are_spatial_softmaxes(built, in_chans, size):
    model = _model(built, "vgg_att3", in_chans)
    with torch.no_grad():
        logits, maps = model(torch.rand(2, in_chans, *size), return_maps=True)
    height, width = size
    assert logits.shape == (2, 3)
    assert [tuple(a.shape) for a in maps] == [
        (2, 1, height, width),
        (2, 1, height // 2, width // 2),
        (2, 1, height // 4, width // 4),
    ]
    for a in maps:
        assert (a >= 0).all()
        torch.testing.assert_close(a.sum(dim=(1, 2, 3)), torch.ones(2))
        assert a.std() > 0  # not the uniform map
    with torch.no_grad():
        again = model.attention_maps(torch.rand(1, in_chans, *size))
    assert [a.shape[-2:] for a in again] == [a.shape[-2:] for a in maps]


def test_vgg_att3_rejects_small_inputs():
    model = VGGAtt3(3).eval()
    with pytest.raises(ValueError, match=str(MIN_SIDE)):
        model(torch.rand(1, 3, MIN_SIDE - 1, 64))
    with pytest.raises(ValueError, match="compatibility"):
        VGGAtt3(3, compatibility="cosine")


def test_vgg_att3_parameter_count(built):
    def conv_bn(c_in: int, c_out: int) -> int:  # 3x3 conv with bias + BatchNorm's weight and bias
        return 9 * c_in * c_out + c_out + 2 * c_out

    classes, in_chans = 3, 1
    body = (
        conv_bn(in_chans, 64) + conv_bn(64, 64)  # block 1 (no pool)
        + conv_bn(64, 128) + conv_bn(128, 128)  # block 2 (no pool)
        + conv_bn(128, 256) + 2 * conv_bn(256, 256)  # block 3 -> l1 (conv 7)
        + conv_bn(256, 512) + 2 * conv_bn(512, 512)  # block 4 -> l2 (conv 10)
        + 3 * conv_bn(512, 512)  # block 5 -> l3 (conv 13)
        + 2 * conv_bn(512, 512)  # block 6 (conv + pool, twice)
    )  # fmt: skip
    global_fc = 512 * 512 + 512
    projector = 256 * 512  # l1: 1x1 conv 256 -> 512, no bias
    compatibility = 3 * 512  # u for each of l1, l2, l3: 1x1 conv 512 -> 1, no bias
    classifier = 3 * 512 * classes + classes
    expected = body + global_fc + projector + compatibility + classifier
    assert expected == 19_843_523
    assert _n_params(_model(built, "vgg_att3", in_chans)) == expected
    dot_product = VGGAtt3(classes, in_chans, compatibility="dp")
    assert _n_params(dot_product) == expected - compatibility


def _shared_weights_pair() -> tuple[VGGAtt3, VGGAtt3]:
    torch.manual_seed(1)
    pc = VGGAtt3(3, compatibility="pc").eval()
    dp = VGGAtt3(3, compatibility="dp").eval()
    result = dp.load_state_dict(pc.state_dict(), strict=False)
    assert result.missing_keys == [] and all(k.startswith("scorers.") for k in result.unexpected_keys)
    return pc, dp


def test_compatibility_scores_are_the_papers_formulas():
    pc, dp = _shared_weights_pair()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        local, g = pc.local_and_global(x)
        local_dp, g_dp = dp.local_and_global(x)
        torch.testing.assert_close(g_dp, g)
        pc_scores, dp_scores = pc.scores(local, g), dp.scores(local, g)
        pc_maps, dp_maps = pc.attention_maps(x), dp.attention_maps(x)
    for s, (feature, c_pc, c_dp) in enumerate(zip(local, pc_scores, dp_scores)):
        u = pc.scorers[s].weight.flatten()
        by_hand_pc = torch.einsum("c,bchw->bhw", u, feature + g[:, :, None, None])
        by_hand_dp = torch.einsum("bc,bchw->bhw", g, feature)
        torch.testing.assert_close(c_pc[:, 0], by_hand_pc, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(c_dp[:, 0], by_hand_dp, rtol=1e-4, atol=1e-3)
        assert not torch.allclose(c_pc, c_dp)
    for a_pc, a_dp in zip(pc_maps, dp_maps):
        assert not torch.allclose(a_pc, a_dp)


@pytest.mark.parametrize("name", ["resattnet56", "resattnet92"])
def test_resattnet_parameter_count_matches_pytorchcv(name, caplog):
    with caplog.at_level(logging.WARNING):
        model = create_model(name, 1000, in_chans=3, pretrained="auto")
    assert caplog.text == "" and model.attnlib_weights == "random"
    assert _n_params(model) == PYTORCHCV_WEIGHT_COUNT[name]
    assert isinstance(model.get_submodule("features.final_pool"), nn.AdaptiveAvgPool2d)
    with torch.no_grad():  # 32 x 32 works only because of the adaptive final pool
        assert model.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 1000)
    grey_stem = create_model(name, 2, in_chans=1, pretrained=False).get_submodule(get_backbone(name).stem)
    assert grey_stem.weight.shape == (64, 1, 7, 7)


@pytest.mark.parametrize("name", ["vgg_att3", "resattnet56"])
def test_one_backward_reaches_every_parameter(name):
    torch.manual_seed(0)
    model = create_model(name, 3, in_chans=1, pretrained=False).train()
    loss = nn.functional.cross_entropy(model(torch.rand(2, 1, 32, 32)), torch.tensor([0, 2]))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.isfinite().all()]
    assert missing == []
    head = model.get_submodule(get_backbone(name).head)
    assert head.weight.grad.abs().sum() > 0
    if name == "vgg_att3":
        for part in (model.projector, model.fc, *model.scorers):
            assert part.weight.grad.abs().sum() > 0


def test_resattnet_names_the_input_size_it_needs():
    model = create_model("resattnet56", 3, in_chans=1, pretrained=False)
    with pytest.raises(ValueError, match="multiples of 32, got 48 x 64"):
        model(torch.zeros(1, 1, 48, 64))
