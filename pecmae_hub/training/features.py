"""Feature sets: per-track chunk embeddings on disk (as written by ``pecmae extract``) plus labels.

Split files are TSVs with lines ``label<TAB>relative/path[.npy|.wav|...]`` (as the upstream
groundtruth files), read by :func:`pecmae_hub.data.split_files.read_tsv`. Each path resolves to
``<features_dir>/<relpath with suffix .npy>``.
Missing feature files are reported (count and first names) and skipped, as upstream.
Label order comes from an explicit list, else ``labels.txt`` in the features folder, else the
first-seen order of the training split - never Python set order (upstream bug §12.14).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pecmae_hub.audio import AUDIO_EXTENSIONS
from pecmae_hub.data.split_files import LABELS_FILE, parse_labels, read_tsv
from pecmae_hub.errors import DatasetError, InputShapeError

log = logging.getLogger(__name__)


@dataclass
class FeatureSet:
    """In-memory tracks: ``features[i]`` is the (n_chunks, D) float32 z of track ``track_ids[i]``
    whose class id is ``labels[i]`` (an index into ``label_names``)."""

    features: list[np.ndarray]
    labels: list[int]
    track_ids: list[str]
    label_names: list[str]
    missing: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not (len(self.features) == len(self.labels) == len(self.track_ids)):
            raise DatasetError(
                "features, labels and track_ids differ in length: "
                f"{len(self.features)}, {len(self.labels)}, {len(self.track_ids)}"
            )
        fixed, dims = [], set()
        for f, tid in zip(self.features, self.track_ids):
            a = _as_chunks(np.asarray(f), tid)
            dims.add(a.shape[1])
            fixed.append(a)
        if len(dims) > 1:
            raise InputShapeError(
                f"tracks have different embedding sizes {sorted(dims)}; all features must come from one autoencoder"
            )
        self.features = fixed
        self.labels = [int(y) for y in self.labels]
        bad = [y for y in self.labels if not 0 <= y < len(self.label_names)]
        if bad:
            raise DatasetError(f"class ids {sorted(set(bad))} out of range for {len(self.label_names)} labels")

    def __len__(self) -> int:
        return len(self.features)

    @property
    def embedding_dim(self) -> int:
        if not self.features:
            raise DatasetError("the feature set is empty")
        return self.features[0].shape[1]

    @property
    def n_chunks(self) -> int:
        return sum(len(f) for f in self.features)

    def chunks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All chunks as ``(X (N, D) float32, y (N,) int64, track index (N,) int64)``."""
        if not self.features:
            raise DatasetError("the feature set is empty: no track could be loaded")
        x = np.concatenate(self.features).astype(np.float32, copy=False)
        y = np.concatenate([np.full(len(f), lab, dtype=np.int64) for f, lab in zip(self.features, self.labels)])
        t = np.concatenate([np.full(len(f), i, dtype=np.int64) for i, f in enumerate(self.features)])
        return x, y, t

    def with_label_names(self, names: Sequence[str]) -> FeatureSet:
        """The same tracks with class ids re-mapped to the order of ``names``."""
        names = list(names)
        if names == self.label_names:
            return self
        index = {n: i for i, n in enumerate(names)}
        unknown = sorted({self.label_names[y] for y in self.labels} - set(index))
        if unknown:
            raise DatasetError(f"labels {unknown} are not among the model's classes {names}")
        labels = [index[self.label_names[y]] for y in self.labels]
        return FeatureSet(self.features, labels, self.track_ids, names, self.missing)

    @classmethod
    def from_arrays(cls, features, labels, track_ids=None, label_names=None) -> FeatureSet:
        """Build from arrays; ``labels`` may be names (mapped via ``label_names`` or first-seen order) or ids."""
        labels = list(labels)
        track_ids = (
            [str(t) for t in track_ids] if track_ids is not None else [f"track{i:05d}" for i in range(len(labels))]
        )
        if labels and isinstance(labels[0], str):
            names = list(label_names) if label_names is not None else list(dict.fromkeys(labels))
            index = {n: i for i, n in enumerate(names)}
            unknown = sorted(set(labels) - set(index))
            if unknown:
                raise DatasetError(f"labels {unknown} are not in the label list {names}")
            labels = [index[x] for x in labels]
        elif label_names is None:
            raise DatasetError("integer labels need label_names")
        return cls(list(features), labels, track_ids, list(label_names if label_names is not None else names))


