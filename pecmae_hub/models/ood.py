"""Out-of-domain (OOD) scoring: does an input look like the audio the head was trained on?

A prototype head always answers with one of its classes, whatever it hears (a 440 Hz sine is a
"female singer" to the GM-Solos model). :class:`OODScorer` measures how far embeddings lie from the
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

Stored next to the head as ``ood.safetensors`` (``means`` (C, D) and ``whitening`` (D, D) with
``Sigma^-1 = W W^T``; 68 kB for D=128, 2.4 MB for D=768) and ``ood.json`` (method, thresholds,
aggregation, how it was calibrated). A head folder without them has no scorer:
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
            )
        except (ConfigError, InputShapeError) as exc:
            raise CheckpointError(f"OOD scorer in {weights.parent}: {exc}") from None
