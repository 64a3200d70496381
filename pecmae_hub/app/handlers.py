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
from pecmae_hub.app.files import OUT_DIR, decode_settings, nearest_audio, prerendered, render_settings_of, slug
from pecmae_hub.app.models import ModelManager, ModelUnavailable
from pecmae_hub.app.plots import (
    explanation_html,
    prototype_label,
    ranked_classes,
    scores_html,
    segments,
    similarity_html,
)
from pecmae_hub.app.reports import OTHER, WrongPredictionLog, result_files
from pecmae_hub.app.texts import (
    about_block,
    client_safe,
    model_card,
    model_config,
    model_intro,
    model_overview,
    nearest_chunks,
    nearest_label,
    ood_callout,
    prototype_caption,
    prototypes_note,
    render_words,
    summary_text,
)
from pecmae_hub.audio import SAMPLE_RATE, load_audio, write_wav
from pecmae_hub.errors import PecmaeError
from pecmae_hub.render_index import index_settings

log = logging.getLogger(__name__)
PLACEHOLDER = "_Upload or record a clip, or pick an example, then press **Classify**._"


def _gpu(duration: int):
    """``@spaces.GPU(duration=…)`` (ZeroGPU on Spaces; a no-op elsewhere, or when ``spaces`` is missing)."""
    try:
        import spaces

        return spaces.GPU(duration=duration)
    except Exception:  # pragma: no cover - spaces missing or failing to initialise
        return lambda fn: fn


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
        self.reports = WrongPredictionLog()

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
        (each: decoded prototype, nearest training chunks, caption), details, out-of-domain warning, score
        bars, result files (CSV, JSON)."""
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
                "in_domain": prediction.in_domain,
                "ood_score": prediction.ood_score,
                "ood_percentile": prediction.ood_percentile,
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
        guess = prediction.in_domain is False
        audible = sum(prediction.audible)
        threshold = model.ood.threshold_for(audible) if getattr(model, "ood", None) is not None else None
        callout = ood_callout(prediction, threshold, len(model.labels))
        name = Path(str(audio)).name
        prune_files(OUT_DIR / "results", self.settings.file_ttl)  # downloads live as long as uploads
        files = result_files(OUT_DIR / "results", model, prediction, name, self.settings.top_prototypes)
        return (
            prediction.scores,
            summary_text(prediction, chunk),
            explanation_html(prediction, model.labels, temperature, chunk, dim=guess),
            similarity_html(prediction, model.labels),
            *players,
            details,
            gr.HTML(value=callout, visible=bool(callout)),
            scores_html(prediction, model.labels, dim=guess),
            gr.File(value=files, visible=True),
        )

    def clear_results(self):
        """Every output of ``/classify`` emptied: run when the input changes, so nothing of the previous clip
        stays on screen next to the new one."""
        players = []
        for _ in range(self.settings.top_prototypes):
            players += [gr.Audio(value=None, visible=False) for _ in range(1 + cfg.NEAREST_PLAYERS)] + [""]
        return (
            None,
            PLACEHOLDER,
            "",
            "",
            *players,
            None,
            gr.HTML(value="", visible=False),
            "",
            gr.File(value=None, visible=False),
        )

    def _top_outputs(self, model, item: dict | None, rank: int, temperature: float, facts: list) -> list:
        """Prototype player, nearest-chunk players and caption of the ``rank``-th top prototype."""
        count = cfg.NEAREST_PLAYERS
        if item is None:
            return [gr.Audio(value=None, visible=False) for _ in range(1 + count)] + [""]
        p = int(item["p"])
        path = prerendered(model, p)
        near = nearest_chunks(model, p, item.get("nearest") or [], count)
        name = prototype_label(item["class"], int(item["k"]), model.head.protos_per_class)
        outputs = [gr.Audio(value=path, label=f"{name}, decoded by the model", visible=True)]
        paths = []
        for n in range(count):
            found = nearest_audio(model, p, n) if n < len(near) and near[n]["entry"] else None
            paths.append(found)
            outputs.append(
                gr.Audio(value=found, label=nearest_label(near[n]) if n < len(near) else "", visible=found is not None)
            )
        outputs.append(
            prototype_caption(
                rank, item, temperature, near, has_audio=path is not None, per_class=model.head.protos_per_class
            )
        )
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
        """``(label, value)`` pairs for the prototype selector: ``violin — prototype 1 of 3`` → ``violin:0``."""
        head = self.model(model_name).head
        names = [head.prototype_name(p) for p in range(head.num_prototypes)]
        return [(prototype_label(label, k, head.protos_per_class), f"{label}:{k}") for label, k in names]

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
                f"model {model.name!r} ships none for {prototype_label(label, k, model.head.protos_per_class)}; "
                "use Re-sonify to decode it.",
            )
        settings = render_words(index_settings(render_settings_of(model) or {}))
        return path, f"**{prototype_label(label, k, model.head.protos_per_class)}** — pre-rendered with {settings}"

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
                progress((i, n), desc=f"Decoding {label} {k + 1}", unit="steps")

        return model.sonify(p, steps=steps, guidance=guidance, seed=seed, progress=step, scheduler=scheduler)

    def sonify(self, prototype, steps, guidance, seed, scheduler, model_name: str | None, progress=gr.Progress()):  # noqa: B008
        """``/sonify``: decode a prototype with the diffusion decoder at the given settings → WAV path."""
        model = self.model(model_name)
        p = self._index(model, prototype)
        steps, guidance, seed = render_settings(steps, guidance, seed, scheduler)
        scheduler = scheduler or "unipc"
        label, k = model.head.prototype_name(p)
        progress((0, steps), desc=f"Decoding {label} {k + 1}", unit="steps")
        try:
            wav = self._decode(model_name, p, steps, guidance, seed, progress, scheduler)
        except PecmaeError as exc:
            raise gr.Error(f"Sonification failed: {exc}", title="Sonification failed") from None
        path = OUT_DIR / "sonified" / f"{slug(model.name)}_p{p:03d}_{scheduler}_s{steps}_g{guidance:g}_seed{seed}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        prune_files(path.parent, self.settings.file_ttl)  # one file per setting tried: bounded by their lifetime
        write_wav(path, wav)
        caption = (
            f"**{prototype_label(label, k, model.head.protos_per_class)}** — decoded now with "
            f"{render_words(decode_settings(model, scheduler, steps, guidance, seed))}, "
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

    def prototypes_note(self, model_name: str | None) -> str:
        """The Prototypes tab's note on what the session's model's decoder reproduces (empty if none)."""
        try:
            return prototypes_note(self.model(model_name))
        except gr.Error:
            return ""

    def load_model(self, name: str | None, current: str | None):
        """``/load_model``: switch this session to model ``name``; returns state, intro and model tab values."""
        name = (name or "").strip()
        if not name:
            raise user_error("No model", "the model name is empty; choose a model in the list or type its name.")
        model = self.model(name)
        choices = self.prototype_choices(name)
        status = about_block(model_intro(model), f"Loaded {model.name}: about this model")
        return (
            name,
            status,
            *self.model_info(name),
            gr.update(choices=choices, value=choices[0][1] if choices else None),
        )

    # ---- downloads and reports ----------------------------------------------------------------
    def report_choices(self, model_name: str | None):
        """The answers of "report a wrong prediction" for the session's model: its classes, then "other"."""
        try:
            labels = list(self.model(model_name).labels)
        except gr.Error:
            labels = []
        return gr.update(choices=[*labels, OTHER], value=None)

    def validate_report(self, audio, details, correct, note):
        """A result to report on and an answer."""
        if not audio or not details:
            return ok(), gr.validate(False, "Nothing to report yet: classify a clip first."), ok(), ok()
        if not correct:
            return ok(), ok(), gr.validate(False, "Choose what the clip really is (or 'something else')."), ok()
        return ok(), ok(), ok(), ok()

    def report(self, audio, details, correct, note) -> str:
        """``/report``: keep a report of a wrong prediction on this server (CSV + a copy of the clip)."""
        if not audio or not details:
            raise user_error("Nothing to report", "classify a clip first.")
        count = self.reports.add(audio, details, str(correct), note or "")
        log.info("wrong-prediction report %d written to %s", count, self.reports.csv_path)
        return (
            f"Thank you: your report ({details.get('label')} → {correct}) is saved on this server for its operator. "
            "Nothing was sent anywhere else."
        )
