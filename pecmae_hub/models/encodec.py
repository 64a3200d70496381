"""EnCodec 24 kHz SEANet encoder and decoder (our code, the official checkpoint's key names).

Key pattern (docs/architecture.md §3): ``encoder.model.<i>.conv.conv.{weight_g,weight_v,bias}``,
``decoder.model.<i>.convtr.convtr.*``, residual blocks ``<i>.block.{1,3}.*`` / ``<i>.shortcut.*``,
LSTMs ``<i>.lstm.{weight_ih_l0,...}``. Weight norm is the legacy form (g, v), so
``encodec_24khz-d7cc33bc.th`` loads strictly after dropping the quantizer keys.

Two implementations of the same network:
- the *reference* path (the modules' ``forward``): channels-first ``F.conv1d`` with the causal reflect
  padding of EnCodec's ``SConv1d`` (left k_eff − stride, extra right up to a whole frame), transposed
  convs trimmed on the right; used whenever autograd is recording;
- the *fast* path (:func:`_run_fast`), used under ``torch.no_grad``/``inference_mode``: channels-last
  (B, L, C) tensors and plain GEMMs. Strided convs (k = 2·stride) read the padded signal as blocks of
  ``stride`` samples (two GEMMs, no im2col), transposed convs write blocks the same way, the ELU is
  fused into the padding copy, the residual block's shortcut and last conv accumulate into one output,
  and weight-normalised GEMM weights are cached until a parameter changes. Same numbers as the
  reference path to ~1e-6 relative (summation order only).
"""
from __future__ import annotations

import math

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


class _CachedWeights:
    """Mixin: ``_cached(build)`` returns build()'s tensors, recomputed only when a parameter changed."""

    def _cached(self, build):
        params = tuple(self.parameters())
        stamp = _param_stamp(params)
        hit = self.__dict__.get("_fast_cache")
        if stamp is not None and hit is not None and hit[0] == stamp:
            return hit[1]
        with torch.inference_mode(False), torch.no_grad():
            value = build()
        if stamp is not None:
            self.__dict__["_fast_cache"] = (stamp, value)
        return value


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

    def gemm_weights(self):
        """Fast-path weights: (W (Cin·k, Cout) in im2col order c·k + j, bias) for stride 1; for a strided
        conv with k = 2·stride, (W_a, W_b) (stride·Cin, Cout) in block order j·Cin + c, and the bias."""
        def build():
            w = self.weight()  # (Cout, Cin, k)
            cout, cin, k = w.shape
            s = self.stride
            if s == 1:  # im2col matrix and per-tap matrices (k, Cin, Cout)
                return (w.reshape(cout, cin * k).t().contiguous(), self.bias.detach().clone(),
                        w.permute(2, 1, 0).contiguous())
            wa = w[:, :, :s].permute(2, 1, 0).reshape(s * cin, cout).contiguous()
            wb = w[:, :, s:].permute(2, 1, 0).reshape(s * cin, cout).contiguous()
            return (wa, wb, self.bias.detach().clone())

        return self._cached(build)


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

    def gemm_weights(self):
        """Fast-path weights for k = 2·stride: V_a, V_b (Cin, stride·Cout) in order j·Cout + o, tiled bias."""
        def build():
            w = self.weight()  # (Cin, Cout, k)
            cin, cout, k = w.shape
            s = self.stride
            va = w[:, :, :s].permute(0, 2, 1).reshape(cin, s * cout).contiguous()
            vb = w[:, :, s:].permute(0, 2, 1).reshape(cin, s * cout).contiguous()
            return (va, vb, self.bias.detach().repeat(s))

        return self._cached(build)


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


class SLSTM(nn.Module):
    def __init__(self, dim, layers=2):
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, layers)

    def forward(self, x):  # (B, C, T)
        x = x.permute(2, 0, 1)
        y, _ = self.lstm(x)
        return (y + x).permute(1, 2, 0)


