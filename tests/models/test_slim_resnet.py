"""The benchmark's small CPU network: a torchvision ResNet that every ResNet head accepts."""

import torch
import torchvision.models as tvm

import attnlib.models  # noqa: F401  (registers the backbones and heads)
from attnlib.models.backbones import SLIM_WIDTHS
from attnlib.models.gala import forward_with_volumes
from attnlib.models.registry import create_model


def test_plain_network_keeps_resnet_layout_and_geometry() -> None:
    model = create_model("slim_resnet10", 5, in_chans=3, pretrained=False)
    assert isinstance(model, tvm.ResNet)
    assert [model.get_submodule(f"layer{i}")[0].conv2.out_channels for i in range(1, 5)] == list(SLIM_WIDTHS)
    features = torch.nn.Sequential(*[model.get_submodule(n) for n in ("conv1", "bn1", "relu", "maxpool", "layer1",
                                                                      "layer2", "layer3", "layer4")])
    assert features(torch.zeros(2, 3, 32, 32)).shape == (2, SLIM_WIDTHS[-1], 4, 4)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
    # a quarter-width, one-block-per-stage ResNet: far fewer parameters than ResNet-18's 11.2 M
    assert sum(p.numel() for p in model.parameters()) < 1_000_000


def test_grey_input_and_every_head() -> None:
    x = torch.rand(2, 1, 32, 32)
    logits, omega = create_model("slim_resnet10", 3, in_chans=1, pretrained=False, head="cam")(x)
    assert logits.shape == (2, 3) and omega.shape == (2, 3, 4, 4)
    out = create_model("slim_resnet10", 3, in_chans=1, pretrained=False, head="abn")(x)
    assert out.perception_logits.shape == (2, 3) and out.predicted_map.shape == (2, 1, 8, 8)
    gala = create_model("slim_resnet10", 3, in_chans=1, pretrained=False, head="gala")
    logits, volumes = forward_with_volumes(gala, x)
    assert logits.shape == (2, 3) and [v.shape[-2:] for v in volumes] == [(8, 8)]
