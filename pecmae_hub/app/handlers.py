"""Event handlers of the app: plain functions of (inputs, model name) that return component values.

Each event has a validator (``validate_*``) that Gradio runs before it: a refused input gets its message
on that input only (see :mod:`pecmae_hub.app.checks`). What can still fail later (a model that cannot
be loaded, a failed decode) becomes a :class:`gradio.Error` whose message starts with its key words;
the server keeps serving and logs no traceback for the user's mistakes. Audio outputs are WAV *file
paths* so the browser plays prototypes and training chunks at their true relative loudness (Gradio
peak-normalises numpy audio).
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

from pecmae_hub.app import settings as cfg
from pecmae_hub.app.checks import (
    AudioInputs,
    ok,
    prune_files,
    refuse,
    render_settings,
    settings_problems,
    user_error,
)
from pecmae_hub.app.models import ModelManager, ModelUnavailable
from pecmae_hub.app.plots import explanation_html, ranked_classes, segments, similarity_html
from pecmae_hub.app.texts import (
    client_safe,
    model_card,
    model_config,
    model_intro,
    model_overview,
    nearest_chunks,
    nearest_label,
    prototype_caption,
    summary_text,
)
from pecmae_hub.audio import SAMPLE_RATE, load_audio, write_wav
from pecmae_hub.errors import PecmaeError

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


def render_settings_of(model) -> dict | None:
    """``prototypes/index.json`` of ``model`` (steps, guidance, seed, files) or None without pre-renders."""
    index = getattr(model, "_render_index", None)
    if callable(index):
        return index() or None
    files = getattr(model, "_files", None)
    return files.json(INDEX_FILE, required=False) if files is not None else None


def prerendered(model, p: int) -> str | None:
    """Servable path of the pre-rendered WAV of prototype ``p``, or None."""
    index = render_settings_of(model)
    if not index:
        return None
    try:
        settings = {"steps": int(index["steps"]), "guidance": float(index["guidance"]), "seed": int(index["seed"])}
        if "scheduler" in index:  # the sampler is part of a render's key (absent: the exact "upstream" one)
            settings["scheduler"] = index["scheduler"]
        path = model.prototype_audio_path(p, **settings)
    except (PecmaeError, KeyError, ValueError):
        return None
    return servable(path) if path is not None else None


def nearest_audio(model, p: int, rank: int) -> str | None:
    """Servable path of the WAV of prototype ``p``'s ``rank``-th nearest training chunk, or None."""
    finder = getattr(model, "nearest_audio_path", None)
    try:
        path = finder(p, rank) if callable(finder) else None
    except PecmaeError as exc:  # e.g. an index naming a file outside the model: the text remains
        log.warning("nearest chunk %s/%s of %s: %s", p, rank, getattr(model, "name", "?"), exc)
        return None
    return servable(path) if path is not None else None


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

        self.inputs = AudioInputs(settings.max_seconds, get_upload_folder())  # upload folder read at build time
        self.upload_root = self.inputs.upload_root

    # ---- models -------------------------------------------------------------------------------
    def model(self, name: str | None):
        """The loaded model ``name`` (default when empty); a user error when it cannot be loaded."""
        try:
            return self.manager.get(name or None)
        except ModelUnavailable as exc:
            raise user_error("Model unavailable", str(exc)) from None

    def read_input(self, audio, chunk_samples: int | None = None) -> np.ndarray:
        """Validated 24 kHz mono samples of an uploaded/recorded file (see :meth:`AudioInputs.read`)."""
        return self.inputs.read(audio, chunk_samples)

    def discard_upload(self, path: str | os.PathLike) -> bool:
        """Delete a refused upload (see :meth:`AudioInputs.discard_upload`)."""
        return self.inputs.discard_upload(path)

    # ---- validators (run by Gradio before the event; one result per input) ----------------------
    def validate_classify(self, audio, model_name: str | None):
        """The audio is readable, short enough and not silent (checked with the session model's chunks)."""
        try:
            chunk = self.model(model_name).autoencoder.chunk_samples
        except gr.Error:
            chunk = None  # the event itself reports the model problem
        try:
            self.read_input(audio, chunk)
        except gr.Error as exc:
            return refuse(exc), ok()
        return ok(), ok()

    def validate_sonify(self, prototype, steps, guidance, seed, scheduler, model_name: str | None):
        """A known prototype and settings in range; each message on its own control."""
        problems = settings_problems(steps, guidance, seed, scheduler)
        keys = ("steps", "guidance", "seed", "scheduler")
        return (
            self._validate_prototype(prototype, model_name),
            *(gr.validate(False, problems[k]) if k in problems else ok() for k in keys),
            ok(),
        )

    def validate_prototype(self, prototype, model_name: str | None):
        """A known prototype (``label:k`` or index)."""
        return self._validate_prototype(prototype, model_name), ok()

    def _validate_prototype(self, prototype, model_name):
        try:
            self._index(self.model(model_name), prototype)
        except gr.Error as exc:
            return refuse(exc)
        return ok()

    def validate_load(self, name, current):
        """A model name that is not empty and that this server offers (loading problems come later)."""
        name = (name or "").strip()
        if not name:
            return gr.validate(
                False, "No model: the model name is empty; choose a model in the list or type its name."
            ), ok()
        if self.manager.policy.resolve(name) is None:
            return gr.validate(False, f"Model unavailable: {self.manager.policy.refusal(name)}"), ok()
        return ok(), ok()

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
            raise user_error("Classification failed", str(exc)) from None
        with self._cache_lock:
            self._cache[key] = prediction
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return model, prediction

    def _classify_wav(self, model_name: str | None, wav: np.ndarray, top_k: int):
        return self.model(model_name).classify(wav, sr=SAMPLE_RATE, top_k=top_k)

    def classify(self, audio, model_name: str | None, progress=gr.Progress()):  # noqa: B008 (Gradio idiom)
        """``/classify``: audio file → scores, headline, explanation, similarity map, top prototypes
        (each: decoded prototype, nearest training chunks, caption), details."""
        progress(0.05, desc="Reading audio")
        model = self.model(model_name)
        wav = self.read_input(audio, model.autoencoder.chunk_samples)
        progress(0.3, desc="Classifying")
        model, prediction = self.predict(model_name, wav)
        progress(0.85, desc="Explaining")
        temperature = float(model.head.config.temperature)
        chunk = float(model.autoencoder.chunk_seconds)
        tops = list(prediction.top_prototypes)[: self.settings.top_prototypes]
        players, facts = [], []
        for rank in range(self.settings.top_prototypes):
            players += self._top_outputs(model, tops[rank] if rank < len(tops) else None, rank + 1, temperature, facts)
        details = client_safe(
            {
                "model": model.name,
                "label": prediction.label,
                "scores": prediction.scores,
                "runner_up": ranked_classes(prediction.scores)[1] if len(prediction.scores) > 1 else None,
                "duration": round(prediction.duration, 3),
                "chunk_seconds": chunk,
                "temperature": temperature,
                "points": {c: round(v / temperature, 4) for c, v in prediction.logits.items()},
                "segments": [
                    {"label": r["label"], "start": round(r["start"], 3), "end": round(r["end"], 3)}
                    for r in segments(prediction)
                ],
                "chunks": [
                    {"start": round(s, 3), "end": round(e, 3), "label": c, "silent": not a}
                    for s, e, c, a in zip(
                        prediction.chunk_starts, prediction.chunk_ends, prediction.chunk_labels, prediction.audible
                    )
                ],
                "top_prototypes": facts,
            }
        )
        return (
            prediction.scores,
            summary_text(prediction, chunk),
            explanation_html(prediction, model.labels, temperature, chunk),
            similarity_html(prediction, model.labels),
            *players,
            details,
        )

    def _top_outputs(self, model, item: dict | None, rank: int, temperature: float, facts: list) -> list:
        """Prototype player, nearest-chunk players and caption of the ``rank``-th top prototype."""
        count = cfg.NEAREST_PLAYERS
        if item is None:
            return [gr.Audio(value=None, visible=False) for _ in range(1 + count)] + [""]
        p = int(item["p"])
        path = prerendered(model, p)
        near = nearest_chunks(model, p, item.get("nearest") or [], count)
        outputs = [
            gr.Audio(value=path, label=f"{item['class']} prototype #{item['k']}, decoded by the model", visible=True)
        ]
        paths = []
        for n in range(count):
            found = nearest_audio(model, p, n) if n < len(near) and near[n]["entry"] else None
            paths.append(found)
            outputs.append(
                gr.Audio(value=found, label=nearest_label(near[n]) if n < len(near) else "", visible=found is not None)
            )
        outputs.append(prototype_caption(rank, item, temperature, near, has_audio=path is not None))
        facts.append(
            {
                **item,
                "points": item["contribution"] / temperature,
                "nearest_words": [n["words"] for n in near],
                "nearest_audio": [q is not None for q in paths],
            }
        )
        return outputs

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
        head = self.model(model_name).head
        return [
            (
                f"{head.prototype_name(p)[0]} · #{head.prototype_name(p)[1]}  (p{p})",
                f"{head.prototype_name(p)[0]}:{head.prototype_name(p)[1]}",
            )
            for p in range(head.num_prototypes)
        ]

    def prototype_groups(self, model_name: str | None) -> list[tuple[str, list[tuple[int, int, str | None]]]]:
        """Prototypes grouped by class: ``[(label, [(k, p, wav path or None), ...]), ...]``."""
        model = self.model(model_name)
        head = model.head
        return [
            (
                label,
                [
                    (k, c * head.protos_per_class + k, prerendered(model, c * head.protos_per_class + k))
                    for k in range(head.protos_per_class)
                ],
            )
            for c, label in enumerate(head.labels)
        ]

    def _index(self, model, prototype) -> int:
        if prototype is None or str(prototype).strip() == "":
            raise user_error("No prototype", "choose a prototype first (e.g. 'violin:0' or its index).")
        try:
            return model.prototype_index(prototype)
        except PecmaeError as exc:
            raise user_error("Unknown prototype", str(exc)) from None

    def prototype_audio(self, prototype, model_name: str | None):
        """``/prototype_audio``: the pre-rendered WAV of a prototype (``label:k`` or index) + a caption."""
        model = self.model(model_name)
        p = self._index(model, prototype)
        label, k = model.head.prototype_name(p)
        path = prerendered(model, p)
        if path is None:
            raise user_error(
                "No pre-rendered audio",
                f"model {model.name!r} ships none for {label} #{k}; use Re-sonify to decode it.",
            )
        index = render_settings_of(model) or {}
        return path, (
            f"**{label} · prototype #{k}** (p{p}) — pre-rendered with {index.get('steps')} steps, "
            f"guidance {index.get('guidance')}, seed {index.get('seed')}"
        )

    def _decode_prototype(
        self,
        model_name: str | None,
        p: int,
        steps: int,
        guidance: float,
        seed: int,
        progress=None,
        scheduler: str = "unipc",
    ) -> np.ndarray:
        model = self.model(model_name)
        label, k = model.head.prototype_name(p)

        def step(i: int, n: int) -> None:
            if progress is not None:
                progress((i, n), desc=f"Decoding {label} #{k}", unit="steps")

        return model.sonify(p, steps=steps, guidance=guidance, seed=seed, progress=step, scheduler=scheduler)

    def sonify(self, prototype, steps, guidance, seed, scheduler, model_name: str | None, progress=gr.Progress()):  # noqa: B008
        """``/sonify``: decode a prototype with the diffusion decoder at the given settings → WAV path."""
        model = self.model(model_name)
        p = self._index(model, prototype)
        steps, guidance, seed = render_settings(steps, guidance, seed, scheduler)
        scheduler = scheduler or "unipc"
        label, k = model.head.prototype_name(p)
        progress((0, steps), desc=f"Decoding {label} #{k}", unit="steps")
        try:
            wav = self._decode(model_name, p, steps, guidance, seed, progress, scheduler)
        except PecmaeError as exc:
            raise gr.Error(f"Sonification failed: {exc}", title="Sonification failed") from None
        path = _OUT_DIR / "sonified" / f"{_slug(model.name)}_p{p:03d}_{scheduler}_s{steps}_g{guidance:g}_seed{seed}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        prune_files(path.parent, self.settings.file_ttl)  # one file per setting tried: bounded by their lifetime
        write_wav(path, wav)
        caption = (
            f"**{label} · prototype #{k}** (p{p}) — {scheduler} sampler, {steps} steps, guidance {guidance:g}, "
            f"seed {seed}, "
            f"{len(wav) / SAMPLE_RATE:.2f} s"
        )
        return str(path), caption

    # ---- model tab ----------------------------------------------------------------------------
    def model_info(self, model_name: str | None):
        """``/model_info``: model card (markdown), overview (labels, metrics), configuration (JSON)."""
        model = self.model(model_name)
        index = render_settings_of(model)
        return model_card(model), model_overview(model, index), model_config(model, index)

    def intro(self, model_name: str | None) -> str:
        """The plain-language introduction of the session's model (shown under the title)."""
        return model_intro(self.model(model_name))

    def load_model(self, name: str | None, current: str | None):
        """``/load_model``: switch this session to model ``name``; returns state, intro and model tab values."""
        name = (name or "").strip()
        if not name:
            raise user_error("No model", "the model name is empty; choose a model in the list or type its name.")
        model = self.model(name)
        choices = self.prototype_choices(name)
        status = f"Loaded **{model.name}**.\n\n{model_intro(model)}"
        return (
            name,
            status,
            *self.model_info(name),
            gr.update(choices=choices, value=choices[0][1] if choices else None),
        )
