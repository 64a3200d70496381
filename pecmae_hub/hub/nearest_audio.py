"""The audio of the training chunks nearest to each prototype (the APNet-style explanation, playable).

``nearest.json`` names, for every prototype, the training chunks closest to it (track id, chunk index,
distance). A model may also ship those chunks' audio, when the training data's licence allows it:

    nearest/index.json          {"version", "sample_rate", "chunk_seconds", "sources", "licence", "entries": [...]}
    nearest/p021_r0.wav         prototype 21, nearest chunk of rank 0 (16-bit PCM, 24 kHz, one chunk)

Each entry of ``entries``: ``prototype``, ``rank``, ``file``, ``track``, ``chunk``, ``distance``,
``start``/``end`` (seconds inside the track), and the plain-word facts ``label``, ``source``, ``clip``
(see :func:`track_facts`). ``sources`` maps a track's first folder (e.g. a sound bank) to
``{"name", "licence"}``.

:func:`write_nearest_audio` writes the folder (the training recipes call it when the audio is at hand
and :func:`redistribution_allowed` says yes); :func:`read_index` and :func:`nearest_audio_path` read it
through :class:`~pecmae_hub.hub.files.ModelFiles` (paths confined to the model);
:func:`prefetch_audio` fetches every prototype and nearest-chunk WAV of a Hub model in one request.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np

from pecmae_hub.audio import SAMPLE_RATE, write_wav
from pecmae_hub.errors import ModelNotFoundError, PecmaeError
from pecmae_hub.hub.files import ModelFiles, inside_path
from pecmae_hub.storage.atomic import atomic_write_text

log = logging.getLogger(__name__)

NEAREST_AUDIO_DIR = "nearest"
NEAREST_AUDIO_INDEX = f"{NEAREST_AUDIO_DIR}/index.json"
DEFAULT_PER_PROTOTYPE = 2

#: whether a data set's licence lets a model redistribute excerpts of its training audio. GTZAN is
#: commercial music of unclear licence, so its chunks stay text only unless a caller decides otherwise;
#: a data set not listed here is treated the same way (opt in with ``allowed=True``).
REDISTRIBUTION = {
    "gm-solos": True,  # the training banks: FluidR3 (MIT), MuseScore General (MIT), sf_GMbank (public domain)
    "gtzan": False,  # copyrighted recordings collected without licences
}

#: plain names and licences of the GM-Solos training banks (the first folder of a GM-Solos track id)
GM_SOLOS_SOURCES = {
    "fluidr3": {"name": "FluidR3 bank", "licence": "MIT (Frank Wen)"},
    "musescore": {"name": "MuseScore General bank", "licence": "MIT (S. Christian Collins)"},
    "csound": {"name": "Csound bank", "licence": "public domain (sf_GMbank)"},
}

_TRAILING_NUMBER = re.compile(r"(\d+)$")


def redistribution_allowed(dataset: str | None) -> bool:
    """True when :data:`REDISTRIBUTION` says the data set's audio may ship with a model (unknown: False)."""
    return bool(REDISTRIBUTION.get(str(dataset or "").lower(), False))


def track_facts(track: str, chunk: int, chunk_seconds: float, sources: dict | None = None) -> dict:
    """Plain-word facts of a training chunk: ``{"label", "source", "clip", "start", "end"}``.

    ``source/label_slug/source_label_00059.wav`` (GM-Solos) gives label ``violin``, the source's name
    from ``sources`` (else the folder name) and clip 59; ``blues/blues.00012.wav`` gives label ``blues``
    and clip 12; a bare file name gives no label and its stem as the clip.
    """
    parts = [p for p in str(track).replace("\\", "/").split("/") if p]
    stem = Path(parts[-1]).stem if parts else str(track)
    number = _TRAILING_NUMBER.search(stem)
    label = source = None
    if len(parts) >= 3:
        source = ((sources or {}).get(parts[-3]) or {}).get("name") or parts[-3]
        label = parts[-2].replace("_", " ")
    elif len(parts) == 2:
        label = parts[0].replace("_", " ")
    start = float(chunk) * float(chunk_seconds)
    return {
        "label": label,
        "source": source,
        "clip": int(number.group(1)) if number else stem,
        "start": round(start, 3),
        "end": round(start + float(chunk_seconds), 3),
    }


def describe_chunk(facts: dict) -> str:
    """``violin, Csound bank, clip 59, 1.5–3.0 s`` from :func:`track_facts` (or an index entry)."""
    words = [w for w in (facts.get("label"), facts.get("source")) if w]
    words.append(f"clip {facts.get('clip')}")
    words.append(f"{float(facts.get('start', 0.0)):.1f}–{float(facts.get('end', 0.0)):.1f} s")
    return ", ".join(words)


