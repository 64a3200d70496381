"""A neural vocoder for the log-mel family: normalised log-mel frames (75 Hz) → 24 kHz waveform.

The design follows Vocos (Siuzdak, "Vocos: Closing the gap between time-domain and Fourier-based neural
vocoders for high-quality audio synthesis", arXiv 2306.00814): a ConvNeXt backbone that keeps the frame
rate of its input, and a head that predicts one STFT frame per mel frame (log-magnitude and phase) which
an inverse STFT turns into audio. Nothing is upsampled by transposed convolutions, so the network stays
small and fast on a CPU. Written here in plain torch: the ``vocos`` package imports torchaudio, which
does not load beside a CPU build of torch.

Its input is exactly what :class:`~pecmae_hub.models.melspec.MelCodec` encodes (and what the diffusion
decoder generates): ``(B, T, n_mels)`` frames, one per 320 samples, centred. Training lives in
:mod:`pecmae_hub.training.vocoder`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from pecmae_hub.audio import HOP_LENGTH
from pecmae_hub.configuration import ModelConfig
from pecmae_hub.errors import ConfigError, InputShapeError
from pecmae_hub.storage.pretrained import PretrainedMixin

#: name of the classic vocoder of the mel family, kept selectable for reproducibility
GRIFFIN_LIM = "griffin-lim"
#: name of the neural vocoder of this module
VOCOS = "vocos"
VOCODERS = (VOCOS, GRIFFIN_LIM)
#: the largest linear magnitude the head may predict (as in Vocos: exp(log-magnitude) clipped)
MAX_MAGNITUDE = 100.0


@dataclass
class VocoderConfig(ModelConfig):
    """Dimensions of a :class:`MelVocoder` (stored as ``config.json``, or as the ``vocoder`` section of an
    autoencoder's config when it ships inside one)."""

    MODEL_TYPE: ClassVar[str] = "pecmae-mel-vocoder"
    VERSION: ClassVar[int] = 1

    n_mels: int = 128
    dim: int = 256
    intermediate_dim: int = 768
    layers: int = 8
    kernel_size: int = 7
    n_fft: int = 1280  # the synthesis STFT: 4 hops, as Vocos
    hop_length: int = HOP_LENGTH
    mel: dict = field(default_factory=dict)  # the MelCodec options of the features it was trained on

    def __post_init__(self):
        for name in ("n_mels", "dim", "intermediate_dim", "layers", "kernel_size", "n_fft"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"vocoder {name} must be >= 1, got {getattr(self, name)}")
        if self.hop_length != HOP_LENGTH:
            raise ConfigError(f"vocoder hop_length must be {HOP_LENGTH} (75 frames/s at 24 kHz), got {self.hop_length}")
        if self.n_fft < self.hop_length or self.n_fft % 2:
            raise ConfigError(f"vocoder n_fft must be even and >= hop_length ({self.hop_length}), got {self.n_fft}")
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"vocoder kernel_size must be odd (same-length convolutions), got {self.kernel_size}")

    @classmethod
    def tiny(cls, n_mels: int = 16, **overrides) -> VocoderConfig:
        """A small model for tests."""
        return cls(**{"n_mels": n_mels, "dim": 16, "intermediate_dim": 32, "layers": 1, "n_fft": 640, **overrides})


class ConvNeXtBlock(nn.Module):
    """Depth-wise conv → LayerNorm → pointwise MLP (GELU) → layer scale, with a residual connection."""

    def __init__(self, dim: int, intermediate_dim: int, kernel_size: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, dim, T) → (B, dim, T)."""
        y = self.dwconv(x).transpose(1, 2)
        y = self.pwconv2(nn.functional.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).transpose(1, 2)


class MelVocoder(PretrainedMixin, nn.Module):
    """Vocos-style vocoder: ``(B, T, n_mels)`` normalised log-mel → ``(B, 320·T)`` waveform.

    ``MelVocoder.from_pretrained(folder)`` / ``save_pretrained(folder)`` as every model of the package.
    """

    config_class = VocoderConfig
    config: VocoderConfig
    window: torch.Tensor

    def __init__(self, config: VocoderConfig | None = None):
        super().__init__()
        self.config = config = config or VocoderConfig()
        self.embed = nn.Conv1d(config.n_mels, config.dim, config.kernel_size, padding=config.kernel_size // 2)
        self.norm = nn.LayerNorm(config.dim, eps=1e-6)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(config.dim, config.intermediate_dim, config.kernel_size, 1.0 / config.layers)
            for _ in range(config.layers)
        )
        self.final_norm = nn.LayerNorm(config.dim, eps=1e-6)
        self.head = nn.Linear(config.dim, config.n_fft + 2)
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)
        self.eval()

    def spectrum(self, features: torch.Tensor) -> torch.Tensor:
        """The complex STFT the head predicts, (B, n_fft/2 + 1, T)."""
        if features.dim() != 3 or features.shape[-1] != self.config.n_mels:
            raise InputShapeError(
                f"vocoder input must be (batch, frames, {self.config.n_mels}) mel frames, got {tuple(features.shape)}"
            )
        x = self.embed(features.transpose(1, 2).to(self.head.weight.dtype))
        x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        out = self.head(self.final_norm(x.transpose(1, 2))).transpose(1, 2).float()
        log_magnitude, phase = out.chunk(2, dim=1)
        magnitude = torch.exp(log_magnitude).clamp(max=MAX_MAGNITUDE)
        return torch.polar(magnitude, phase)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, T, n_mels) → (B, 320·T) float32 waveform (frame t centred on sample 320·t, as the analysis)."""
        return self.istft(self.spectrum(features))

    def istft(self, spec: torch.Tensor) -> torch.Tensor:
        """The waveform (B, 320·T) of a predicted spectrum (B, n_fft/2 + 1, T)."""
        n_fft, hop = self.config.n_fft, self.config.hop_length
        return torch.istft(
            spec, n_fft, hop, win_length=n_fft, window=self.window.float(), center=True, length=spec.shape[-1] * hop
        )

    def stft(self, wav: torch.Tensor) -> torch.Tensor:
        """The analysis matching :meth:`spectrum` frame for frame: (B, L) → (B, n_fft/2 + 1, ceil(L / 320))."""
        n_fft, hop = self.config.n_fft, self.config.hop_length
        spec = torch.stft(
            wav, n_fft, hop, win_length=n_fft, window=self.window.float(), center=True, return_complex=True
        )
        return spec[..., : -(-wav.shape[-1] // hop)]
