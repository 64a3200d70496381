"""From decoder output to audio: which vocoder renders it, and how decoded chunks are joined."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pecmae_hub.errors import ConfigError
from pecmae_hub.models.vocoder import GRIFFIN_LIM, VOCODERS, VOCOS

if TYPE_CHECKING:
    from pecmae_hub.models.autoencoder import Autoencoder


def check_temperature(value) -> float:
    """A sampling temperature (the scale of the starting noise) as a float in (0, 2], or :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"temperature must be a number in (0, 2] (1: the plain sampler), got {value!r}")
    if not 0.0 < float(value) <= 2.0:
        raise ConfigError(f"temperature must be in (0, 2] (1: the plain sampler), got {value}")
    return float(value)


def resolve_vocoder(ae: Autoencoder, vocoder: str | None) -> str:
    """The vocoder name that renders ``ae``'s decoder output: ``vocoder`` checked, or the model's default
    (``"vocos"`` when the model ships a neural vocoder, else ``"griffin-lim"``; ``"encodec"`` for EnCodec).

    Raises:
        ConfigError: an unknown name, a neural vocoder the model does not have, or a mel vocoder asked of an
            EnCodec model.
    """
    if ae.config.frontend == "encodec":
        if vocoder not in (None, "encodec"):
            raise ConfigError(f"vocoder {vocoder!r}: EnCodec models decode with EnCodec's own decoder only")
        return "encodec"
    if vocoder is None:
        return VOCOS if ae.vocoder is not None else GRIFFIN_LIM
    name = str(vocoder).strip().lower()
    if name not in VOCODERS:
        raise ConfigError(f"unknown vocoder {vocoder!r}; choose one of {', '.join(VOCODERS)}")
    if name == VOCOS and ae.vocoder is None:
        raise ConfigError(
            "this model has no neural vocoder; use vocoder='griffin-lim' (or train one: docs/gm-solos.md)"
        )
    return name


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