# Fast path (channels-last GEMMs, inference only) ----------------------------------------------------
def _pad_cl(x: torch.Tensor, left: int, right: int, elu: bool) -> torch.Tensor:
    """(B, L, C) → (B, left + L + right, C) reflect-padded copy of ELU(x) (or of x)."""
    b, length, c = x.shape
    if max(left, right) >= length:  # very short input: EnCodec's zero-extended reflect, channels-first
        y = F.elu(x) if elu else x
        return _reflect_pad(y.transpose(1, 2), left, right).transpose(1, 2).contiguous()
    out = x.new_empty(b, left + length + right, c)
    mid = out[:, left : left + length]
    if elu:
        torch._C._nn.elu(x, 1.0, 1, 1, out=mid)
    else:
        mid.copy_(x)
    if left:
        out[:, :left] = out[:, left + 1 : 2 * left + 1].flip(1)
    if right:
        out[:, left + length :] = out[:, left + length - 1 - right : left + length - 1].flip(1)
    return out


_TAP_MIN_CHANNELS = 16  # stride-1 convs with at least this many input channels skip im2col


def _fast_ok(conv: SConv1d) -> bool:
    return conv.dilation == 1 and (conv.stride == 1 or conv.kernel == 2 * conv.stride)


def _conv_cl(conv: SConv1d, x: torch.Tensor, elu: bool) -> torch.Tensor:
    """SConv1d (with an optional ELU before it) on channels-last (B, L, Cin) → (B, L_out, Cout)."""
    if not _fast_ok(conv):
        y = F.elu(x) if elu else x
        return conv(y.transpose(1, 2)).transpose(1, 2)
    b, length, cin = x.shape
    left, right = conv.paddings(length)
    s = conv.stride
    if s == 1:
        w, bias, taps = conv.conv.conv.gemm_weights()
        if conv.kernel == 1:
            xp = F.elu(x) if elu else x
            return torch.addmm(bias, xp.reshape(b * length, cin), w).view(b, length, -1)
        xp = _pad_cl(x, left, right, elu)  # (B, L + k - 1, Cin)
        if cin >= _TAP_MIN_CHANNELS:  # one GEMM per kernel tap on shifted views: no im2col copy
            out = torch.baddbmm(bias.expand(b, length, -1), xp[:, :length], taps[0].expand(b, -1, -1))
            for j in range(1, conv.kernel):
                out.baddbmm_(xp[:, j : j + length], taps[j].expand(b, -1, -1))
            return out
        cols = xp.unfold(1, conv.kernel, 1).reshape(b * length, cin * conv.kernel)  # im2col, order c·k + j
        return torch.addmm(bias, cols, w).view(b, length, -1)
    wa, wb, bias = conv.conv.conv.gemm_weights()
    n_out = (length + right) // s
    blocks = _pad_cl(x, left, right, elu).view(b, n_out + 1, s * cin)  # left pad = s: frame t = blocks t, t+1
    out = torch.baddbmm(bias.expand(b, n_out, -1), blocks[:, :-1], wa.expand(b, -1, -1))
    return out.baddbmm_(blocks[:, 1:], wb.expand(b, -1, -1))


def _convtr_cl(conv: SConvTranspose1d, x: torch.Tensor) -> torch.Tensor:
    """SConvTranspose1d (k = 2·stride) on channels-last (B, T, Cin) → (B, T·stride, Cout)."""
    if conv.kernel != 2 * conv.stride:
        return conv(x.transpose(1, 2)).transpose(1, 2)
    b, t, cin = x.shape
    va, vb, bias = conv.convtr.convtr.gemm_weights()
    x = x.contiguous()
    out = torch.addmm(bias, x.view(b * t, cin), va).view(b, t, -1)  # block t ← x[t] · first half of the kernel
    if t > 1:
        out[:, 1:].baddbmm_(x[:, :-1], vb.expand(b, -1, -1))          # block t ← x[t−1] · second half
    return out.view(b, t * conv.stride, -1)                          # the last half-block is trimmed


