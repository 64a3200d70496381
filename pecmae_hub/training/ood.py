"""Fit and calibrate the out-of-domain scorer of a trained head (:class:`~pecmae_hub.models.ood.OODScorer`).

Statistics come from the training chunks: one mean per class and a covariance shared by the classes
(the pooled within-class covariance with Ledoit-Wolf shrinkage, computed here in float64 from one
block of chunks at a time, so that D=768 sets of 10^5 chunks fit in memory). The thresholds come from
held-out tracks: for every length m (in chunks) the ``quantile`` of the scores of m-chunk windows of
those tracks, so that this fraction of in-domain tracks of any calibrated length is kept. Without a
validation set, k-fold cross-fitting over the training tracks gives the held-out scores.

Why a high quantile (0.995 by default): validation tracks are drawn like the training tracks, while real
in-domain inputs differ more. GM-Solos (2-chunk clips): at the 0.95 quantile of its validation clips only
about 2/3 of the clips of the never-seen TimGM6mb bank are kept, at 0.99 84 %, at 0.995 88 %, while
93 % of generated out-of-domain clips (tones, noise, speech, drums, sine chords) are still flagged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pecmae_hub.errors import ConfigError, DatasetError, InputShapeError
from pecmae_hub.models.head import PrototypeHead
from pecmae_hub.models.ood import AGGREGATIONS, OOD_METHOD, OODScorer
from pecmae_hub.training.features import FeatureSet

DEFAULT_QUANTILE = 0.995
MAX_CHUNKS = 32  # longest track length (in chunks) given its own threshold
MIN_WINDOWS = 20  # fewest held-out windows a length needs for its own threshold


def ledoit_wolf(x, block: int = 8192) -> tuple[torch.Tensor, float]:
    """Ledoit-Wolf shrunk covariance of centred rows ``x`` (N, D): ``(cov (D, D) float64, shrinkage)``.

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
    delta_ = float(emp.pow(2).sum())  # |S|_F^2
    beta = (sum4 / n - delta_) / (dim * n)
    delta = (delta_ - 2.0 * mu * trace + dim * mu * mu) / dim  # |S - mu I|_F^2 / D
    shrinkage = 0.0 if delta <= 0 else min(beta, delta) / delta
    cov = (1.0 - shrinkage) * emp + shrinkage * mu * torch.eye(dim, dtype=torch.float64)
    return cov, float(shrinkage)


