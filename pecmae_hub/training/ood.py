"""Fit and calibrate the out-of-domain scorer of a trained head (:class:`~pecmae_hub.models.ood.OODScorer`).

Statistics come from the training chunks: one mean per class and a covariance shared by the classes
(the pooled within-class covariance with Ledoit-Wolf shrinkage, computed here in float64 without
holding more than a block of chunks twice, so that D=768 sets of 10^5 chunks fit in memory). The
threshold comes from held-out tracks: the ``quantile`` of their track scores, so that this fraction
of in-domain tracks is kept. Without a validation set, the held-out scores come from k-fold
cross-fitting over the training tracks.

Why a high quantile (0.99 by default): validation tracks are drawn like the training tracks, while real
in-domain inputs differ more (GM-Solos: clips of the never-seen TimGM6mb bank score higher than held-out
clips of the training banks; at the 0.95 quantile of validation only about 2/3 of them are kept, at 0.99
about 88 %).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from pecmae_hub.errors import ConfigError, DatasetError, InputShapeError
from pecmae_hub.models.head import PrototypeHead
from pecmae_hub.models.ood import AGGREGATIONS, OOD_METHOD, OODScorer
from pecmae_hub.training.features import FeatureSet

DEFAULT_QUANTILE = 0.99


def ledoit_wolf(x, block: int = 8192) -> tuple[torch.Tensor, float]:
    """Ledoit-Wolf shrunk covariance of rows ``x`` (N, D) that are already centred; returns (cov (D, D) float64, shrinkage).

    Same estimate as ``sklearn.covariance.LedoitWolf(assume_centered=True)``, computed blockwise.
    """
    x = torch.as_tensor(x)
    n, dim = x.shape
    if n < 2:
        raise DatasetError(f"need at least 2 chunks to estimate a covariance, got {n}")
    emp = torch.zeros(dim, dim, dtype=torch.float64)
    sum4 = 0.0
    for s in range(0, n, block):
        xb = x[s : s + block].to(torch.float64)
        emp += xb.T @ xb
        sum4 += float(xb.pow(2).sum(1).pow(2).sum())
    emp /= n
    trace = float(torch.trace(emp))
    mu = trace / dim
    delta_ = float(emp.pow(2).sum())                     # |S|_F^2
    beta = (sum4 / n - delta_) / (dim * n)
    delta = (delta_ - 2.0 * mu * trace + dim * mu * mu) / dim  # |S - mu I|_F^2 / D
    shrinkage = 0.0 if delta <= 0 else min(beta, delta) / delta
    cov = (1.0 - shrinkage) * emp + shrinkage * mu * torch.eye(dim, dtype=torch.float64)
    return cov, float(shrinkage)


def fit_ood_scorer(x, y, num_classes: int, labels: Sequence[str] | None = None) -> tuple[OODScorer, dict]:
    """Uncalibrated :class:`OODScorer` from training chunks ``x`` (N, D) with class ids ``y`` (N,).

    Returns the scorer and ``{"shrinkage", "n_chunks"}``. Every class needs at least one chunk.
    """
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(y), dtype=torch.long)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise InputShapeError(f"need x (N, D) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    counts = torch.bincount(y, minlength=num_classes)
    if len(counts) > num_classes or (counts == 0).any():
        names = labels or [str(c) for c in range(num_classes)]
        empty = [names[c] for c in range(num_classes) if counts[c] == 0]
        raise DatasetError(f"OOD statistics need training chunks of every class; none for {empty}"
                           if empty else f"class ids must be < {num_classes}")
    means = torch.zeros(num_classes, x.shape[1], dtype=torch.float64).index_add_(0, y, x) / counts[:, None]
    cov, shrinkage = ledoit_wolf(x - means[y])
    evals, evecs = torch.linalg.eigh(cov)
    evals = evals.clamp_min(float(evals.max()) * 1e-10)
    whitening = evecs / evals.sqrt()[None, :]            # W W^T = cov^-1
    return OODScorer(means.float(), whitening.float(), labels=labels), {"shrinkage": shrinkage, "n_chunks": len(x)}


def track_scores(scorer: OODScorer, features: Sequence[np.ndarray], batch_chunks: int = 16384) -> np.ndarray:
    """Track scores (n_tracks,) of per-track chunk embeddings (each (n_chunks, D)), chunks weighted equally."""
    if not len(features):
        return np.zeros(0)
    flat = np.concatenate([np.asarray(f, dtype=np.float32).reshape(len(f), -1) for f in features])
    owner = np.concatenate([np.full(len(f), i) for i, f in enumerate(features)])
    s = torch.cat([scorer.score(torch.from_numpy(flat[i : i + batch_chunks])).cpu()
                   for i in range(0, len(flat), batch_chunks)]).double().numpy()
    if scorer.aggregation == "max":
        out = np.full(len(features), -np.inf)
        np.maximum.at(out, owner, s)
        return out
    return np.bincount(owner, weights=s, minlength=len(features)) / np.bincount(owner, minlength=len(features))


def _cross_fitted_scores(x, y, owner, n_tracks, num_classes, aggregation, folds, seed) -> np.ndarray:
    """Held-out track scores by k-fold cross-fitting over tracks (statistics fitted on the other folds)."""
    fold_of = np.random.default_rng(seed).permutation(n_tracks) % folds
    scores = np.zeros(n_tracks)
    for k in range(folds):
        held = fold_of[owner] == k
        scorer, _ = fit_ood_scorer(x[~held], y[~held], num_classes)
        scorer.aggregation = aggregation
        tracks = np.flatnonzero(fold_of == k)
        scores[tracks] = track_scores(scorer, [x[owner == t] for t in tracks])
    return scores


def calibrate_ood(head: PrototypeHead, train_features: FeatureSet, val_features: FeatureSet | None = None,
                  quantile: float = DEFAULT_QUANTILE, aggregation: str = "mean", data: str | None = None,
                  folds: int = 5, seed: int = 0) -> OODScorer:
    """Fit the OOD statistics on the training chunks and set the threshold on held-out tracks.

    The threshold is the ``quantile`` of the held-out track scores (``method="higher"``), so at least
    that fraction of them is kept. Held-out tracks are ``val_features`` (their labels are not used);
    without them, ``folds``-fold cross-fitting over the training tracks (seeded) gives held-out
    scores. ``data`` describes the calibration data in ``ood.json``.

    Returns the calibrated scorer; ``scorer.calibration`` records the numbers (quantile, kept
    fraction, tracks and chunks used, shrinkage, score quantiles). Save it with ``scorer.save(folder)``.

    Raises:
        ConfigError: ``quantile`` outside (0, 1], ``folds`` < 2, unknown ``aggregation``.
        InputShapeError: features of another embedding size than the head.
        DatasetError: a class without training chunks, or too few tracks to cross-fit.
    """
    if not 0.0 < quantile <= 1.0:
        raise ConfigError(f"quantile must be in (0, 1], got {quantile}")
    if folds < 2:
        raise ConfigError(f"folds must be >= 2, got {folds}")
    if aggregation not in AGGREGATIONS:
        raise ConfigError(f"OOD aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    train = train_features.with_label_names(head.labels)
    for name, fs in (("training", train), ("validation", val_features)):
        if fs is not None and fs.embedding_dim != head.embedding_dim:
            raise InputShapeError(f"{name} features have D={fs.embedding_dim}, the head expects D={head.embedding_dim}")
    x, y, owner = train.chunks()
    scorer, fit_info = fit_ood_scorer(x, y, head.num_classes, head.labels)
    scorer.aggregation = aggregation
    if val_features is not None and len(val_features):
        held_out = "validation tracks"
        scores = track_scores(scorer, val_features.features)
        n_chunks = val_features.n_chunks
    else:
        if len(train) < 2 * folds:
            raise DatasetError(f"{len(train)} training tracks are too few for {folds}-fold OOD calibration")
        held_out = f"{folds}-fold cross-fitting over the training tracks (seed {seed})"
        scores = _cross_fitted_scores(x, y, owner, len(train), head.num_classes, aggregation, folds, seed)
        n_chunks = len(x)
    threshold = float(np.quantile(scores, quantile, method="higher"))
    scorer.threshold = threshold
    scorer.calibration = {
        "data": data or held_out, "held_out": held_out, "quantile": quantile,
        "kept_fraction": float(np.mean(scores <= threshold)), "n_tracks": int(len(scores)), "n_chunks": int(n_chunks),
        "n_train_tracks": len(train), "n_train_chunks": int(fit_info["n_chunks"]),
        "shrinkage": fit_info["shrinkage"], "method": OOD_METHOD, "package_version": _package_version(),
        "score_quantiles": {str(q): float(np.quantile(scores, q)) for q in (0.5, 0.9, 0.95, 0.99, 1.0)},
    }
    return scorer


def _package_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pecmae-hub")
    except PackageNotFoundError:
        return None
