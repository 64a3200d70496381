"""Input checks of the app: one readable message per problem, shown where the problem is.

Every event runs a *validator* first (Gradio's ``validator=``): a refused input gets its message on
that input component only, the outputs keep what they showed, and nothing reaches the queue. Each
message starts with its key words (``Audio too long: …``) because the browser shows the message, not
the error's title. Expected user errors are :func:`user_error` (no traceback in the server log); a
refused upload is deleted from Gradio's upload folder at once. Decoded audio that passed is kept
briefly, so the event that follows its validation does not decode it again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

import gradio as gr
import numpy as np

from pecmae_hub.app.access import scrub_paths
from pecmae_hub.app.settings import format_seconds
from pecmae_hub.audio import MIN_SECONDS, SAMPLE_RATE, load_audio, silence_error, silent_chunks
from pecmae_hub.errors import AudioError
from pecmae_hub.prototype_audio import MAX_SEED

log = logging.getLogger(__name__)
MAX_STEPS, MAX_GUIDANCE = 200, 20.0  # the Prototypes tab's limits (the library allows more steps)


def user_error(title: str, message: str) -> gr.Error:
    """A :class:`gr.Error` for a problem the user caused: ``"<title>: <message>"``, no server traceback."""
    return gr.Error(f"{title}: {message}", title=title, print_exception=False)


def ok() -> dict:
    """A passing ``gr.validate`` result."""
    return gr.validate(True, "")


def refuse(exc: gr.Error) -> dict:
    """A failing ``gr.validate`` result carrying ``exc``'s message."""
    return gr.validate(False, str(exc.message))


class AudioInputs:
    """Checks uploaded or recorded audio files against the app's limits; see the module docstring."""

    def __init__(self, max_seconds: float, upload_root: str | os.PathLike, cache_size: int = 4):
        self.max_seconds = float(max_seconds)
        self.upload_root = Path(upload_root).resolve()
        self._decoded: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def read(self, audio, chunk_samples: int | None = None) -> np.ndarray:
        """Validated 24 kHz mono samples of a file path; a :func:`user_error` otherwise.

        With ``chunk_samples`` (the model's chunk length) audio without one audible chunk is refused, as
        the library and the CLI refuse it. A refused upload is deleted (see :meth:`discard_upload`).
        """
        if not audio:
            raise user_error("No audio", "upload a file or record a clip first.")
        path = Path(audio)
        key = self._key(path, chunk_samples)
        with self._lock:
            if key is not None and key in self._decoded:
                self._decoded.move_to_end(key)
                return self._decoded[key]
        try:
            wav = self._read_checked(path, chunk_samples)
        except gr.Error:
            self.discard_upload(path)
            raise
        with self._lock:
            if key is not None:
                self._decoded[key] = wav
                while len(self._decoded) > self._cache_size:
                    self._decoded.popitem(last=False)
        return wav

    @staticmethod
    def _key(path: Path, chunk_samples: int | None) -> tuple | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        return str(path.resolve()), stat.st_size, stat.st_mtime_ns, chunk_samples

    def discard_upload(self, path: str | os.PathLike) -> bool:
        """Delete ``path`` if it is a file inside Gradio's upload folder (never anything else); True if deleted."""
        try:
            real = Path(path).resolve()
            if not (real.is_relative_to(self.upload_root) and real != self.upload_root and real.is_file()):
                return False
            real.unlink()
            if real.parent != self.upload_root and not any(real.parent.iterdir()):
                real.parent.rmdir()  # Gradio's per-upload folder
            return True
        except OSError as exc:  # another request removed it first, or a permission problem: log, go on
            log.warning("could not delete refused upload %s: %s", path, exc)
            return False

    def _read_checked(self, path: Path, chunk_samples: int | None) -> np.ndarray:
        if not path.is_file():
            raise user_error("No audio", f"the file {path.name!r} is not on the server any more; upload it again.")
        if path.stat().st_size == 0:
            raise user_error("Empty file", f"{path.name!r} is empty (0 bytes).")
        try:  # cheap header check first, so a two-hour file is refused without decoding it
            import soundfile as sf

            info = sf.info(str(path))
            header_seconds = info.frames / info.samplerate if info.samplerate else 0.0
        except Exception:
            header_seconds = 0.0
        self.check_length(header_seconds)
        try:
            wav = load_audio(str(path), name=repr(path.name), max_seconds=self.max_seconds)
        except AudioError as exc:
            detail = scrub_paths(str(exc).replace(str(path), repr(path.name)))
            if detail.startswith("cannot decode"):
                log.info("refused upload %s: %s", path.name, detail)
                raise user_error(
                    "Unreadable audio", f"cannot read {path.name!r} as audio: is it a WAV, FLAC, OGG or MP3 file?"
                ) from None
            raise user_error("Unusable audio", detail) from None
        self.check_length(len(wav) / SAMPLE_RATE)
        if len(wav) < MIN_SECONDS * SAMPLE_RATE:  # the library's minimum (pecmae_hub.audio.check_min_duration)
            raise user_error(
                "Audio too short",
                f"the clip is {len(wav) / SAMPLE_RATE * 1000:.3g} ms long; at least {MIN_SECONDS:g} s is needed.",
            )
        # the library's definition of silence: the same inputs are refused by the API and the CLI
        if chunk_samples and all(silent_chunks(wav, chunk_samples)):
            raise user_error("Silent audio", f"{silence_error(repr(path.name))}.")
        return wav

    def check_length(self, seconds: float) -> None:
        """A "too long" :func:`user_error` beyond the app's limit (the limit in words, no setting names)."""
        if seconds > self.max_seconds:
            raise user_error(
                "Audio too long",
                f"the clip is {format_seconds(round(seconds, 1))} long and this app "
                f"accepts up to {format_seconds(self.max_seconds)}. Trim it and try again.",
            )


