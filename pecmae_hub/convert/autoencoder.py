"""``pecmae convert``: upstream checkpoints → our folder format (``config.json``, ``model.safetensors``,
``README.md``).

Three kinds of input (docs/architecture.md §3, §5, §6.6):

- ``--autoencoder``: an encodecmae2wav ``weights.pt`` or a Lightning ``.ckpt`` whose ``['state_dict']``
  holds the full ``TransformerAEDiffusion`` (embedded EnCodecMAE-base under ``encoder.encodecmae_model.*``,
  CLS encoder, denoiser), plus ``--encodec`` (the EnCodec 24 kHz ``.th``, for the decoder). The chunk
  length comes from ``MAX_AUDIO_DURATION`` in the model's ``config.gin`` (``--config-gin``, or the
  ``config.gin`` next to the weights), else ``--chunk-seconds``.
- ``--encodecmae``: an EnCodecMAE v1 ``model.pt`` (``{'state_dict': ...}``), frame encoder only, plus
  ``--encodec``.
- ``--head``: an upstream PrototypeNet checkpoint, handed to :mod:`pecmae_hub.convert.head`.

Nothing is unpickled: ``torch.load(weights_only=True)`` only (or ``.safetensors``), see
:mod:`pecmae_hub.convert.checkpoint_io`. Upstream key names are mapped to ours by :mod:`pecmae_hub.convert.key_mapping`
(whose docstring has the table); unknown keys are an error.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pecmae_hub.convert.checkpoint_io import SourceFile, read_state_dict
from pecmae_hub.convert.key_mapping import _encoder_dims, _merge_encodec, map_diffusion, map_encodec, map_encodecmae
from pecmae_hub.errors import CheckpointError, ConfigError, ModelNotFoundError
from pecmae_hub.storage.integrity import sha256_file

ENCODEC_URL = "https://dl.fbaipublicfiles.com/encodec/v0/encodec_24khz-d7cc33bc.th"
LICENCE_NOTES = {
    "encodec": (
        "EnCodec 24 kHz weights (`encodec_24khz-d7cc33bc.th`, Meta AI): released under "
        "**CC-BY-NC 4.0** (non-commercial use only)."
    ),
    "encodecmae": (
        "EnCodecMAE weights (`lpepino/encodecmae-*`, habla-liaa/encodecmae): check the upstream licence "
        "(repository and model card) before redistributing."
    ),
    "autoencoder": (
        "Diffusion autoencoder weights (`lpepino/encodecmae2wav`, mrpep/encodecmae-to-wav; they embed "
        "EnCodecMAE-base): check the upstream licence (repository and model card) before redistributing."
    ),
}


# Configuration -------------------------------------------------------------------------------------------
_GIN_DURATION = re.compile(r"^\s*MAX_AUDIO_DURATION\s*=\s*([0-9]+(?:\.[0-9]*)?)\s*(?:#.*)?$", re.M)
_GIN_META = re.compile(r"^\s*META_MODEL\s*=\s*['\"]?@?([A-Za-z_][A-Za-z0-9_.]*)", re.M)
_PATH_SECONDS = re.compile(r"(?:^|[^0-9A-Za-z])(1|4|10)s(?:$|[^0-9A-Za-z])")


def parse_config_gin(path: str | os.PathLike) -> dict[str, Any]:
    """``MAX_AUDIO_DURATION`` and ``META_MODEL`` of an encodecmae2wav ``config.gin`` (text search, as upstream)."""
    text = Path(path).read_text(errors="replace")
    out: dict[str, Any] = {}
    match = _GIN_DURATION.search(text)
    if match:
        out["max_audio_duration"] = float(match.group(1))
    match = _GIN_META.search(text)
    if match:
        out["meta_model"] = match.group(1)
    return out


def resolve_chunk_seconds(
    checkpoint: Path, config_gin: Path | None, chunk_seconds: float | None
) -> tuple[float, str, Path | None]:
    """Chunk length: config.gin (given or next to the weights) > --chunk-seconds > the file name > 4 s."""
    gin = config_gin
    if gin is None and (checkpoint.parent / "config.gin").is_file():
        gin = checkpoint.parent / "config.gin"
    if gin is not None:
        if not Path(gin).is_file():
            raise ModelNotFoundError(f"config.gin not found: {gin}")
        parsed = parse_config_gin(gin)
        meta = parsed.get("meta_model")
        if meta is not None and meta.split(".")[-1] != "ChunkDiffusionSampler":
            raise CheckpointError(
                f"{gin} says META_MODEL = {meta}: not a diffusion autoencoder (ChunkDiffusionSampler). The "
                "ecmae2ec frame regressors cannot be converted (they give no single z per chunk, "
                "docs/architecture.md §12.9)."
            )
        seconds = parsed.get("max_audio_duration")
        if seconds is not None:
            if chunk_seconds is not None and abs(chunk_seconds - seconds) > 1e-9:
                raise ConfigError(
                    f"--chunk-seconds {chunk_seconds:g} contradicts MAX_AUDIO_DURATION = {seconds:g} in {gin}"
                )
            return seconds, f"MAX_AUDIO_DURATION = {seconds:g} in {Path(gin).name}", Path(gin)
        if chunk_seconds is None:
            raise ConfigError(f"{gin} has no MAX_AUDIO_DURATION line; pass --chunk-seconds 4 or 10")
    if chunk_seconds is not None:
        return float(chunk_seconds), "--chunk-seconds", gin
    hint = _PATH_SECONDS.search(f"{checkpoint.parent.name}/{checkpoint.name}")
    if hint:
        seconds = float(hint.group(1))
        return seconds, f"the file name ({hint.group(0).strip('-_/.')}); pass --chunk-seconds to override", gin
    return 4.0, "default (no config.gin, no --chunk-seconds): the paper's 4 s model was assumed", gin


# Conversion ----------------------------------------------------------------------------------------------
@dataclass
class Conversion:
    """What a conversion produced (the model and what to tell the user)."""

    model: Any
    out_dir: Path | None
    sources: list[SourceFile]
    kind: str
    notes: list[str] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)


def _check_out_dir(out_dir: str | os.PathLike | None, overwrite: bool) -> Path | None:
    if out_dir is None:
        return None
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    existing = [n for n in ("config.json", "model.safetensors", "README.md") if (out / n).exists()]
    if existing and not overwrite:
        raise ConfigError(f"{out} already holds {', '.join(existing)}; pass --overwrite to replace them")
    return out


def _build_and_save(config, mapped: dict, conversion: Conversion, source_text: str) -> None:
    from pecmae_hub.models.autoencoder import Autoencoder
    from pecmae_hub.storage.pretrained import load_state_dict_strict

    model = Autoencoder(config)
    load_state_dict_strict(model, mapped, source_text)
    model.eval()
    conversion.model = model
    if conversion.out_dir is not None:
        model.save_pretrained(conversion.out_dir)
        (conversion.out_dir / "README.md").write_text(model_card(conversion))
        Autoencoder.from_pretrained(conversion.out_dir, precision="fp32")  # round trip: strict reload of the files


def _default_warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def convert_autoencoder(
    autoencoder: str | os.PathLike,
    encodec: str | os.PathLike,
    out_dir: str | os.PathLike | None,
    *,
    config_gin: str | os.PathLike | None = None,
    chunk_seconds: float | None = None,
    frame_heads: int = 12,
    cls_heads: int = 8,
    denoiser_heads: int = 8,
    allow_encoder_mismatch: bool = False,
    overwrite: bool = False,
    warn: Callable[[str], None] = _default_warn,
) -> Conversion:
    """Convert an encodecmae2wav diffusion autoencoder (+ the EnCodec ``.th``) to our folder format."""
    from pecmae_hub.models.autoencoder import AutoencoderConfig

    out = _check_out_dir(out_dir, overwrite)
    state, src = read_state_dict(autoencoder, "diffusion autoencoder")
    seconds, seconds_from, gin = resolve_chunk_seconds(
        src.path, Path(config_gin) if config_gin else None, chunk_seconds
    )
    mapped, dropped, counts = map_diffusion(state, src.name)
    codec_state, src_ec = read_state_dict(encodec, "EnCodec")
    codec, dropped_ec = map_encodec(codec_state, src_ec.name)
    conversion = Conversion(None, out, [src, src_ec], "autoencoder", dropped=dropped + dropped_ec)
    if gin is not None:
        conversion.sources.append(
            SourceFile("config.gin", Path(gin), sha256_file(gin), Path(gin).stat().st_size, "text")
        )
    conversion.notes += _merge_encodec(mapped, codec, src.name, src_ec.name, allow_encoder_mismatch, warn)
    conversion.notes.append(f"chunk length {seconds:g} s, from {seconds_from}")
    if seconds_from.startswith("default"):
        warn(f"chunk length: {seconds_from}; pass --chunk-seconds 10 for a 10 s model")
    proj = mapped["frame_encoder.feat_projector.weight"]
    _, ff = _encoder_dims(mapped, "frame_encoder.visible_encoder.", frame_heads, "frame encoder")
    for prefix, heads, what in (
        ("cls_encoder.encoder.", cls_heads, "CLS encoder"),
        ("denoiser.denoiser.", denoiser_heads, "denoiser"),
    ):
        _, ff_other = _encoder_dims(mapped, prefix, heads, what)
        if ff_other != ff:
            raise CheckpointError(f"{what} FFN width {ff_other} differs from the frame encoder's {ff}: unsupported")
    config = AutoencoderConfig(
        frontend="encodec",
        chunk_seconds=seconds,
        signal_dim=proj.shape[1],
        model_dim=proj.shape[0],
        frame_layers=counts["frame"],
        frame_heads=frame_heads,
        ff_dim=ff,
        cls_layers=counts["cls"],
        cls_heads=cls_heads,
        denoiser_layers=counts["denoiser"],
        denoiser_heads=denoiser_heads,
        source=_source_text(conversion.sources),
    )
    conversion.notes.append(
        f"architecture: D={config.model_dim}, frame encoder {config.frame_layers} layers x {frame_heads} heads, "
        f"CLS encoder {config.cls_layers} x {cls_heads}, denoiser {config.denoiser_layers} x {denoiser_heads}, FFN {ff}"
    )
    _build_and_save(config, mapped, conversion, f"{src.name} + {src_ec.name}")
    return conversion


def convert_encodecmae(
    encodecmae: str | os.PathLike,
    encodec: str | os.PathLike,
    out_dir: str | os.PathLike | None,
    *,
    size: str | None = None,
    heads: int = 12,
    chunk_seconds: float = 4.0,
    allow_encoder_mismatch: bool = False,
    overwrite: bool = False,
    warn: Callable[[str], None] = _default_warn,
) -> Conversion:
    """Convert an EnCodecMAE v1 ``model.pt`` (+ the EnCodec ``.th``) into a frame-encoder-only autoencoder."""
    from pecmae_hub.models.autoencoder import AutoencoderConfig

    out = _check_out_dir(out_dir, overwrite)
    state, src = read_state_dict(encodecmae, "EnCodecMAE")
    if any(k.startswith("encoder.encodecmae_model.") for k in state):
        raise CheckpointError(f"{src.name} is a diffusion autoencoder (TransformerAEDiffusion): use --autoencoder")
    mapped, dropped, n_layers = map_encodecmae(state, src.name)
    codec_state, src_ec = read_state_dict(encodec, "EnCodec")
    codec, dropped_ec = map_encodec(codec_state, src_ec.name)
    conversion = Conversion(None, out, [src, src_ec], "encodecmae", dropped=dropped + dropped_ec)
    conversion.notes += _merge_encodec(mapped, codec, src.name, src_ec.name, allow_encoder_mismatch, warn)
    proj = mapped["frame_encoder.feat_projector.weight"]
    dim = proj.shape[0]
    found = {(768, 10): "base", (1024, 20): "large"}.get((dim, n_layers))
    if size is not None and size != found:
        raise CheckpointError(
            f"--size {size} given, but {src.name} has D={dim} and {n_layers} layers"
            + (f" (that is {found})" if found else " (neither base nor large)")
        )
    _, ff = _encoder_dims(mapped, "frame_encoder.visible_encoder.", heads, "EnCodecMAE")
    config = AutoencoderConfig(
        frontend="encodec",
        chunk_seconds=chunk_seconds,
        signal_dim=proj.shape[1],
        model_dim=dim,
        frame_layers=n_layers,
        frame_heads=heads,
        ff_dim=ff,
        cls_layers=0,
        denoiser_layers=0,
        source=_source_text(conversion.sources),
    )
    conversion.notes.append(
        f"EnCodecMAE-{found or 'custom'}: D={dim}, {n_layers} layers x {heads} heads, FFN {ff}; "
        f"z = mean of the frame embeddings of each {chunk_seconds:g} s chunk"
    )
    _build_and_save(config, mapped, conversion, f"{src.name} + {src_ec.name}")
    return conversion


def _source_text(sources: list[SourceFile]) -> str:
    return "pecmae convert: " + " + ".join(f"{s.name} (sha256 {s.sha256[:16]}...)" for s in sources)


def model_card(conversion: Conversion) -> str:
    """README.md for a converted autoencoder: provenance, checksums, licence notes, usage
    (:func:`pecmae_hub.hub.cards.render_autoencoder_card`)."""
    from pecmae_hub.hub.cards import render_autoencoder_card

    try:
        from importlib.metadata import version

        ours = version("pecmae-hub")
    except Exception:
        ours = "unknown"
    kind = (
        "diffusion autoencoder (audio → z → audio)"
        if conversion.kind == "autoencoder"
        else "EnCodecMAE frame encoder (audio → z)"
    )
    intro = (
        f"Converted with `pecmae convert` (pecmae-hub {ours}) on {_dt.date.today().isoformat()} "
        "from the upstream files "
        "below. Weights are unchanged; only key names differ (the shared feed-forward network of each transformer "
        "is stored once). Load it with `Autoencoder.from_pretrained(<this folder or repo>)`."
    )
    return render_autoencoder_card(
        title=f"Converted upstream {kind}",
        intro=intro,
        config=conversion.model.config,
        chunk_frames=conversion.model.chunk_frames,
        sources=conversion.sources,
        licence_notes=[LICENCE_NOTES["encodec"], LICENCE_NOTES[conversion.kind]],
        notes=conversion.notes,
        dropped=conversion.dropped,
    )
