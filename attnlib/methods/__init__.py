"""Training methods of the reproduced papers (each an ``attnlib.methods.base.Method``)."""

from attnlib.methods.gg_cam import GGCAM, CAMClassifier, GGCAMConfig, backbone_family
from attnlib.methods.global_attention import GlobalAttention, GlobalAttentionConfig, PixelWeightL1
from attnlib.methods.saliency_supervision import NeuralHarmonizer, RightForRightReasons

__all__ = [
    "GGCAM",
    "CAMClassifier",
    "GGCAMConfig",
    "GlobalAttention",
    "GlobalAttentionConfig",
    "PixelWeightL1",
    "backbone_family",
    "NeuralHarmonizer",
    "RightForRightReasons",
]
