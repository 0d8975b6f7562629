"""Training methods of the reproduced papers (each an ``attnlib.training.methods.Method``)."""

from attnlib.methods.gg_cam import TABLE1, CAMClassifier, GGCAM, GGCAMConfig, backbone_family

__all__ = ["TABLE1", "CAMClassifier", "GGCAM", "GGCAMConfig", "backbone_family"]
