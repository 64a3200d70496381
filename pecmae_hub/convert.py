"""``pecmae convert``: upstream checkpoints → our folder format (``config.json`` + ``model.safetensors`` + ``README.md``).

Three kinds of input (spec §3, §4, §5.6):

- ``--autoencoder``: an encodecmae2wav ``weights.pt`` or a Lightning ``.ckpt`` whose ``['state_dict']``
  holds the full ``TransformerAEDiffusion`` (embedded EnCodecMAE-base under ``encoder.encodecmae_model.*``,
  CLS encoder, denoiser), plus ``--encodec`` (the EnCodec 24 kHz ``.th``, for the decoder). The chunk
  length comes from ``MAX_AUDIO_DURATION`` in the model's ``config.gin`` (``--config-gin``, or the
  ``config.gin`` next to the weights), else ``--chunk-seconds``.
- ``--encodecmae``: an EnCodecMAE v1 ``model.pt`` (``{'state_dict': ...}``), frame encoder only, plus
  ``--encodec``.
- ``--head``: an upstream PrototypeNet checkpoint, handed to :mod:`pecmae_hub.convert_head`.

Nothing is unpickled: ``torch.load(weights_only=True)`` only (or ``.safetensors``). Key mapping:

=====================================================================  ==============================================
upstream                                                               ours
=====================================================================  ==============================================
EnCodec ``encoder.*`` / ``decoder.*``                                    ``codec.encoder.*`` / ``codec.decoder.*``
``[encoder.encodecmae_model.]wav_encoder.model.model.<i>.*``             ``codec.encoder.model.<i>.*`` (checked equal)
``[…]feat_projector.*``, ``[…]positional_encoder.scale``                 ``frame_encoder.*``
``[…]visible_encoder.encoder_layers.<i>.{att_layer,norm1,norm2}.*``      ``frame_encoder.visible_encoder.encoder_layers.<i>.*``
``[…]visible_encoder.encoder_layers.<i>.ff_layer.{0,2}.*`` (all equal)   ``frame_encoder.visible_encoder.ff_layer.*`` (once)
``encoder.encoder.*`` (FFN folded likewise)                              ``cls_encoder.encoder.*``
``encoder.cls_tokens.weight``, ``encoder.pos_encoder.scale``             ``cls_encoder.*``
``denoiser.*`` (FFN folded), ``in_adapter.*``, ``out_adapter.*``,        ``denoiser.denoiser.*``, ``denoiser.in_adapter.*``, …
``time_embedding.*``
=====================================================================  ==============================================

Dropped, with a note: the EnCodec quantizer, and EnCodecMAE's pretraining-only ``decoder.*``, ``head.*``,
``decoder_projector.*``, ``target_encoder.*``, ``extra_head.*``, ``masker.*``. Any other key is an error.
Weight-norm keys saved by newer PyTorch (``parametrizations.weight.original0/1``) are read as
``weight_g``/``weight_v``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import CheckpointError, ConfigError, ModelNotFoundError

ENCODEC_URL = "https://dl.fbaipublicfiles.com/encodec/v0/encodec_24khz-d7cc33bc.th"
DROPPED_ENCODECMAE = {
    "decoder.": "EnCodecMAE pretraining decoder",
    "decoder_projector.": "EnCodecMAE pretraining decoder projector",
    "head.": "EnCodecMAE pretraining classification head",
    "target_encoder.": "EnCodecMAE pretraining targets (EnCodec RVQ codebooks)",
    "extra_head.": "EnCodecMAE -st extra head",
    "masker.": "EnCodecMAE pretraining masker",
}
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

_WN_SUFFIXES = {".parametrizations.weight.original0": ".weight_g", ".parametrizations.weight.original1": ".weight_v"}
_LAYER_KEY = re.compile(r"^encoder_layers\.(\d+)\.(.+)$")
_FF_KEY = re.compile(r"^ff_layer\.(\d+)\.(weight|bias)$")


# Reading ------------------------------------------------------------------------------------------------
@dataclass
class SourceFile:
    """One input file: its role, path, size and sha256 (for the model card)."""

    role: str
    path: Path
    sha256: str = ""
    size: int = 0
    container: str = ""

    @property
    def name(self) -> str:
        return self.path.name


def sha256_file(path: str | os.PathLike, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def _refuse_pickle_message(path: Path, detail: str) -> str:
    return (
        f"{path} cannot be read with torch.load(weights_only=True): it contains arbitrary Python objects "
        f"(e.g. a Lightning checkpoint's hyper-parameters or callbacks), which pecmae refuses to unpickle "
        f"because unpickling can run code. In a trusted environment, re-save just the state dict:\n"
        f"    python -c \"import torch; p='{path}'; "
        f"torch.save(torch.load(p, weights_only=False)['state_dict'], 'clean.pt')\"\n"
        f"(for a file without a 'state_dict' entry, save the object itself if it is a dict of tensors) "
        f"and convert clean.pt instead. Detail: {detail}"
    )


def read_state_dict(path: str | os.PathLike, role: str = "checkpoint") -> tuple[dict, SourceFile]:
    """Tensors of an upstream file, without unpickling code.

    Accepts ``.safetensors``, a plain ``torch.save`` state dict (EnCodec ``.th``), a dict with
    ``'state_dict'`` (EnCodecMAE ``model.pt``, encodecmae2wav ``weights.pt``) or a Lightning ``.ckpt``.
    Weight-norm parametrisation keys are renamed to ``weight_g``/``weight_v``; tensors become float32.
    """
    import torch

    path = Path(os.fspath(path)).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(f"{role} file not found: {path}")
    src = SourceFile(role=role, path=path, size=path.stat().st_size)
    if src.size == 0:
        raise CheckpointError(f"{role} file {path} is empty (0 bytes)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path))
        except Exception as exc:  # safetensors raises SafetensorError / OSError
            raise CheckpointError(f"cannot read {role} {path} as safetensors: {exc}") from None
        src.container = "safetensors"
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            text = str(exc)
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            detail = next((line for line in lines if "WeightsUnpickler error" in line), lines[0] if lines else type(exc).__name__)
            if "Unsupported global" in text or "GLOBAL " in text:
                raise CheckpointError(_refuse_pickle_message(path, detail)) from None
            raise CheckpointError(
                f"cannot read {role} {path}: not a PyTorch checkpoint or safetensors file, or it is corrupt "
                f"({type(exc).__name__}: {detail[:200]})"
            ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        extra = sorted(k for k in obj if k != "state_dict")
        if not src.container:
            src.container = "Lightning checkpoint" if {"epoch", "global_step"} & set(extra) else "dict with 'state_dict'"
        state = obj["state_dict"]
    elif isinstance(obj, dict):
        src.container = src.container or "plain state dict"
        state = obj
    else:
        raise CheckpointError(f"{role} {path} holds a {type(obj).__name__}, not a state dict")
    tensors, bad = {}, []
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            bad.append(key)
            continue
        for old, new in _WN_SUFFIXES.items():
            if key.endswith(old):
                key = key[: -len(old)] + new
        tensors[key] = value.detach().float() if value.is_floating_point() else value.detach()
    if bad:
        raise CheckpointError(f"{role} {path}: entries that are not tensors: {', '.join(sorted(bad)[:10])}")
    if not tensors:
        raise CheckpointError(f"{role} {path} holds no tensors")
    src.sha256 = sha256_file(path)
    return tensors, src


# Mapping ------------------------------------------------------------------------------------------------
@dataclass
class _Mapper:
    """Moves tensors from an upstream state dict to ours, remembering what was used and dropped."""

    state: dict
    source: str
    out: dict = field(default_factory=dict)
    used: set = field(default_factory=set)
    dropped: Counter = field(default_factory=Counter)

    def keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.state if k.startswith(prefix) and k not in self.used)

    def put(self, src: str, dst: str) -> None:
        if dst in self.out:
            raise CheckpointError(f"{self.source}: two upstream tensors map to {dst}")
        self.out[dst] = self.state[src]
        self.used.add(src)

    def take(self, src: str, dst: str, required: bool = True) -> None:
        if src not in self.state:
            if required:
                raise CheckpointError(f"{self.source}: missing key {src}")
            return
        self.put(src, dst)

    def take_prefix(self, src_prefix: str, dst_prefix: str, required: bool = True) -> int:
        keys = self.keys(src_prefix)
        if required and not keys:
            raise CheckpointError(f"{self.source}: no keys under {src_prefix}* (is this the right kind of file?)")
        for key in keys:
            self.put(key, dst_prefix + key[len(src_prefix):])
        return len(keys)

    def drop_prefix(self, prefix: str, why: str) -> None:
        for key in self.keys(prefix):
            self.used.add(key)
            self.dropped[f"{prefix}* ({why})"] += 1

    def fold_encoder(self, src_prefix: str, dst_prefix: str) -> int:
        """Map one upstream ``TransformerEncoder``; its per-layer FFN copies become one ``ff_layer``.

        Returns the number of layers. Raises :class:`CheckpointError` if the copies differ (not a
        shared-FFN checkpoint) or layers are missing.
        """
        import torch

        layers: dict[int, list[str]] = {}
        ff: dict[str, dict[int, str]] = {}
        for key in self.keys(src_prefix):
            rest = key[len(src_prefix):]
            match = _LAYER_KEY.match(rest)
            if match:
                index, sub = int(match.group(1)), match.group(2)
                layers.setdefault(index, [])
                ff_match = _FF_KEY.match(sub)
                if ff_match:
                    ff.setdefault(sub, {})[index] = key
                else:
                    self.put(key, f"{dst_prefix}encoder_layers.{index}.{sub}")
            elif rest.startswith("final_norm."):
                self.put(key, dst_prefix + rest)
        if not layers:
            raise CheckpointError(f"{self.source}: no transformer layers under {src_prefix}encoder_layers.*")
        n_layers = max(layers) + 1
        if sorted(layers) != list(range(n_layers)):
            raise CheckpointError(f"{self.source}: {src_prefix} has layers {sorted(layers)}, expected 0..{n_layers - 1}")
        expected = {"ff_layer.0.weight", "ff_layer.0.bias", "ff_layer.2.weight", "ff_layer.2.bias"}
        if set(ff) != expected:
            raise CheckpointError(
                f"{self.source}: {src_prefix} feed-forward keys {sorted(ff)} differ from the expected {sorted(expected)}"
            )
        for sub, per_layer in sorted(ff.items()):
            missing = sorted(set(range(n_layers)) - set(per_layer))
            if missing:
                raise CheckpointError(f"{self.source}: {src_prefix}encoder_layers.{missing[0]}.{sub} is missing")
            first = self.state[per_layer[0]]
            for index in range(1, n_layers):
                other = self.state[per_layer[index]]
                if other.shape != first.shape or not torch.equal(other, first):
                    diff = (other - first).abs().max().item() if other.shape == first.shape else float("nan")
                    raise CheckpointError(
                        f"{self.source}: the feed-forward weights of {src_prefix} differ between layer 0 and layer "
                        f"{index} ({sub}, max |diff| {diff:.3g}). Upstream shares one FFN across all layers of an "
                        "encoder and pecmae stores it once, so this checkpoint cannot be represented exactly."
                    )
            self.put(per_layer[0], f"{dst_prefix}{sub}")
            for index in range(1, n_layers):
                self.used.add(per_layer[index])
        self.dropped[f"{src_prefix}encoder_layers.<1..>.ff_layer.* (identical copies of the shared FFN)"] += 4 * (n_layers - 1)
        return n_layers

    def leftovers(self) -> list[str]:
        return sorted(set(self.state) - self.used)

    def check_done(self) -> None:
        rest = self.leftovers()
        if rest:
            shown = ", ".join(rest[:15]) + (f" ... ({len(rest)} in all)" if len(rest) > 15 else "")
            raise CheckpointError(f"{self.source}: unknown keys that pecmae does not know how to map: {shown}")


def map_encodec(state: dict, source: str = "EnCodec checkpoint") -> tuple[dict, Counter]:
    """EnCodec ``.th`` → ``codec.encoder.*`` / ``codec.decoder.*`` (quantizer dropped)."""
    m = _Mapper(state, source)
    m.take_prefix("encoder.", "codec.encoder.")
    m.take_prefix("decoder.", "codec.decoder.")
    m.drop_prefix("quantizer.", "EnCodec RVQ codebooks, bypassed by PECMAE")
    m.check_done()
    return m.out, m.dropped


def _map_encodecmae_into(m: _Mapper, prefix: str) -> int:
    """Map the EnCodecMAE v1 inference path under ``prefix``; returns the number of frame layers."""
    m.take_prefix(prefix + "wav_encoder.model.model.", "codec.encoder.model.")
    m.take_prefix(prefix + "feat_projector.", "frame_encoder.feat_projector.")
    m.take(prefix + "positional_encoder.scale", "frame_encoder.positional_encoder.scale")
    n_layers = m.fold_encoder(prefix + "visible_encoder.", "frame_encoder.visible_encoder.")
    for sub, why in DROPPED_ENCODECMAE.items():
        m.drop_prefix(prefix + sub, why + ", not used at inference")
    return n_layers


def map_encodecmae(state: dict, source: str = "EnCodecMAE checkpoint") -> tuple[dict, Counter, int]:
    """EnCodecMAE v1 ``model.pt`` state dict → (our keys, dropped counts, number of frame layers)."""
    m = _Mapper(state, source)
    n_layers = _map_encodecmae_into(m, "")
    m.check_done()
    return m.out, m.dropped, n_layers


def map_diffusion(state: dict, source: str = "diffusion checkpoint") -> tuple[dict, Counter, dict]:
    """``TransformerAEDiffusion`` state dict → (our keys, dropped counts, layer counts)."""
    m = _Mapper(state, source)
    if not any(k.startswith("encoder.encodecmae_model.") for k in state):
        hint = ""
        if any(k.startswith("visible_encoder.") for k in state):
            hint = " It looks like an EnCodecMAE model.pt: use --encodecmae."
        raise CheckpointError(f"{source} has no encoder.encodecmae_model.* keys: not a TransformerAEDiffusion state dict.{hint}")
    counts = {"frame": _map_encodecmae_into(m, "encoder.encodecmae_model.")}
    counts["cls"] = m.fold_encoder("encoder.encoder.", "cls_encoder.encoder.")
    m.take("encoder.cls_tokens.weight", "cls_encoder.cls_tokens.weight")
    m.take("encoder.pos_encoder.scale", "cls_encoder.pos_encoder.scale")
    counts["denoiser"] = m.fold_encoder("denoiser.", "denoiser.denoiser.")
    for name in ("in_adapter", "out_adapter", "time_embedding"):
        m.take_prefix(name + ".", f"denoiser.{name}.")
    m.check_done()
    if m.state["encoder.cls_tokens.weight"].shape[0] != 1:
        raise CheckpointError(f"{source}: {m.state['encoder.cls_tokens.weight'].shape[0]} CLS tokens; only 1 is supported")
    return m.out, m.dropped, counts


def _merge_encodec(mapped: dict, codec: dict, source_a: str, source_b: str, allow_mismatch: bool,
                   warn: Callable[[str], None]) -> list[str]:
    """Add the EnCodec tensors to ``mapped``; the encoder must equal the checkpoint's embedded copy."""
    import torch

    notes = []
    embedded = {k for k in mapped if k.startswith("codec.encoder.")}
    external = {k for k in codec if k.startswith("codec.encoder.")}
    if embedded:
        if embedded != external:
            only = sorted(embedded ^ external)
            raise CheckpointError(
                f"the EnCodec encoder embedded in {source_a} and the one in {source_b} have different keys: {only[:8]}"
            )
        differ = []
        for key in sorted(embedded):
            a, b = mapped[key], codec[key]
            if a.shape != b.shape or not torch.equal(a, b):
                differ.append((key, (a - b).abs().max().item() if a.shape == b.shape else float("nan")))
        if differ:
            text = "; ".join(f"{k} (max |diff| {d:.3g})" for k, d in differ[:5])
            message = (f"the EnCodec encoder embedded in {source_a} differs from {source_b} in {len(differ)} tensors: "
                       f"{text}")
            if not allow_mismatch:
                raise CheckpointError(message + ". Is --encodec the official encodec_24khz-d7cc33bc.th? "
                                      "Pass --allow-encoder-mismatch to keep the embedded copy (the one the model was trained on).")
            warn(message + "; keeping the embedded copy")
            notes.append(f"EnCodec encoder: the copy embedded in {source_a} (differs from {source_b})")
        else:
            notes.append(f"EnCodec encoder: {source_b} and the copy embedded in {source_a} are identical")
    for key, value in codec.items():
        if key.startswith("codec.encoder.") and embedded:
            continue
        mapped[key] = value
    return notes


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


