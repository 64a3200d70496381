"""Log-mel front end at 75 frames/s and a Griffin-Lim vocoder: the embedded model's stand-in for EnCodec.

It has the same interface as :class:`pecmae_hub.encodec.EncodecCodec` (``encode`` (B, L) → (B, T, n_mels)
with T = ceil(L / 320); ``decode`` (B, T, n_mels) → (B, 320·T)), so the autoencoder code path is the same
for both configurations. Features are ``(log(mel + 1e-5) − offset) / scale`` so that the diffusion
model sees values of roughly unit variance.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from pecmae_hub.audio import HOP_LENGTH, SAMPLE_RATE

LOG_FLOOR = 1e-5


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_fft: int, n_mels: int, fmin: float, fmax: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Triangular HTK-scale mel filters, area-normalised, shape (n_mels, n_fft // 2 + 1)."""
    freqs = np.linspace(0.0, sr / 2.0, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lower) / (center - lower)
    falling = (upper - freqs[None, :]) / (upper - center)
    fb = np.maximum(0.0, np.minimum(rising, falling))
    fb *= 2.0 / (upper - lower)
    return fb.astype(np.float32)


class MelCodec(nn.Module):
    """Log-mel analysis (hop 320 at 24 kHz) and Griffin-Lim synthesis with torch.stft/istft."""

    # buffers registered in __init__
    filterbank: torch.Tensor
    inverse: torch.Tensor
    window: torch.Tensor

    def __init__(
        self,
        n_mels=128,
        n_fft=1024,
        fmin=0.0,
        fmax=12000.0,
        offset=-5.0,
        scale=2.5,
        griffin_lim_iters=48,
        momentum=0.99,
    ):
        super().__init__()
        self.signal_dim = n_mels
        self.n_fft, self.offset, self.scale, self.iters = n_fft, offset, scale, griffin_lim_iters
        self.momentum = momentum
        fb = torch.from_numpy(mel_filterbank(n_fft, n_mels, fmin, fmax))
        self.register_buffer("filterbank", fb, persistent=False)
        self.register_buffer("inverse", torch.linalg.pinv(fb), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    @property
    def signal_range(self) -> tuple[float, float]:
        """The values a feature can take: the log floor (digital silence) and the level of the loudest band a
        full-scale signal can produce (an STFT bin of |x| ≤ 1 is at most Σ window; a band sums its bins)."""
        low = (math.log(LOG_FLOOR) - self.offset) / self.scale
        peak_power = float(self.window.sum()) ** 2 * float(self.filterbank.sum(dim=1).max())
        return low, (math.log(peak_power + LOG_FLOOR) - self.offset) / self.scale

    def _stft(self, wav: torch.Tensor) -> torch.Tensor:
        return torch.stft(wav, self.n_fft, HOP_LENGTH, window=self.window, center=True, return_complex=True)

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, L) → (B, ceil(L / 320), n_mels) normalised log-mel frames."""
        frames = math.ceil(wav.shape[-1] / HOP_LENGTH)
        # zero-pad to whole frames, and to more than n_fft / 2 so the centred STFT's reflection is defined
        target = max(frames * HOP_LENGTH, self.n_fft // 2 + 1)
        wav = nn.functional.pad(wav, (0, target - wav.shape[-1]))
        power = self._stft(wav.float()).abs().pow(2)[..., :frames]  # (B, F, T)
        mel = torch.matmul(self.filterbank, power)
        return ((torch.log(mel + LOG_FLOOR) - self.offset) / self.scale).transpose(1, 2)

    def decode(self, features: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """(B, T, n_mels) → (B, 320·T) waveform by fast Griffin-Lim (Perraudin et al. 2013, momentum 0.99).

        The accelerated iterate c_n = t_n + α(t_n − t_{n−1}) is only used through its phase, so it is
        computed as t_n − α/(1+α)·t_{n−1} (the form used by librosa and torchaudio).
        """
        mel = torch.exp(features.float().transpose(1, 2) * self.scale + self.offset) - LOG_FLOOR
        magnitude = torch.matmul(self.inverse, mel.clamp_min(0.0)).clamp_min(0.0).sqrt()  # (B, F, T)
        frames = magnitude.shape[-1]
        magnitude = nn.functional.pad(magnitude, (0, 1))  # the STFT of a centred signal has T + 1 frames
        length = frames * HOP_LENGTH
        gen = torch.Generator().manual_seed(seed)
        angles = torch.exp(2j * math.pi * torch.rand(magnitude.shape, generator=gen)).to(magnitude.device)
        previous = torch.zeros_like(angles)
        coef = self.momentum / (1.0 + self.momentum)
        wav = None
        for _ in range(max(1, self.iters)):
            wav = torch.istft(magnitude * angles, self.n_fft, HOP_LENGTH, window=self.window, length=length)
            rebuilt = self._stft(wav)
            accelerated = rebuilt - coef * previous
            previous = rebuilt
            angles = accelerated / accelerated.abs().clamp_min(1e-8)
        return torch.istft(magnitude * angles, self.n_fft, HOP_LENGTH, window=self.window, length=length)
