"""Out-of-domain (OOD) scoring: does an input look like the audio the head was trained on?

A prototype head always answers with one of its classes, whatever it hears (a 2 kHz sine is a
"tenor saxophone" to the GM-Solos model). :class:`OODScorer` measures how far embeddings lie from the
training embeddings with the class-conditional Mahalanobis distance under one covariance shared by
all classes (Lee et al., 2018, "A simple unified framework for detecting out-of-distribution
samples"), on the raw z the head receives::

    s(z) = min_c (z - mu_c)^T Sigma^-1 (z - mu_c) / D

Dividing by D makes it dimension-free: training chunks average about 1 for any embedding size.
A track's score is, by default (``aggregation="mean-embedding"``), s of its duration-weighted mean
chunk embedding: the chunk-to-chunk variation of music averages out while a steady foreign sound
(a tone, noise) stays far, which separates them better than averaging chunk scores (``"mean"``,
also available with ``"max"``). Because averaging more chunks lowers the scores of in-domain
tracks, the threshold depends on the track length: ``thresholds[m - 1]`` applies to tracks of m
chunks, the last one to longer tracks. :func:`pecmae_hub.training.ood.calibrate_ood` sets them on
held-out tracks so that a chosen fraction of in-domain tracks is kept.

A raw score means little to a listener, so a calibrated scorer also keeps a *reference*
(:class:`OODReference`): quantiles of the scores of held-out in-domain tracks per length, which turn a
score into "further from the training audio than 97 % of training clips"
(:meth:`OODScorer.score_percentile`), and, per prototype, quantiles of the similarity of the training
chunks of its class to it, which turn "similarity 0.84" into "closer than 2 % of violin training chunks"
(:meth:`OODScorer.similarity_percentile`).

Stored next to the head as ``ood.safetensors`` (``means`` (C, D) and ``whitening`` (D, D) with
``Sigma^-1 = W W^T``; 68 kB for D=128, 2.4 MB for D=768) and ``ood.json`` (method, thresholds,
aggregation, how it was calibrated, the reference). A head folder without them has no scorer:
:meth:`OODScorer.load` returns None.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pecmae_hub.errors import CheckpointError, ConfigError, InputShapeError
from pecmae_hub.storage.atomic import atomic_write, atomic_write_text

OOD_WEIGHTS_NAME = "ood.safetensors"
OOD_CONFIG_NAME = "ood.json"
OOD_METHOD = "mahalanobis-shared-cov"
OOD_VERSION = 1
AGGREGATIONS = ("mean-embedding", "mean", "max")


class OODReference:
    """Quantile tables that place a score or a similarity among those of the training audio.

    ``levels`` (L,) are increasing fractions from 0 to 1; ``track_scores[m - 1]`` (L,) are the scores of
    held-out in-domain tracks of m chunks at those levels (the last row serves longer tracks) and
    ``track_counts[m - 1]`` how many tracks made each row; ``prototype_similarity[p]`` (L,) are the
    similarities to prototype p of the training chunks of p's class at those levels. Either table may be
    absent (None). Stored as the ``reference`` object of ``ood.json``.
    """

    def __init__(
        self,
        levels: Sequence[float],
        track_scores: Sequence[Sequence[float]] | None = None,
        track_counts: Sequence[int] | None = None,
        prototype_similarity: Sequence[Sequence[float]] | None = None,
    ):
        self.levels = [float(v) for v in levels]
        lv = self.levels
        if len(lv) < 2 or lv[0] != 0.0 or lv[-1] != 1.0 or lv != sorted(lv):
            raise ConfigError("OOD reference levels must increase from 0 to 1")
        self.track_scores = None if track_scores is None else [self._row(r, "track_scores") for r in track_scores]
        self.track_counts = None if track_counts is None else [int(n) for n in track_counts]
        if self.track_scores is not None and (
            not self.track_scores or len(self.track_counts or []) != len(self.track_scores)
        ):
            raise ConfigError("OOD reference: track_scores needs one row and one count per track length")
        self.prototype_similarity = None
        if prototype_similarity is not None:
            self.prototype_similarity = [self._row(r, "prototype_similarity") for r in prototype_similarity]

    def _row(self, row: Sequence[float], name: str) -> list[float]:
        values = [float(v) for v in row]
        if len(values) != len(self.levels) or not all(math.isfinite(v) for v in values) or values != sorted(values):
            raise ConfigError(f"OOD reference: each {name} row must hold {len(self.levels)} increasing finite numbers")
        return values

    @staticmethod
    def _place(value: float, row: list[float], levels: list[float]) -> float:
        """The fraction of the reference below ``value`` (linear between the stored quantiles)."""
        if value <= row[0]:
            return 0.0
        if value >= row[-1]:
            return 1.0
        for i in range(1, len(row)):
            if value <= row[i]:
                lo, hi = row[i - 1], row[i]
                t = 0.0 if hi <= lo else (value - lo) / (hi - lo)
                return levels[i - 1] + t * (levels[i] - levels[i - 1])
        return 1.0  # pragma: no cover - value < row[-1] ends the loop above

    def track_row(self, n_chunks: float | None) -> int | None:
        """Index of the ``track_scores`` row for a track of ``n_chunks`` (None: the longest)."""
        if self.track_scores is None:
            return None
        last = len(self.track_scores)
        return last - 1 if n_chunks is None else min(max(round(float(n_chunks)), 1), last) - 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "levels": self.levels,
            "track_scores": self.track_scores,
            "track_counts": self.track_counts,
            "prototype_similarity": self.prototype_similarity,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> OODReference | None:
        if data is None:
            return None
        if not isinstance(data, dict) or "levels" not in data:
            raise ConfigError("OOD reference must be an object with 'levels'")
        return cls(data["levels"], data.get("track_scores"), data.get("track_counts"), data.get("prototype_similarity"))


class OODScorer(nn.Module):
    """Class-conditional Mahalanobis OOD scorer over raw autoencoder embeddings z.

    Args:
        means: (C, D) class means of the training z.
        whitening: (D, D) matrix W with ``W W^T`` the inverse shared covariance, so that
            ``(z - mu)^T Sigma^-1 (z - mu) = |(z - mu) W|^2``.
        thresholds: ``thresholds[m - 1]`` is the largest in-domain score of a track of m chunks (the
            last entry serves longer tracks); a single float serves every length; None (not
            calibrated) gives no verdict.
        aggregation: how a track's chunks make its score: ``"mean-embedding"`` (score of the
            duration-weighted mean z), ``"mean"`` (duration-weighted mean of chunk scores) or ``"max"``.
        labels: the class names in id order (optional, checked against the head by callers).
        calibration: how the thresholds were set (free-form JSON: data, quantile, kept fraction ...).
        reference: quantile tables for :meth:`score_percentile` and :meth:`similarity_percentile`
            (an :class:`OODReference` or its dict), or None.

    It is an ``nn.Module`` (buffers only) so that ``.to(device)`` follows the head.
    """

    # buffers registered in __init__
    means: torch.Tensor
    whitening: torch.Tensor

    def __init__(
        self,
        means: torch.Tensor,
        whitening: torch.Tensor,
        thresholds: Sequence[float] | float | None = None,
        aggregation: str = "mean-embedding",
        labels: Sequence[str] | None = None,
        calibration: dict[str, Any] | None = None,
        reference: OODReference | dict[str, Any] | None = None,
    ):
        super().__init__()
        means, whitening = torch.as_tensor(means, dtype=torch.float32), torch.as_tensor(whitening, dtype=torch.float32)
        if means.ndim != 2 or whitening.ndim != 2 or whitening.shape != (means.shape[1], means.shape[1]):
            raise InputShapeError(
                f"OODScorer needs means (C, D) and whitening (D, D), got {tuple(means.shape)} "
                f"and {tuple(whitening.shape)}"
            )
        if not (torch.isfinite(means).all() and torch.isfinite(whitening).all()):
            raise CheckpointError("OODScorer statistics contain NaN or infinite values")
        if aggregation not in AGGREGATIONS:
            raise ConfigError(f"OOD aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        if labels is not None and len(labels) != means.shape[0]:
            raise ConfigError(f"OODScorer has {means.shape[0]} class means but {len(labels)} labels")
        self.register_buffer("means", means.contiguous())
        self.register_buffer("whitening", whitening.contiguous())
        self.thresholds = thresholds  # validated by the setter
        self.aggregation = aggregation
        self.labels = None if labels is None else [str(x) for x in labels]
        self.calibration = dict(calibration or {})
        self.reference = reference if isinstance(reference, OODReference) else OODReference.from_dict(reference)

    # ---- description -------------------------------------------------------------------------
    @property
    def embedding_dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.means.shape[0])

    @property
    def thresholds(self) -> list[float] | None:
        """Per-length thresholds (entry m - 1 for m chunks), or None when not calibrated."""
        return self._thresholds

    @thresholds.setter
    def thresholds(self, value: Sequence[float] | float | None) -> None:
        if value is not None:
            value = [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]
            if not value or not all(math.isfinite(v) for v in value):
                raise ConfigError(f"OOD thresholds must be finite numbers (one per track length), got {value!r}")
        self._thresholds = value

    @property
    def threshold(self) -> float | None:
        """The threshold of the longest calibrated track length (the tracks the scorer was calibrated on)."""
        return None if self._thresholds is None else self._thresholds[-1]

    def threshold_for(self, n_chunks: float | None = None) -> float | None:
        """Threshold for a track of ``n_chunks`` chunks (rounded, at least 1; None: the longest length)."""
        if self._thresholds is None:
            return None
        if n_chunks is None:
            return self._thresholds[-1]
        return self._thresholds[min(max(round(float(n_chunks)), 1), len(self._thresholds)) - 1]

    def extra_repr(self) -> str:
        return (
            f"classes={self.num_classes}, dim={self.embedding_dim}, thresholds={self._thresholds}, "
            f"aggregation={self.aggregation!r}"
        )

    # ---- scoring -----------------------------------------------------------------------------
    def _flat(self, z) -> torch.Tensor:
        z = torch.as_tensor(z)
        if z.ndim == 3 and z.shape[1] == 1:
            z = z[:, 0]
        if z.ndim == 1:
            z = z[None]
        if z.ndim != 2 or z.shape[1] != self.embedding_dim or z.shape[0] == 0:
            raise InputShapeError(
                f"OODScorer expects z of shape (B, {self.embedding_dim}) or "
                f"(B, 1, {self.embedding_dim}) with B >= 1, got {tuple(z.shape)}"
            )
        return z.to(device=self.means.device, dtype=torch.float32)

    @torch.no_grad()
    def class_scores(self, z) -> torch.Tensor:
        """(B, C) squared Mahalanobis distance of every embedding to every class mean, divided by D."""
        zw = self._flat(z) @ self.whitening  # (B, D)
        mw = self.means @ self.whitening  # (C, D)
        d = (zw[:, None, :] - mw[None, :, :]).pow(2).sum(-1)  # (B, C), no cancellation
        return d / self.embedding_dim

    def score(self, z) -> torch.Tensor:
        """(B,) per-chunk OOD scores of raw z (B, D): the smallest of :meth:`class_scores` (higher = stranger)."""
        return self.class_scores(z).min(dim=1).values

    def _weights(self, n: int, weights) -> torch.Tensor:
        w = (
            torch.ones(n, dtype=torch.float64)
            if weights is None
            else torch.as_tensor(weights, dtype=torch.float64).reshape(-1).cpu()
        )
        if w.shape != (n,) or not bool((w >= 0).all()) or not float(w.sum()) > 0:
            raise InputShapeError(f"OOD chunk weights must be {n} non-negative numbers with a positive sum")
        return w

    @torch.no_grad()
    def track_score(self, z, weights=None) -> float:
        """Score of one track from its chunk embeddings z (n_chunks, D), as ``aggregation`` says.

        ``weights`` (n_chunks,) are the chunk durations (any unit; equal by default), so that a short
        trailing chunk counts for what it holds.
        """
        z = self._flat(z)
        w = self._weights(len(z), weights)
        if self.aggregation == "mean-embedding":
            mean = (z.double() * w.to(z.device)[:, None]).sum(0) / w.sum()
            return float(self.score(mean[None].float())[0])
        s = self.score(z).double().cpu()
        return float(s.max()) if self.aggregation == "max" else float((s * w).sum() / w.sum())

    @staticmethod
    def effective_chunks(n_chunks: int, weights=None) -> float:
        """Track length in chunks: ``sum(weights) / max(weights)`` (a trailing partial chunk counts in part)."""
        if weights is None:
            return float(n_chunks)
        w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        return float(w.sum() / w.max()) if len(w) and float(w.max()) > 0 else float(n_chunks)

    def is_in_domain(self, track_score: float, n_chunks: float | None = None) -> bool | None:
        """True when ``track_score`` is at most the threshold for ``n_chunks``; None when not calibrated."""
        threshold = self.threshold_for(n_chunks)
        return None if threshold is None else bool(track_score <= threshold)

    def assess(self, z, weights=None) -> tuple[float, bool | None]:
        """``(track score, in domain?)`` of one track's chunk embeddings z (n_chunks, D).

        ``weights`` are the chunk durations; they weight the chunks and set the track length for the threshold.
        """
        z = self._flat(z)
        score = self.track_score(z, weights)
        return score, self.is_in_domain(score, self.effective_chunks(len(z), weights))

    # ---- scales a person can read --------------------------------------------------------------
    def score_percentile(self, track_score: float, n_chunks: float | None = None) -> float | None:
        """Fraction (0-1) of held-out in-domain tracks of this length whose score is lower than
        ``track_score``: 0.97 reads "further from the training audio than 97 % of training clips".
        None without a reference."""
        ref = self.reference
        row = None if ref is None else ref.track_row(n_chunks)
        if ref is None or row is None or ref.track_scores is None:
            return None
        return OODReference._place(float(track_score), ref.track_scores[row], ref.levels)

    def reference_tracks(self, n_chunks: float | None = None) -> int | None:
        """How many held-out tracks the percentile of a track of ``n_chunks`` is measured against."""
        ref = self.reference
        row = None if ref is None else ref.track_row(n_chunks)
        return None if ref is None or row is None or ref.track_counts is None else ref.track_counts[row]

    def similarity_percentile(self, prototype: int, similarity: float) -> float | None:
        """Fraction (0-1) of the training chunks of ``prototype``'s class that are less similar to it than
        ``similarity``; None without a reference for that prototype."""
        ref = self.reference
        table = None if ref is None else ref.prototype_similarity
        if ref is None or table is None or not 0 <= int(prototype) < len(table):
            return None
        return OODReference._place(float(similarity), table[int(prototype)], ref.levels)

    # ---- files -------------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        """The ``ood.json`` content."""
        return {
            "method": OOD_METHOD,
            "version": OOD_VERSION,
            "thresholds": self._thresholds,
            "aggregation": self.aggregation,
            "embedding_dim": self.embedding_dim,
            "num_classes": self.num_classes,
            "labels": self.labels,
            "score": "min over classes c of (z - mu_c)^T Sigma^-1 (z - mu_c) / D on raw z; track score per "
            "'aggregation'; in domain when track score <= thresholds[min(n_chunks, len) - 1]",
            "calibration": self.calibration,
            "reference": None if self.reference is None else self.reference.to_dict(),
        }

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``ood.safetensors`` + ``ood.json`` into ``folder`` (created if needed); returns the folder."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {
            "means": self.means.detach().cpu().contiguous().clone(),
            "whitening": self.whitening.detach().cpu().contiguous().clone(),
        }
        atomic_write(
            folder / OOD_WEIGHTS_NAME,
            lambda tmp: save_file(state, str(tmp), metadata={"format": "pt", "method": OOD_METHOD}),
        )
        atomic_write_text(folder / OOD_CONFIG_NAME, json.dumps(self.config_dict(), indent=1, sort_keys=True) + "\n")
        return folder

    @classmethod
    def load(cls, source: str | os.PathLike | None, config: str | os.PathLike | None = None) -> OODScorer | None:
        """Load a scorer; None when there is none.

        ``source`` is a folder holding ``ood.safetensors`` + ``ood.json``, or the path of the
        ``ood.safetensors`` file (e.g. ``files.get("ood.safetensors", required=False)``, then
        ``config`` is the path of ``ood.json``, by default the file of that name next to it).
        A folder without both files or a ``source`` of None gives None, so heads saved before OOD
        scoring still load. Nothing is unpickled.

        Raises:
            CheckpointError: only one of the two files, unreadable files, or tensors that do not fit ood.json.
            ConfigError: an unknown method or a file from a newer pecmae-hub.
        """
        if source is None:
            return None
        path = Path(source)
        if path.is_dir():
            weights, config = path / OOD_WEIGHTS_NAME, path / OOD_CONFIG_NAME
            if not weights.is_file() and not config.is_file():
                return None
        else:
            weights = path
            config = Path(config) if config is not None else path.with_name(OOD_CONFIG_NAME)
        if not weights.is_file() or not config.is_file():
            raise CheckpointError(
                f"OOD scorer incomplete: {OOD_WEIGHTS_NAME} and {OOD_CONFIG_NAME} belong together "
                f"(weights found: {weights.is_file()} at {weights}; "
                f"config found: {config.is_file()} at {config})"
            )
        try:
            data = json.loads(config.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{config} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("method") != OOD_METHOD:
            found = data.get("method") if isinstance(data, dict) else data
            raise ConfigError(f"{config}: unknown OOD method {found!r} (this pecmae-hub knows {OOD_METHOD!r})")
        if int(data.get("version", 0)) > OOD_VERSION:
            raise ConfigError(
                f"{config} has OOD format version {data.get('version')}, newer than this "
                f"pecmae-hub reads ({OOD_VERSION}): upgrade pecmae-hub"
            )
        from safetensors.torch import load_file

        try:
            state = load_file(str(weights))
        except Exception as exc:
            raise CheckpointError(f"cannot read safetensors file {weights}: {exc}") from None
        if set(state) != {"means", "whitening"}:
            raise CheckpointError(f"{weights} must hold exactly 'means' and 'whitening', has {sorted(state)}")
        means, whitening = state["means"], state["whitening"]
        if (
            means.ndim != 2
            or tuple(means.shape) != (data.get("num_classes"), data.get("embedding_dim"))
            or tuple(whitening.shape) != (means.shape[1],) * 2
        ):
            raise CheckpointError(
                f"{weights}: tensors means {tuple(means.shape)}, whitening {tuple(whitening.shape)} "
                f"do not fit {config.name} "
                f"(C={data.get('num_classes')}, D={data.get('embedding_dim')})"
            )
        try:
            return cls(
                means,
                whitening,
                data.get("thresholds"),
                data.get("aggregation", "mean-embedding"),
                data.get("labels"),
                data.get("calibration"),
                data.get("reference"),
            )
        except (ConfigError, InputShapeError, TypeError, ValueError) as exc:  # a field of the wrong type or range
            raise CheckpointError(f"{config} is malformed (OOD scorer): {exc}") from None