def write_nearest_audio(
    folder: str | os.PathLike,
    table: dict,
    load_track: Callable[[str], np.ndarray | None],
    chunk_seconds: float,
    *,
    per_prototype: int = DEFAULT_PER_PROTOTYPE,
    sources: dict | None = None,
    licence: str = "",
    sample_rate: int = SAMPLE_RATE,
) -> dict:
    """Cut the ``per_prototype`` nearest chunks of every prototype of ``table`` (a ``nearest.json``) out
    of their tracks and write ``folder/nearest/*.wav`` and ``folder/nearest/index.json``; returns the index.

    ``load_track(track_id)`` gives the track's audio (mono float32 at ``sample_rate``), or None when it is
    not at hand: that chunk is left out (the app then shows its text only). Call this only when the data
    set's licence allows redistributing excerpts (:func:`redistribution_allowed`); ``licence`` says which
    terms apply and is written to the index (and belongs in the model card's licence notes).
    """
    out = Path(folder) / NEAREST_AUDIO_DIR
    out.mkdir(parents=True, exist_ok=True)
    chunk = int(round(chunk_seconds * sample_rate))
    cache: dict[str, np.ndarray | None] = {}
    entries = []
    for proto in table.get("prototypes", []):
        p = int(proto["index"])
        for rank, row in enumerate(proto.get("nearest", [])[:per_prototype]):
            track = str(row["track"])
            if track not in cache:
                try:
                    cache[track] = load_track(track)
                except (OSError, PecmaeError) as exc:
                    log.warning("nearest chunk audio: cannot load %s: %s", track, exc)
                    cache[track] = None
            wav = cache[track]
            start = int(row["chunk"]) * chunk
            if wav is None or start >= len(wav):
                continue
            name = f"p{p:03d}_r{rank}.wav"
            write_wav(out / name, np.asarray(wav[start : start + chunk], dtype=np.float32), sample_rate)
            facts = track_facts(track, int(row["chunk"]), chunk_seconds, sources)
            entries.append(
                {
                    "prototype": p,
                    "rank": rank,
                    "file": name,
                    "track": track,
                    "chunk": int(row["chunk"]),
                    "distance": float(row.get("distance", 0.0)),
                    **facts,
                }
            )
    index = {
        "version": 1,
        "sample_rate": int(sample_rate),
        "chunk_seconds": float(chunk_seconds),
        "per_prototype": int(per_prototype),
        "licence": licence,
        "sources": sources or {},
        "entries": entries,
    }
    atomic_write_text(out / "index.json", json.dumps(index, indent=1) + "\n")
    return index


def read_index(files: ModelFiles | None) -> dict | None:
    """``nearest/index.json`` of a model, or None when it ships no nearest-chunk audio (or is unreachable)."""
    if files is None:
        return None
    try:
        return files.json(NEAREST_AUDIO_INDEX, required=False)
    except ModelNotFoundError:
        return None


def index_entry(index: dict | None, p: int, rank: int = 0) -> dict | None:
    """The entry of prototype ``p``'s ``rank``-th nearest chunk in ``index``, or None."""
    for entry in (index or {}).get("entries", []):
        if int(entry.get("prototype", -1)) == int(p) and int(entry.get("rank", -1)) == int(rank):
            return entry
    return None


def nearest_audio_path(files: ModelFiles | None, index: dict | None, p: int, rank: int = 0) -> Path | None:
    """Local path of the WAV of prototype ``p``'s ``rank``-th nearest training chunk, or None.

    The file name comes from the model's own index, so it must stay inside the model (``ModelFiles.get``
    refuses ``..``, absolute paths and links leading out with a :class:`~pecmae_hub.errors.CheckpointError`).
    """
    entry = index_entry(index, p, rank)
    if files is None or entry is None:
        return None
    name = inside_path(str(entry["file"]), NEAREST_AUDIO_INDEX)
    try:
        return files.get(f"{NEAREST_AUDIO_DIR}/{name}", required=False)
    except ModelNotFoundError:  # not cached and the Hub unreachable: the text remains
        return None


def prefetch_audio(files: ModelFiles | None) -> bool:
    """Download every ``prototypes/*`` and ``nearest/*`` file of a Hub model in one ``snapshot_download``
    (at the model's pinned commit) instead of one request per WAV; True when it ran. Folders and
    offline or failing downloads return False: files are then fetched (or not) one by one."""
    if files is None or not files.is_hub:
        return False
    from huggingface_hub import snapshot_download

    assert files.repo_id is not None  # files.is_hub
    prefix = f"{files.subfolder}/" if files.subfolder else ""
    try:
        snapshot_download(
            files.repo_id,
            revision=files.commit or files.revision,
            cache_dir=cast("str | Path | None", files.cache_dir),  # any PathLike works (it calls Path() on it)
            local_files_only=files._offline(),
            token=files.token,
            allow_patterns=[f"{prefix}prototypes/*", f"{prefix}{NEAREST_AUDIO_DIR}/*"],
        )
    except Exception as exc:  # offline, unreachable, a Hub error: the per-file path still works
        log.info("could not prefetch the audio of %s: %s", files.describe(), exc)
        return False
    return True
