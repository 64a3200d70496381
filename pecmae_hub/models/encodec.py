"""EnCodec 24 kHz SEANet encoder and decoder (our code, the official checkpoint's key names).

Key pattern (docs/architecture.md §3): ``encoder.model.<i>.conv.conv.{weight_g,weight_v,bias}``,
``decoder.model.<i>.convtr.convtr.*``, residual blocks ``<i>.block.{1,3}.*`` / ``<i>.shortcut.*``,
LSTMs ``<i>.lstm.{weight_ih_l0,...}``. Weight norm is the legacy form (g, v), so
``encodec_24khz-d7cc33bc.th`` loads strictly after dropping the quantizer keys.

Two implementations of the same network:
- the *reference* path (the modules' ``forward``): channels-first ``F.conv1d`` with the causal reflect
  padding of EnCodec's ``SConv1d`` (left k_eff − stride, extra right up to a whole frame), transposed
  convs trimmed on the right; used whenever autograd is recording;
- the *fast* path (:mod:`pecmae_hub.models.seanet_fast`), used under ``torch.no_grad``/``inference_mode``:
  channels-last GEMMs on weight-normalised weights cached until a parameter changes. In float32 it gives
  the reference numbers to ~1e-6 relative; :meth:`EncodecCodec.set_compute_dtype` makes it compute in
  bfloat16 (CPUs with native bf16) or float16 (CUDA) instead, the documented low-precision option.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

RATIOS = (8, 5, 4, 2)  # decoder order; the encoder uses them reversed
N_FILTERS = 32
DIMENSION = 128


def _weight_norm(v: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return v * (g / v.norm(dim=tuple(range(1, v.dim())), keepdim=True))


def _reflect_pad(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Reflect padding that also works for inputs shorter than the pad (zero-extends first, as EnCodec)."""
    if not left and not right:
        return x
    length = x.shape[-1]
    max_pad = max(left, right)
    extra = 0
    if length <= max_pad:
        extra = max_pad - length + 1
        x = F.pad(x, (0, extra))
    x = F.pad(x, (left, right), mode="reflect")
    return x[..., : x.shape[-1] - extra]


def _param_stamp(params) -> tuple | None:
    """Identity + version of parameters (None when they cannot be versioned, e.g. inference tensors)."""
    try:
        return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
    except RuntimeError:
        return None


def _cached_weights(module: nn.Module, build, dtype: torch.dtype = torch.float32):
    """build()'s tensors cast to ``dtype``, cached on ``module`` and recomputed only when one of its parameters
    changed (one entry per dtype)."""
    params = tuple(module.parameters())
    stamp = _param_stamp(params)
    cache = module.__dict__.setdefault("_fast_cache", {})
    hit = cache.get(dtype)
    if stamp is not None and hit is not None and hit[0] == stamp:
        return hit[1]
    with torch.inference_mode(False), torch.no_grad():
        value = tuple(t.to(dtype) for t in build())  # weight norm in fp32, then the cast
    if stamp is not None:
        cache[dtype] = (stamp, value)
    return value


class _CachedWeights:
    """Mixin (of ``nn.Module`` subclasses): ``_cached(build, dtype)`` is :func:`_cached_weights` on ``self``."""

    def _cached(self, build, dtype: torch.dtype = torch.float32):
        return _cached_weights(cast(nn.Module, self), build, dtype)


