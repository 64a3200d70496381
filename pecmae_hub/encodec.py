"""EnCodec 24 kHz SEANet encoder and decoder (our code, the official checkpoint's key names).

Key pattern (spec §3): ``encoder.model.<i>.conv.conv.{weight_g,weight_v,bias}``,
``decoder.model.<i>.convtr.convtr.*``, residual blocks ``<i>.block.{1,3}.*`` / ``<i>.shortcut.*``,
LSTMs ``<i>.lstm.{weight_ih_l0,...}``. Weight norm is the legacy form (g, v) computed on the fly,
so ``encodec_24khz-d7cc33bc.th`` loads strictly after dropping the quantizer keys.
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
    length = x.shape[-1]
    max_pad = max(left, right)
    extra = 0
    if length <= max_pad:
        extra = max_pad - length + 1
        x = F.pad(x, (0, extra))
    x = F.pad(x, (left, right), mode="reflect")
    return x[..., : x.shape[-1] - extra]


class _WNConv1d(nn.Module):
    def __init__(self, cin, cout, kernel, stride=1, dilation=1):
        super().__init__()
        self.stride, self.dilation = stride, dilation
        self.weight_g = nn.Parameter(torch.ones(cout, 1, 1))
        self.weight_v = nn.Parameter(torch.randn(cout, cin, kernel) / math.sqrt(cin * kernel))
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x):
        w = _weight_norm(self.weight_v, self.weight_g)
        return F.conv1d(x, w, self.bias, stride=self.stride, dilation=self.dilation)


class _WNConvTranspose1d(nn.Module):
    def __init__(self, cin, cout, kernel, stride):
        super().__init__()
        self.stride = stride
        self.weight_g = nn.Parameter(torch.ones(cin, 1, 1))
        self.weight_v = nn.Parameter(torch.randn(cin, cout, kernel) / math.sqrt(cin * kernel))
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x):
        return F.conv_transpose1d(x, _weight_norm(self.weight_v, self.weight_g), self.bias, stride=self.stride)


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

    def forward(self, x):
        k_eff = (self.kernel - 1) * self.dilation + 1
        length = x.shape[-1]
        extra = math.ceil(length / self.stride) * self.stride - length
        return self.conv(_reflect_pad(x, k_eff - self.stride, extra))


class SConvTranspose1d(nn.Module):
    """Causal transposed conv; trims k − stride samples on the right so the output is T·stride long."""

    def __init__(self, cin, cout, kernel, stride):
        super().__init__()
        self.convtr = _NormConvTranspose1d(cin, cout, kernel, stride)
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
        return self.encoder(wav[:, None, :]).transpose(1, 2)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, T, 128) → (B, 320·T)."""
        return self.decoder(latents.transpose(1, 2))[:, 0, :]
