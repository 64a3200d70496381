"""Inference precision of an :class:`~pecmae_hub.models.autoencoder.Autoencoder`.

``apply_precision(model, p)`` switches a loaded model, in place, between:

- ``"fp32"``: the reference numerics (default; what the parity tests check);
- ``"int8"`` (CPU): every transformer linear layer (frame encoder, CLS encoder, denoiser) runs int8 × int8
  GEMMs through PyTorch's dynamic quantisation (oneDNN, else fbgemm; weights symmetric per output
  channel, activations per tensor, quantised on the fly); attention, LayerNorms and the residual
  streams stay fp32. The EnCodec codec runs in bfloat16 when the CPU computes bfloat16 natively
  (AVX512-BF16/AMX), else in fp32;
- ``"bf16"``: transformers under bfloat16 autocast and the codec in bfloat16 (CUDA, or a CPU with native
  bfloat16);
- ``"fp16"`` (CUDA only): float16 autocast and a float16 codec.

``"auto"`` (the default of ``from_pretrained``, the command line and the app) is not a mode of its own: it is
resolved to one of these before the model is built, by :mod:`pecmae_hub.models.fidelity_record` (the fast
mode only when the model carries a passing fidelity record and this machine runs it natively, see
:func:`fast_precision`; else fp32, with the reason logged once).

Weights stay fp32 parameters in every mode (the int8 copies are derived and cached, repacked when a
parameter changes), so ``state_dict``/``save_pretrained`` are unaffected and ``apply_precision(model,
"fp32")`` restores the exact path. Every mode returns float32 tensors. Autograd always takes the fp32
path. Measured fidelity and speed: ``python bench/autoencoder.py``.
"""

from __future__ import annotations

import contextlib
import functools
import platform
import warnings
from collections.abc import Iterator
from typing import Any, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from pecmae_hub.errors import ConfigError

PRECISIONS = ("fp32", "int8", "bf16", "fp16")
AUTO = "auto"
#: what a user may ask for: a mode, or ``"auto"`` (resolved per model and machine)
PRECISION_CHOICES = (AUTO, *PRECISIONS)
_HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}
_M = TypeVar("_M", bound=nn.Module)
_MIN_INT8_FEATURES = 64  # tiny layers (the denoiser's Linear(1 -> D) time embedding) gain nothing from int8


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when oneDNN computes bfloat16 natively on this CPU (otherwise bf16 is emulated and slower)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_int8_support() -> tuple[bool, str]:
    """``(fast, what)``: whether this CPU runs the int8 GEMMs of ``"int8"`` faster than fp32, and in words why.

    Measured fast (``bench/autoencoder.py``) on x86-64 with AVX2 or AVX-512 vector units, where oneDNN/fbgemm
    have int8 kernels (faster still with VNNI or AMX, named in ``what``). PyTorch's own dispatch level
    (``torch.backends.cpu.get_cpu_capability()``) decides, the ``/proc/cpuinfo`` flags add detail. Other CPUs
    (ARM, or x86 without AVX2) are not claimed: ``"auto"`` stays fp32 there.
    """
    try:
        capability = str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        capability = "unknown"
    machine = platform.machine().lower()
    flags = _cpu_flags()
    extras = [
        name for name, flag in (("VNNI", "avx512_vnni"), ("AVX-VNNI", "avx_vnni"), ("AMX", "amx_int8")) if flag in flags
    ]
    what = capability + (f" + {', '.join(extras)}" if extras else "")
    if machine not in ("x86_64", "amd64") or capability not in ("AVX2", "AVX512"):
        return False, f"{machine} CPU ({what}): int8 kernels are not measured faster here"
    if not {"onednn", "fbgemm", "x86"} & set(torch.backends.quantized.supported_engines):
        return False, f"this PyTorch has no x86 int8 engine (engines: {torch.backends.quantized.supported_engines})"
    return True, what