def prune_files(folder: str | os.PathLike, age: float) -> int:
    """Delete the files under ``folder`` last modified more than ``age`` seconds ago (the app's result files,
    which Gradio's ``delete_cache`` does not know about); returns how many were deleted."""
    deadline, removed = time.time() - age, 0
    for base, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(base, name)
            try:
                if os.lstat(path).st_mtime < deadline:
                    os.unlink(path)
                    removed += 1
            except OSError:  # removed meanwhile by another request
                continue
    return removed


#: the samplers the Prototypes tab offers (pecmae_hub.sampling.schedulers names)
SAMPLERS = ("unipc", "upstream", "dpmsolver++", "ddim")


def settings_problems(steps, guidance, seed, scheduler=None) -> dict[str, str]:
    """Messages for the re-sonification settings that are out of range, keyed by setting name."""
    problems = {}
    if scheduler not in (None, "", *SAMPLERS):
        problems["scheduler"] = f"Bad settings: the sampler must be one of {', '.join(SAMPLERS)}."
    try:
        if not (float(steps) == int(steps) and 1 <= int(steps) <= MAX_STEPS):
            raise ValueError
    except (TypeError, ValueError):
        problems["steps"] = f"Bad settings: use 1–{MAX_STEPS} steps of diffusion (40 is the usual choice)."
    try:
        if not 0.0 <= float(guidance) <= MAX_GUIDANCE:
            raise ValueError
    except (TypeError, ValueError):
        problems["guidance"] = f"Bad settings: guidance must be between 0 and {MAX_GUIDANCE:g} (0 = none)."
    try:
        if isinstance(seed, bool) or not (float(seed) == int(seed) and 0 <= int(seed) <= MAX_SEED):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        problems["seed"] = f"Bad settings: the seed must be a whole number, 0 or more (at most {MAX_SEED})."
    return problems


def render_settings(steps, guidance, seed, scheduler=None) -> tuple[int, float, int]:
    """``(steps, guidance, seed)`` of a re-sonification, or a :func:`user_error` naming the bad ones."""
    problems = settings_problems(steps, guidance, seed, scheduler)
    if problems:
        raise user_error("Bad settings", " ".join(m.split(": ", 1)[1] for m in problems.values()))
    return int(steps), float(guidance), int(seed)
