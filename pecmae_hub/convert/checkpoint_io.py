"""Reading upstream checkpoint files safely: tensors only, nothing unpickled.

Upstream files come as ``.safetensors``, plain ``torch.save`` state dicts (the EnCodec ``.th``), dicts
with a ``'state_dict'`` entry (EnCodecMAE ``model.pt``, encodecmae2wav ``weights.pt``) or Lightning
``.ckpt`` files. Pickles are read with ``torch.load(weights_only=True)`` only: a file that holds arbitrary
Python objects is refused with a recipe for re-saving its state dict in a trusted environment, because
unpickling can run code. Every file is hashed (sha256) for the model card.
Weight-norm keys saved by newer PyTorch (``parametrizations.weight.original0/1``) are read as
``weight_g``/``weight_v``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pecmae_hub.errors import CheckpointError, ModelNotFoundError
from pecmae_hub.storage.integrity import sha256_file

_WN_SUFFIXES = {".parametrizations.weight.original0": ".weight_g", ".parametrizations.weight.original1": ".weight_v"}


@dataclass
class SourceFile:
    """One input file: its role, path, size and sha256 (for the model card)."""

    role: str
    path: Path
    sha256: str = ""
    size: int = 0
    container: str = ""

    @property
    def name(self) -> str:
        return self.path.name


def _refuse_pickle_message(path: Path, detail: str) -> str:
    return (
        f"{path} cannot be read with torch.load(weights_only=True): it contains arbitrary Python objects "
        f"(e.g. a Lightning checkpoint's hyper-parameters or callbacks), which pecmae refuses to unpickle "
        f"because unpickling can run code. In a trusted environment, re-save just the state dict:\n"
        f"    python -c \"import torch; p='{path}'; "
        f"torch.save(torch.load(p, weights_only=False)['state_dict'], 'clean.pt')\"\n"
        f"(for a file without a 'state_dict' entry, save the object itself if it is a dict of tensors) "
        f"and convert clean.pt instead. Detail: {detail}"
    )


def read_state_dict(path: str | os.PathLike, role: str = "checkpoint") -> tuple[dict, SourceFile]:
    """Tensors of an upstream file, without unpickling code.

    Accepts ``.safetensors``, a plain ``torch.save`` state dict (EnCodec ``.th``), a dict with
    ``'state_dict'`` (EnCodecMAE ``model.pt``, encodecmae2wav ``weights.pt``) or a Lightning ``.ckpt``.
    Weight-norm parametrisation keys are renamed to ``weight_g``/``weight_v``; tensors become float32.
    """
    import torch

    path = Path(os.fspath(path)).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(f"{role} file not found: {path}")
    src = SourceFile(role=role, path=path, size=path.stat().st_size)
    if src.size == 0:
        raise CheckpointError(f"{role} file {path} is empty (0 bytes)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path))  # or whatever torch.load finds below
        except Exception as exc:  # safetensors raises SafetensorError / OSError
            raise CheckpointError(f"cannot read {role} {path} as safetensors: {exc}") from None
        src.container = "safetensors"
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            text = str(exc)
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            detail = next(
                (line for line in lines if "WeightsUnpickler error" in line), lines[0] if lines else type(exc).__name__
            )
            if "Unsupported global" in text or "GLOBAL " in text:
                raise CheckpointError(_refuse_pickle_message(path, detail)) from None
            raise CheckpointError(
                f"cannot read {role} {path}: not a PyTorch checkpoint or safetensors file, or it is corrupt "
                f"({type(exc).__name__}: {detail[:200]})"
            ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        extra = sorted(k for k in obj if k != "state_dict")
        if not src.container:
            src.container = (
                "Lightning checkpoint" if {"epoch", "global_step"} & set(extra) else "dict with 'state_dict'"
            )
        state = obj["state_dict"]
    elif isinstance(obj, dict):
        src.container = src.container or "plain state dict"
        state = obj
    else:
        raise CheckpointError(f"{role} {path} holds a {type(obj).__name__}, not a state dict")
    tensors, bad = {}, []
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            bad.append(key)
            continue
        for old, new in _WN_SUFFIXES.items():
            if key.endswith(old):
                key = key[: -len(old)] + new
        tensors[key] = value.detach().float() if value.is_floating_point() else value.detach()
    if bad:
        raise CheckpointError(f"{role} {path}: entries that are not tensors: {', '.join(sorted(bad)[:10])}")
    if not tensors:
        raise CheckpointError(f"{role} {path} holds no tensors")
    src.sha256 = sha256_file(path)
    return tensors, src
