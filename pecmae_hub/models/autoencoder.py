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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from pecmae_hub.audio import HOP_LENGTH, SAMPLE_RATE, AudioInput, chunk_bounds, load_audio
from pecmae_hub.errors import ConfigError, InputShapeError
from pecmae_hub.loudness import TARGET_LUFS, LevelChange, limit_peak, normalize_loudness
from pecmae_hub.models.autoencoder_config import AutoencoderConfig, build_denoiser
from pecmae_hub.models.encoders import CLSEncoder, Denoiser, FrameEncoder
from pecmae_hub.models.synthesis import VOCOS, check_temperature, join_chunks, resolve_vocoder
from pecmae_hub.storage.pretrained import PretrainedMixin

if TYPE_CHECKING:
    from pecmae_hub.models.adaln_denoiser import AdaLNDenoiser
    from pecmae_hub.models.encodec import EncodecCodec
    from pecmae_hub.models.melspec import MelCodec
    from pecmae_hub.models.vocoder import MelVocoder


class Autoencoder(PretrainedMixin, nn.Module):
    """Audio ↔ z. ``encode`` gives one z per chunk; ``decode`` sonifies z (one chunk of audio each).

    ``Autoencoder.from_pretrained(folder_or_repo)`` / ``save_pretrained(folder)`` come from
    :class:`~pecmae_hub.storage.pretrained.PretrainedMixin` (``config.json`` + ``model.safetensors``).
    """

    config_class = AutoencoderConfig
    config: AutoencoderConfig
    codec: EncodecCodec | MelCodec
    cls_encoder: CLSEncoder | None  # None: a frame encoder only (z = mean of the frames)
    denoiser: Denoiser | AdaLNDenoiser | None  # None: no decoder
    vocoder: MelVocoder | None  # the mel family's neural vocoder, None: Griffin-Lim (or EnCodec's decoder)
    upstream_sources: dict[str, str] | None = None  # {source repo: commit} when loaded by upstream name
    precision = "fp32"  # set by pecmae_hub.models.precision.apply_precision
    precision_reason = ""  # why from_pretrained chose it ("auto": pecmae_hub.models.fidelity_record)

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
        precision: str = "auto",
        verify: bool = True,
        upstream_only: bool = False,
    ) -> Autoencoder:
        """A folder, a Hub repo ``org/name`` in our format, or an upstream name (``"encodecmae-diffusion-4s"``,
        ``"encodecmae-diffusion-10s"``) downloaded from its authors' repos and converted once
        (:func:`pecmae_hub.convert.upstream.materialize`; ``revision`` may then be ``{repo_id: revision}``).

        ``precision``: ``"auto"`` (default: the fast mode of the device when the folder's fidelity record vouches
        for it, else fp32; :mod:`pecmae_hub.models.fidelity_record`), ``"fp32"`` (exact), ``"int8"`` (CPU),
        ``"bf16"``, ``"fp16"`` (CUDA); see :mod:`pecmae_hub.models.precision`. ``precision`` records the mode
        chosen and ``precision_reason`` why. ``upstream_only=True`` accepts an upstream name only (a model's
        reference by name must never reach a folder). Other arguments as :meth:`PretrainedMixin.from_pretrained`.
        """
        from pecmae_hub.models.fidelity_record import autoencoder_precision
        from pecmae_hub.models.precision import PRECISION_CHOICES, apply_precision

        if precision not in PRECISION_CHOICES:  # before any download
            raise ConfigError(f"precision must be one of {PRECISION_CHOICES}, got {precision!r}")
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
        files = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
        precision, model.precision_reason = autoencoder_precision(
            model, name_or_path, precision, **files, verify=verify
        )
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
        self.denoiser = build_denoiser(config) if config.denoiser_layers else None
        self.vocoder = None
        if config.vocoder:
            from pecmae_hub.models.vocoder import MelVocoder, VocoderConfig

            self.vocoder = MelVocoder(VocoderConfig.from_dict(config.vocoder, source="autoencoder config 'vocoder'"))
        self.eval()

    def attach_vocoder(self, vocoder: MelVocoder | None) -> Autoencoder:
        """Make ``vocoder`` this model's neural vocoder (saved with it: config section ``vocoder`` and
        ``vocoder.*`` weights), or remove it with None (Griffin-Lim only). Returns ``self``.

        Raises:
            ConfigError: an EnCodec model, or a vocoder trained on other mel features than this model's.
        """
        import dataclasses

        if vocoder is not None:
            if self.config.frontend != "mel":
                raise ConfigError("a neural vocoder is for the 'mel' front end; EnCodec decodes its own latents")
            ours = {k: v for k, v in self.config.mel.items() if k != "griffin_lim_iters"}
            theirs = {k: v for k, v in vocoder.config.mel.items() if k != "griffin_lim_iters"}
            if vocoder.config.n_mels != self.config.signal_dim or (theirs and theirs != ours):
                raise ConfigError(
                    f"this vocoder was trained on {vocoder.config.n_mels}-band mel features {theirs or ''} but the "
                    f"autoencoder makes {self.config.signal_dim}-band ones {ours}: train a vocoder for this model"
                )
        self.config = dataclasses.replace(self.config, vocoder=vocoder.config.to_dict() if vocoder else {})
        self.vocoder = None if vocoder is None else vocoder.to(self.device).eval()
        return self

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write ``config.json``, ``model.safetensors`` and their ``checksums.json`` to ``folder``; a fidelity
        record already there is kept (and listed) only when it is about the files written, else removed."""
        from pecmae_hub.models.fidelity_record import reconcile_record

        folder = super().save_pretrained(folder)
        reconcile_record(folder)
        return folder

    def state_for_saving(self) -> dict[str, torch.Tensor]:
        """The state dict, with the decoder's and vocoder's tensors in ``config.decoder_dtype``. For float16
        they are first rounded in place, so that the model in memory is the one that will load back (and
        its renders keep their keys); the encoder is always stored exactly (z never changes)."""
        state = self.state_dict()
        if self.config.decoder_dtype == "float16":
            with torch.no_grad():
                for module in (self.denoiser, self.vocoder):
                    for param in module.parameters() if module is not None else ():
                        param.copy_(param.half().float())
            state = {
                k: v.half() if k.startswith(("denoiser.", "vocoder.")) and v.is_floating_point() else v
                for k, v in self.state_dict().items()
            }
        return state

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
    def signal_range(self) -> tuple[float, float] | None:
        """Bounds of the decoder's signal (mel front end: log floor to full scale), which sampling clips each
        step's x̂0 to (:func:`pecmae_hub.sampling.v_diffusion.clip_v`); None for EnCodec latents (unbounded)."""
        return getattr(self.codec, "signal_range", None)

    @property
    def can_decode(self) -> bool:
        return self.denoiser is not None

    def fingerprint(self) -> str:
        """Short hash of what decides z: the encoder's architecture (:meth:`AutoencoderConfig.encoder_architecture`;
        the decoder and vocoder are left out, docs/architecture.md §13).

        The one identity used everywhere z is stored or compared: extraction manifests, a head's
        ``autoencoder.fingerprint`` and results files. Re-training or replacing the decoder keeps it.
        """
        return _hash(self.config.encoder_architecture())

    def legacy_fingerprint(self) -> str:
        """The fingerprint under the earlier rule (the whole architecture), as older files store it."""
        return _hash(self.config.legacy_architecture())

    def decoder_fingerprint(self, precision: str | None = None) -> str:
        """Short hash of everything between z and audio: the decoder and vocoder configs and weights, and the
        precision they run at (``precision``, default the one in force). Pre-rendered prototype audio is keyed on
        it (with the prototypes themselves and the sampler settings), so a re-trained decoder never plays stale
        renders. Cached until a weight changes.
        """
        precision = precision or self.precision
        modules = [m for m in (self.denoiser, self.vocoder) if m is not None]
        params = [t for m in modules for t in m.state_dict().values()]
        key = tuple((t.data_ptr(), t._version) for t in params)
        cache = self.__dict__.setdefault("_decoder_hashes", {})  # precision -> (weights' identity, hash)
        if precision not in cache or cache[precision][0] != key:
            digest = hashlib.sha256(
                json.dumps(
                    {k: v for k, v in self.config.architecture().items() if k in self.config.DECODER_FIELDS}
                    | {
                        "griffin_lim_iters": self.config.mel.get("griffin_lim_iters"),
                        "precision": precision,
                        "x0_range": self.signal_range,
                    },
                    sort_keys=True,
                ).encode()
            )
            for t in params:
                digest.update(t.detach().float().cpu().contiguous().numpy().tobytes())
            cache[precision] = (key, digest.hexdigest()[:16])
        return cache[precision][1]

    def matches_fingerprint(self, stored: str | None) -> bool:
        """Whether a stored fingerprint names this autoencoder's z (either rule; None: nothing stored)."""
        return stored is None or stored in (self.fingerprint(), self.legacy_fingerprint())

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
        self, z, steps=40, guidance=1.0, seed=None, noise=None, progress=None, scheduler="upstream", temperature=1.0
    ) -> torch.Tensor:
        """Run the sampler: z (n, D) → generated signal (n, T, signal_dim) (EnCodec latents or mel frames).

        ``scheduler``: ``"upstream"`` (the exact v-diffusion sampler) or a diffusers scheduler name, dict or
        instance (``"ddim"``, ``"dpmsolver++"``, ``"unipc"``; see :mod:`pecmae_hub.sampling.schedulers`).
        Every step's x̂0 is kept within :attr:`signal_range` (mel models; EnCodec latents are left free, as
        upstream). ``temperature`` scales the starting noise: below 1, the sampler starts nearer the middle of
        the distribution and ends on steadier, less noisy audio, at the price of variety (1: upstream).
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
        if temperature != 1.0:
            noise = noise * float(check_temperature(temperature))
        with torch.inference_mode():
            return sample(
                self.predict_v,
                z.to(self.device),
                noise.to(self.device),
                scheduler=scheduler,
                steps=steps,
                guidance=guidance,
                progress=progress,
                x0_range=self.signal_range,
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
        vocoder: str | None = None,
        loudness: float | None = TARGET_LUFS,
        temperature: float = 1.0,
    ) -> np.ndarray:
        """Sonify z (n_chunks, D) → float32 waveform at 24 kHz, one ``chunk_seconds`` chunk per row.

        Same ``seed`` (or the same ``noise`` of shape (n_chunks, T, signal_dim)) → same audio.
        Chunks are joined end to end (fixing upstream's self-add, docs/architecture.md §12.20); ``crossfade_ms`` > 0
        overlaps consecutive chunks by that much with a linear cross-fade. ``scheduler`` as in
        :meth:`decode_latents` (``"upstream"``: the exact sampler), and so is ``temperature``. ``vocoder`` as in
        :meth:`synthesize`.

        ``loudness``: the result is normalised to this many LUFS (ITU-R BS.1770) under a true-peak ceiling of
        -1 dBFS (:func:`pecmae_hub.loudness.normalize_loudness`); ``None`` keeps the decoder's own level, scaled
        down only if a sample would pass full scale. Either way no sample lies beyond ±1.
        """
        return self.decode_with_level(
            z, steps, guidance, seed, noise, crossfade_ms, progress, scheduler, vocoder, loudness, temperature
        )[0]

    def decode_with_level(
        self,
        z,
        steps: int = 40,
        guidance: float = 1.0,
        seed: int | None = None,
        noise=None,
        crossfade_ms: float = 0.0,
        progress=None,
        scheduler="upstream",
        vocoder: str | None = None,
        loudness: float | None = TARGET_LUFS,
        temperature: float = 1.0,
    ) -> tuple[np.ndarray, LevelChange | None]:
        """:meth:`decode` and the :class:`~pecmae_hub.loudness.LevelChange` it applied (None when
        ``loudness`` is None), for callers that record the gain (the prototype renders' ``index.json``)."""
        latents = self.decode_latents(z, steps, guidance, seed, noise, progress, scheduler, temperature)
        wav = join_chunks(list(self.synthesize(latents, vocoder)), int(round(crossfade_ms * SAMPLE_RATE / 1000)))
        if loudness is None:
            return limit_peak(wav), None
        return normalize_loudness(wav, target_lufs=loudness)

    def synthesize(self, latents: torch.Tensor, vocoder: str | None = None) -> np.ndarray:
        """Decoder output (n, T, signal_dim) → audio (n, chunk_samples), float32, at the vocoder's own level.

        ``vocoder`` (mel front end): ``"vocos"`` (the neural vocoder shipped with the model), ``"griffin-lim"``
        (the classic phase reconstruction, kept for reproducibility) or ``None`` for the model's default (its
        neural vocoder when it has one). The EnCodec front end always uses EnCodec's own decoder.
        """
        name = resolve_vocoder(self, vocoder)
        with torch.inference_mode():
            signal = torch.as_tensor(latents).to(self.device)
            audio = self.vocoder(signal) if name == VOCOS else self.codec.decode(signal)  # type: ignore[misc]
            # a chunk is chunk_samples long; the vocoders give whole frames (ceil), so trim the tail
            return audio[:, : self.chunk_samples].float().cpu().numpy()


def _hash(architecture: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(architecture, sort_keys=True).encode()).hexdigest()[:16]


__all__ = ["Autoencoder", "AutoencoderConfig", "build_denoiser", "join_chunks"]
