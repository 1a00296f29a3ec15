"""Which torch device a command runs on: "auto", "cpu" or "cuda[:N]", with a clear error when CUDA is absent."""

from __future__ import annotations

import torch

from pipeline.core.errors import StarError


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise StarError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return torch.device(device)