def fast_precision(device: torch.device | str) -> tuple[str | None, str]:
    """``(precision, what)``: the fast mode ``"auto"`` would use on ``device`` (None: none here), in words.

    CPU: ``"int8"`` where :func:`cpu_int8_support` says so (with the bf16 codec where the CPU computes
    bfloat16 natively); CUDA: ``"bf16"`` on GPUs that support it, else ``"fp16"``; other devices: None.
    """
    device = torch.device(device)
    if device.type == "cpu":
        fast, what = cpu_int8_support()
        if not fast:
            return None, what
        codec = "bf16 codec" if cpu_has_native_bf16() else "fp32 codec (no native bfloat16)"
        return "int8", f"int8 GEMMs on {what}, {codec}"
    if device.type == "cuda":
        try:
            bf16 = bool(torch.cuda.is_bf16_supported())
        except (AssertionError, RuntimeError):  # no usable CUDA runtime
            bf16 = False
        return ("bf16", "bfloat16 autocast") if bf16 else ("fp16", "float16 autocast (no bfloat16 on this GPU)")
    return None, f"no fast mode is measured on {device.type} devices"


def fallback_precisions(device: torch.device | str) -> list[str]:
    """The other fast modes ``"auto"`` may take on ``device``, in order, when the model's fidelity record does not
    vouch for :func:`fast_precision`'s: bf16 on a CPU that computes bfloat16 natively (its encoder is as fast
    as int8's there, its decoder about fp32's speed), fp16 after bf16 on CUDA."""
    device = torch.device(device)
    first = fast_precision(device)[0]
    if first is None:
        return []
    if device.type == "cpu":
        return ["bf16"] if cpu_has_native_bf16() else []
    return ["fp16"] if first == "bf16" else []


def codec_dtype_for(precision: str, device: torch.device | str) -> str:
    """The codec compute dtype ``apply_precision(model, precision)`` sets on ``device`` (``"float32"``,
    ``"bfloat16"`` or ``"float16"``): part of what a fidelity record has to cover."""
    if precision == "int8":
        return "bfloat16" if cpu_has_native_bf16() else "float32"
    return {"bf16": "bfloat16", "fp16": "float16"}.get(precision, "float32")


def _int8_backend() -> tuple[str, bool]:
    """(quantized engine to pack with, reduce_range). oneDNN's dynamic linear measured 1.1-1.3x faster
    than fbgemm's here and takes full-range activations; fbgemm accumulates through saturating int16
    without AVX512-VNNI, so there activations must lose a bit (reduce_range)."""
    if "onednn" in torch.backends.quantized.supported_engines:
        return "onednn", False
    return torch.backends.quantized.engine, "avx512_vnni" not in _cpu_flags()


def _param_stamp(params) -> tuple | None:
    try:
        return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
    except RuntimeError:  # inference tensors have no version counter
        return None


class Int8DynamicLinear(nn.Linear):
    """An ``nn.Linear`` (same parameters and state-dict keys) whose no-grad CPU forward is an int8 GEMM.

    Installed by :func:`apply_precision` by switching the class of existing layers; under autograd, on
    another device or dtype it is the plain fp32 layer.
    """

    def _packed(self):
        """(packed int8 weights, reduce_range), rebuilt when a parameter changed."""
        stamp = _param_stamp((self.weight, self.bias) if self.bias is not None else (self.weight,))
        hit = self.__dict__.get("_int8_cache")
        if hit is not None and stamp is not None and hit[0] == stamp:
            return hit[1]
        engine, reduce_range = _int8_backend()
        previous = torch.backends.quantized.engine
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # quantised-tensor constructors are flagged as deprecated
            w = self.weight.detach().float()
            scale = (w.abs().amax(1).clamp_min(1e-12) / 127.0).double()
            zero = torch.zeros(w.shape[0], dtype=torch.long)
            qw = torch.quantize_per_channel(w, scale, zero, 0, torch.qint8)
            bias = None if self.bias is None else self.bias.detach().float()
            try:  # the packed object remembers its backend: the engine matters while packing only
                torch.backends.quantized.engine = engine
                packed = torch.ops.quantized.linear_prepack(qw, bias)
            finally:
                torch.backends.quantized.engine = previous
        value = (packed, reduce_range)
        if stamp is not None:
            self.__dict__["_int8_cache"] = (stamp, value)
        return value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            torch.is_grad_enabled()
            or x.device.type != "cpu"
            or x.dtype != torch.float32
            or self.weight.device.type != "cpu"
        ):
            return F.linear(x, self.weight, self.bias)
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        if not flat.is_contiguous():
            flat = flat.contiguous()
        packed, reduce_range = self._packed()
        out = torch.ops.quantized.linear_dynamic(flat, packed, reduce_range)
        return out.view(*shape[:-1], out.shape[-1])

    def __getstate__(self):
        state = super().__getstate__()
        state = dict(state)
        state.pop("_int8_cache", None)  # derived; rebuilt on first use after a copy or unpickling
        return state


