"""Mapping upstream key names to ours (EnCodec, EnCodecMAE v1, encodecmae2wav ``TransformerAEDiffusion``).

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

EnCodec in the Hugging Face Transformers layout (``facebook/encodec_24khz``, ``model.safetensors``) is first
renamed to the ``.th`` names (:func:`encodec_from_transformers`): ``{encoder,decoder}.layers.<i>.conv.*`` →
``….model.<i>.conv.conv.*`` (``convtr.convtr`` for the decoder's up-sampling layers), ``….block.<j>.conv.*`` →
``….block.<j>.conv.conv.*``, ``….shortcut.conv.*`` → ``….shortcut.conv.conv.*``, ``….lstm.*`` unchanged,
``quantizer.layers.*`` dropped like the ``.th`` quantizer.

Dropped, with a note: the EnCodec quantizer, and EnCodecMAE's pretraining-only ``decoder.*``, ``head.*``,
``decoder_projector.*``, ``target_encoder.*``, ``extra_head.*``, ``masker.*``. Any other key is an error.

Each upstream transformer shares one FFN across its layers; the per-layer copies must be identical and
are stored once. The embedded EnCodec encoder must equal the ``.th`` copy (:func:`_merge_encodec`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from pecmae_hub.convert.checkpoint_io import _WN_SUFFIXES
from pecmae_hub.errors import CheckpointError

DROPPED_ENCODECMAE = {
    "decoder.": "EnCodecMAE pretraining decoder",
    "decoder_projector.": "EnCodecMAE pretraining decoder projector",
    "head.": "EnCodecMAE pretraining classification head",
    "target_encoder.": "EnCodecMAE pretraining targets (EnCodec RVQ codebooks)",
    "extra_head.": "EnCodecMAE -st extra head",
    "masker.": "EnCodecMAE pretraining masker",
}
_LAYER_KEY = re.compile(r"^encoder_layers\.(\d+)\.(.+)$")
_FF_KEY = re.compile(r"^ff_layer\.(\d+)\.(weight|bias)$")


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
            self.put(key, dst_prefix + key[len(src_prefix) :])
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
            rest = key[len(src_prefix) :]
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
            raise CheckpointError(
                f"{self.source}: {src_prefix} has layers {sorted(layers)}, expected 0..{n_layers - 1}"
            )
        expected = {"ff_layer.0.weight", "ff_layer.0.bias", "ff_layer.2.weight", "ff_layer.2.bias"}
        if set(ff) != expected:
            raise CheckpointError(
                f"{self.source}: {src_prefix} feed-forward keys {sorted(ff)} differ from the expected "
                f"{sorted(expected)}"
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
        self.dropped[f"{src_prefix}encoder_layers.<1..>.ff_layer.* (identical copies of the shared FFN)"] += 4 * (
            n_layers - 1
        )
        return n_layers

    def leftovers(self) -> list[str]:
        return sorted(set(self.state) - self.used)

    def check_done(self) -> None:
        rest = self.leftovers()
        if rest:
            shown = ", ".join(rest[:15]) + (f" ... ({len(rest)} in all)" if len(rest) > 15 else "")
            raise CheckpointError(f"{self.source}: unknown keys that pecmae does not know how to map: {shown}")


_HF_LAYER = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.(.+)$")


def is_transformers_encodec(state: dict) -> bool:
    """True for an EnCodec state dict in the Transformers layout (``encoder.layers.<i>.*``)."""
    return any(_HF_LAYER.match(k) for k in state) and not any(k.startswith("encoder.model.") for k in state)


def encodec_from_transformers(state: dict, source: str = "EnCodec (Transformers layout)") -> dict:
    """Rename a Transformers ``EncodecModel`` state dict to the ``encodec_24khz-d7cc33bc.th`` names.

    Both weight-norm styles are accepted (``weight_g``/``weight_v`` and
    ``parametrizations.weight.original0/1``). In the SEANet decoder the first and the last direct
    convolution are plain convolutions and every one in between is a transposed (up-sampling) one.
    Keys that fit no rule are kept as they are, so :func:`map_encodec` reports them as unknown.
    """
    decoder_convs = sorted(
        {
            int(m.group(2))
            for m in map(_HF_LAYER.match, state)
            if m and m.group(1) == "decoder" and m.group(3).startswith("conv.")
        }
    )
    transposed = set(decoder_convs[1:-1])
    out: dict = {}
    for key, value in state.items():
        for old, new in _WN_SUFFIXES.items():
            if key.endswith(old):
                key = key[: -len(old)] + new
        match = _HF_LAYER.match(key)
        renamed = key
        if match:
            part, index, rest = match.group(1), int(match.group(2)), match.group(3)
            head = f"{part}.model.{index}."
            if rest.startswith("conv."):
                kind = "convtr.convtr." if part == "decoder" and index in transposed else "conv.conv."
                renamed = head + kind + rest[len("conv.") :]
            elif re.match(r"^(block\.\d+|shortcut)\.conv\.", rest):
                block, _, tail = rest.partition(".conv.")
                renamed = f"{head}{block}.conv.conv.{tail}"
            elif rest.startswith("lstm."):
                renamed = head + rest
        if renamed in out:
            raise CheckpointError(f"{source}: two tensors map to {renamed} (both weight-norm styles at once?)")
        out[renamed] = value
    return out


def map_encodec(state: dict, source: str = "EnCodec checkpoint") -> tuple[dict, Counter]:
    """EnCodec → ``codec.encoder.*`` / ``codec.decoder.*`` (quantizer dropped).

    Accepts the official ``.th`` layout and the Transformers layout of ``facebook/encodec_24khz``
    (renamed by :func:`encodec_from_transformers`); both give the same tensors under the same names.
    """
    if is_transformers_encodec(state):
        state = encodec_from_transformers(state, source)
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
        raise CheckpointError(
            f"{source} has no encoder.encodecmae_model.* keys: not a TransformerAEDiffusion state dict.{hint}"
        )
    counts = {"frame": _map_encodecmae_into(m, "encoder.encodecmae_model.")}
    counts["cls"] = m.fold_encoder("encoder.encoder.", "cls_encoder.encoder.")
    m.take("encoder.cls_tokens.weight", "cls_encoder.cls_tokens.weight")
    m.take("encoder.pos_encoder.scale", "cls_encoder.pos_encoder.scale")
    counts["denoiser"] = m.fold_encoder("denoiser.", "denoiser.denoiser.")
    for name in ("in_adapter", "out_adapter", "time_embedding"):
        m.take_prefix(name + ".", f"denoiser.{name}.")
    m.check_done()
    if m.state["encoder.cls_tokens.weight"].shape[0] != 1:
        raise CheckpointError(
            f"{source}: {m.state['encoder.cls_tokens.weight'].shape[0]} CLS tokens; only 1 is supported"
        )
    return m.out, m.dropped, counts


def _merge_encodec(
    mapped: dict, codec: dict, source_a: str, source_b: str, allow_mismatch: bool, warn: Callable[[str], None]
) -> list[str]:
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
            message = (
                f"the EnCodec encoder embedded in {source_a} differs from {source_b} in {len(differ)} tensors: {text}"
            )
            if not allow_mismatch:
                raise CheckpointError(
                    message + ". Is --encodec the official encodec_24khz-d7cc33bc.th? "
                    "Pass --allow-encoder-mismatch to keep the embedded copy (the one the model was trained on)."
                )
            warn(message + "; keeping the embedded copy")
            notes.append(f"EnCodec encoder: the copy embedded in {source_a} (differs from {source_b})")
        else:
            notes.append(f"EnCodec encoder: {source_b} and the copy embedded in {source_a} are identical")
    for key, value in codec.items():
        if key.startswith("codec.encoder.") and embedded:
            continue
        mapped[key] = value
    return notes


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
