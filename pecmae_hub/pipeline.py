"""``PECMAE``: autoencoder + prototype head behind one call.

    >>> from pecmae_hub.pipeline import PECMAE
    >>> PECMAE.from_pretrained("gtzan").classify("song.mp3").label

A model is a head folder/repo (``config.json`` + ``model.safetensors``) whose config names its
autoencoder (``config["autoencoder"] = {"repo_id", "revision", "path"}``), plus optional
``nearest.json``, ``metrics.json``, ``pecmae.json`` and pre-rendered ``prototypes/`` (docs/hub.md).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import overload

import numpy as np
import torch

from pecmae_hub.audio import (
    MAX_SECONDS,
    SAMPLE_RATE,
    AudioInput,
    chunk_bounds,
    load_audio,
    silence_error,
    silent_chunks,
    write_wav,
)
from pecmae_hub.configuration import AutoencoderRef
from pecmae_hub.devices import resolve_device
from pecmae_hub.errors import ConfigError, ModelNotFoundError, PecmaeError
from pecmae_hub.hub.cards import render_model_card
from pecmae_hub.hub.files import ModelFiles, inside_path, load_autoencoder
from pecmae_hub.hub.publish import push_folder
from pecmae_hub.hub.registry import (
    DEFAULT_MODEL,
    INFO_NAME,
    METRICS_NAME,
    PROTOTYPES_DIR,
    REGISTRY,
    resolve_model,
)
from pecmae_hub.models.autoencoder import Autoencoder
from pecmae_hub.models.head import NEAREST_NAME, PrototypeHead
from pecmae_hub.models.ood import OOD_CONFIG_NAME, OOD_WEIGHTS_NAME, OODScorer
from pecmae_hub.models.precision import apply_precision, check_precision
from pecmae_hub.prediction import ClassificationFailure, Prediction, explain
from pecmae_hub.sampling.schedulers import (
    DEFAULT_SCHEDULER,
    SchedulerSpec,
    check_steps,
    recommended_steps,
    scheduler_to_dict,
)
from pecmae_hub.storage.integrity import write_checksums
from pecmae_hub.storage.pretrained import WEIGHTS_NAME, save_folder


class PECMAE:
    """Prototype-based music classifier: ``classify`` audio, ``explain`` decisions, ``sonify`` prototypes."""

    def __init__(self, autoencoder: Autoencoder, head: PrototypeHead, *, nearest: dict | None = None,
                 metrics: dict | None = None, info: dict | None = None, name: str = "pecmae",
                 files: ModelFiles | None = None, autoencoder_ref: AutoencoderRef | None = None,
                 autoencoder_source: str = "", ood: OODScorer | None = None):
        if head.embedding_dim != autoencoder.embedding_dim:
            raise ConfigError(
                f"head {name!r} expects {head.embedding_dim}-d embeddings but the autoencoder gives "
                f"{autoencoder.embedding_dim}-d ones: the head was trained on another autoencoder"
            )
        if ood is not None and (ood.embedding_dim != head.embedding_dim or (ood.labels and ood.labels != head.labels)):
            raise ConfigError(f"the OOD scorer of {name!r} (D={ood.embedding_dim}, labels {ood.labels}) does not "
                              f"belong to its head (D={head.embedding_dim}, labels {head.labels})")
        self.autoencoder, self.head = autoencoder.eval(), head.eval()
        self.ood = None if ood is None else ood.to(head.protos.device)  # None: no in_domain verdicts
        self.nearest, self.metrics, self.info, self.name = nearest, metrics, dict(info or {}), name
        self.autoencoder_ref = autoencoder_ref or AutoencoderRef()  # where it came from (Hub revision pinned)
        self.autoencoder_source = autoencoder_source
        self._files = files
        self._index: dict | bool | None = False  # False: not looked up yet
        self._sonified: dict[tuple, np.ndarray] = {}
        self._nearest_audio: dict | bool | None = False  # nearest/index.json; False: not looked up yet

    @property
    def labels(self) -> list[str]:
        return self.head.labels

    @property
    def device(self) -> torch.device:
        return self.head.protos.device

    @property
    def files(self) -> ModelFiles | None:
        """Where the model was loaded from (None for a model built in memory)."""
        return self._files

    @property
    def render_settings(self) -> dict | None:
        """``prototypes/index.json`` (steps, guidance, seed, files) of the pre-rendered WAVs, or None."""
        return self._render_index()

    # ---- loading ---------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_repo_or_folder: str | os.PathLike = DEFAULT_MODEL, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, local_files_only: bool = False,
                        device: str = "auto", autoencoder: Autoencoder | None = None, *,
                        token: str | bool | None = None, force_download: bool = False,
                        precision: str = "fp32") -> PECMAE:
        """Load a model by short name (``gtzan``, ``medley-solos-db``, ``gm-solos``), Hub repo id or folder.

        ``precision``: ``"fp32"`` (exact, default), ``"int8"`` (CPU: int8 transformer GEMMs + bf16 codec,
        about 2.3-2.5x faster encoding, z cosine >= 0.999 to fp32), ``"bf16"`` / ``"fp16"`` (CUDA); see
        :mod:`pecmae_hub.models.precision`.
        ``revision`` (branch, tag or commit) applies to Hub repos; ``cache_dir``, ``token`` and
        ``force_download`` are passed to ``huggingface_hub``. Offline (``local_files_only=True``
        or ``HF_HUB_OFFLINE=1``) the Hugging Face cache alone is used. The autoencoder named by the
        head's config is loaded once per process and shared; pass ``autoencoder`` to use one directly.

        Raises:
            ModelNotFoundError: unknown name, missing repo/revision/file, or not cached while offline.
            ConfigError: a head that does not fit its autoencoder.
        """
        text = os.fspath(name_or_repo_or_folder)
        kind, where, rev = resolve_model(text, revision)
        if kind == "folder":
            files = ModelFiles(folder=where)
        else:
            files = ModelFiles(repo_id=where, revision=rev, cache_dir=cache_dir, local_files_only=local_files_only,
                               token=token, force_download=force_download)
        try:
            head_dir = files.local_dir()  # config.json first: it also fixes the commit of a Hub repo
            files.get(WEIGHTS_NAME)
        except ModelNotFoundError as exc:
            if text in REGISTRY and kind == "hub":
                from pecmae_hub.hub.registry import registry_model_missing  # the error names the recipe that builds it

                raise registry_model_missing(text, exc) from None
            raise
        dev = resolve_device(device)
        check_precision(precision, dev)  # before any download
        head = PrototypeHead.from_pretrained(head_dir).to(dev)
        spec = head.config.autoencoder
        if autoencoder is None:
            autoencoder, ref, source = load_autoencoder(spec, files, device=dev, precision=precision)
        else:
            if precision != autoencoder.precision:  # the given instance is switched in place
                apply_precision(autoencoder.to(dev), precision)
            ref, source = (spec if spec.repo_id or spec.name else AutoencoderRef()), "given"
        info = files.json(INFO_NAME, required=False) or {}
        ood = OODScorer.load(files.get(OOD_WEIGHTS_NAME, required=False), files.get(OOD_CONFIG_NAME, required=False))
        name = info.get("name") or (where.split("/")[-1] if kind == "hub" else Path(where).name)
        model = cls(autoencoder, head, nearest=files.json(NEAREST_NAME, required=False),
                    metrics=files.json(METRICS_NAME, required=False), info=info, name=name,
                    files=files, autoencoder_ref=ref, autoencoder_source=source, ood=ood)  # checks the embedding sizes
        if spec.fingerprint and spec.fingerprint != autoencoder.fingerprint():
            raise ConfigError(
                f"head {files.describe()} was trained with autoencoder fingerprint {spec.fingerprint} but the "
                f"autoencoder loaded ({source}) has {autoencoder.fingerprint()}"
            )
        model._render_index()  # fetched now so that the cache knows it (or its absence) when offline later
        return model

    # ---- classification --------------------------------------------------------------------------
    @overload
    def classify(self, audio: list | tuple, sr: int | None = None, top_k: int = 3, *,
                 max_seconds: float | None = MAX_SECONDS) -> list[Prediction | ClassificationFailure]: ...
    @overload
    def classify(self, audio: AudioInput, sr: int | None = None, top_k: int = 3, *,
                 max_seconds: float | None = MAX_SECONDS) -> Prediction: ...
    def classify(self, audio, sr=None, top_k=3, *, max_seconds=MAX_SECONDS):
        """Classify a path, bytes, or numpy/torch samples (with ``sr``).

        One input gives a :class:`Prediction` or raises a typed error (e.g.
        :class:`~pecmae_hub.errors.AudioError` naming the input). A list or tuple gives a list of the
        same length and order in which every input was tried: a :class:`Prediction` for each one that
        worked, a :class:`ClassificationFailure` (``ok=False``, error type and message) for each that
        did not.

        No answer is made up: an input with no audible chunk (digital silence or near-silence, see
        :func:`pecmae_hub.audio.is_silent`) is an ``AudioError``; silent chunks inside a track are
        left out of the decision and flagged in ``Prediction.chunk_silent``. Inputs longer than
        ``max_seconds`` (None: no limit) are refused before any decoding or resampling.
        """
        if isinstance(audio, (list, tuple)):
            return [self._classify_or_failure(a, sr, top_k, max_seconds) for a in audio]
        return self._classify_one(audio, sr, top_k, max_seconds)

    def _classify_or_failure(self, audio, sr, top_k, max_seconds=MAX_SECONDS) -> Prediction | ClassificationFailure:
        try:
            return self._classify_one(audio, sr, top_k, max_seconds)
        except PecmaeError as exc:
            return ClassificationFailure(source=_source_name(audio), error=type(exc).__name__, message=str(exc))

    @torch.no_grad()
    def _classify_one(self, audio, sr, top_k, max_seconds=MAX_SECONDS) -> Prediction:
        source = _source_name(audio)
        wav = load_audio(audio, sr, name=source, max_seconds=max_seconds)
        silent = silent_chunks(wav, self.autoencoder.chunk_samples)
        if all(silent):
            raise silence_error(source)
        audible = torch.tensor([not s for s in silent])
        z = self.autoencoder.encode(wav, sr=SAMPLE_RATE)
        logits = self.head(z).float().cpu()                                   # (n, C)
        sims = self.head.similarities(z).float().cpu()                        # (n, P)
        contrib = self.head.contributions(z[audible]).float().cpu().mean(0)   # (C, P), audible chunks only
        mean = logits[audible].mean(0)
        scores = torch.softmax(mean / self.head.config.temperature, dim=0)
        labels = self.labels
        bounds = chunk_bounds(len(wav), self.autoencoder.chunk_samples)
        ood_score, in_domain = None, None
        if self.ood is not None:  # audible chunks, weighted by their length (a short last chunk counts in part)
            weights = torch.tensor([float(e - s) for s, e in bounds]) * audible
            ood_score, in_domain = self.ood.assess(z, weights=weights)
        pred = Prediction(
            source=source, label=labels[int(mean.argmax())],
            scores={c: float(s) for c, s in zip(labels, scores)}, logits={c: float(v) for c, v in zip(labels, mean)},
            chunk_labels=[None if quiet else labels[i] for i, quiet in zip(logits.argmax(1).tolist(), silent)],
            chunk_starts=[s / SAMPLE_RATE for s, _ in bounds], chunk_ends=[e / SAMPLE_RATE for _, e in bounds],
            similarities=sims.tolist(), contributions={c: contrib[i].tolist() for i, c in enumerate(labels)},
            top_prototypes=[], duration=len(wav) / SAMPLE_RATE, model=self.name, chunk_silent=silent,
            ood_score=ood_score, in_domain=in_domain,
        )
        pred.top_prototypes = self.explain(pred, top_k)
        return pred

    def explain(self, prediction: Prediction, top_k: int = 3, label: str | None = None) -> list[dict]:
        """Top prototypes behind ``prediction`` (see :func:`explain`), with this model's nearest samples."""
        return explain(prediction, top_k, label, self.nearest)

    # ---- prototypes ------------------------------------------------------------------------------
    def prototype_index(self, prototype: int | str | tuple[str, int]) -> int:
        """Index p of a prototype given as ``p``, ``"p"``, ``(label, k)`` or ``"label:k"``."""
        head, n = self.head, self.head.num_prototypes
        if isinstance(prototype, str):
            text = prototype.strip()
            if text.lstrip("-").isdigit():
                prototype = int(text)
            elif ":" in text and text.rsplit(":", 1)[1].strip().isdigit():
                label, k = text.rsplit(":", 1)
                prototype = (label.strip(), int(k))
            else:
                raise ConfigError(f"prototype {text!r} is neither an index nor 'label:k' (labels: {self.labels})")
        if isinstance(prototype, (tuple, list)) and len(prototype) == 2:
            label, k = prototype
            if label not in self.labels:
                raise ConfigError(f"unknown class {label!r}; classes: {self.labels}")
            if not 0 <= int(k) < head.protos_per_class:
                raise ConfigError(f"class {label!r} has prototypes 0..{head.protos_per_class - 1}, not {k}")
            return self.labels.index(label) * head.protos_per_class + int(k)
        if isinstance(prototype, (int, np.integer)) and not isinstance(prototype, bool) and 0 <= prototype < n:
            return int(prototype)
        raise ConfigError(f"prototype {prototype!r} out of range: give 0..{n - 1} or (label, k)")

    def _render_index(self) -> dict | None:
        if self._index is False:
            self._index = self._files.json(f"{PROTOTYPES_DIR}/index.json", required=False) if self._files else None
        return self._index

    def prototype_audio_path(self, prototype, steps: int = 40, guidance: float = 1.0, seed: int = 0,
                             scheduler: SchedulerSpec = "upstream") -> Path | None:
        """The pre-rendered WAV of ``prototype`` when one exists for exactly these settings (sampler included;
        an index without ``scheduler`` was rendered with the exact ``"upstream"`` sampler), else None."""
        p, index = self.prototype_index(prototype), self._render_index()
        wanted = (steps, float(guidance), seed)
        if not index or (index.get("steps"), float(index.get("guidance", -1)), index.get("seed")) != wanted:
            return None
        if scheduler_to_dict(index.get("scheduler", {"name": "upstream"})) != scheduler_to_dict(scheduler):
            return None
        if index.get("autoencoder_fingerprint") not in (None, self.autoencoder.fingerprint()):
            return None
        entry = next((e for e in index.get("prototypes", []) if int(e["index"]) == p), None)
        try:
            return None if entry is None else self._files.get(f"{PROTOTYPES_DIR}/{entry['file']}", required=False)
        except ModelNotFoundError:  # not cached and the Hub is unreachable: the decoder will do
            return None

    def _decode(self, p: int, steps: int, guidance: float, seed: int, progress=None,
                scheduler: SchedulerSpec = "upstream") -> np.ndarray:
        # one prototype per call: vocoders may draw per-batch randomness, so batching could change the audio
        ae = self.autoencoder
        gen = torch.Generator().manual_seed(int(seed))
        noise = torch.randn((1, ae.chunk_frames, ae.config.signal_dim), generator=gen)
        z = self.head.effective_prototypes()[p : p + 1]
        wav = ae.decode(z, steps=steps, guidance=guidance, noise=noise, progress=progress, scheduler=scheduler)
        return np.asarray(wav, dtype=np.float32)

    def render_settings_for(self, steps: int | None = None, scheduler: SchedulerSpec | None = None
                            ) -> tuple[int, SchedulerSpec]:
        """``(steps, scheduler)`` with the defaults filled in: the settings of the shipped pre-renders when the
        model has them (so a default request plays them at once), else :data:`DEFAULT_SCHEDULER` at its
        recommended steps (docs/hub.md, "Sonification")."""
        index = self._render_index()
        rendered = index.get("scheduler", {"name": "upstream"}) if index else None
        if scheduler is None:
            scheduler = rendered if rendered is not None else DEFAULT_SCHEDULER
        if steps is None:
            same = index and scheduler_to_dict(scheduler) == scheduler_to_dict(rendered)
            steps = int(index["steps"]) if same else recommended_steps(scheduler_to_dict(scheduler)["name"])
        return steps, scheduler

    def sonify(self, prototype, steps: int | None = None, guidance: float = 1.0, seed: int = 0, progress=None,
               scheduler: SchedulerSpec | None = None) -> np.ndarray:
        """Audio (float32, 24 kHz, one chunk) of a prototype: the pre-rendered WAV when its settings
        match, else ``autoencoder.decode`` of the effective prototype (same seed → same audio).

        ``scheduler``: ``"upstream"`` (the exact sampler), ``"unipc"``, ``"dpmsolver++"`` or ``"ddim"``
        (:mod:`pecmae_hub.sampling.schedulers`); ``None`` and ``steps=None`` pick :meth:`render_settings_for`.

        ``progress(i, n)`` is called after each of the n diffusion steps of a decode (not for a
        pre-rendered or already decoded prototype, which needs no steps).

        Raises:
            ConfigError: an unknown prototype, or settings outside :func:`check_render_settings`
                (checked before any work).
        """
        steps, scheduler = self.render_settings_for(steps, scheduler)
        steps, guidance, seed = check_render_settings(steps, guidance, seed, scheduler)
        p = self.prototype_index(prototype)
        key = (p, steps, guidance, seed, json.dumps(scheduler_to_dict(scheduler), sort_keys=True))
        if key not in self._sonified:
            path = self.prototype_audio_path(p, steps, guidance, seed, scheduler)
            if path is not None:
                import soundfile as sf

                wav, file_sr = sf.read(str(path), dtype="float32")
                self._sonified[key] = wav if file_sr == SAMPLE_RATE and wav.ndim == 1 else load_audio(path)
            else:
                self._sonified[key] = self._decode(p, steps, guidance, seed, progress, scheduler)
        return self._sonified[key].copy()

    def nearest_audio_path(self, prototype, rank: int = 0) -> Path | None:
        """The WAV (24 kHz, one chunk) of the ``rank``-th training chunk nearest to ``prototype`` when the
        model ships it (``nearest/``, :mod:`pecmae_hub.hub.nearest_audio`), else None: ``nearest.json``
        then still names the chunk in words."""
        from pecmae_hub.hub.nearest_audio import nearest_audio_path, read_index

        p = self.prototype_index(prototype)
        if self._nearest_audio is False:
            self._nearest_audio = read_index(self._files)
        return nearest_audio_path(self._files, self._nearest_audio, p, rank)

    @property
    def nearest_audio_index(self) -> dict | None:
        """``nearest/index.json`` (plain-word facts of each shipped nearest chunk), or None."""
        from pecmae_hub.hub.nearest_audio import read_index

        if self._nearest_audio is False:
            self._nearest_audio = read_index(self._files)
        return self._nearest_audio

    def render_prototypes(self, folder: str | os.PathLike, steps: int = 40, guidance: float = 1.0, seed: int = 0,
                          progress: bool = False, scheduler: SchedulerSpec = "upstream") -> dict:
        """Write ``folder/prototypes/p<idx>_<class>_<k>.wav`` (16-bit, 24 kHz) for every prototype and
        ``index.json`` recording the settings (sampler included); returns the index."""
        from tqdm.auto import tqdm

        steps, guidance, seed = check_render_settings(steps, guidance, seed, scheduler)
        out = Path(folder) / PROTOTYPES_DIR
        out.mkdir(parents=True, exist_ok=True)
        entries = []
        for p in tqdm(range(self.head.num_prototypes), desc="rendering prototypes", disable=not progress):
            label, k = self.head.prototype_name(p)
            name = f"p{p:03d}_{re.sub(r'[^A-Za-z0-9._-]+', '-', label).strip('-') or 'class'}_{k}.wav"
            write_wav(out / name, self._decode(p, steps, guidance, seed, scheduler=scheduler))
            entries.append({"index": p, "label": label, "k": k, "file": name})
        index = {"version": 1, "sample_rate": SAMPLE_RATE, "steps": int(steps), "guidance": float(guidance),
                 "seed": int(seed), "scheduler": scheduler_to_dict(scheduler),
                 "autoencoder_fingerprint": self.autoencoder.fingerprint(),
                 "prototypes": entries}
        (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
        if self._files is not None and self._files.folder is not None:
            self._index, self._sonified = False, {}  # it may have been our own folder: look again
        return index

    # ---- saving / publishing ---------------------------------------------------------------------
    def save_pretrained(self, folder: str | os.PathLike, *, render: bool = False, steps: int = 40,
                        guidance: float = 1.0, seed: int = 0, scheduler: SchedulerSpec = "upstream",
                        autoencoder_repo_id: str | None = None,
                        autoencoder_revision: str | None = None, repo_id: str | None = None) -> Path:
        """Write the model folder: head config + weights, autoencoder reference (or ``autoencoder/``),
        ``nearest.json``, ``metrics.json``, ``pecmae.json``, ``prototypes/`` and the ``README.md`` card.

        Existing pre-renders are copied as they are; ``render=True`` renders them with the given settings
        when there are none. ``autoencoder_repo_id`` references a Hub autoencoder instead of shipping it; an
        autoencoder loaded by upstream name (``autoencoder_ref.name``) is referenced by that name and its source
        commits, so users get it from its authors' repos. Set ``autoencoder_ref = AutoencoderRef()`` to ship it.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        ae = self.autoencoder
        if autoencoder_repo_id:
            spec = AutoencoderRef(repo_id=autoencoder_repo_id, revision=autoencoder_revision)
        elif self.autoencoder_ref.repo_id:
            spec = AutoencoderRef(repo_id=self.autoencoder_ref.repo_id, revision=self.autoencoder_ref.revision)
        elif self.autoencoder_ref.name:  # an upstream autoencoder: referenced by name and pinned source commits
            spec = AutoencoderRef(name=self.autoencoder_ref.name, sources=self.autoencoder_ref.sources)
        else:
            ae.save_pretrained(folder / "autoencoder")
            spec = AutoencoderRef(path="autoencoder")
        spec = spec.replace(fingerprint=ae.fingerprint(), embedding_dim=ae.embedding_dim)
        config = dataclasses.replace(self.head.config, autoencoder=spec)
        save_folder(self.head, config.to_dict(), folder)
        for name, data in ((NEAREST_NAME, self.nearest), (METRICS_NAME, self.metrics)):
            if data is not None:
                (folder / name).write_text(json.dumps(data, indent=1) + "\n")
        info = {**self.info, "name": self.name, "chunk_seconds": ae.chunk_seconds}
        info.setdefault("license", "cc-by-nc-4.0" if ae.config.frontend == "encodec" else "mit")
        (folder / INFO_NAME).write_text(json.dumps(info, indent=1) + "\n")
        index = self._copy_renders(folder)
        self._copy_nearest_audio(folder)
        if render and index is None:
            index = self.render_prototypes(folder, steps, guidance, seed, progress=True, scheduler=scheduler)
        card = render_model_card(
            model_name=self.name, labels=self.labels, protos_per_class=self.head.protos_per_class, info=info,
            metrics=self.metrics, base_model=spec.repo_id, repo_id=repo_id, render_settings=index)
        (folder / "README.md").write_text(card)
        if self.ood is not None:
            self.ood.save(folder)  # ood.safetensors + ood.json, listed in checksums.json below
        write_checksums(folder)
        return folder

    def _copy_nearest_audio(self, folder: Path) -> None:
        """Carry the shipped nearest-chunk audio (``nearest/``) over to a re-saved or pushed model."""
        from pecmae_hub.hub.nearest_audio import NEAREST_AUDIO_DIR, NEAREST_AUDIO_INDEX, read_index

        index = read_index(self._files)
        if not index or self._files is None:
            return
        dest = folder / NEAREST_AUDIO_DIR
        dest.mkdir(parents=True, exist_ok=True)
        for entry in index.get("entries", []):
            name = inside_path(entry["file"], NEAREST_AUDIO_INDEX)
            src = self._files.get(f"{NEAREST_AUDIO_DIR}/{name}")
            if src.resolve() != (dest / name).resolve():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest / name)
        (folder / NEAREST_AUDIO_INDEX).write_text(json.dumps(index, indent=1) + "\n")

    def _copy_renders(self, folder: Path) -> dict | None:
        index = self._render_index()
        if not index or index.get("autoencoder_fingerprint") not in (None, self.autoencoder.fingerprint()):
            return None
        dest = folder / PROTOTYPES_DIR
        dest.mkdir(parents=True, exist_ok=True)
        for entry in index.get("prototypes", []):
            name = inside_path(entry["file"], f"{PROTOTYPES_DIR}/index.json")
            src = self._files.get(f"{PROTOTYPES_DIR}/{name}")
            if src.resolve() != (dest / name).resolve():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest / name)
        (dest / "index.json").write_text(json.dumps(index, indent=1) + "\n")
        return index

    def push_to_hub(self, repo_id: str, *, private: bool = False, revision: str | None = None,
                    token: str | None = None, commit_message: str | None = None, render: bool = True,
                    steps: int = 40, guidance: float = 1.0, seed: int = 0, scheduler: SchedulerSpec = "upstream",
                    autoencoder_repo_id: str | None = None, autoencoder_revision: str | None = None) -> str:
        """Save to a temporary folder (rendering prototypes when there are none, unless ``render=False``)
        and upload it to ``repo_id`` (created if missing) on branch ``revision``; returns the commit sha."""
        with tempfile.TemporaryDirectory(prefix="pecmae-push-") as tmp:
            self.save_pretrained(tmp, render=render, steps=steps, guidance=guidance, seed=seed, scheduler=scheduler,
                                 repo_id=repo_id,
                                 autoencoder_repo_id=autoencoder_repo_id, autoencoder_revision=autoencoder_revision)
            return push_folder(tmp, repo_id, private=private, revision=revision, token=token,
                                   commit_message=commit_message)



def check_render_settings(steps, guidance, seed, scheduler: SchedulerSpec = "upstream") -> tuple[int, float, int]:
    """``(steps, guidance, seed)`` as (int, float, int), or :class:`ConfigError` naming the bad one.

    ``steps`` must be a whole number in 1..1000 (:func:`pecmae_hub.sampling.schedulers.check_steps`, which also
    refuses an unknown ``scheduler``), ``guidance`` a finite number, ``seed`` an integer in 0..2**63-1.
    Checked before any decoding, so a typo never starts hours of work.
    """

    def whole(value, what):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not np.isfinite(value) or int(value) != value:
            raise ConfigError(f"{what} must be a whole number, got {value!r}")
        return int(value)

    steps = check_steps(steps, scheduler)
    if isinstance(guidance, (bool, np.bool_)) or not isinstance(guidance, (int, float, np.integer, np.floating)) \
            or not np.isfinite(guidance):
        raise ConfigError(f"guidance must be a finite number (1.0: no guidance), got {guidance!r}")
    seed = whole(seed, "seed")
    if not 0 <= seed < 2**63:
        raise ConfigError(f"seed must be in 0..2**63-1, got {seed}")
    return steps, float(guidance), seed


def _source_name(audio) -> str:
    if isinstance(audio, (str, os.PathLike)):
        return os.fspath(audio)
    return "<bytes>" if isinstance(audio, (bytes, bytearray)) else "<array>"
