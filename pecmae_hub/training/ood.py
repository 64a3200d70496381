"""Fit and calibrate the out-of-domain scorer of a trained head (:class:`~pecmae_hub.models.ood.OODScorer`).

Statistics come from the training chunks: one mean per class and a covariance shared by the classes
(the pooled within-class covariance with Ledoit-Wolf shrinkage, computed here in float64 from one
block of chunks at a time, so that D=768 sets of 10^5 chunks fit in memory). The thresholds come from
held-out tracks: for every length m (in chunks) the ``quantile`` of the scores of m-chunk windows of
those tracks, so that this fraction of in-domain tracks of any calibrated length is kept. Without a
validation set, k-fold cross-fitting over the training tracks gives the held-out scores.

Why leave-one-group-out: validation clips are drawn like the training clips, while real in-domain inputs
come from sources the training data does not hold. GM-Solos (2-chunk clips): thresholds set on held-out
clips of the three training banks (the 0.995 quantile, 1.44) kept only 91 % of the never-seen TimGM6mb
bank and flagged the shipped trumpet example. Set leave-one-bank-out (median bank, 0.975 quantile, 1.58)
they keep 97.5 % of TimGM6mb and every example, while 92 % of tones, noise, speech and click trains are
still flagged (``tests/models/test_ood.py`` prints the figures). Pure tones inside an instrument's range
are the hardest: about 1 in 5 is close enough to a flute or a choir "aah" to pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pecmae_hub.errors import ConfigError, DatasetError, InputShapeError
from pecmae_hub.models.head import PrototypeHead
from pecmae_hub.models.ood import AGGREGATIONS, OOD_METHOD, OODReference, OODScorer
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


def _held_out_windows(x, y, owner, fold_of, num_classes, aggregation) -> tuple[dict, np.ndarray]:
    """Held-out scores by cross-fitting: for each fold, a scorer fitted on the other folds' tracks scores
    the fold's tracks. ``fold_of[t]`` is the fold of track t. Returns ``({fold: {m: window scores}},
    whole-track scores)``."""
    per_fold: dict[int, dict[int, np.ndarray]] = {}
    whole = np.zeros(len(fold_of))
    for k in np.unique(fold_of):
        held = fold_of[owner] == k
        scorer, _ = fit_ood_scorer(x[~held], y[~held], num_classes)
        scorer.aggregation = aggregation
        tracks = np.flatnonzero(fold_of == k)
        feats = [x[owner == t] for t in tracks]
        whole[tracks] = track_scores(scorer, feats)
        per_fold[int(k)] = window_scores(scorer, feats)
    return per_fold, whole


def _pooled(per_fold: dict[int, dict[int, np.ndarray]]) -> dict[int, np.ndarray]:
    lengths = sorted({m for windows in per_fold.values() for m in windows})
    return {m: np.concatenate([w[m] for w in per_fold.values() if m in w]) for m in lengths}


#: levels of the reference quantiles: every percent, then every 0.1 % above 99 % (where verdicts fall)
REFERENCE_LEVELS = tuple(round(v, 4) for v in [i / 100 for i in range(99)] + [0.99 + i / 1000 for i in range(11)])


def reference_tables(
    head: PrototypeHead, x, y, windows: dict[int, np.ndarray], n_lengths: int, levels=REFERENCE_LEVELS
) -> OODReference:
    """The :class:`OODReference` of a calibration: quantiles of the ``windows`` scores of each calibrated
    length (1 .. ``n_lengths``; the training tracks scored by the calibrated scorer, so that a score reads
    "further from the training audio than 97 % of training clips"), and, per prototype, of the
    similarities to it of the training chunks ``x`` of its class (class ids ``y``)."""
    lv = np.asarray(levels, dtype=np.float64)
    lengths = [m for m in range(1, n_lengths + 1) if m in windows]  # longer tracks use the last row
    rows = [_rounded(np.quantile(windows[m], lv)) for m in lengths]
    counts = [len(windows[m]) for m in lengths]
    was_training, sims = head.training, []
    head.eval()  # the similarities classification sees (summariser in eval mode)
    try:
        with torch.no_grad():
            for s in range(0, len(x), 8192):
                z = torch.as_tensor(np.asarray(x[s : s + 8192], dtype=np.float32), device=head.protos.device)
                sims.append(head.similarities(z).double().cpu().numpy())
    finally:
        head.train(was_training)
    sim = np.concatenate(sims)
    y = np.asarray(y)
    table = [_rounded(np.quantile(sim[y == head.prototype_class(p), p], lv)) for p in range(head.num_prototypes)]
    return OODReference(lv.tolist(), rows, counts, table)


def _rounded(values: np.ndarray) -> list[float]:
    """Quantiles to 6 significant digits (ood.json stays readable; percentiles move by < 1e-5)."""
    return [float(f"{v:.6g}") for v in np.maximum.accumulate(values)]


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
    groups: Sequence[str] | None = None,
) -> OODScorer:
    """Fit the OOD statistics on the training chunks and set the thresholds on held-out tracks.

    The threshold for tracks of m chunks is the ``quantile`` (``method="higher"``) of the scores of the
    m-chunk windows of the held-out tracks (:func:`window_scores`), so at least that fraction of them
    is kept; lengths with fewer than ``min_windows`` windows are not given their own threshold.
    Held-out tracks are, in order of preference:

    - with ``groups`` (one name per training track, e.g. the sound bank or the recording source):
      **leave-one-group-out**. Each group is scored by a scorer fitted on the other groups only, and the
      threshold is the median over the groups of their ``quantile``, so that a typical group the scorer
      never saw keeps that fraction of its tracks. This is the honest setting when real inputs come from
      sources the training data does not hold: a held-out split of the same sources under-states how
      far a new source lies. The median, not the largest, because a scorer fitted on all but one group
      is narrower than the shipped one fitted on all of them, and one outlying group would otherwise set
      a threshold that lets everything through (``kept_per_group`` records every group);
    - ``val_features`` (their labels are not used);
    - ``folds``-fold cross-fitting over the training tracks (seeded).

    ``data`` describes the calibration data in ``ood.json``. The statistics of the returned scorer come
    from every training track, whatever the held-out scheme.

    Returns the calibrated scorer; ``scorer.calibration`` records the numbers (quantile, kept fraction
    of the whole held-out tracks, per length and per group, tracks and chunks used, shrinkage, score
    quantiles) and ``scorer.reference`` the tables of :func:`reference_tables`. Save it with
    ``scorer.save(folder)``.

    Raises:
        ConfigError: ``quantile`` outside (0, 1], ``folds`` < 2, unknown ``aggregation``, ``groups`` of the
            wrong length, with fewer than 2 groups, or together with ``val_features``.
        InputShapeError: features of another embedding size than the head.
        DatasetError: a class without training chunks (also in a cross-fitting fold or without a group),
            or fewer than 2 training tracks to cross-fit.
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
    if groups is not None:
        groups = [str(g) for g in groups]
        if len(groups) != len(train) or len(set(groups)) < 2 or val_features is not None:
            raise ConfigError(
                f"groups must name the group of each of the {len(train)} training tracks, with at least 2 groups, "
                f"and cannot be combined with validation tracks (got {len(groups)} names, "
                f"{len(set(groups))} groups)"
            )
    x, y, owner = train.chunks()
    scorer, fit_info = fit_ood_scorer(x, y, head.num_classes, head.labels)
    scorer.aggregation = aggregation
    group_names: list[str] = []
    if groups is not None:
        group_names = sorted(set(groups))
        fold_of = np.asarray([group_names.index(g) for g in groups])
        held_out = f"leave-one-group-out over {len(group_names)} groups ({', '.join(group_names)})"
        per_fold, whole = _held_out_windows(x, y, owner, fold_of, head.num_classes, aggregation)
        windows, feats, n_chunks = _pooled(per_fold), train.features, len(x)
    elif val_features is not None and len(val_features):
        held_out, feats = "validation tracks", val_features.features
        per_fold = {0: window_scores(scorer, feats)}
        windows, whole = per_fold[0], track_scores(scorer, feats)
        n_chunks = val_features.n_chunks
    else:
        if len(train) < 2:
            raise DatasetError("OOD calibration without validation tracks needs at least 2 training tracks")
        folds = min(folds, len(train))
        held_out, feats = f"{folds}-fold cross-fitting over the training tracks (seed {seed})", train.features
        fold_of = np.random.default_rng(seed).permutation(len(train)) % folds
        per_fold, whole = _held_out_windows(x, y, owner, fold_of, head.num_classes, aggregation)
        windows, n_chunks = _pooled(per_fold), len(x)
    thresholds = []
    for m in sorted(windows):  # lengths with too few windows end the table: longer tracks use its last entry
        if len(windows[m]) < min_windows and thresholds:
            break
        if groups is not None:  # a typical group the scorer did not see keeps its share
            thresholds.append(
                float(np.median([np.quantile(w[m], quantile, method="higher") for w in per_fold.values() if m in w]))
            )
        else:
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
    if groups is not None:
        scorer.calibration["kept_per_group"] = {
            g: float(np.mean(kept[fold_of == i])) for i, g in enumerate(group_names)
        }
    scorer.reference = reference_tables(head, x, y, window_scores(scorer, train.features), len(thresholds))
    return scorer


def _package_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pecmae-hub")
    except PackageNotFoundError:
        return None
