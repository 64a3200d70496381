"""Out-of-domain (OOD) scoring: does an input look like the audio the head was trained on?

A prototype head always answers with one of its classes, whatever it hears (a 440 Hz sine is a
"female singer" to the GM-Solos model). :class:`OODScorer` measures how far each chunk embedding z
lies from the training embeddings: the class-conditional Mahalanobis distance with one covariance
shared by all classes (Lee et al., 2018, "A simple unified framework for detecting out-of-distribution
samples"), computed on the raw z the head receives::

    chunk score  s(z) = min_c (z - mu_c)^T Sigma^-1 (z - mu_c) / D

Dividing by D makes the score dimension-free: training chunks average about 1 for any embedding size.
A track's score aggregates its chunk scores (duration-weighted mean by default); the track is
*in domain* when its score is at most the stored ``threshold``, which
:func:`pecmae_hub.training.ood.calibrate_ood` sets on held-out tracks so that a chosen fraction of
them is kept.

Stored next to the head as ``ood.safetensors`` (``means`` (C, D) and ``whitening`` (D, D) with
``Sigma^-1 = W W^T``; a few kB for D=128, 2.4 MB for D=768) and ``ood.json`` (method, threshold,
aggregation, how it was calibrated). A head folder without them has no scorer: :meth:`OODScorer.load`
returns None.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from pecmae_hub.errors import CheckpointError, ConfigError, InputShapeError
from pecmae_hub.fileio import atomic_write, atomic_write_text

OOD_WEIGHTS_NAME = "ood.safetensors"
OOD_CONFIG_NAME = "ood.json"
OOD_METHOD = "mahalanobis-shared-cov"
OOD_VERSION = 1
AGGREGATIONS = ("mean", "max")


class OODScorer(nn.Module):
    """Class-conditional Mahalanobis OOD scorer over raw autoencoder embeddings z.

    Args:
        means: (C, D) class means of the training z.
        whitening: (D, D) matrix W with ``W W^T`` the inverse shared covariance, so that
            ``(z - mu)^T Sigma^-1 (z - mu) = |(z - mu) W|^2``.
        threshold: track scores above it are out of domain; None (not calibrated) gives no verdict.
        aggregation: how chunk scores make a track score: ``"mean"`` (duration-weighted) or ``"max"``.
        labels: the class names in id order (optional, checked against the head by callers).
        calibration: how the threshold was set (free-form JSON: data, quantile, kept fraction ...).

    It is an ``nn.Module`` (buffers only) so that ``.to(device)`` follows the head.
    """

    def __init__(self, means: torch.Tensor, whitening: torch.Tensor, threshold: float | None = None,
                 aggregation: str = "mean", labels: Sequence[str] | None = None,
                 calibration: dict[str, Any] | None = None):
        super().__init__()
        means, whitening = torch.as_tensor(means, dtype=torch.float32), torch.as_tensor(whitening, dtype=torch.float32)
        if means.ndim != 2 or whitening.ndim != 2 or whitening.shape != (means.shape[1], means.shape[1]):
            raise InputShapeError(f"OODScorer needs means (C, D) and whitening (D, D), got {tuple(means.shape)} "
                                  f"and {tuple(whitening.shape)}")
        if not (torch.isfinite(means).all() and torch.isfinite(whitening).all()):
            raise CheckpointError("OODScorer statistics contain NaN or infinite values")
        if aggregation not in AGGREGATIONS:
            raise ConfigError(f"OOD aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        if threshold is not None and not math.isfinite(float(threshold)):
            raise ConfigError(f"OOD threshold must be finite or None, got {threshold!r}")
        if labels is not None and len(labels) != means.shape[0]:
            raise ConfigError(f"OODScorer has {means.shape[0]} class means but {len(labels)} labels")
        self.register_buffer("means", means.contiguous())
        self.register_buffer("whitening", whitening.contiguous())
        self.threshold = None if threshold is None else float(threshold)
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

    def extra_repr(self) -> str:
        return (f"classes={self.num_classes}, dim={self.embedding_dim}, threshold={self.threshold}, "
                f"aggregation={self.aggregation!r}")

    # ---- scoring -----------------------------------------------------------------------------
    def _flat(self, z) -> torch.Tensor:
        z = torch.as_tensor(z)
        if z.ndim == 3 and z.shape[1] == 1:
            z = z[:, 0]
        if z.ndim == 1:
            z = z[None]
        if z.ndim != 2 or z.shape[1] != self.embedding_dim:
            raise InputShapeError(f"OODScorer expects z of shape (B, {self.embedding_dim}) or "
                                  f"(B, 1, {self.embedding_dim}), got {tuple(z.shape)}")
        return z.to(device=self.means.device, dtype=torch.float32)

    @torch.no_grad()
    def class_scores(self, z) -> torch.Tensor:
        """(B, C) squared Mahalanobis distance of every chunk to every class mean, divided by D."""
        zw = self._flat(z) @ self.whitening                     # (B, D)
        mw = self.means @ self.whitening                        # (C, D)
        d = (zw[:, None, :] - mw[None, :, :]).pow(2).sum(-1)    # (B, C), no cancellation
        return d / self.embedding_dim

    def score(self, z) -> torch.Tensor:
        """(B,) per-chunk OOD scores of raw z (B, D): the smallest of :meth:`class_scores` (higher = stranger)."""
        return self.class_scores(z).min(dim=1).values

    def aggregate(self, chunk_scores, weights=None) -> float:
        """Track score from chunk scores: their mean weighted by ``weights`` (e.g. chunk durations;
        equal by default) or their max, as ``aggregation`` says."""
        s = torch.as_tensor(chunk_scores, dtype=torch.float64).reshape(-1).cpu()
        if s.numel() == 0:
            raise InputShapeError("cannot aggregate the OOD scores of a track without chunks")
        if self.aggregation == "max":
            return float(s.max())
        w = torch.ones_like(s) if weights is None else torch.as_tensor(weights, dtype=torch.float64).reshape(-1).cpu()
        if w.shape != s.shape or not (w >= 0).all() or not w.sum() > 0:
            raise InputShapeError(f"OOD weights must be {s.numel()} non-negative numbers with a positive sum")
        return float((s * w).sum() / w.sum())

    def track_score(self, z, weights=None) -> float:
        """Score of one track from its chunk embeddings z (n_chunks, D): :meth:`score` then :meth:`aggregate`."""
        return self.aggregate(self.score(z), weights)

    def is_in_domain(self, track_score: float) -> bool | None:
        """True when ``track_score`` is at most the threshold; None for an uncalibrated scorer."""
        return None if self.threshold is None else bool(track_score <= self.threshold)

    # ---- files -------------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        """The ``ood.json`` content."""
        return {"method": OOD_METHOD, "version": OOD_VERSION, "threshold": self.threshold,
                "aggregation": self.aggregation, "embedding_dim": self.embedding_dim,
                "num_classes": self.num_classes, "labels": self.labels,
                "score": "min over classes of (z - mu_c)^T Sigma^-1 (z - mu_c) / D per chunk (raw z); "
                         "track = aggregation of chunk scores; in domain when track score <= threshold",
                "calibration": self.calibration}

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``ood.safetensors`` + ``ood.json`` into ``folder`` (created if needed); returns the folder."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {"means": self.means.detach().cpu().contiguous().clone(),
                 "whitening": self.whitening.detach().cpu().contiguous().clone()}
        atomic_write(folder / OOD_WEIGHTS_NAME,
                     lambda tmp: save_file(state, str(tmp), metadata={"format": "pt", "method": OOD_METHOD}))
        atomic_write_text(folder / OOD_CONFIG_NAME, json.dumps(self.config_dict(), indent=1, sort_keys=True) + "\n")
        return folder

    @classmethod
    def load(cls, source: str | os.PathLike | None, config: str | os.PathLike | None = None) -> "OODScorer | None":
        """Load a scorer; None when there is none.

        ``source`` is a folder holding ``ood.safetensors`` + ``ood.json``, or the path of the
        ``ood.safetensors`` file (e.g. ``files.get("ood.safetensors", required=False)``, then
        ``config`` is the path of ``ood.json``, by default the file of that name next to it).
        A missing folder file or a ``source`` of None gives None, so heads saved before OOD scoring
        still load. Nothing is unpickled.

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
            raise CheckpointError(f"OOD scorer incomplete: {OOD_WEIGHTS_NAME} and {OOD_CONFIG_NAME} belong together "
                                  f"(found weights: {weights.is_file()} at {weights}, config: {config.is_file()} at {config})")
        try:
            data = json.loads(config.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{config} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("method") != OOD_METHOD:
            raise ConfigError(f"{config}: unknown OOD method {data.get('method') if isinstance(data, dict) else data!r} "
                              f"(this pecmae-hub knows {OOD_METHOD!r})")
        if int(data.get("version", 0)) > OOD_VERSION:
            raise ConfigError(f"{config} has OOD format version {data.get('version')}, newer than this "
                              f"pecmae-hub reads ({OOD_VERSION}): upgrade pecmae-hub")
        from safetensors.torch import load_file

        try:
            state = load_file(str(weights))
        except Exception as exc:
            raise CheckpointError(f"cannot read safetensors file {weights}: {exc}") from None
        if set(state) != {"means", "whitening"}:
            raise CheckpointError(f"{weights} must hold exactly 'means' and 'whitening', has {sorted(state)}")
        means = state["means"]
        if (means.ndim != 2 or tuple(means.shape) != (data.get("num_classes"), data.get("embedding_dim"))
                or tuple(state["whitening"].shape) != (means.shape[1],) * 2):
            raise CheckpointError(f"{weights}: tensors means {tuple(means.shape)}, whitening "
                                  f"{tuple(state['whitening'].shape)} do not fit {config.name} "
                                  f"(C={data.get('num_classes')}, D={data.get('embedding_dim')})")
        try:
            return cls(means, state["whitening"], data.get("threshold"), data.get("aggregation", "mean"),
                       data.get("labels"), data.get("calibration"))
        except (ConfigError, InputShapeError) as exc:
            raise CheckpointError(f"OOD scorer in {weights.parent}: {exc}") from None
