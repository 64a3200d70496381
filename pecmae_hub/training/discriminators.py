"""Discriminators and GAN losses for vocoder training (not part of any saved model).

As in Vocos (arXiv 2306.00814, which takes them from HiFi-GAN and UniVNet): a multi-period discriminator
(the waveform folded into 2-D at periods 2, 3, 5, 7, 11, so periodic structure such as a pitch is judged
directly) and a multi-resolution discriminator (2-D convolutions over STFT magnitudes at three
resolutions). Channel widths are smaller than the published ones so that training fits a 2-core CPU;
``width`` scales them. Losses: hinge for the adversarial terms, L1 feature matching.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

FeatureMaps = list[torch.Tensor]


class PeriodDiscriminator(nn.Module):
    """HiFi-GAN's sub-discriminator of one period: (B, L) → logits and feature maps."""

    def __init__(self, period: int, width: int = 16):
        super().__init__()
        self.period = period
        chans = [1, width, width * 4, width * 8, width * 16, width * 16]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(chans[i], chans[i + 1], (5, 1), (3 if i < 4 else 1, 1), padding=(2, 0)))
            for i in range(5)
        )
        self.out = weight_norm(nn.Conv2d(chans[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, FeatureMaps]:
        b, n = wav.shape
        pad = (-n) % self.period
        x = F.pad(wav, (0, pad), mode="reflect") if pad else wav
        x = x.reshape(b, 1, -1, self.period)
        return _conv_stack(self.convs, self.out, x)


def _conv_stack(convs: nn.ModuleList, out: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, FeatureMaps]:
    """Leaky-ReLU convolutions then the output convolution: (flattened logits, every layer's feature map)."""
    feats = []
    for conv in convs:
        x = F.leaky_relu(conv(x), 0.1)
        feats.append(x)
    x = out(x)
    feats.append(x)
    return x.flatten(1), feats


class ResolutionDiscriminator(nn.Module):
    """UnivNet-style sub-discriminator on the log-magnitude STFT at one resolution."""

    window: torch.Tensor

    def __init__(self, n_fft: int, width: int = 16):
        super().__init__()
        self.n_fft = n_fft
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        specs = [((7, 5), (2, 2)), ((5, 3), (2, 1)), ((5, 3), (2, 2)), ((3, 3), (1, 1))]
        chans = [1] + [width * 2] * len(specs)
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(chans[i], chans[i + 1], k, s, padding=(k[0] // 2, k[1] // 2)))
            for i, (k, s) in enumerate(specs)
        )
        self.out = weight_norm(nn.Conv2d(chans[-1], 1, (3, 3), padding=(1, 1)))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, FeatureMaps]:
        spec = torch.stft(wav, self.n_fft, self.n_fft // 4, window=self.window, center=True, return_complex=True)
        x = torch.log(spec.abs().clamp_min(1e-5)).unsqueeze(1)  # (B, 1, F, T)
        return _conv_stack(self.convs, self.out, x)


class VocoderDiscriminators(nn.Module):
    """All sub-discriminators; ``forward(wav)`` → ([logits per sub-discriminator], [feature maps per sub])."""

    def __init__(self, periods=(2, 3, 5, 7, 11), resolutions=(512, 1024, 2048), width: int = 16):
        super().__init__()
        self.subs = nn.ModuleList(
            [PeriodDiscriminator(p, width) for p in periods] + [ResolutionDiscriminator(n, width) for n in resolutions]
        )

    def forward(self, wav: torch.Tensor) -> tuple[list[torch.Tensor], list[FeatureMaps]]:
        outs = [sub(wav) for sub in self.subs]
        return [o[0] for o in outs], [o[1] for o in outs]


def discriminator_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """Hinge loss of the discriminators (``fake`` computed from detached generator output)."""
    return sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real, fake)) / len(real)


def generator_loss(fake: list[torch.Tensor]) -> torch.Tensor:
    """Hinge loss of the generator."""
    return sum(F.relu(1 - f).mean() for f in fake) / len(fake)


def feature_matching_loss(real: list[FeatureMaps], fake: list[FeatureMaps]) -> torch.Tensor:
    """Mean L1 distance between the discriminators' feature maps of real and generated audio."""
    total, count = torch.zeros(()), 0
    for maps_r, maps_f in zip(real, fake):
        for r, f in zip(maps_r, maps_f):
            total = total + (r.detach() - f).abs().mean()
            count += 1
    return total / max(1, count)
