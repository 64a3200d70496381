"""Choosing the torch device: one function, checked before any work starts."""

from __future__ import annotations

import torch

from pecmae_hub.errors import ConfigError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else as ``torch.device``, checked before use.

    Raises :class:`ConfigError` for an unknown device string or a device this machine does not have.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "this PyTorch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ConfigError(f"device {device!r} was requested but {build}: use --device cpu (or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s) visible")
    elif dev.type not in ("cpu", "mps"):
        raise ConfigError(f"device {device!r} is not supported: use auto, cpu or cuda")
    return dev
