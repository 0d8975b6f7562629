"""Which device to compute on."""

from __future__ import annotations

import torch


def default_device(preferred: str | torch.device | None = None) -> torch.device:
    """``preferred`` when given and usable, otherwise CUDA when available, otherwise the CPU.

    Asking for CUDA (``"cuda"``, ``"cuda:1"``) on a machine without it, or for a GPU index that
    does not exist, raises ``RuntimeError`` rather than silently training on the CPU.
    """
    if preferred is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(preferred)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device {str(device)!r} was requested but CUDA is not available "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); use 'cpu' or None"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(
                f"device {str(device)!r} was requested but only {torch.cuda.device_count()} GPU(s) exist"
            )
    return device
