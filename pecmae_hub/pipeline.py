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
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import overload

import numpy as np
import torch

from pecmae_hub.audio import (
    MAX_SECONDS,
    SAMPLE_RATE,
    AudioInput,
    check_min_duration,
    chunk_bounds,
    load_audio,
    silence_error,
    silent_chunks,
)
from pecmae_hub.configuration import AutoencoderRef
from pecmae_hub.dataset_source import DatasetSource
from pecmae_hub.devices import resolve_device
from pecmae_hub.errors import CheckpointError, ConfigError, ModelNotFoundError, NumericalError, PecmaeError
from pecmae_hub.hub.cards import render_model_card
from pecmae_hub.hub.files import ModelFiles, load_autoencoder
from pecmae_hub.hub.publish import push_folder
from pecmae_hub.hub.registry import (
    DEFAULT_MODEL,
    INFO_NAME,
    METRICS_NAME,
    PROTOTYPES_DIR,
    REGISTRY,
    resolve_model,
)
from pecmae_hub.model_fidelity import load_precision, save_fidelity
from pecmae_hub.models.autoencoder import Autoencoder
from pecmae_hub.models.fidelity_record import FIDELITY_NAME
from pecmae_hub.models.head import NEAREST_NAME, PrototypeHead
from pecmae_hub.models.ood import OOD_CONFIG_NAME, OOD_WEIGHTS_NAME, OODScorer
from pecmae_hub.models.precision import AUTO, PRECISION_CHOICES, apply_precision, check_precision
from pecmae_hub.prediction import ClassificationFailure, Prediction, explain
from pecmae_hub.prototype_audio import PrototypeAudio
from pecmae_hub.render_index import prototypes_digest
from pecmae_hub.sampling.schedulers import (
    SchedulerSpec,
)
from pecmae_hub.storage.atomic import refuse_links
from pecmae_hub.storage.integrity import CHECKSUMS_NAME, write_checksums
from pecmae_hub.storage.pretrained import CONFIG_NAME, WEIGHTS_NAME, save_folder


