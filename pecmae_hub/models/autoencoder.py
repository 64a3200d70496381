"""The frozen autoencoder: audio chunk → z (CLS embedding) → audio (diffusion decoder + vocoder).

One class, two families of configuration:
- ``frontend="encodec"``: the upstream-compatible model (EnCodec 24 kHz latents, EnCodecMAE v1 frame
  encoder, DiffTransformerAE2L8L1CLS CLS encoder and denoiser, EnCodec decoder);
- ``frontend="mel"``: the embedded model's small stand-in (log-mel frames at 75 Hz, Griffin-Lim vocoder).
A config with ``cls_layers=0`` is a frame encoder only (EnCodecMAE): z is then the mean of the frames.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from pecmae_hub.audio import HOP_LENGTH, SAMPLE_RATE, AudioInput, chunk_bounds, load_audio
from pecmae_hub.configuration import ModelConfig
from pecmae_hub.errors import ConfigError, InputShapeError
from pecmae_hub.models.encoders import CLSEncoder, Denoiser, FrameEncoder
from pecmae_hub.storage.pretrained import PretrainedMixin

if TYPE_CHECKING:
    from pecmae_hub.models.encodec import EncodecCodec
    from pecmae_hub.models.melspec import MelCodec


@dataclass
class AutoencoderConfig(ModelConfig):
    """Dimensions and options of an :class:`Autoencoder`, stored as ``config.json`` next to the weights."""

    MODEL_TYPE: ClassVar[str] = "pecmae-autoencoder"
    VERSION: ClassVar[int] = 2  # 2: model_type written; 1 had none
    OPTIONAL_IN_FILE: ClassVar[frozenset[str]] = frozenset({"mel", "source"})

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

    def architecture(self) -> dict[str, Any]:
        """The fields that define the network (provenance left out): what the fingerprint hashes."""
        return {k: v for k, v in self.to_dict().items() if k not in ("model_type", "version", "source")}

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


class Autoencoder(PretrainedMixin, nn.Module):
    """Audio ↔ z. ``encode`` gives one z per chunk; ``decode`` sonifies z (one chunk of audio each).

    ``Autoencoder.from_pretrained(folder_or_repo)`` / ``save_pretrained(folder)`` come from
    :class:`~pecmae_hub.storage.pretrained.PretrainedMixin` (``config.json`` + ``model.safetensors``).
    """

    config_class = AutoencoderConfig
    config: AutoencoderConfig
    codec: EncodecCodec | MelCodec
    cls_encoder: CLSEncoder | None  # None: a frame encoder only (z = mean of the frames)
    denoiser: Denoiser | None  # None: no decoder
    upstream_sources: dict[str, str] | None = None  # {source repo: commit} when loaded by upstream name
    precision = "fp32"  # set by pecmae_hub.models.precision.apply_precision

    @classmethod
    def from_pretrained(
        cls,
        name_or_path,
        revision=None,
        cache_dir=None,
        local_files_only=False,
        *,
        token=None,
        force_download=False,
        device="cpu",
        precision: str = "fp32",
        verify: bool = True,
        upstream_only: bool = False,
    ) -> Autoencoder:
        """A folder, a Hub repo ``org/name`` in our format, or an upstream name (``"encodecmae-diffusion-4s"``,
        ``"encodecmae-diffusion-10s"``) downloaded from its authors' repos and converted once
        (:func:`pecmae_hub.convert.upstream.materialize`; ``revision`` may then be ``{repo_id: revision}``).

        ``precision``: ``"fp32"`` (default, exact), ``"int8"`` (CPU), ``"bf16"``, ``"fp16"`` (CUDA); see
        :mod:`pecmae_hub.models.precision`. ``upstream_only=True`` accepts an upstream name only (a model's
        reference by name must never reach a folder). Other arguments as :meth:`PretrainedMixin.from_pretrained`.
        """
        from pecmae_hub.models.precision import PRECISIONS, apply_precision

        if precision not in PRECISIONS:  # before any download
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        sources = None
        if upstream_only or (isinstance(name_or_path, str) and not Path(name_or_path).expanduser().exists()):
            from pecmae_hub.convert import upstream  # lazy: the one allowed models -> convert edge (docs/DEVELOPING.md)

            if upstream_only and name_or_path not in upstream.UPSTREAM_MODELS:
                known = ", ".join(upstream.UPSTREAM_MODELS)
                raise ConfigError(f"{name_or_path!r} is not an upstream autoencoder name (known: {known})")
            if name_or_path in upstream.UPSTREAM_MODELS:
                name_or_path = upstream.materialize(
                    name_or_path,
                    revision=revision,
                    cache_dir=cache_dir,
                    token=token,
                    local_files_only=local_files_only,
                    force_download=force_download,
                )
                sources = upstream.sources_of(name_or_path)
                revision, force_download = None, False
        model = super().from_pretrained(
            name_or_path,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            force_download=force_download,
            device=device,
            verify=verify,
        )
        model.upstream_sources = sources
        return apply_precision(model, precision) if precision != "fp32" else model

    def __init__(self, config: AutoencoderConfig | None = None):
        super().__init__()
        self.config = config = config or AutoencoderConfig()
        if config.frontend == "encodec":
            from pecmae_hub.models.encodec import EncodecCodec

            self.codec = EncodecCodec()
        else:
            from pecmae_hub.models.melspec import MelCodec

            self.codec = MelCodec(n_mels=config.signal_dim, **config.mel)
        self.frame_encoder = FrameEncoder(
            config.signal_dim, config.model_dim, config.frame_heads, config.frame_layers, config.ff_dim
        )
        self.cls_encoder = (
            CLSEncoder(config.model_dim, config.cls_heads, config.cls_layers, config.ff_dim)
            if config.cls_layers
            else None
        )
        self.denoiser = (
            Denoiser(config.signal_dim, config.model_dim, config.denoiser_heads, config.denoiser_layers, config.ff_dim)
            if config.denoiser_layers
            else None
        )
        self.eval()

    # Properties ----------------------------------------------------------------------------------
    @property
    def embedding_dim(self) -> int:
        return self.config.model_dim

    @property
    def chunk_samples(self) -> int:
        return int(round(self.config.chunk_seconds * SAMPLE_RATE))

    @property
    def chunk_frames(self) -> int:
        return -(-self.chunk_samples // HOP_LENGTH)

    @property
    def chunk_seconds(self) -> float:
        return self.config.chunk_seconds

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def can_decode(self) -> bool:
        return self.denoiser is not None

    def fingerprint(self) -> str:
        """Short hash of the architecture config (provenance fields excluded).

        The one identity used everywhere z is stored or compared: extraction manifests, a head's
        ``autoencoder.fingerprint`` and the render index of pre-rendered prototypes.
        """
        return hashlib.sha256(json.dumps(self.config.architecture(), sort_keys=True).encode()).hexdigest()[:16]

    # Encoding ------------------------------------------------------------------------------------
    def encode_chunks(self, batch: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) zero-padded 24 kHz chunks (+ their true lengths) → z (B, D). Differentiable.

        Frames at or beyond ceil(length / 320) are masked in every attention layer, so a padded chunk
        gives the z of its unpadded self up to the last partial frame's receptive field.
        """
        features = self.codec.encode(batch)
        _b, t, _ = features.shape
        mask = None
        if lengths is not None:
            valid = (lengths.to(features.device) + HOP_LENGTH - 1) // HOP_LENGTH
            mask = torch.arange(t, device=features.device)[None, :] >= valid[:, None]
            if not mask.any():
                mask = None
        frames = self.frame_encoder(features, mask)
        if self.cls_encoder is None:
            if mask is None:
                return frames.mean(1)
            keep = (~mask).unsqueeze(-1).to(frames.dtype)
            return (frames * keep).sum(1) / keep.sum(1)
        return self.cls_encoder(frames, mask)

    def encode_frames(self, audio: AudioInput, sr: int | None = None) -> torch.Tensor:
        """Frame embeddings (T, D) at 75 Hz, concatenated over chunks (EnCodecMAE features)."""
        wav = torch.from_numpy(load_audio(audio, sr))
        outs = []
        with torch.inference_mode():
            for s, e in chunk_bounds(wav.shape[0], self.chunk_samples):
                outs.append(self.frame_encoder(self.codec.encode(wav[None, s:e].to(self.device)))[0].float().cpu())
        return torch.cat(outs)

    def encode(self, audio: AudioInput, sr: int | None = None, batch_size: int = 16) -> torch.Tensor:
        """z per chunk, float32 (n_chunks, D) on CPU, for a path, bytes or an array (+ ``sr``).

        Chunks are non-overlapping windows of ``chunk_seconds``; the trailing partial chunk is kept and
        encoded at its own length (exactly what upstream computes for it). Full chunks run in batches of
        ``batch_size``. Files and bytes are decoded as a stream, batch by batch (bounded memory however
        long the audio, same samples as ``load_audio``); an array is encoded from views of itself.
        """
        from pecmae_hub.audio_stream import chunk_batches, stream_audio

        streamed = isinstance(audio, (str, os.PathLike, bytes, bytearray))
        blocks = stream_audio(audio) if streamed else [load_audio(audio, sr)]
        parts = []
        with torch.inference_mode():
            for group in chunk_batches(blocks, self.chunk_samples, batch_size):
                parts.append(self.encode_chunks(torch.from_numpy(group).to(self.device)).float().cpu())
        return torch.cat(parts)

    # Decoding ------------------------------------------------------------------------------------
    def predict_v(self, x_noisy: torch.Tensor, sigma: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        assert self.denoiser is not None and self.cls_encoder is not None  # a denoiser needs a CLS encoder
        return self.denoiser(x_noisy, sigma, code, self.cls_encoder.pos_encoder)

    def decode_latents(
        self, z, steps=40, guidance=1.0, seed=None, noise=None, progress=None, scheduler="upstream"
    ) -> torch.Tensor:
        """Run the sampler: z (n, D) → generated signal (n, T, signal_dim) (EnCodec latents or mel frames).

        ``scheduler``: ``"upstream"`` (the exact v-diffusion sampler) or a diffusers scheduler name, dict or
        instance (``"ddim"``, ``"dpmsolver++"``, ``"unipc"``; see :mod:`pecmae_hub.sampling.schedulers`).
        """
        from pecmae_hub.sampling.schedulers import check_steps, sample

        if self.denoiser is None:
            raise ConfigError("this autoencoder has no diffusion decoder (it is a frame encoder only)")
        z = torch.as_tensor(z, dtype=torch.float32)
        if z.dim() == 1:
            z = z[None]
        if z.dim() == 3 and z.shape[1] == 1:
            z = z[:, 0]
        if z.dim() != 2 or z.shape[1] != self.embedding_dim:
            raise InputShapeError(f"z must have shape (n_chunks, {self.embedding_dim}), got {tuple(z.shape)}")
        if not torch.isfinite(z).all():
            raise InputShapeError("z contains NaN or infinite values")
        steps = check_steps(steps, scheduler)  # also rejects an unknown scheduler name
        shape = (z.shape[0], self.chunk_frames, self.config.signal_dim)
        if noise is None:
            gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
            noise = torch.randn(shape, generator=gen)
        noise = torch.as_tensor(noise, dtype=torch.float32)
        if tuple(noise.shape) != shape:
            raise InputShapeError(
                f"noise must have shape {shape} (n_chunks, frames, signal_dim), got {tuple(noise.shape)}"
            )
        with torch.inference_mode():
            return sample(
                self.predict_v,
                z.to(self.device),
                noise.to(self.device),
                scheduler=scheduler,
                steps=steps,
                guidance=guidance,
                progress=progress,
            )

    def decode(
        self,
        z,
        steps: int = 40,
        guidance: float = 1.0,
        seed: int | None = None,
        noise=None,
        crossfade_ms: float = 0.0,
        progress=None,
        scheduler="upstream",
    ) -> np.ndarray:
        """Sonify z (n_chunks, D) → float32 waveform at 24 kHz, one ``chunk_seconds`` chunk per row.

        Same ``seed`` (or the same ``noise`` of shape (n_chunks, T, signal_dim)) → same audio.
        Chunks are joined end to end (fixing upstream's self-add, docs/architecture.md §12.20); ``crossfade_ms`` > 0
        overlaps consecutive chunks by that much with a linear cross-fade. ``scheduler`` as in
        :meth:`decode_latents` (``"upstream"``: the exact sampler).
        """
        latents = self.decode_latents(z, steps, guidance, seed, noise, progress, scheduler)
        with torch.inference_mode():
            # a chunk is chunk_samples long; the vocoder gives whole frames (ceil), so trim the tail
            chunks = self.codec.decode(latents)[:, : self.chunk_samples].float().cpu().numpy()
        return join_chunks(list(chunks), int(round(crossfade_ms * SAMPLE_RATE / 1000)))


def join_chunks(chunks: list[np.ndarray], overlap: int = 0) -> np.ndarray:
    """Concatenate chunks; with ``overlap`` > 0 neighbours overlap-add under a linear cross-fade."""
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    if overlap <= 0 or len(chunks) == 1:
        return np.concatenate(chunks).astype(np.float32)
    overlap = min(overlap, min(len(c) for c in chunks) // 2)
    total = sum(len(c) for c in chunks) - overlap * (len(chunks) - 1)
    out = np.zeros(total, dtype=np.float32)
    fade_in = np.linspace(0.0, 1.0, overlap, dtype=np.float32)
    pos = 0
    for i, chunk in enumerate(chunks):
        chunk = chunk.astype(np.float32).copy()
        if i > 0:
            chunk[:overlap] *= fade_in
        if i < len(chunks) - 1:
            chunk[len(chunk) - overlap :] *= fade_in[::-1]
        out[pos : pos + len(chunk)] += chunk
        pos += len(chunk) - overlap
    return out