def resolve_chunk_seconds(checkpoint: Path, config_gin: Path | None, chunk_seconds: float | None) -> tuple[float, str, Path | None]:
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
                "ecmae2ec frame regressors cannot be converted (they give no single z per chunk, spec §12.12)."
            )
        seconds = parsed.get("max_audio_duration")
        if seconds is not None:
            if chunk_seconds is not None and abs(chunk_seconds - seconds) > 1e-9:
                raise ConfigError(f"--chunk-seconds {chunk_seconds:g} contradicts MAX_AUDIO_DURATION = {seconds:g} in {gin}")
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


def _encoder_dims(state: dict, prefix: str, heads: int, what: str) -> tuple[int, int]:
    """(inner attention width, FFN width) of a mapped encoder, checking ``heads`` against the shapes."""
    wq = state[f"{prefix}encoder_layers.0.att_layer.wq.weight"]
    dim = wq.shape[1]
    inner = (dim // heads) * heads
    if wq.shape[0] != inner:
        raise CheckpointError(
            f"{what}: the attention projections are {wq.shape[0]} wide, but {dim} // {heads} heads gives {inner}; "
            f"pass the right number of heads"
        )
    return inner, state[f"{prefix}ff_layer.0.weight"].shape[0]


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
    from .autoencoder import Autoencoder
    from .weights import load_state_dict_strict

    model = Autoencoder(config)
    load_state_dict_strict(model, mapped, source_text)
    model.eval()
    conversion.model = model
    if conversion.out_dir is not None:
        model.save_pretrained(conversion.out_dir)
        (conversion.out_dir / "README.md").write_text(model_card(conversion))
        Autoencoder.from_pretrained(conversion.out_dir)  # round trip: strict reload of what was written


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
    from .autoencoder import AutoencoderConfig

    out = _check_out_dir(out_dir, overwrite)
    state, src = read_state_dict(autoencoder, "diffusion autoencoder")
    seconds, seconds_from, gin = resolve_chunk_seconds(src.path, Path(config_gin) if config_gin else None, chunk_seconds)
    mapped, dropped, counts = map_diffusion(state, src.name)
    codec_state, src_ec = read_state_dict(encodec, "EnCodec")
    codec, dropped_ec = map_encodec(codec_state, src_ec.name)
    conversion = Conversion(None, out, [src, src_ec], "autoencoder", dropped=dropped + dropped_ec)
    if gin is not None:
        conversion.sources.append(SourceFile("config.gin", Path(gin), sha256_file(gin), Path(gin).stat().st_size, "text"))
    conversion.notes += _merge_encodec(mapped, codec, src.name, src_ec.name, allow_encoder_mismatch, warn)
    conversion.notes.append(f"chunk length {seconds:g} s, from {seconds_from}")
    if seconds_from.startswith("default"):
        warn(f"chunk length: {seconds_from}; pass --chunk-seconds 10 for a 10 s model")
    proj = mapped["frame_encoder.feat_projector.weight"]
    _, ff = _encoder_dims(mapped, "frame_encoder.visible_encoder.", frame_heads, "frame encoder")
    for prefix, heads, what in (("cls_encoder.encoder.", cls_heads, "CLS encoder"), ("denoiser.denoiser.", denoiser_heads, "denoiser")):
        _, ff_other = _encoder_dims(mapped, prefix, heads, what)
        if ff_other != ff:
            raise CheckpointError(f"{what} FFN width {ff_other} differs from the frame encoder's {ff}: unsupported")
    config = AutoencoderConfig(
        frontend="encodec", chunk_seconds=seconds, signal_dim=proj.shape[1], model_dim=proj.shape[0],
        frame_layers=counts["frame"], frame_heads=frame_heads, ff_dim=ff, cls_layers=counts["cls"], cls_heads=cls_heads,
        denoiser_layers=counts["denoiser"], denoiser_heads=denoiser_heads,
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
    from .autoencoder import AutoencoderConfig

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
        frontend="encodec", chunk_seconds=chunk_seconds, signal_dim=proj.shape[1], model_dim=dim, frame_layers=n_layers,
        frame_heads=heads, ff_dim=ff, cls_layers=0, denoiser_layers=0, source=_source_text(conversion.sources),
    )
    conversion.notes.append(f"EnCodecMAE-{found or 'custom'}: D={dim}, {n_layers} layers x {heads} heads, FFN {ff}; "
                            f"z = mean of the frame embeddings of each {chunk_seconds:g} s chunk")
    _build_and_save(config, mapped, conversion, f"{src.name} + {src_ec.name}")
    return conversion


def _source_text(sources: list[SourceFile]) -> str:
    return "pecmae convert: " + " + ".join(f"{s.name} (sha256 {s.sha256[:16]}...)" for s in sources)


def model_card(conversion: Conversion) -> str:
    """README.md for a converted autoencoder: provenance, checksums, licence notes, usage."""
    model = conversion.model
    cfg = model.config
    try:
        from importlib.metadata import version

        ours = version("pecmae-hub")
    except Exception:
        ours = "unknown"
    kind = "diffusion autoencoder (audio → z → audio)" if conversion.kind == "autoencoder" else "EnCodecMAE frame encoder (audio → z)"
    licences = [LICENCE_NOTES["encodec"], LICENCE_NOTES[conversion.kind]]
    lines = [
        "---",
        "library_name: pecmae-hub",
        "license: other",
        "license_name: upstream-licences",
        "tags: [pecmae, audio, music, encodec, encodecmae, converted]",
        "---",
        "",
        f"# Converted upstream {kind}",
        "",
        f"Converted with `pecmae convert` (pecmae-hub {ours}) on {_dt.date.today().isoformat()} from the upstream files "
        "below. Weights are unchanged; only key names differ (the shared feed-forward network of each transformer "
        "is stored once). Load it with `Autoencoder.from_pretrained(<this folder or repo>)`.",
        "",
        "## Source files",
        "",
        "| role | file | container | size (bytes) | sha256 |",
        "|---|---|---|---|---|",
    ]
    for s in conversion.sources:
        lines.append(f"| {s.role} | `{s.name}` | {s.container} | {s.size} | `{s.sha256}` |")
    lines += ["", "## Licence notes", ""]
    lines += [f"- {text}" for text in licences]
    lines += [
        "- The converted weights are a derivative of the files above: their terms apply to it. "
        "This card does not grant any licence.",
        "",
        "## Configuration",
        "",
        f"- chunk length: {cfg.chunk_seconds:g} s ({model.chunk_frames} frames at 75 Hz); embedding dimension D = {cfg.model_dim}",
        f"- frame encoder: {cfg.frame_layers} ResiDual layers, {cfg.frame_heads} heads, FFN {cfg.ff_dim}",
    ]
    if cfg.cls_layers:
        lines.append(f"- CLS encoder: {cfg.cls_layers} layers, {cfg.cls_heads} heads; z = the CLS output (never zeroed)")
    if cfg.denoiser_layers:
        lines.append(f"- denoiser: {cfg.denoiser_layers} layers, {cfg.denoiser_heads} heads; v-diffusion, angle schedule")
    lines += ["", "## Conversion notes", ""]
    lines += [f"- {note}" for note in conversion.notes]
    for what, count in sorted(conversion.dropped.items()):
        lines.append(f"- dropped {count} tensors: {what}")
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "from pecmae_hub.autoencoder import Autoencoder",
        'ae = Autoencoder.from_pretrained("path/or/org-name")',
        'z = ae.encode("song.wav")            # (n_chunks, D)',
    ]
    if cfg.denoiser_layers:
        lines.append("audio = ae.decode(z[:1], steps=40, guidance=1.0, seed=0)  # 24 kHz")
    lines += ["```", ""]
    return "\n".join(lines)