class PECMAE(PrototypeAudio):
    """Prototype-based music classifier: ``classify`` audio, ``explain`` decisions, ``sonify`` prototypes."""

    def __init__(
        self,
        autoencoder: Autoencoder,
        head: PrototypeHead,
        *,
        nearest: dict | None = None,
        metrics: dict | None = None,
        info: dict | None = None,
        name: str = "pecmae",
        files: ModelFiles | None = None,
        autoencoder_ref: AutoencoderRef | None = None,
        autoencoder_source: str = "",
        ood: OODScorer | None = None,
    ):
        if head.embedding_dim != autoencoder.embedding_dim:
            raise ConfigError(
                f"head {name!r} expects {head.embedding_dim}-d embeddings but the autoencoder gives "
                f"{autoencoder.embedding_dim}-d ones: the head was trained on another autoencoder"
            )
        if ood is not None and (ood.embedding_dim != head.embedding_dim or (ood.labels and ood.labels != head.labels)):
            raise ConfigError(
                f"the OOD scorer of {name!r} (D={ood.embedding_dim}, labels {ood.labels}) does not "
                f"belong to its head (D={head.embedding_dim}, labels {head.labels})"
            )
        self.autoencoder, self.head = autoencoder.eval(), head.eval()
        self.ood = None if ood is None else ood.to(head.protos.device)  # None: no in_domain verdicts
        self.nearest, self.metrics, self.info, self.name = nearest, metrics, dict(info or {}), name
        self.autoencoder_ref = autoencoder_ref or AutoencoderRef()  # where it came from (Hub revision pinned)
        self.autoencoder_source = autoencoder_source
        self._files = files
        self.fidelity: dict | None = None  # the fidelity record (fidelity.json) read with the files, if any
        self.precision_reason = "asked for"  # why the autoencoder runs at its precision (see from_pretrained)
        self._index = False  # prototypes/index.json; False: not looked up yet
        self._sonified: dict[str, np.ndarray] = {}  # render key → audio
        self._nearest_audio = False  # nearest/index.json; False: not looked up yet
        # what the files' renders were made from (format-1 render indexes carry no per-render key)
        self._loaded_prototypes = prototypes_digest(head.effective_prototypes()) if files is not None else None

    @property
    def labels(self) -> list[str]:
        return self.head.labels

    @property
    def device(self) -> torch.device:
        return self.head.protos.device

    @property
    def precision(self) -> str:
        """The precision the model runs at (``"fp32"``, ``"int8"``, ``"bf16"``, ``"fp16"``; never ``"auto"``)."""
        return self.autoencoder.precision

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
    def from_pretrained(
        cls,
        name_or_repo_or_folder: str | os.PathLike = DEFAULT_MODEL,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        device: str = "auto",
        autoencoder: Autoencoder | None = None,
        *,
        token: str | bool | None = None,
        force_download: bool = False,
        precision: str = AUTO,
        verify: bool = True,
    ) -> PECMAE:
        """Load a model by short name (``gtzan``, ``medley-solos-db``, ``gm-solos``), Hub repo id or folder.

        ``precision``: ``"auto"`` (default) runs the fast mode of the device (CPU: int8 transformer GEMMs + bf16
        codec, about 2.3-2.5x faster encoding; CUDA: bf16, else fp16) when the model's fidelity record
        (``fidelity.json``) vouches for it on these very files, else fp32, logging why once
        (:mod:`pecmae_hub.models.fidelity_record`); ``"fp32"`` is exact; ``"int8"``, ``"bf16"``, ``"fp16"`` force
        a mode (:mod:`pecmae_hub.models.precision`). ``model.precision`` is the mode in force and
        ``model.precision_reason`` says why; every :class:`Prediction` records it.
        ``revision`` (branch, tag or commit) applies to Hub repos; ``cache_dir``, ``token`` and
        ``force_download`` are passed to ``huggingface_hub``. Every file is verified before it is used: a
        folder's against its ``checksums.json`` (which every folder pecmae-hub writes carries), a Hub file
        against the digest the Hub records; ``verify=False`` loads an old or third-party folder without
        ``checksums.json``, with a warning. Weights that hold NaN or infinite values are refused. Offline
        (``local_files_only=True`` or ``HF_HUB_OFFLINE=1``) the Hugging Face cache alone is used. The
        autoencoder named by the head's config is loaded once per process and shared; pass ``autoencoder`` to
        use one directly.

        Raises:
            ModelNotFoundError: unknown name, missing repo/revision/file, or not cached while offline.
            ConfigError: a head that does not fit its autoencoder, an autoencoder reference that is not a Hub
                repo id, an upstream name or a folder inside the model.
            CheckpointError: a file that cannot be verified or read, weights that are not finite numbers.
        """
        text = os.fspath(name_or_repo_or_folder)
        kind, where, rev = resolve_model(text, revision)
        if kind == "folder":
            files = ModelFiles(folder=where, verify=verify)
        else:
            files = ModelFiles(
                repo_id=str(where),  # a repo id (str) for "hub"
                revision=rev,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
                token=token,
                force_download=force_download,
                verify=verify,
            )
        try:
            head_dir = files.local_dir()  # config.json first: it also fixes the commit of a Hub repo
            files.get(WEIGHTS_NAME)
        except ModelNotFoundError as exc:
            if text in REGISTRY and kind == "hub":
                from pecmae_hub.hub.registry import registry_model_missing  # the error names the recipe that builds it

                raise registry_model_missing(text, exc) from None
            raise
        dev = resolve_device(device)
        if precision not in PRECISION_CHOICES:
            raise ConfigError(f"precision must be one of {PRECISION_CHOICES}, got {precision!r}")
        if precision != AUTO:
            check_precision(precision, dev)  # before any download
        head = PrototypeHead.from_pretrained(head_dir, verify=verify).to(dev)
        spec = head.config.autoencoder
        record = files.json(FIDELITY_NAME, required=False)
        if autoencoder is not None and precision == AUTO:  # a given instance keeps its precision
            precision, reason = autoencoder.precision, "an autoencoder instance was given: its precision is kept"
        else:
            precision, reason = load_precision(precision, dev, record, files, spec)
        if autoencoder is None:
            autoencoder, ref, source = load_autoencoder(spec, files, device=dev, precision=precision)
        else:
            if precision != autoencoder.precision:  # the given instance is switched in place
                apply_precision(autoencoder.to(dev), precision)
            ref, source = (spec if spec.repo_id or spec.name else AutoencoderRef()), "given"
        info = files.json(INFO_NAME, required=False) or {}
        try:
            ood = OODScorer.load(
                files.get(OOD_WEIGHTS_NAME, required=False), files.get(OOD_CONFIG_NAME, required=False)
            )
        except (TypeError, ValueError, OverflowError) as exc:  # a field of ood.json of the wrong type
            if isinstance(exc, PecmaeError):
                raise
            raise CheckpointError(f"{OOD_CONFIG_NAME} of {files.describe()} is malformed: {exc}") from None
        name = info.get("name") or (str(where).split("/")[-1] if kind == "hub" else Path(where).name)
        model = cls(
            autoencoder,
            head,
            nearest=files.json(NEAREST_NAME, required=False),
            metrics=files.json(METRICS_NAME, required=False),
            info=info,
            name=name,
            files=files,
            autoencoder_ref=ref,
            autoencoder_source=source,
            ood=ood,
        )  # checks the embedding sizes
        model.fidelity, model.precision_reason = record, reason
        if not autoencoder.matches_fingerprint(spec.fingerprint):
            raise ConfigError(
                f"head {files.describe()} was trained with autoencoder fingerprint {spec.fingerprint} but the "
                f"autoencoder loaded ({source}) has {autoencoder.fingerprint()}"
            )
        model._render_index()  # fetched now so that the cache knows it (or its absence) when offline later
        return model

    # ---- classification --------------------------------------------------------------------------
    @overload
    def classify(
        self, audio: list | tuple, sr: int | None = None, top_k: int = 3, *, max_seconds: float | None = MAX_SECONDS
    ) -> list[Prediction | ClassificationFailure]: ...
    @overload
    def classify(
        self, audio: AudioInput, sr: int | None = None, top_k: int = 3, *, max_seconds: float | None = MAX_SECONDS
    ) -> Prediction: ...
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
        ``max_seconds`` (None: no limit) are refused before any decoding or resampling, and so are inputs
        shorter than :data:`~pecmae_hub.audio.MIN_SECONDS`. Scores that are not finite numbers (NaN/inf, from
        weights that overflow) are a :class:`~pecmae_hub.errors.NumericalError`, never an answer.

        Raises:
            ConfigError: ``top_k`` that is not a whole number >= 0, ``max_seconds`` that is not a positive
                number or None (checked before any input is read).
        """
        _check_classify_options(top_k, max_seconds)
        if isinstance(audio, (list, tuple)):
            return [self._classify_or_failure(a, sr, top_k, max_seconds) for a in audio]
        return self._classify_one(audio, sr, top_k, max_seconds)

    def classify_dataset(
        self,
        dataset,
        *,
        audio_column: str | None = None,
        id_column: str | None = None,
        top_k: int = 3,
        max_seconds: float | None = MAX_SECONDS,
    ) -> Iterator[tuple[str, Prediction | ClassificationFailure]]:
        """Classify the rows of a Hugging Face ``datasets`` dataset, streamed (``IterableDataset``) or not.

        Yields ``(row id, Prediction | ClassificationFailure)`` one row at a time; the id is the value of
        ``id_column`` (default: ``"id"`` when the dataset has it) or the row's index. The audio column
        (default: the dataset's only ``Audio`` column) is read as bytes and decoded like a file, so a row
        gives the prediction of the same file on disk. Under ``accelerate launch`` each process gets its part
        (``datasets.distributed.split_dataset_by_node``; see :mod:`pecmae_hub.dataset_source`)::

            ds = load_dataset("org/clips", split="test", streaming=True)
            for row_id, pred in model.classify_dataset(ds):
                print(row_id, pred.label if pred.ok else pred.message)

        Raises:
            DatasetError: no (or an ambiguous) audio column, or a named column that does not exist.
        """
        source = DatasetSource.open(dataset, audio_column=audio_column, id_column=id_column)
        for key, audio in source.rows():
            if isinstance(audio, PecmaeError):
                yield key, ClassificationFailure(source=key, error=type(audio).__name__, message=str(audio))
                continue
            result = self._classify_or_failure(audio, None, top_k, max_seconds)
            result.source = key
            yield key, result

    def _classify_or_failure(self, audio, sr, top_k, max_seconds=MAX_SECONDS) -> Prediction | ClassificationFailure:
        try:
            return self._classify_one(audio, sr, top_k, max_seconds)
        except PecmaeError as exc:
            return ClassificationFailure(source=_source_name(audio), error=type(exc).__name__, message=str(exc))

    @torch.no_grad()
    def _classify_one(self, audio, sr, top_k, max_seconds=MAX_SECONDS) -> Prediction:
        source = _source_name(audio)
        wav = load_audio(audio, sr, name=source, max_seconds=max_seconds)
        check_min_duration(len(wav), SAMPLE_RATE, source)
        silent = silent_chunks(wav, self.autoencoder.chunk_samples)
        if all(silent):
            raise silence_error(source)
        audible = torch.tensor([not s for s in silent])
        z = self.autoencoder.encode(wav, sr=SAMPLE_RATE)
        logits = self.head(z).float().cpu()  # (n, C)
        sims = self.head.similarities(z).float().cpu()  # (n, P)
        contrib = self.head.contributions(z[audible]).float().cpu().mean(0)  # (C, P), audible chunks only
        mean = logits[audible].mean(0)
        scores = torch.softmax(mean / self.head.config.temperature, dim=0)
        labels = self.labels
        bounds = chunk_bounds(len(wav), self.autoencoder.chunk_samples)
        ood_score, in_domain, ood_percentile = None, None, None
        if self.ood is not None:  # audible chunks, weighted by their length (a short last chunk counts in part)
            weights = torch.tensor([float(e - s) for s, e in bounds]) * audible
            ood_score, in_domain = self.ood.assess(z, weights=weights)
            ood_percentile = self.ood.score_percentile(ood_score, self.ood.effective_chunks(len(z), weights))
        _check_finite_outputs(source, self.name, mean, scores, sims, contrib, ood_score)
        pred = Prediction(
            source=source,
            label=labels[int(mean.argmax())],
            scores={c: float(s) for c, s in zip(labels, scores)},
            logits={c: float(v) for c, v in zip(labels, mean)},
            chunk_labels=[None if quiet else labels[i] for i, quiet in zip(logits.argmax(1).tolist(), silent)],
            chunk_starts=[s / SAMPLE_RATE for s, _ in bounds],
            chunk_ends=[e / SAMPLE_RATE for _, e in bounds],
            similarities=sims.tolist(),
            contributions={c: contrib[i].tolist() for i, c in enumerate(labels)},
            top_prototypes=[],
            duration=len(wav) / SAMPLE_RATE,
            model=self.name,
            precision=self.autoencoder.precision,
            chunk_silent=silent,
            ood_score=ood_score,
            in_domain=in_domain,
            ood_percentile=ood_percentile,
        )
        pred.top_prototypes = self.explain(pred, top_k)
        return pred

    def explain(self, prediction: Prediction, top_k: int = 3, label: str | None = None) -> list[dict]:
        """Top prototypes behind ``prediction`` (see :func:`explain`), with this model's nearest samples and,
        when its OOD scorer has a reference, ``similarity_percentile``: the share of the training chunks of
        the prototype's class that are less similar to it than the input."""
        items = explain(prediction, top_k, label, self.nearest)
        ood = self.ood
        if ood is not None:
            for item in items:
                share = ood.similarity_percentile(item["p"], item["similarity"])
                if share is not None:
                    item["similarity_percentile"] = share
        return items

    # ---- saving / publishing ---------------------------------------------------------------------
    def save_pretrained(
        self,
        folder: str | os.PathLike,
        *,
        render: bool = False,
        steps: int = 40,
        guidance: float = 1.0,
        seed: int = 0,
        scheduler: SchedulerSpec = "upstream",
        vocoder: str | None = None,
        temperature: float = 1.0,
        autoencoder_repo_id: str | None = None,
        autoencoder_revision: str | None = None,
        repo_id: str | None = None,
        fidelity=None,
    ) -> Path:
        """Write the model folder: head config + weights, autoencoder reference (or ``autoencoder/``),
        ``nearest.json``, ``metrics.json``, ``pecmae.json``, ``prototypes/`` and the ``README.md`` card.

        Existing pre-renders are copied when they are still the audio of these prototypes through this decoder
        (their render keys match, :mod:`pecmae_hub.render_index`; stale ones are dropped); ``render=True``
        renders them with the given settings when none are left. ``autoencoder_repo_id`` references a Hub
        autoencoder instead of shipping it; an autoencoder loaded by upstream name (``autoencoder_ref.name``)
        is referenced by that name and its source commits, so users get it from its authors' repos. Set
        ``autoencoder_ref = AutoencoderRef()`` to ship it.

        The fidelity record (``fidelity.json``, what lets ``precision="auto"`` run the model fast) is carried
        over when it is still about the files written (:mod:`pecmae_hub.models.fidelity_record`), else dropped.
        ``fidelity``: held-out audio (paths, a folder, ``(name, samples)`` pairs) to measure a new record on
        (:func:`pecmae_hub.fidelity.write_fidelity`), or ``True`` to measure one on synthetic probes when none
        was carried over; None or False (default) only carries one over.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        from pecmae_hub.hub.nearest_audio import NEAREST_AUDIO_DIR

        refuse_links(  # nothing is written through a link that a target folder holds (it could lead anywhere)
            folder,
            [CONFIG_NAME, WEIGHTS_NAME, NEAREST_NAME, METRICS_NAME, INFO_NAME, "README.md", CHECKSUMS_NAME]
            + [OOD_WEIGHTS_NAME, OOD_CONFIG_NAME, FIDELITY_NAME],
            trees=["autoencoder", PROTOTYPES_DIR, NEAREST_AUDIO_DIR],
        )
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
            index = self.render_prototypes(
                folder,
                steps,
                guidance,
                seed,
                progress=True,
                scheduler=scheduler,
                vocoder=vocoder,
                temperature=temperature,
            )
        card = render_model_card(
            model_name=self.name,
            labels=self.labels,
            protos_per_class=self.head.protos_per_class,
            info=info,
            metrics=self.metrics,
            base_model=spec.repo_id,
            repo_id=repo_id,
            render_settings=index,
        )
        (folder / "README.md").write_text(card)
        if self.ood is not None:
            self.ood.save(folder)  # ood.safetensors + ood.json, listed in checksums.json below
        (folder / FIDELITY_NAME).unlink(missing_ok=True)  # written below only when it is about these files
        write_checksums(folder)
        save_fidelity(self, folder, fidelity)
        return folder

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool = False,
        revision: str | None = None,
        token: str | None = None,
        commit_message: str | None = None,
        render: bool = True,
        steps: int = 40,
        guidance: float = 1.0,
        seed: int = 0,
        scheduler: SchedulerSpec = "upstream",
        vocoder: str | None = None,
        temperature: float = 1.0,
        autoencoder_repo_id: str | None = None,
        autoencoder_revision: str | None = None,
        fidelity=True,
    ) -> str:
        """Save to a temporary folder (rendering prototypes when there are none, unless ``render=False``; with
        a fidelity record, measured on synthetic probes when none is carried over, see ``save_pretrained``'s
        ``fidelity``) and upload it to ``repo_id`` (created if missing) on branch ``revision``; returns the
        commit sha."""
        with tempfile.TemporaryDirectory(prefix="pecmae-push-") as tmp:
            self.save_pretrained(
                tmp,
                render=render,
                steps=steps,
                guidance=guidance,
                seed=seed,
                scheduler=scheduler,
                vocoder=vocoder,
                temperature=temperature,
                repo_id=repo_id,
                autoencoder_repo_id=autoencoder_repo_id,
                autoencoder_revision=autoencoder_revision,
                fidelity=fidelity,
            )
            return push_folder(
                tmp, repo_id, private=private, revision=revision, token=token, commit_message=commit_message
            )


def _check_classify_options(top_k, max_seconds) -> None:
    """:class:`ConfigError` for a ``top_k`` or ``max_seconds`` of the wrong type or range (before any work)."""
    if isinstance(top_k, (bool, np.bool_)) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
        raise ConfigError(f"top_k must be a whole number, 0 or more, got {top_k!r}")
    if max_seconds is None:
        return
    if (
        isinstance(max_seconds, (bool, np.bool_))
        or not isinstance(max_seconds, (int, float, np.integer, np.floating))
        or not max_seconds > 0  # NaN too
    ):
        raise ConfigError(f"max_seconds must be a positive number of seconds (or None: no limit), got {max_seconds!r}")


def _check_finite_outputs(source: str, model: str, *outputs) -> None:
    """:class:`NumericalError` when a score, similarity, contribution or the OOD score is NaN or infinite."""
    for value in outputs:
        if value is None:
            continue
        if not (math.isfinite(value) if isinstance(value, float) else bool(torch.isfinite(value).all())):
            raise NumericalError(
                f"model {model!r} computed scores that are not finite numbers (NaN or infinite) for {source}: "
                "its weights are damaged or overflow, so no answer is given"
            )


def _source_name(audio) -> str:
    if isinstance(audio, (str, os.PathLike)):
        return os.fspath(audio)
    return "<bytes>" if isinstance(audio, (bytes, bytearray)) else "<array>"
