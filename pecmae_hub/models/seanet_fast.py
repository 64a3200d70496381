"""Inference fast path of the SEANet encoder/decoder (:mod:`pecmae_hub.models.encodec`): channels-last GEMMs.

Used under ``torch.no_grad``/``inference_mode`` for float32 input; computes in the codec's compute dtype
(float32: the reference numbers to ~1e-6 relative, summation order only; bfloat16/float16: the documented
low-precision option). Tensors are (B, L, C):

- stride-1 convs: one GEMM per kernel tap on shifted views of the reflect-padded copy (no im2col), or
  im2col for few input channels; the ELU that precedes a conv is fused into that padding copy;
- strided convs (k = 2·stride) read the padded signal as blocks of ``stride`` samples: two GEMMs;
  transposed convs write blocks the same way; the residual block's shortcut and last 1×1 conv
  accumulate into one output with both biases;
- the wide, high-rate side of the network (before the LSTM in the encoder, after it in the decoder) runs
  one chunk at a time with 2-D GEMMs: a 4 s chunk's widest tensor (96 000 × 32 floats, 12 MB) stays in
  the last-level cache and under glibc's mmap threshold, which a batch does not; the LSTM and its
  neighbours run on the whole batch.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from pecmae_hub.models.encodec import N_FILTERS, SLSTM, SConv1d, SConvTranspose1d, SEANetResnetBlock, _reflect_pad

_TAP_MIN_CHANNELS = 16  # stride-1 convs with at least this many input channels skip im2col
_MICRO_BATCH_FLOATS = 4_000_000


def _mm(bias: torch.Tensor, a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """bias + a @ w for a (B, n, K) (possibly a strided view) and w (K, N) → (B, n, N)."""
    if a.shape[0] == 1:  # 2-D GEMM: the batched kernel with a broadcast bias is ~3x slower at B = 1
        return torch.addmm(bias, a[0], w)[None]
    return torch.baddbmm(bias.expand(a.shape[0], a.shape[1], -1), a, w.expand(a.shape[0], -1, -1))


def _mm_acc(out: torch.Tensor, a: torch.Tensor, w: torch.Tensor) -> None:
    """out += a @ w in place (shapes as :func:`_mm`)."""
    if a.shape[0] == 1:
        out[0].addmm_(a[0], w)
    else:
        out.baddbmm_(a, w.expand(a.shape[0], -1, -1))


def _pad_cl(x: torch.Tensor, left: int, right: int, elu: bool) -> torch.Tensor:
    """(B, L, C) → (B, left + L + right, C) reflect-padded copy of ELU(x) (or of x)."""
    b, length, c = x.shape
    if max(left, right) >= length:  # very short input: EnCodec's zero-extended reflect, channels-first
        y = F.elu(x) if elu else x
        return _reflect_pad(y.transpose(1, 2), left, right).transpose(1, 2).contiguous()
    out = x.new_empty(b, left + length + right, c)
    mid = out[:, left : left + length]
    if elu:
        torch._C._nn.elu(x, 1.0, 1, 1, out=mid)  # type: ignore[call-arg]  # the stub lacks the out= overload
    else:
        mid.copy_(x)
    if left:
        out[:, :left] = out[:, left + 1 : 2 * left + 1].flip(1)
    if right:
        out[:, left + length :] = out[:, left + length - 1 - right : left + length - 1].flip(1)
    return out


def _fast_ok(conv: SConv1d) -> bool:
    return conv.dilation == 1 and (conv.stride == 1 or conv.kernel == 2 * conv.stride)


def _reference(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The module's own channels-first forward (fp32 weights) on channels-last x, in x's dtype."""
    return module(x.transpose(1, 2).float()).transpose(1, 2).to(x.dtype)


def _conv_cl(conv: SConv1d, x: torch.Tensor, elu: bool) -> torch.Tensor:
    """SConv1d (with an optional ELU before it) on channels-last (B, L, Cin) → (B, L_out, Cout)."""
    if not _fast_ok(conv):
        return _reference(conv, F.elu(x) if elu else x)
    b, length, cin = x.shape
    left, right = conv.paddings(length)
    weights = conv.conv.conv.gemm_weights(x.dtype)
    if conv.stride == 1:
        w, bias, taps = weights
        if conv.kernel == 1:
            xp = F.elu(x) if elu else x
            return torch.addmm(bias, xp.reshape(b * length, cin), w).view(b, length, -1)
        xp = _pad_cl(x, left, right, elu)  # (B, L + k - 1, Cin)
        if cin >= _TAP_MIN_CHANNELS:  # one GEMM per kernel tap on shifted views: no im2col copy
            out = _mm(bias, xp[:, :length], taps[0])
            for j in range(1, conv.kernel):
                _mm_acc(out, xp[:, j : j + length], taps[j])
            return out
        cols = xp.unfold(1, conv.kernel, 1).reshape(b * length, cin * conv.kernel)  # im2col, order c·k + j
        return torch.addmm(bias, cols, w).view(b, length, -1)
    wa, wb, bias = weights
    s = conv.stride
    n_out = (length + right) // s
    blocks = _pad_cl(x, left, right, elu).view(b, n_out + 1, s * cin)  # left pad = s: frame t = blocks t, t+1
    out = _mm(bias, blocks[:, :-1], wa)
    _mm_acc(out, blocks[:, 1:], wb)
    return out