# Command line --------------------------------------------------------------------------------------------
EPILOG = f"""examples:
  # diffusion autoencoder (4 s or 10 s; chunk length read from config.gin next to weights.pt)
  pecmae convert --encodec encodec_24khz-d7cc33bc.th \\
      --autoencoder DiffTransformerAE2L8L1CLS-4s/weights.pt --out pecmae-ae-4s
  # paper-era Lightning checkpoint, chunk length given explicitly
  pecmae convert --encodec encodec_24khz-d7cc33bc.th \\
      --autoencoder ae/diffusion-10s-2L8L-jamendofma-285k.ckpt --chunk-seconds 10 --out pecmae-ae-10s
  # EnCodecMAE frame encoder only
  pecmae convert --encodec encodec_24khz-d7cc33bc.th --encodecmae model.pt --size base --out encodecmae-base
  # PECMAE prototype head
  pecmae convert --head protos.ckpt --labels blues,classical,... --norm-mean M --norm-std S --out head

EnCodec weights: {ENCODEC_URL} (CC-BY-NC 4.0).
"""


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert upstream checkpoints (EnCodec, EnCodecMAE, encodecmae2wav, PECMAE heads) to pecmae-hub folders",
        description="Convert upstream checkpoints to the pecmae-hub folder format (config.json + model.safetensors "
                    "+ README.md). Pickles are read with torch.load(weights_only=True) only.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_argument_group("what to convert (exactly one)")
    what.add_argument("--autoencoder", metavar="PATH",
                      help="encodecmae2wav weights.pt or Lightning .ckpt (full TransformerAEDiffusion state dict)")
    what.add_argument("--encodecmae", metavar="PATH", help="EnCodecMAE v1 model.pt (frame encoder only)")
    ae = p.add_argument_group("autoencoder options")
    ae.add_argument("--encodec", metavar="PATH", help=f"EnCodec 24 kHz weights (.th), from {ENCODEC_URL}")
    ae.add_argument("--config-gin", metavar="PATH",
                    help="the model's config.gin (default: config.gin next to the weights, if any)")
    ae.add_argument("--chunk-seconds", type=float, metavar="S",
                    help="chunk length of the diffusion model: 4 or 10 (read from config.gin when available)")
    ae.add_argument("--size", choices=["base", "large"], help="EnCodecMAE size (checked against the tensors)")
    ae.add_argument("--frame-heads", type=int, default=12, help="frame-encoder attention heads (default %(default)s)")
    ae.add_argument("--cls-heads", type=int, default=8, help="CLS-encoder attention heads (default %(default)s)")
    ae.add_argument("--denoiser-heads", type=int, default=8, help="denoiser attention heads (default %(default)s)")
    ae.add_argument("--allow-encoder-mismatch", action="store_true",
                    help="if the EnCodec encoder embedded in the checkpoint differs from --encodec, keep the embedded one")
    from .convert_head import add_head_arguments  # --head and its options, defined once with the head code

    add_head_arguments(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model in --out")
    p.set_defaults(func=run_convert)


def _print_summary(conversion: Conversion) -> None:
    for s in conversion.sources:
        print(f"read {s.role}: {s.path} ({s.container}, sha256 {s.sha256})")
    for what, count in sorted(conversion.dropped.items()):
        print(f"dropped {count} tensors: {what}")
    for note in conversion.notes:
        print(note)
    n_params = sum(p.numel() for p in conversion.model.parameters())
    print(f"wrote {conversion.out_dir}/ (config.json, model.safetensors, README.md): {n_params:,} parameters, "
          f"reloaded strictly")


def run_convert(args: argparse.Namespace) -> int:
    chosen = [name for name in ("autoencoder", "encodecmae", "head") if getattr(args, name)]
    if len(chosen) != 1:
        raise ConfigError("give exactly one of --autoencoder, --encodecmae or --head"
                          + (f" (got {', '.join('--' + c for c in chosen)})" if chosen else ""))
    kind = chosen[0]
    if kind == "head":
        _check_out_dir(args.out, args.overwrite)
        return _run_head(args)
    if not args.encodec:
        raise ConfigError(
            f"--{kind} needs --encodec PATH: the EnCodec 24 kHz weights (encodec_24khz-d7cc33bc.th, {ENCODEC_URL}) "
            "provide the decoder and are checked against the encoder copy inside the checkpoint"
        )
    if kind == "autoencoder":
        if args.size:
            raise ConfigError("--size applies to --encodecmae only")
        conversion = convert_autoencoder(
            args.autoencoder, args.encodec, args.out, config_gin=args.config_gin, chunk_seconds=args.chunk_seconds,
            frame_heads=args.frame_heads, cls_heads=args.cls_heads, denoiser_heads=args.denoiser_heads,
            allow_encoder_mismatch=args.allow_encoder_mismatch, overwrite=args.overwrite,
        )
    else:
        if args.config_gin:
            raise ConfigError("--config-gin applies to --autoencoder only")
        conversion = convert_encodecmae(
            args.encodecmae, args.encodec, args.out, size=args.size, heads=args.frame_heads,
            chunk_seconds=args.chunk_seconds or 4.0, allow_encoder_mismatch=args.allow_encoder_mismatch,
            overwrite=args.overwrite,
        )
    _print_summary(conversion)
    return 0


def _run_head(args: argparse.Namespace) -> int:
    try:
        from . import convert_head as head_module
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.convert_head":
            raise
        raise ConfigError("prototype-head conversion is not available in this build (pecmae_hub.convert_head)") from None
    if hasattr(head_module, "convert_head_from_args"):
        head_module.convert_head_from_args(args)
        return 0
    if not args.labels or args.norm_mean is None or args.norm_std is None:
        raise ConfigError("--head needs --labels, --norm-mean and --norm-std")
    head_module.convert_head(args.head, args.labels, args.norm_mean, args.norm_std, args.out)
    print(f"converted {args.head} -> {args.out}")
    return 0
