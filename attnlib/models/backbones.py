"""The registered backbones: torchvision's (ResNets, EfficientNets, DenseNet, VGG, GoogLeNet), the public GG-CAM
code's ResNet-50 variant and the local-attention baselines (VGG-att3, ResAttNet-56/92)."""

from __future__ import annotations

import torchvision.models as tvm
from torch import nn
from torchvision.models import WeightsEnum

from attnlib.models import local_attention
from attnlib.models.registry import register_backbone, set_submodule

#: torchvision backbones used by the papers (and efficientnet_b0, a small one for CPU profiles):
#: name -> (weights, stem, head, feature layer).
#: Weights: torchvision's original IMAGENET1K_V1 releases (ResNet-50/152 also have newer V2 files).
_TORCHVISION = {
    "resnet18": (tvm.ResNet18_Weights.IMAGENET1K_V1, "conv1", "fc", "layer4"),
    "resnet34": (tvm.ResNet34_Weights.IMAGENET1K_V1, "conv1", "fc", "layer4"),
    "resnet50": (tvm.ResNet50_Weights.IMAGENET1K_V1, "conv1", "fc", "layer4"),
    "resnet152": (tvm.ResNet152_Weights.IMAGENET1K_V1, "conv1", "fc", "layer4"),
    "efficientnet_b0": (
        tvm.EfficientNet_B0_Weights.IMAGENET1K_V1,
        "features.0.0",
        "classifier.1",
        "features",
    ),
    "efficientnet_v2_s": (
        tvm.EfficientNet_V2_S_Weights.IMAGENET1K_V1,
        "features.0.0",
        "classifier.1",
        "features",
    ),
    "densenet161": (tvm.DenseNet161_Weights.IMAGENET1K_V1, "features.conv0", "classifier", "features"),
    "vgg16": (tvm.VGG16_Weights.IMAGENET1K_V1, "features.0", "classifier.6", "features"),
}


def _register_torchvision() -> None:
    for name, (weights, stem, head, features) in _TORCHVISION.items():
        register_backbone(name, weights=weights, stem=stem, head=head, feature_layer=features)(
            getattr(tvm, name)
        )


_register_torchvision()


@register_backbone(
    "googlenet",
    weights=tvm.GoogLeNet_Weights.IMAGENET1K_V1,
    stem="conv1.conv",
    head="fc",
    feature_layer="inception5b",
)
def _googlenet(*, weights: WeightsEnum | None) -> nn.Module:
    """GoogLeNet without auxiliary heads and without torchvision's input re-normalisation.

    ``transform_input`` is off because it assumes three ImageNet-normalised channels.
    """
    if weights is None:
        return tvm.googlenet(weights=None, aux_logits=False, transform_input=False, init_weights=True)
    return tvm.googlenet(weights=weights, transform_input=False)


@register_backbone("vgg_att3", weights=None, stem="block1.0.0", head="classifier", feature_layer="block6")
def _vgg_att3(*, weights: WeightsEnum | None) -> nn.Module:
    """VGG-att3 ("Learn to Pay Attention"), no pretrained weights; see ``local_attention.VGGAtt3``.

    ``feature_layer`` is block6, whose pooled output gives the global feature g.
    """
    return local_attention.VGGAtt3(num_classes=1000)


@register_backbone(
    "resnet50_ggcam_public",
    weights=None,
    stem="conv1",
    head="fc",
    feature_layer="layer4",
    grey_input="replicate",
)
def _resnet50_ggcam_public(*, weights: WeightsEnum | None) -> nn.Module:
    """The public GG-CAM code's ResNet-50 (its ``my_resnet.py``), trained from scratch (no weights).

    torchvision's ResNet-50 but: no max-pool (``maxpool`` is an identity); the first bottleneck of
    every stage, layer1 included, strides 2 in its first 1x1 convolution and its shortcut (torchvision:
    layer1 does not stride, layers 2-4 stride in the 3x3 convolution), so the features keep stride 32;
    every convolution has a bias; PyTorch's default initialisation (the code's, not torchvision's
    Kaiming-normal). A grey image is copied into the three input channels (``ReplicatedGreyConv2d``).
    """
    model = tvm.resnet50(weights=None)
    model.maxpool = nn.Identity()
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        first = layer[0]
        first.conv1.stride = first.downsample[0].stride = (2, 2)
        first.conv2.stride = (1, 1)
        first.stride = 2
    for name, conv in [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]:
        biased = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=True,
        )
        set_submodule(model, name, biased)
    return model


#: pytorchcv's ResAttNet (no pretrained weights); ``features.post_activ`` (BN + ReLU) is what gets pooled.
_RESATTNET_PARTS = {
    "weights": None,
    "stem": "features.init_block.conv.conv",
    "head": "output",
    "feature_layer": "features.post_activ",
}


@register_backbone("resattnet56", **_RESATTNET_PARTS)
def _resattnet56(*, weights: WeightsEnum | None) -> nn.Module:
    """ResAttNet-56 (a smaller CPU substitute for -92); see ``local_attention.resattnet``."""
    return local_attention.resattnet(56)


@register_backbone("resattnet92", **_RESATTNET_PARTS)
def _resattnet92(*, weights: WeightsEnum | None) -> nn.Module:
    """ResAttNet-92, the paper's baseline; see ``local_attention.resattnet``."""
    return local_attention.resattnet(92)


#: Stage widths of ``slim_resnet10`` (a quarter of ResNet-18's 64 / 128 / 256 / 512).
SLIM_WIDTHS = (16, 32, 64, 128)


class SlimResNet(tvm.ResNet):
    """A torchvision ``ResNet`` with one ``BasicBlock`` per stage, a quarter of the widths and a CIFAR-style stem.

    The benchmark's CPU network: every head that takes a torchvision ResNet (CAM, ABN, GALA) takes it too, because
    it keeps ResNet's module names (conv1, bn1, relu, maxpool, layer1-4, avgpool, fc) and forward. The stem is a
    3x3 convolution with stride 1 and no max-pool (torchvision's 7x7 stride-2 stem and max-pool would leave a
    32-px image 1 x 1 after layer4), so a 32-px input gives 8 x 8 after layer3 and 4 x 4 after layer4.
    No pretrained weights exist: it always starts from random weights.
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__(tvm.resnet.BasicBlock, [1, 1, 1, 1], num_classes=num_classes)
        self.inplanes = SLIM_WIDTHS[0]
        self.conv1 = nn.Conv2d(3, SLIM_WIDTHS[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(SLIM_WIDTHS[0])
        self.maxpool = nn.Identity()
        block = tvm.resnet.BasicBlock
        self.layer1 = self._make_layer(block, SLIM_WIDTHS[0], 1)
        self.layer2 = self._make_layer(block, SLIM_WIDTHS[1], 1, stride=2)
        self.layer3 = self._make_layer(block, SLIM_WIDTHS[2], 1, stride=2)
        self.layer4 = self._make_layer(block, SLIM_WIDTHS[3], 1, stride=2)
        self.fc = nn.Linear(SLIM_WIDTHS[3], num_classes)
        for module in self.modules():  # torchvision's initialisation, re-applied to the replaced layers
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)


@register_backbone("slim_resnet10", weights=None, stem="conv1", head="fc", feature_layer="layer4")
def _slim_resnet10(*, weights: WeightsEnum | None) -> nn.Module:
    """``SlimResNet``: the benchmark's small CPU network (no pretrained weights)."""
    return SlimResNet()