def _as_chunks(a: np.ndarray, name: str) -> np.ndarray:
    if a.ndim == 3 and a.shape[1] == 1:  # paper-era layout (n, 1, D)
        a = a[:, 0]
    elif a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[0] == 0:
        raise InputShapeError(f"features of {name} must have shape (n_chunks, D) or (n_chunks, 1, D), got {a.shape}")
    if not np.isfinite(a).all():
        raise InputShapeError(f"features of {name} contain NaN or infinite values")
    return a.astype(np.float32, copy=False)


def feature_path(features_dir: str | os.PathLike, relpath: str) -> Path:
    """``<features_dir>/<relpath>`` with an audio or .npy suffix replaced by (or without one, given) ``.npy``."""
    rel = Path(relpath)
    if rel.suffix.lower() in AUDIO_EXTENSIONS + (".npy",):
        rel = rel.with_suffix(".npy")
    else:
        rel = rel.with_name(rel.name + ".npy")
    return Path(features_dir) / rel


def resolve_labels(labels=None, features_dir=None, rows: Sequence[tuple[str, str]] = ()) -> list[str]:
    """Label order: ``labels`` if given, else ``<features_dir>/labels.txt``, else first-seen order of ``rows``."""
    if labels is not None:
        return parse_labels(labels)
    if features_dir is not None and (Path(features_dir) / LABELS_FILE).is_file():
        return parse_labels(Path(features_dir) / LABELS_FILE)
    if not rows:
        raise DatasetError("cannot determine the class labels: pass labels or put a labels.txt in the features folder")
    return list(dict.fromkeys(label for label, _ in rows))


def load_features(features_dir: str | os.PathLike, split, label_names: Sequence[str] | None = None) -> FeatureSet:
    """Load the tracks of a split (a TSV path or a list of ``(label, relpath)`` items) from ``features_dir``.

    Missing files are reported and skipped. Raises DatasetError for a label outside ``label_names``
    (naming it) or when nothing can be loaded.
    """
    if isinstance(split, (str, os.PathLike)):
        rows = read_tsv(split)
    else:
        rows, split = [(str(a), str(b)) for a, b in split], "<items>"
    if not rows:
        raise DatasetError(f"split {split} has no rows")
    names = list(label_names) if label_names is not None else resolve_labels(None, features_dir, rows)
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted({label for label, _ in rows} - set(index))
    if unknown:
        raise DatasetError(f"split {split} uses labels {unknown} that are not in the label list {names}")
    seen: dict[str, str] = {}
    feats, labels, ids, missing = [], [], [], []
    for label, rel in rows:
        if rel in seen:
            if seen[rel] != label:
                raise DatasetError(f"split {split} gives {rel} two labels: {seen[rel]!r} and {label!r}")
            continue
        seen[rel] = label
        path = feature_path(features_dir, rel)
        if not path.is_file():
            missing.append(rel)
            continue
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise DatasetError(f"cannot read feature file {path}: {exc}") from None
        feats.append(_as_chunks(arr, str(path)))
        labels.append(index[label])
        ids.append(rel)
    if missing:
        log.warning(
            "%s: %d of %d feature files missing, skipped (first: %s)",
            split,
            len(missing),
            len(seen),
            ", ".join(missing[:5]),
        )
    if not feats:
        raise DatasetError(
            f"no feature file of split {split} was found under {features_dir} (first missing: {missing[:3]})"
        )
    return FeatureSet(feats, labels, ids, names, missing)


def compute_norm_stats(x: np.ndarray) -> tuple[float, float]:
    """Scalar (mean, std) as upstream (docs/architecture.md §9.1): mean of per-chunk means, mean of
    per-chunk population stds."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    if len(x) == 0:
        raise DatasetError("cannot compute normalisation statistics of an empty training set")
    mean, std = float(x.mean(1).mean()), float(x.std(1).mean())
    if not std > 0:
        raise DatasetError("training features have zero spread (std 0): every chunk is constant")
    return mean, std


def norm_stats_from_split(features_dir: str | os.PathLike, split) -> tuple[float, float]:
    """The upstream scalar normalisation statistics recomputed from the feature files of a training split.

    ``split`` is a TSV path or ``(label, relpath)`` items, as for :func:`load_features`.
    """
    rows = read_tsv(split) if isinstance(split, (str, os.PathLike)) else [(str(a), str(b)) for a, b in split]
    # the label order is irrelevant for the statistics: take the split's own first-seen order
    labels = list(dict.fromkeys(label for label, _ in rows))
    return compute_norm_stats(load_features(features_dir, split, label_names=labels).chunks()[0])