def _convtr_cl(conv: SConvTranspose1d, x: torch.Tensor) -> torch.Tensor:
    """SConvTranspose1d (k = 2·stride) on channels-last (B, T, Cin) → (B, T·stride, Cout)."""
    if conv.kernel != 2 * conv.stride:
        return _reference(conv, x)
    b, t, cin = x.shape
    va, vb, bias = conv.convtr.convtr.gemm_weights(x.dtype)
    x = x.contiguous()
    out = torch.addmm(bias, x.view(b * t, cin), va).view(b, t, -1)  # block t ← x[t] · first half of the kernel
    if t > 1:
        _mm_acc(out[:, 1:], x[:, :-1], vb)  # block t ← x[t−1] · second half
    return out.view(b, t * conv.stride, -1)  # the last half-block is trimmed


def _resblock_cl(block: SEANetResnetBlock, x: torch.Tensor) -> torch.Tensor:
    conv1, conv2 = cast(SConv1d, block.block[1]), cast(SConv1d, block.block[3])
    shortcut = block.shortcut
    if not (conv2.kernel == 1 and shortcut.kernel == 1 and _fast_ok(conv1)):
        return _reference(block, x)
    b, length, c = x.shape
    h = _conv_cl(conv1, x, elu=True)
    F.elu(h, inplace=True)
    w2 = conv2.conv.conv.gemm_weights(x.dtype)[0]
    ws = shortcut.conv.conv.gemm_weights(x.dtype)[0]
    bias = block.summed_bias(x.dtype)
    out = torch.addmm(bias, x.reshape(b * length, c), ws)  # shortcut(x) + both biases ...
    out.addmm_(h.reshape(b * length, -1), w2)  # ... + conv2(ELU(conv1(ELU(x))))
    return out.view(b, length, c)


class _OneThread:
    """One intra-op thread on the CPU for the block (the previous count is restored).

    The LSTM's recurrence is 300 sequential (B, 512) × (512, 2048) products, each too small to share well:
    on an idle 2-core machine two threads were ~15 % faster for the LSTM, but every step waits on a
    barrier, and on a loaded one the other thread is often descheduled: 3-8x slower than one thread
    (measured interleaved, B = 1 and 8, fp32 and bf16). The outputs are bit-identical either way.
    """

    def __init__(self, device: torch.device):
        self.active = device.type == "cpu" and torch.get_num_threads() > 1

    def __enter__(self):
        if self.active:
            self.threads = torch.get_num_threads()
            torch.set_num_threads(1)

    def __exit__(self, *exc):
        if self.active:
            torch.set_num_threads(self.threads)


def _lstm_cl(module: SLSTM, x: torch.Tensor) -> torch.Tensor:
    xt = x.transpose(0, 1)  # (T, B, C)
    with _OneThread(x.device):
        if x.dtype == torch.float32:
            y, _ = module.lstm(xt)
        elif x.device.type != "cpu":  # cuDNN's RNN dtype support varies; the LSTM is a small share of GPU time
            y = module.lstm(xt.float())[0].to(x.dtype)
        else:
            lstm = module.lstm
            h0 = x.new_zeros(lstm.num_layers, x.shape[0], lstm.hidden_size)
            y, _, _ = torch.lstm(
                xt, (h0, h0), module.flat_weights(x.dtype), lstm.bias, lstm.num_layers, 0.0, False, False, False
            )
    y += xt
    return y.transpose(0, 1)


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
            x = _reference(module, x)
        pending_elu = False
    if pending_elu:
        x = F.elu(x)
    return x


def _micro_batched(modules, x: torch.Tensor, wide_floats: int) -> torch.Tensor:
    rows = max(1, _MICRO_BATCH_FLOATS // max(1, wide_floats))
    if x.shape[0] <= rows:
        return _run_modules(modules, x)
    return torch.cat([_run_modules(modules, part) for part in x.split(rows)])


def run_fast(model: nn.Sequential, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Run a SEANet ``model`` Sequential on channels-last (B, L, C) input in ``dtype``; returns float32.

    The side of the network above the LSTM's frame rate runs in micro-batches (see the module docstring).
    """
    modules = list(model)
    x = x.to(dtype)
    split = next((i for i, m in enumerate(modules) if isinstance(m, SLSTM)), None)
    if split is None:
        return _run_modules(modules, x).float()
    upsampling = any(isinstance(m, SConvTranspose1d) for m in modules)
    if upsampling:  # decoder: LSTM at the frame rate first, then the wide part chunk by chunk
        head = _run_modules(modules[: split + 1], x)
        samples = x.shape[1] * _hop(modules)
        return _micro_batched(modules[split + 1 :], head, samples * N_FILTERS).float()
    head = _micro_batched(modules[:split], x, x.shape[1] * N_FILTERS)
    return _run_modules(modules[split:], head).float()


def _hop(modules) -> int:
    hop = 1
    for m in modules:
        if isinstance(m, SConvTranspose1d):
            hop *= m.stride
    return hop
