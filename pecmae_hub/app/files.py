"""Files the app serves: the model's audio (pre-rendered prototypes, nearest training chunks) made servable,
and the app's own output folder (sonified prototypes, result downloads).

Gradio serves files only from the working and temp folders; a model's files elsewhere (e.g. the Hugging
Face cache) are copied into :data:`OUT_DIR` first.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from pecmae_hub.errors import PecmaeError
from pecmae_hub.render_index import index_settings

log = logging.getLogger(__name__)
INDEX_FILE = "prototypes/index.json"
OUT_DIR = Path(tempfile.mkdtemp(prefix="pecmae-app-"))


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-")[:60] or "model"


def servable(path: str | os.PathLike) -> str:
    """A path Gradio may serve: files outside the working and temp folders are copied to the temp folder."""
    path = Path(path)
    real = path.resolve()
    for root in (Path.cwd().resolve(), Path(tempfile.gettempdir()).resolve()):
        if real.is_relative_to(root) and not path.name.startswith("."):
            return str(path)
    digest = hashlib.sha1(str(real).encode()).hexdigest()[:12]
    dest = OUT_DIR / "files" / digest / path.name
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(real, dest)
    return str(dest)


def render_settings_of(model) -> dict | None:
    """``prototypes/index.json`` of ``model`` (steps, guidance, seed, files) or None without pre-renders."""
    index = getattr(model, "_render_index", None)
    if callable(index):
        return index() or None
    files = getattr(model, "_files", None)
    return files.json(INDEX_FILE, required=False) if files is not None else None


def prerendered(model, p: int) -> str | None:
    """Servable path of the pre-rendered WAV of prototype ``p`` (played only while its render key matches the
    model's prototype, decoder and the index's settings), or None."""
    index = render_settings_of(model)
    if not index:
        return None
    try:
        settings = index_settings(index)  # sampler, temperature, vocoder, loudness of the renders
        path = model.prototype_audio_path(
            p,
            settings["steps"],
            settings["guidance"],
            settings["seed"],
            settings["scheduler"],
            settings["vocoder"],
            settings["loudness_lufs"],
            settings["temperature"],
        )
    except (PecmaeError, KeyError, ValueError, TypeError):
        return None
    return servable(path) if path is not None else None


def decode_settings(model, scheduler, steps: int, guidance: float, seed: int) -> dict:
    """The full settings of a decode the app asks for (the model's default temperature, vocoder and level
    complete what the user chose), as :func:`pecmae_hub.app.texts.render_words` words them."""
    from pecmae_hub.loudness import TARGET_LUFS
    from pecmae_hub.models.synthesis import resolve_vocoder

    return {
        "scheduler": scheduler,
        "steps": steps,
        "guidance": guidance,
        "seed": seed,
        "temperature": model.default_temperature(),
        "vocoder": resolve_vocoder(model.autoencoder, None),
        "loudness_lufs": TARGET_LUFS,
    }


def nearest_audio(model, p: int, rank: int) -> str | None:
    """Servable path of the WAV of prototype ``p``'s ``rank``-th nearest training chunk, or None."""
    finder = getattr(model, "nearest_audio_path", None)
    try:
        path = finder(p, rank) if callable(finder) else None
    except PecmaeError as exc:  # e.g. an index naming a file outside the model: the text remains
        log.warning("nearest chunk %s/%s of %s: %s", p, rank, getattr(model, "name", "?"), exc)
        return None
    return servable(path) if path is not None else None