def _resblock_cl(block: SEANetResnetBlock, x: torch.Tensor) -> torch.Tensor:
    conv1, conv2, shortcut = block.block[1], block.block[3], block.shortcut
    if not (conv2.kernel == 1 and shortcut.kernel == 1 and _fast_ok(conv1)):
        return block(x.transpose(1, 2)).transpose(1, 2)
    b, length, c = x.shape
    h = _conv_cl(conv1, x, elu=True)
    F.elu(h, inplace=True)
    w2 = conv2.conv.conv.gemm_weights()[0]
    ws = shortcut.conv.conv.gemm_weights()[0]
    bias = block.__dict__.get("_fast_bias")
    stamp = _param_stamp((conv2.conv.conv.bias, shortcut.conv.conv.bias))
    if bias is None or stamp is None or bias[0] != stamp:
        with torch.inference_mode(False), torch.no_grad():
            bias = (stamp, shortcut.conv.conv.bias + conv2.conv.conv.bias)
        if stamp is not None:
            block.__dict__["_fast_bias"] = bias
    out = torch.addmm(bias[1], x.reshape(b * length, c), ws)        # shortcut(x) + both biases ...
    out.addmm_(h.reshape(b * length, -1), w2)                        # ... + conv2(ELU(conv1(ELU(x))))
    return out.view(b, length, c)


def _lstm_cl(module: SLSTM, x: torch.Tensor) -> torch.Tensor:
    xt = x.transpose(0, 1)  # (T, B, C)
    y, _ = module.lstm(xt)
    y += xt
    return y.transpose(0, 1)


# Before the LSTM, a batch is run one chunk at a time: a 4 s chunk's widest tensor (96 000 × 32 floats,
# 12 MB) stays in the last-level cache and under glibc's mmap threshold, which a batch of 7 does not.
_MICRO_BATCH_FLOATS = 4_000_000


def _run_fast(model: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Run a SEANet ``model`` Sequential on channels-last (B, L, C) input; ELUs are fused into the next op."""
    modules = list(model)
    split = next((i for i, m in enumerate(modules) if isinstance(m, SLSTM)), 0)
    rows = max(1, _MICRO_BATCH_FLOATS // max(1, x.shape[1] * N_FILTERS))
    if split and x.shape[0] > rows:  # micro-batches up to the LSTM, then the whole batch
        head = torch.cat([_run_modules(modules[:split], part) for part in x.split(rows)])
        return _run_modules(modules[split:], head)
    return _run_modules(modules, x)


def _run_modules(modules, x: torch.Tensor) -> torch.Tensor:
    pending_elu = False
    for module in modules:
        if isinstance(module, nn.ELU) and module.alpha == 1.0:
            if pending_elu:
                x = F.elu(x)
            pending_elu = True
            continue
        if pending_elu and not isinstance(module, SConv1d):
            x = F.elu(x)
            pending_elu = False
        if isinstance(module, SConv1d):
            x = _conv_cl(module, x, pending_elu)
        elif isinstance(module, SConvTranspose1d):
            x = _convtr_cl(module, x)
        elif isinstance(module, SEANetResnetBlock):
            x = _resblock_cl(module, x)
        elif isinstance(module, SLSTM):
            x = _lstm_cl(module, x)
        else:
            x = module(x.transpose(1, 2)).transpose(1, 2)
        pending_elu = False
    if pending_elu:
        x = F.elu(x)
    return x


def _use_fast(x: torch.Tensor) -> bool:
    return not torch.is_grad_enabled() and x.dtype == torch.float32


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

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, L) → (B, T, 128)."""
        if _use_fast(wav):
            return _run_fast(self.encoder.model, wav[:, :, None])
        return self.encoder(wav[:, None, :]).transpose(1, 2)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, T, 128) → (B, 320·T)."""
        if _use_fast(latents):
            return _run_fast(self.decoder.model, latents)[:, :, 0]
        return self.decoder(latents.transpose(1, 2))[:, 0, :]
