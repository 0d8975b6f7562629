"""Training methods of the reproduced papers (each an ``attnlib.training.methods.Method``)."""

from attnlib.methods.gg_cam import TABLE1, CAMClassifier, GGCAM, GGCAMConfig, backbone_family
from attnlib.methods.global_attention import GlobalAttention, GlobalAttentionConfig, PixelWeightL1

__all__ = [
    "TABLE1",
    "CAMClassifier",
    "GGCAM",
    "GGCAMConfig",
    "GlobalAttention",
    "GlobalAttentionConfig",
    "PixelWeightL1",
    "backbone_family",
]
