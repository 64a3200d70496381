"""``prototypes/index.json``: which pre-rendered WAV is the audio of which prototype, and for what settings.

A render is valid only for the exact prototype vector it was decoded from, the exact decoder (denoiser and
vocoder weights, precision) and the exact sampler settings. Each entry therefore carries a **render key**:
a hash of the prototype's float32 values, :meth:`Autoencoder.decoder_fingerprint`, the steps, guidance,
seed, sampler, vocoder and loudness target. A pre-rendered WAV is played, or copied into a re-saved model,
only when its key equals the key computed now; a head whose prototypes changed, or a re-trained decoder,
never plays the old sound. Each entry also records the loudness normalisation applied (gain, loudness,
true peak).

The index also records the ``precision`` the renders were decoded at (:mod:`pecmae_hub.models.precision`).
``render_prototypes`` decodes at fp32 unless told otherwise, so a shipped render is the exact sound; it is
played whatever precision the model runs at now (an approximate mode, e.g. ``auto`` -> int8, stands in for
fp32 and never beats it: :func:`key_matches`), while a render made at int8 plays only for int8.

Format 1 (pecmae-hub before render keys) has no keys: its renders are trusted only for the prototypes and
autoencoder of the folder they ship in (see :func:`legacy_entry_valid`).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import torch

from pecmae_hub.audio import SAMPLE_RATE
from pecmae_hub.sampling.schedulers import SchedulerSpec, scheduler_to_dict

if TYPE_CHECKING:
    from pecmae_hub.models.autoencoder import Autoencoder

INDEX_VERSION = 2


def prototypes_digest(prototypes: torch.Tensor) -> str:
    """SHA-256 (hex) of (P, D) prototypes as float32 values: the identity of what is sonified."""
    return hashlib.sha256(prototypes.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


def settings_record(
    steps: int,
    guidance: float,
    seed: int,
    scheduler: SchedulerSpec,
    vocoder: str,
    loudness: float | None,
    temperature: float = 1.0,
) -> dict[str, Any]:
    """The sampler/vocoder/level settings as stored in the index (and hashed into the keys)."""
    return {
        "steps": int(steps),
        "guidance": float(guidance),
        "seed": int(seed),
        "scheduler": scheduler_to_dict(scheduler),
        "temperature": float(temperature),
        "vocoder": vocoder,
        "loudness_lufs": None if loudness is None else float(loudness),
    }


def render_key(prototype: torch.Tensor, ae: Autoencoder, settings: dict[str, Any], precision: str | None = None) -> str:
    """The key of one prototype's render: prototype values × decoder identity (at ``precision``, default the
    one in force) × settings."""
    payload = {
        "prototype": prototypes_digest(prototype.reshape(1, -1)),
        "decoder": ae.decoder_fingerprint(precision),
        "sample_rate": SAMPLE_RATE,
        **settings,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def key_matches(key: str | None, prototype: torch.Tensor, ae: Autoencoder, settings: dict[str, Any]) -> str | None:
    """The precision a render with ``key`` was made at, when it is the sound of ``prototype`` through this
    decoder with ``settings`` and may be played at the precision in force (that one, or exact fp32), else None."""
    for precision in dict.fromkeys((ae.precision, "fp32")):
        if key is not None and key == render_key(prototype, ae, settings, precision):
            return precision
    return None


def build_index(
    ae: Autoencoder, settings: dict[str, Any], entries: list[dict], precision: str | None = None
) -> dict[str, Any]:
    """The whole ``index.json`` (entries already carry their ``key`` and level record), for renders decoded at
    ``precision`` (default the one in force)."""
    precision = precision or ae.precision
    return {
        "version": INDEX_VERSION,
        "sample_rate": SAMPLE_RATE,
        **settings,
        "precision": precision,
        "autoencoder_fingerprint": ae.fingerprint(),
        "decoder_fingerprint": ae.decoder_fingerprint(precision),
        "prototypes": entries,
    }


def index_settings(index: dict) -> dict[str, Any]:
    """The settings an index was rendered with (format 1: exact sampler, temperature 1, Griffin-Lim, no
    loudness normalisation)."""
    return settings_record(
        index.get("steps", 40),
        float(index.get("guidance", 1.0)),
        index.get("seed", 0),
        index.get("scheduler", {"name": "upstream"}),
        index.get("vocoder", "griffin-lim"),
        index.get("loudness_lufs"),
        index.get("temperature", 1.0),
    )


def entry_for(index: dict | None, p: int) -> dict | None:
    """The entry of prototype ``p`` in ``index``, or None."""
    if not index:
        return None
    return next((e for e in index.get("prototypes", []) if int(e.get("index", -1)) == p), None)


def legacy_entry_valid(index: dict, ae: Autoencoder, unchanged_since_load: bool) -> bool:
    """Whether a format-1 index (no render keys) may be trusted: only for the folder's own prototypes
    (``unchanged_since_load``) and an autoencoder whose fingerprint it names."""
    return unchanged_since_load and ae.matches_fingerprint(index.get("autoencoder_fingerprint"))
