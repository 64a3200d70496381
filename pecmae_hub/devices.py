"""Choosing the torch device: one function, checked before any work starts."""

from __future__ import annotations

import os

import torch

from pecmae_hub.errors import ConfigError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else as ``torch.device``, checked before use.

    Under ``accelerate launch`` / torchrun ``"auto"`` is this process's GPU (``cuda:LOCAL_RANK``), as
    Accelerate places it, so that N processes of one machine use N GPUs.

    Raises :class:`ConfigError` for an unknown device string or a device this machine does not have.
    """
    if str(device) == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        local = os.environ.get("LOCAL_RANK")
        return torch.device("cuda", int(local) % torch.cuda.device_count()) if local else torch.device("cuda")
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