class _CastForward:
    """Replaces a module's ``forward``: run it under autocast to ``dtype`` and return float32 tensors."""

    def __init__(self, forward, device_type: str, dtype: torch.dtype):
        self.forward, self.device_type, self.dtype = forward, device_type, dtype

    def __call__(self, *args, **kwargs):
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.forward(*args, **kwargs)
        return out.float() if isinstance(out, torch.Tensor) and out.is_floating_point() else out


def _transformers(model) -> list[nn.Module]:
    names = ("frame_encoder", "cls_encoder", "denoiser")
    return [m for m in (getattr(model, n, None) for n in names) if m is not None]


def _reset(model) -> None:
    for module in model.modules():
        if isinstance(module, Int8DynamicLinear):
            cast(nn.Module, module).__class__ = nn.Linear
            module.__dict__.pop("_int8_cache", None)
        if isinstance(module.__dict__.get("forward"), _CastForward):
            del module.forward
    codec: Any = getattr(model, "codec", None)
    if hasattr(codec, "set_compute_dtype"):
        codec.set_compute_dtype(torch.float32)


def check_precision(precision: str, device: torch.device | str) -> str:
    """Validate ``precision`` for ``device``; returns it. Raises ConfigError with the reason otherwise."""
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "int8" and device.type != "cpu":
        raise ConfigError("precision 'int8' runs on the CPU only (fbgemm); on CUDA use 'bf16' or 'fp16'")
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision 'fp16' needs a CUDA device; on the CPU use 'int8' (or 'bf16' where supported)")
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        raise ConfigError("precision 'bf16' needs a CPU with native bfloat16 (AVX512-BF16 or AMX); use 'int8'")
    return precision


def apply_precision(model: _M, precision: str = "fp32") -> _M:
    """Switch ``model`` (an Autoencoder, in place) to ``precision``; returns it. See the module docstring.

    Call it after moving the model to its device. ``model.precision`` records the mode.
    """
    device = next(model.parameters()).device
    check_precision(precision, device)
    _reset(model)
    codec: Any = getattr(model, "codec", None)
    if precision == "int8":
        for part in _transformers(model):
            for module in part.modules():
                if type(module) is nn.Linear and min(module.in_features, module.out_features) >= _MIN_INT8_FEATURES:
                    module.__class__ = Int8DynamicLinear
        if hasattr(codec, "set_compute_dtype") and cpu_has_native_bf16():
            codec.set_compute_dtype(torch.bfloat16)
    elif precision in _HALF:
        dtype = _HALF[precision]
        for part in _transformers(model):
            part.forward = _CastForward(part.forward, device.type, dtype)
        if hasattr(codec, "set_compute_dtype"):
            codec.set_compute_dtype(dtype)
    cast(Any, model).precision = precision  # a plain attribute (nn.Module's __setattr__ stub expects tensors)
    return model


@contextlib.contextmanager
def precision_scope(model, precision: str) -> Iterator:
    """Run ``model`` (an Autoencoder) at ``precision`` inside the ``with`` block, then switch it back."""
    before = getattr(model, "precision", "fp32")
    if before == precision:
        yield model
        return
    apply_precision(model, precision)
    try:
        yield model
    finally:
        apply_precision(model, before)
