"""The configuration of an :class:`~pecmae_hub.models.autoencoder.Autoencoder` and the decoder it describes.

Which fields define what z means (the encoder: front end, frame and CLS encoders, chunk length) and which
only shape the way back to audio (the denoiser and the vocoder) matters: the fingerprint hashes the first
group only (:meth:`AutoencoderConfig.encoder_architecture`, docs/architecture.md §13), so a decoder can be
re-trained or swapped without invalidating features, heads or results computed from z.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pecmae_hub.configuration import ModelConfig
from pecmae_hub.errors import ConfigError
from pecmae_hub.models.encoders import Denoiser

if TYPE_CHECKING:
    from pecmae_hub.models.adaln_denoiser import AdaLNDenoiser


@dataclass
class AutoencoderConfig(ModelConfig):
    """Dimensions and options of an :class:`Autoencoder`, stored as ``config.json`` next to the weights."""

    MODEL_TYPE: ClassVar[str] = "pecmae-autoencoder"
    VERSION: ClassVar[int] = 2  # 2: model_type written; 1 had none
    OPTIONAL_IN_FILE: ClassVar[frozenset[str]] = frozenset(
        {"mel", "source", "denoiser_type", "denoiser_dim", "denoiser_ff_dim", "denoiser_patch", "vocoder"}
        | {"decoder_dtype"}
    )
    #: fields that only shape the decoder (z → audio): left out of the fingerprint, which names what z means
    DECODER_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"denoiser_layers", "denoiser_heads", "denoiser_type", "denoiser_dim", "denoiser_ff_dim", "denoiser_patch"}
        | {"vocoder", "decoder_dtype"}
    )

    frontend: str = "encodec"  # "encodec" | "mel"
    chunk_seconds: float = 4.0  # window = hop of the chunking (4 s or 10 s upstream)
    signal_dim: int = 128  # EnCodec latent channels, or mel bins
    model_dim: int = 768
    frame_layers: int = 10
    frame_heads: int = 12
    ff_dim: int = 4096
    cls_layers: int = 2  # 0: frame encoder only (z = mean of frame embeddings)
    cls_heads: int = 8
    denoiser_layers: int = 8  # 0: no decoder
    denoiser_heads: int = 8
    denoiser_type: str = "prefix"  # "prefix": upstream (z as a token); "adaln": z modulates every layer
    denoiser_dim: int = 0  # 0: model_dim ("prefix" always uses model_dim)
    denoiser_ff_dim: int = 0  # 0: ff_dim
    denoiser_patch: int = 1  # frames per token ("adaln" only)
    vocoder: dict = field(default_factory=dict)  # a MelVocoder config ("mel" front end); empty: Griffin-Lim only
    decoder_dtype: str = "float32"  # how the denoiser and vocoder weights are stored ("float16": half the size)
    mel: dict = field(default_factory=dict)  # MelCodec options (n_fft, fmin, fmax, offset, scale, griffin_lim_iters)
    source: str = ""  # provenance, e.g. the upstream file it was converted from

    def __post_init__(self):
        if self.frontend not in ("encodec", "mel"):
            raise ConfigError(f"frontend must be 'encodec' or 'mel', got {self.frontend!r}")
        if self.frontend == "encodec" and self.signal_dim != 128:
            raise ConfigError(f"the EnCodec front end gives 128-d latents; signal_dim={self.signal_dim} is impossible")
        if not self.chunk_seconds > 0:
            raise ConfigError(f"chunk_seconds must be positive, got {self.chunk_seconds}")
        for name in ("signal_dim", "model_dim", "frame_layers", "frame_heads", "ff_dim"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.denoiser_layers and not self.cls_layers:
            raise ConfigError("a denoiser needs a CLS encoder (cls_layers > 0) to condition on")
        if self.denoiser_type not in ("prefix", "adaln"):
            raise ConfigError(f"denoiser_type must be 'prefix' or 'adaln', got {self.denoiser_type!r}")
        prefix_dims_ok = self.denoiser_dim in (0, self.model_dim) and self.denoiser_patch == 1
        if self.denoiser_type == "prefix" and not prefix_dims_ok:
            raise ConfigError("the 'prefix' denoiser works at model_dim with one frame per token")
        if self.denoiser_dim < 0 or self.denoiser_ff_dim < 0 or self.denoiser_patch < 1:
            raise ConfigError("denoiser_dim and denoiser_ff_dim must be >= 0 and denoiser_patch >= 1")
        if self.decoder_dtype not in ("float32", "float16"):
            raise ConfigError(f"decoder_dtype must be 'float32' or 'float16', got {self.decoder_dtype!r}")
        if self.vocoder and self.frontend != "mel":
            raise ConfigError("a neural vocoder section is for the 'mel' front end; EnCodec decodes its own latents")

    def architecture(self) -> dict[str, Any]:
        """The fields that define the network (provenance left out)."""
        return {k: v for k, v in self.to_dict().items() if k not in ("model_type", "version", "source")}

    def encoder_architecture(self) -> dict[str, Any]:
        """The fields that decide z (what :meth:`Autoencoder.fingerprint` hashes): the architecture without
        :data:`DECODER_FIELDS` and without the mel front end's synthesis-only option (Griffin-Lim iterations)."""
        arch = {k: v for k, v in self.architecture().items() if k not in self.DECODER_FIELDS}
        arch["mel"] = {k: v for k, v in arch.get("mel", {}).items() if k != "griffin_lim_iters"}
        return arch

    def legacy_architecture(self) -> dict[str, Any]:
        """What fingerprints hashed before the decoder fields were left out (pecmae-hub ≤ 0.x format 2 files):
        every field known then. Stored fingerprints of that rule are still recognised."""
        new_fields = {"denoiser_type", "denoiser_dim", "denoiser_ff_dim", "denoiser_patch", "vocoder", "decoder_dtype"}
        return {k: v for k, v in self.architecture().items() if k not in new_fields}

    # Presets -------------------------------------------------------------------------------------
    @classmethod
    def upstream(cls, chunk_seconds: float = 4.0) -> AutoencoderConfig:
        """DiffTransformerAE2L8L1CLS-4s / -10s on top of EnCodecMAE-base."""
        return cls(chunk_seconds=chunk_seconds)

    @classmethod
    def encodecmae(cls, size: str = "base") -> AutoencoderConfig:
        """EnCodecMAE v1 frame encoder only (base: 768 × 10 layers, large: 1024 × 20 layers, 12 heads)."""
        dims = {"base": (768, 10), "large": (1024, 20)}
        if size not in dims:
            raise ConfigError(f"EnCodecMAE size must be one of {sorted(dims)}, got {size!r}")
        dim, layers = dims[size]
        return cls(model_dim=dim, frame_layers=layers, cls_layers=0, denoiser_layers=0)

    @classmethod
    def tiny(cls, frontend: str = "mel", **overrides) -> AutoencoderConfig:
        """A few-thousand-parameter model for tests."""
        base: dict[str, Any] = dict(
            frontend=frontend,
            chunk_seconds=1.0,
            signal_dim=128 if frontend == "encodec" else 16,
            model_dim=32,
            frame_layers=2,
            frame_heads=4,
            ff_dim=64,
            cls_layers=1,
            cls_heads=2,
            denoiser_layers=1,
            denoiser_heads=2,
            mel={"n_fft": 512} if frontend == "mel" else {},
        )
        base.update(overrides)
        return cls(**base)


def build_denoiser(config: AutoencoderConfig) -> Denoiser | AdaLNDenoiser:
    """The diffusion decoder a config describes: upstream's z-as-a-token denoiser, or the adaLN one."""
    if config.denoiser_type == "adaln":
        from pecmae_hub.models.adaln_denoiser import AdaLNDenoiser

        return AdaLNDenoiser(
            config.signal_dim,
            config.model_dim,
            config.denoiser_dim or config.model_dim,
            config.denoiser_heads,
            config.denoiser_layers,
            config.denoiser_ff_dim or config.ff_dim,
            config.denoiser_patch,
        )
    return Denoiser(config.signal_dim, config.model_dim, config.denoiser_heads, config.denoiser_layers, config.ff_dim)
