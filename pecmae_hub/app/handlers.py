"""Event handlers of the app: plain functions of (inputs, model name) that return component values.

Every failure a user can cause (no file, unreadable or silent audio, too long, unknown prototype, a
model that cannot be loaded) becomes a :class:`gradio.Error` with a readable message; the server
keeps serving. An upload that is refused is deleted from Gradio's upload folder at once. Audio outputs are WAV *file paths* so the browser plays prototypes at their true
relative loudness (Gradio peak-normalises numpy audio).
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import gradio as gr
import numpy as np

from pecmae_hub.audio import SAMPLE_RATE, load_audio, silence_error, silent_chunks, write_wav
from pecmae_hub.errors import AudioError, PecmaeError

from pecmae_hub.app import settings as cfg
from pecmae_hub.app.access import scrub_paths
from pecmae_hub.app.models import ModelManager, ModelUnavailable
from pecmae_hub.app.plots import explanation_figure, ranked_classes
from pecmae_hub.app.texts import client_safe, model_card, model_config, model_overview, prototype_caption, summary_text

log = logging.getLogger(__name__)
INDEX_FILE = "prototypes/index.json"
_OUT_DIR = Path(tempfile.mkdtemp(prefix="pecmae-app-"))


def _gpu(duration: int):
    """``@spaces.GPU(duration=…)`` (ZeroGPU on Spaces; a no-op elsewhere, or when ``spaces`` is missing)."""
    try:
        import spaces

        return spaces.GPU(duration=duration)
    except Exception:  # pragma: no cover - spaces missing or failing to initialise
        return lambda fn: fn


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-")[:60] or "model"


def servable(path: str | os.PathLike) -> str:
    """A path Gradio may serve: files outside the working and temp folders are copied to the temp folder."""
    path = Path(path)
    real = path.resolve()
    for root in (Path.cwd().resolve(), Path(tempfile.gettempdir()).resolve()):
        if real.is_relative_to(root) and not path.name.startswith("."):
            return str(path)
    digest = hashlib.sha1(str(real).encode()).hexdigest()[:12]
    dest = _OUT_DIR / "files" / digest / path.name
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(real, dest)
    return str(dest)


def render_settings(model) -> dict | None:
    """``prototypes/index.json`` of ``model`` (steps, guidance, seed, files) or None without pre-renders."""
    index = getattr(model, "_render_index", None)
    if callable(index):
        return index() or None
    files = getattr(model, "_files", None)
    return files.json(INDEX_FILE, required=False) if files is not None else None


def prerendered(model, p: int) -> str | None:
    """Servable path of the pre-rendered WAV of prototype ``p``, or None."""
    index = render_settings(model)
    if not index:
        return None
    try:
        path = model.prototype_audio_path(p, steps=int(index["steps"]), guidance=float(index["guidance"]),
                                          seed=int(index["seed"]))
    except (PecmaeError, KeyError, ValueError):
        return None
    return servable(path) if path is not None else None


def _gr_error(exc: Exception, prefix: str = "") -> gr.Error:
    return gr.Error(f"{prefix}{exc}", title="PECMAE")


class Handlers:
    """The app's callbacks, bound to a :class:`ModelManager` and :class:`AppSettings`."""

    def __init__(self, manager: ModelManager, settings: cfg.AppSettings, cache_size: int = 64):
        self.manager, self.settings = manager, settings
        self._cache: OrderedDict[tuple, object] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        # GPU work runs under @spaces.GPU with plain picklable arguments (ZeroGPU hands them to a worker)
        self._decode = _gpu(cfg.SONIFY_GPU_SECONDS)(self._decode_prototype)
        self._classify = _gpu(cfg.CLASSIFY_GPU_SECONDS)(self._classify_wav)
        from gradio.utils import get_upload_folder

        self.upload_root = Path(get_upload_folder()).resolve()  # where Gradio keeps uploads (read at build time)

    # ---- models -------------------------------------------------------------------------------
    def model(self, name: str | None):
        """The loaded model ``name`` (default when empty); :class:`gr.Error` when it cannot be loaded."""
        try:
            return self.manager.get(name or None)
        except ModelUnavailable as exc:
            raise _gr_error(exc) from None

    # ---- audio input --------------------------------------------------------------------------
    def read_input(self, audio, chunk_samples: int | None = None) -> np.ndarray:
        """Validated 24 kHz mono samples of an uploaded/recorded file path; :class:`gr.Error` otherwise.

        With ``chunk_samples`` (the model's chunk length), audio without one audible chunk is refused, as
        the library and the CLI refuse it. A refused upload is deleted (see :meth:`discard_upload`).
        """
        if not audio:
            raise gr.Error("No audio given: upload a file or record a clip first.", title="No audio")
        path = Path(audio)
        try:
            return self._read_checked(path, chunk_samples)
        except gr.Error:
            self.discard_upload(path)
            raise

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
            raise gr.Error(f"The audio file {path.name!r} does not exist on the server.", title="No audio")
        if path.stat().st_size == 0:
            raise gr.Error(f"The file {path.name!r} is empty (0 bytes).", title="Empty file")
        limit = self.settings.max_seconds
        try:  # cheap header check first, so a two-hour file is refused without decoding it
            import soundfile as sf

            info = sf.info(str(path))
            header_seconds = info.frames / info.samplerate if info.samplerate else 0.0
        except Exception:
            header_seconds = 0.0
        self._check_length(header_seconds, limit)
        try:
            wav = load_audio(str(path), name=repr(path.name), max_seconds=limit)
        except AudioError as exc:
            detail = scrub_paths(str(exc).replace(str(path), repr(path.name)))
            if detail.startswith("cannot decode"):
                raise gr.Error(f"Cannot read {path.name!r} as audio. Use WAV, FLAC, OGG or MP3. ({detail})",
                               title="Unreadable audio") from None
            raise gr.Error(detail[:1].upper() + detail[1:], title="Unusable audio") from None
        self._check_length(len(wav) / SAMPLE_RATE, limit)
        # the library's definition of silence: the same inputs are refused by the API and the CLI
        if chunk_samples and all(silent_chunks(wav, chunk_samples)):
            raise gr.Error(f"{silence_error(repr(path.name))}.", title="Silent audio")
        return wav

    @staticmethod
    def _check_length(seconds: float, limit: float) -> None:
        if seconds > limit:
            raise gr.Error(
                f"The audio is {cfg.format_seconds(round(seconds, 1))} long; this app accepts up to "
                f"{cfg.format_seconds(limit)} (PECMAE_MAX_SECONDS). Trim it and try again.",
                title="Audio too long",
            )

    # ---- classification -----------------------------------------------------------------------
    def predict(self, model_name: str | None, wav: np.ndarray, key: str | None = None):
        """The :class:`Prediction` of ``wav`` by ``model_name``; memoised per (model, content)."""
        model = self.model(model_name)
        key = (model_name or self.manager.default, key or hashlib.sha1(wav.tobytes()).hexdigest())
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return model, self._cache[key]
        try:
            prediction = self._classify(model_name, wav, self.settings.top_prototypes)
        except PecmaeError as exc:
            raise _gr_error(exc, "Classification failed: ") from None
        with self._cache_lock:
            self._cache[key] = prediction
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return model, prediction

    def _classify_wav(self, model_name: str | None, wav: np.ndarray, top_k: int):
        return self.model(model_name).classify(wav, sr=SAMPLE_RATE, top_k=top_k)

    def classify(self, audio, model_name: str | None, progress=gr.Progress()):
        """``/classify``: audio file → scores, explanation plot, summary, top prototypes, details."""
        progress(0.05, desc="Reading audio")
        wav = self.read_input(audio, self.model(model_name).autoencoder.chunk_samples)
        progress(0.3, desc="Classifying")
        model, prediction = self.predict(model_name, wav)
        progress(0.85, desc="Explaining")
        figure = explanation_figure(prediction, model.labels)
        audios, captions = [], []
        tops = list(prediction.top_prototypes)[: self.settings.top_prototypes]
        for rank in range(self.settings.top_prototypes):
            if rank < len(tops):
                item = tops[rank]
                path = prerendered(model, int(item["p"]))
                audios.append(path)
                captions.append(prototype_caption(rank + 1, item, has_audio=path is not None))
            else:
                audios.append(None)
                captions.append("")
        details = client_safe({
            "model": model.name, "label": prediction.label, "scores": prediction.scores,
            "runner_up": ranked_classes(prediction.scores)[1] if len(prediction.scores) > 1 else None,
            "duration": round(prediction.duration, 3),
            "chunks": [{"start": round(s, 3), "end": round(e, 3), "label": c, "silent": not a}
                       for s, e, c, a in zip(prediction.chunk_starts, prediction.chunk_ends, prediction.chunk_labels,
                                             prediction.audible)],
            "top_prototypes": tops,
        })
        return (prediction.scores, figure, summary_text(prediction), *audios, *captions, details)

    def prewarm(self, clips: list[Path]) -> None:
        """Classify ``clips`` with the default model so the example buttons answer at once."""
        for clip in clips:
            try:
                self.predict(None, load_audio(str(clip)))
            except Exception as exc:  # a broken example must not stop the app
                log.warning("could not pre-classify example %s: %s", clip, exc)

    # ---- prototypes ---------------------------------------------------------------------------
    def prototype_choices(self, model_name: str | None) -> list[tuple[str, str]]:
        """``(label, value)`` pairs for the prototype selector: ``violin · #0`` → ``violin:0``."""
        model = self.model(model_name)
        head = model.head
        return [(f"{head.prototype_name(p)[0]} · #{head.prototype_name(p)[1]}  (p{p})",
                 f"{head.prototype_name(p)[0]}:{head.prototype_name(p)[1]}") for p in range(head.num_prototypes)]

    def prototype_groups(self, model_name: str | None) -> list[tuple[str, list[tuple[int, int, str | None]]]]:
        """Prototypes grouped by class: ``[(label, [(k, p, wav path or None), ...]), ...]``."""
        model = self.model(model_name)
        head = model.head
        return [(label, [(k, c * head.protos_per_class + k, prerendered(model, c * head.protos_per_class + k))
                         for k in range(head.protos_per_class)]) for c, label in enumerate(head.labels)]

    def _index(self, model, prototype) -> int:
        if prototype is None or str(prototype).strip() == "":
            raise gr.Error("Choose a prototype first (e.g. 'violin:0' or its index).", title="No prototype")
        try:
            return model.prototype_index(prototype)
        except PecmaeError as exc:
            raise _gr_error(exc) from None

    def prototype_audio(self, prototype, model_name: str | None):
        """``/prototype_audio``: the pre-rendered WAV of a prototype (``label:k`` or index) + a caption."""
        model = self.model(model_name)
        p = self._index(model, prototype)
        label, k = model.head.prototype_name(p)
        path = prerendered(model, p)
        if path is None:
            raise gr.Error(f"Model {model.name!r} ships no pre-rendered audio for {label} #{k}; "
                           "use Re-sonify to decode it.", title="No pre-rendered audio")
        index = render_settings(model) or {}
        return path, (f"**{label} · prototype #{k}** (p{p}) — pre-rendered with {index.get('steps')} steps, "
                      f"guidance {index.get('guidance')}, seed {index.get('seed')}")

    def _decode_prototype(self, model_name: str | None, p: int, steps: int, guidance: float, seed: int) -> np.ndarray:
        return self.model(model_name).sonify(p, steps=steps, guidance=guidance, seed=seed)

    def sonify(self, prototype, steps, guidance, seed, model_name: str | None, progress=gr.Progress()):
        """``/sonify``: decode a prototype with the diffusion decoder at the given settings → WAV path."""
        model = self.model(model_name)
        p = self._index(model, prototype)
        try:
            steps, guidance, seed = int(steps), float(guidance), int(seed)
        except (TypeError, ValueError):
            raise gr.Error("steps and seed must be integers and guidance a number.", title="Bad settings") from None
        if not 1 <= steps <= 200 or not 0.0 <= guidance <= 20.0 or seed < 0:
            raise gr.Error("Use 1–200 steps, guidance between 0 and 20 and a seed ≥ 0.", title="Bad settings")
        label, k = model.head.prototype_name(p)
        progress(0.1, desc=f"Decoding {label} #{k}: {steps} diffusion steps")
        try:
            wav = self._decode(model_name, p, steps, guidance, seed)
        except PecmaeError as exc:
            raise _gr_error(exc, "Sonification failed: ") from None
        progress(0.95, desc="Writing audio")
        path = _OUT_DIR / "sonified" / f"{_slug(model.name)}_p{p:03d}_s{steps}_g{guidance:g}_seed{seed}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_wav(path, wav)
        caption = (f"**{label} · prototype #{k}** (p{p}) — {steps} steps, guidance {guidance:g}, seed {seed}, "
                   f"{len(wav) / SAMPLE_RATE:.2f} s")
        return str(path), caption

    # ---- model tab ----------------------------------------------------------------------------
    def model_info(self, model_name: str | None):
        """``/model_info``: model card (markdown), overview (labels, metrics), configuration (JSON)."""
        model = self.model(model_name)
        return model_card(model), model_overview(model, render_settings(model)), model_config(model, render_settings(model))

    def load_model(self, name: str | None, current: str | None):
        """``/load_model``: switch this session to model ``name``; returns state, status and model tab values."""
        name = (name or "").strip()
        if not name:
            raise gr.Error("The model name is empty: choose a model in the list or type its name.", title="No model")
        model = self.model(name)
        choices = self.prototype_choices(name)
        status = f"Loaded **{model.name}** — {len(model.labels)} classes, {model.head.num_prototypes} prototypes."
        return (name, status, *self.model_info(name),
                gr.update(choices=choices, value=choices[0][1] if choices else None))