def fit_ood_scorer(x, y, num_classes: int, labels: Sequence[str] | None = None) -> tuple[OODScorer, dict]:
    """Uncalibrated :class:`OODScorer` from training chunks ``x`` (N, D) with class ids ``y`` (N,).

    Returns the scorer and ``{"shrinkage", "n_chunks"}``. Every class needs at least one chunk.
    """
    x = torch.as_tensor(np.asarray(x, dtype=np.float32))
    y = torch.as_tensor(np.asarray(y), dtype=torch.long)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise InputShapeError(f"need x (N, D) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if len(y) and not 0 <= int(y.min()) <= int(y.max()) < num_classes:
        raise DatasetError(f"class ids must be in 0..{num_classes - 1}, got {int(y.min())}..{int(y.max())}")
    counts = torch.bincount(y, minlength=num_classes)
    if (counts == 0).any():
        names = labels or [str(c) for c in range(num_classes)]
        empty = [names[c] for c in range(num_classes) if counts[c] == 0]
        raise DatasetError(f"OOD statistics need training chunks of every class; none for {empty}")
    means = torch.zeros(num_classes, x.shape[1], dtype=torch.float64)
    for s in range(0, len(x), 8192):  # float64 sums, one block at a time
        means.index_add_(0, y[s : s + 8192], x[s : s + 8192].double())
    means /= counts[:, None]
    cov, shrinkage = ledoit_wolf(x - means.float()[y])  # one float32 copy; sums in float64
    evals, evecs = torch.linalg.eigh(cov)
    evals = evals.clamp_min(float(evals.max()) * 1e-10)
    whitening = evecs / evals.sqrt()[None, :]  # W W^T = cov^-1
    return OODScorer(means.float(), whitening.float(), labels=labels), {"shrinkage": shrinkage, "n_chunks": len(x)}


def track_scores(scorer: OODScorer, features: Sequence[np.ndarray], batch: int = 16384) -> np.ndarray:
    """Track scores (n_tracks,) of per-track chunk embeddings (each (n_chunks, D)), chunks weighted equally.

    The same numbers as ``scorer.track_score`` track by track, computed in batches.
    """
    if not len(features):
        return np.zeros(0)
    arrays = [np.asarray(f, dtype=np.float32).reshape(len(f), -1) for f in features]
    if scorer.aggregation == "mean-embedding":
        means = np.stack([a.mean(0) for a in arrays])
        return np.concatenate(
            [
                scorer.score(torch.from_numpy(means[i : i + batch])).double().cpu().numpy()
                for i in range(0, len(means), batch)
            ]
        )
    flat = np.concatenate(arrays)
    owner = np.concatenate([np.full(len(a), i) for i, a in enumerate(arrays)])
    s = np.concatenate(
        [scorer.score(torch.from_numpy(flat[i : i + batch])).double().cpu().numpy() for i in range(0, len(flat), batch)]
    )
    if scorer.aggregation == "max":
        out = np.full(len(arrays), -np.inf)
        np.maximum.at(out, owner, s)
        return out
    return np.bincount(owner, weights=s, minlength=len(arrays)) / np.bincount(owner, minlength=len(arrays))


def window_scores(
    scorer: OODScorer, features: Sequence[np.ndarray], max_chunks: int = MAX_CHUNKS
) -> dict[int, np.ndarray]:
    """Scores of in-domain tracks as if they were m chunks long, for m = 1 .. ``max_chunks``.

    Every track of n >= m chunks gives its non-overlapping windows of m consecutive chunks (from the
    start); returns ``{m: scores}`` for every m some track is long enough for.
    """
    out = {}
    for m in range(1, min(max((len(f) for f in features), default=0), max_chunks) + 1):
        windows = [f[s : s + m] for f in features for s in range(0, len(f) - m + 1, m)]
        if windows:
            out[m] = track_scores(scorer, windows)
    return out


def _cross_fitted_windows(x, y, owner, n_tracks, num_classes, aggregation, folds, seed) -> tuple[dict, np.ndarray]:
    """Held-out window scores and whole-track scores by k-fold cross-fitting over tracks."""
    fold_of = np.random.default_rng(seed).permutation(n_tracks) % folds
    windows: dict[int, list] = {}
    whole = np.zeros(n_tracks)
    for k in range(folds):
        held = fold_of[owner] == k
        scorer, _ = fit_ood_scorer(x[~held], y[~held], num_classes)
        scorer.aggregation = aggregation
        tracks = np.flatnonzero(fold_of == k)
        feats = [x[owner == t] for t in tracks]
        whole[tracks] = track_scores(scorer, feats)
        for m, s in window_scores(scorer, feats).items():
            windows.setdefault(m, []).append(s)
    return {m: np.concatenate(v) for m, v in windows.items()}, whole


def calibrate_ood(
    head: PrototypeHead,
    train_features: FeatureSet,
    val_features: FeatureSet | None = None,
    quantile: float = DEFAULT_QUANTILE,
    aggregation: str = "mean-embedding",
    data: str | None = None,
    folds: int = 5,
    seed: int = 0,
    min_windows: int = MIN_WINDOWS,
) -> OODScorer:
    """Fit the OOD statistics on the training chunks and set the thresholds on held-out tracks.

    The threshold for tracks of m chunks is the ``quantile`` (``method="higher"``) of the scores of the
    m-chunk windows of the held-out tracks (:func:`window_scores`), so at least that fraction of them
    is kept; lengths with fewer than ``min_windows`` windows are not given their own threshold.
    Held-out tracks are ``val_features`` (their labels are not used); without them, ``folds``-fold
    cross-fitting over the training tracks (seeded) gives held-out scores. ``data`` describes the
    calibration data in ``ood.json``.

    Returns the calibrated scorer; ``scorer.calibration`` records the numbers (quantile, kept fraction
    of the whole held-out tracks and per length, tracks and chunks used, shrinkage, score quantiles).
    Save it with ``scorer.save(folder)``.

    Raises:
        ConfigError: ``quantile`` outside (0, 1], ``folds`` < 2, unknown ``aggregation``.
        InputShapeError: features of another embedding size than the head.
        DatasetError: a class without training chunks (also in a cross-fitting fold), or fewer than
            2 training tracks to cross-fit.
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
        held_out, feats = "validation tracks", val_features.features
        windows, whole = window_scores(scorer, feats), track_scores(scorer, feats)
        n_chunks = val_features.n_chunks
    else:
        if len(train) < 2:
            raise DatasetError("OOD calibration without validation tracks needs at least 2 training tracks")
        folds = min(folds, len(train))
        held_out, feats = f"{folds}-fold cross-fitting over the training tracks (seed {seed})", train.features
        windows, whole = _cross_fitted_windows(x, y, owner, len(train), head.num_classes, aggregation, folds, seed)
        n_chunks = len(x)
    thresholds = []
    for m in sorted(windows):  # lengths with too few windows end the table: longer tracks use its last entry
        if len(windows[m]) < min_windows and thresholds:
            break
        thresholds.append(float(np.quantile(windows[m], quantile, method="higher")))
    scorer.thresholds = thresholds
    lengths = np.asarray([len(f) for f in feats])
    kept = whole <= np.asarray([scorer.threshold_for(n) for n in lengths])
    scorer.calibration = {
        "data": data or held_out,
        "held_out": held_out,
        "quantile": quantile,
        "kept_fraction": float(np.mean(kept)),
        "n_tracks": len(whole),
        "n_chunks": int(n_chunks),
        "windows_per_length": [len(windows[m]) for m in range(1, len(thresholds) + 1)],
        "kept_per_length": [float(np.mean(windows[m] <= t)) for m, t in enumerate(thresholds, 1)],
        "n_train_tracks": len(train),
        "n_train_chunks": int(fit_info["n_chunks"]),
        "shrinkage": fit_info["shrinkage"],
        "method": OOD_METHOD,
        "package_version": _package_version(),
        "track_score_quantiles": {str(q): float(np.quantile(whole, q)) for q in (0.5, 0.9, 0.95, 0.99, 1.0)},
    }
    return scorer


def _package_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pecmae-hub")
    except PackageNotFoundError:
        return None