class _WNConv1d(_CachedWeights, nn.Module):
    def __init__(self, cin, cout, kernel, stride=1, dilation=1):
        super().__init__()
        self.stride, self.dilation = stride, dilation
        self.weight_g = nn.Parameter(torch.ones(cout, 1, 1))
        self.weight_v = nn.Parameter(torch.randn(cout, cin, kernel) / math.sqrt(cin * kernel))
        self.bias = nn.Parameter(torch.zeros(cout))

    def weight(self) -> torch.Tensor:
        return _weight_norm(self.weight_v, self.weight_g)

    def forward(self, x):
        return F.conv1d(x, self.weight(), self.bias, stride=self.stride, dilation=self.dilation)

    def gemm_weights(self, dtype: torch.dtype = torch.float32):
        """Fast-path weights in ``dtype``: for stride 1 (W (Cin·k, Cout) in im2col order c·k + j, bias,
        per-tap W (k, Cin, Cout)); for a strided conv with k = 2·stride, (W_a, W_b) (stride·Cin, Cout) in
        block order j·Cin + c, and the bias."""

        def build():
            w = self.weight()  # (Cout, Cin, k)
            cout, cin, k = w.shape
            s = self.stride
            if s == 1:  # im2col matrix and per-tap matrices (k, Cin, Cout)
                return (
                    w.reshape(cout, cin * k).t().contiguous(),
                    self.bias.detach().clone(),
                    w.permute(2, 1, 0).contiguous(),
                )
            wa = w[:, :, :s].permute(2, 1, 0).reshape(s * cin, cout).contiguous()
            wb = w[:, :, s:].permute(2, 1, 0).reshape(s * cin, cout).contiguous()
            return (wa, wb, self.bias.detach().clone())

        return self._cached(build, dtype)


class _WNConvTranspose1d(_CachedWeights, nn.Module):
    def __init__(self, cin, cout, kernel, stride):
        super().__init__()
        self.stride = stride
        self.weight_g = nn.Parameter(torch.ones(cin, 1, 1))
        self.weight_v = nn.Parameter(torch.randn(cin, cout, kernel) / math.sqrt(cin * kernel))
        self.bias = nn.Parameter(torch.zeros(cout))

    def weight(self) -> torch.Tensor:
        return _weight_norm(self.weight_v, self.weight_g)

    def forward(self, x):
        return F.conv_transpose1d(x, self.weight(), self.bias, stride=self.stride)

    def gemm_weights(self, dtype: torch.dtype = torch.float32):
        """Fast-path weights in ``dtype`` for k = 2·stride: V_a, V_b (Cin, stride·Cout) in order j·Cout + o,
        tiled bias."""

        def build():
            w = self.weight()  # (Cin, Cout, k)
            cin, cout, _k = w.shape
            s = self.stride
            va = w[:, :, :s].permute(0, 2, 1).reshape(cin, s * cout).contiguous()
            vb = w[:, :, s:].permute(0, 2, 1).reshape(cin, s * cout).contiguous()
            return (va, vb, self.bias.detach().repeat(s))

        return self._cached(build, dtype)


class _NormConv1d(nn.Module):
    def __init__(self, *args, **kwargs):
        super().__init__()
        self.conv = _WNConv1d(*args, **kwargs)

    def forward(self, x):
        return self.conv(x)


class _NormConvTranspose1d(nn.Module):
    def __init__(self, *args, **kwargs):
        super().__init__()
        self.convtr = _WNConvTranspose1d(*args, **kwargs)

    def forward(self, x):
        return self.convtr(x)


class SConv1d(nn.Module):
    """Causal conv: reflect-pad k_eff − stride on the left and up to a whole frame on the right."""

    def __init__(self, cin, cout, kernel, stride=1, dilation=1):
        super().__init__()
        self.conv = _NormConv1d(cin, cout, kernel, stride=stride, dilation=dilation)
        self.kernel, self.stride, self.dilation = kernel, stride, dilation

    def paddings(self, length: int) -> tuple[int, int]:
        k_eff = (self.kernel - 1) * self.dilation + 1
        extra = math.ceil(length / self.stride) * self.stride - length
        return k_eff - self.stride, extra

    def forward(self, x):
        return self.conv(_reflect_pad(x, *self.paddings(x.shape[-1])))


class SConvTranspose1d(nn.Module):
    """Causal transposed conv; trims k − stride samples on the right so the output is T·stride long."""

    def __init__(self, cin, cout, kernel, stride):
        super().__init__()
        self.convtr = _NormConvTranspose1d(cin, cout, kernel, stride)
        self.kernel, self.stride = kernel, stride
        self.trim = kernel - stride

    def forward(self, x):
        y = self.convtr(x)
        return y[..., : y.shape[-1] - self.trim] if self.trim else y


class SEANetResnetBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.block = nn.Sequential(nn.ELU(), SConv1d(dim, dim // 2, 3), nn.ELU(), SConv1d(dim // 2, dim, 1))
        self.shortcut = SConv1d(dim, dim, 1)

    def forward(self, x):
        return self.shortcut(x) + self.block(x)

    def summed_bias(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """shortcut bias + last conv bias (the fast path adds both outputs into one GEMM result)."""
        last = cast(SConv1d, self.block[3])
        return _cached_weights(self, lambda: (self.shortcut.conv.conv.bias + last.conv.conv.bias,), dtype)[0]


class SLSTM(nn.Module):
    def __init__(self, dim, layers=2):
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, layers)

    def forward(self, x):  # (B, C, T)
        x = x.permute(2, 0, 1)
        y, _ = self.lstm(x)
        return (y + x).permute(1, 2, 0)

    def flat_weights(self, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """The LSTM's weights in ``dtype``, in ``torch.lstm`` order (for the low-precision fast path)."""
        return _cached_weights(self, lambda: tuple(self.lstm._flat_weights), dtype)


def _use_fast(x: torch.Tensor) -> bool:
    return not torch.is_grad_enabled() and x.dtype == torch.float32


def _run_fast(model: nn.Sequential, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    from pecmae_hub.models.seanet_fast import run_fast

    return run_fast(model, x, dtype)


class SEANetEncoder(nn.Module):
    """(B, 1, L) → (B, 128, ceil(L / 320)) continuous pre-quantisation latents."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = [SConv1d(1, N_FILTERS, 7)]
        mult = 1
        for ratio in reversed(RATIOS):
            layers += [SEANetResnetBlock(mult * N_FILTERS), nn.ELU()]
            layers.append(SConv1d(mult * N_FILTERS, mult * 2 * N_FILTERS, ratio * 2, stride=ratio))
            mult *= 2
        layers += [SLSTM(mult * N_FILTERS), nn.ELU(), SConv1d(mult * N_FILTERS, DIMENSION, 7)]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        if _use_fast(x):
            return _run_fast(self.model, x.transpose(1, 2)).transpose(1, 2)
        return self.model(x)


class SEANetDecoder(nn.Module):
    """(B, 128, T) → (B, 1, 320·T) waveform; no final activation."""

    def __init__(self):
        super().__init__()
        mult = 2 ** len(RATIOS)
        layers: list[nn.Module] = [SConv1d(DIMENSION, mult * N_FILTERS, 7), SLSTM(mult * N_FILTERS)]
        for ratio in RATIOS:
            layers += [nn.ELU(), SConvTranspose1d(mult * N_FILTERS, mult * N_FILTERS // 2, ratio * 2, ratio)]
            layers.append(SEANetResnetBlock(mult * N_FILTERS // 2))
            mult //= 2
        layers += [nn.ELU(), SConv1d(N_FILTERS, 1, 7)]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        if _use_fast(x):
            return _run_fast(self.model, x.transpose(1, 2)).transpose(1, 2)
        return self.model(x)


class EncodecCodec(nn.Module):
    """EnCodec 24 kHz without the quantizer: ``encode`` wav→latents, ``decode`` latents→wav."""

    signal_dim = DIMENSION

    def __init__(self):
        super().__init__()
        self.encoder = SEANetEncoder()
        self.decoder = SEANetDecoder()
        self.compute_dtype = torch.float32

    def set_compute_dtype(self, dtype: torch.dtype) -> None:
        """Precision of inference (float32 default; bfloat16 or float16 for speed). Outputs stay float32."""
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"compute dtype must be float32, bfloat16 or float16, got {dtype}")
        self.compute_dtype = dtype

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, L) → (B, T, 128)."""
        if _use_fast(wav):
            return _run_fast(self.encoder.model, wav[:, :, None], self.compute_dtype)
        return self.encoder(wav[:, None, :]).transpose(1, 2)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, T, 128) → (B, 320·T)."""
        if _use_fast(latents):
            return _run_fast(self.decoder.model, latents, self.compute_dtype)[:, :, 0]
        return self.decoder(latents.transpose(1, 2))[:, 0, :]
