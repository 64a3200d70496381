"""``pecmae evaluate``: track-level metrics of a prototype head, plus embedding baselines.

A track is predicted by the argmax of the mean of its chunk logits (docs/architecture.md §8.5). Per-class rows use
the head's label names in id order (fixes upstream, docs/architecture.md §12.14). With a training split, the same
embeddings also train a linear probe (logistic regression, track score = mean decision score) and
the upstream MLP baseline (docs/architecture.md §10.1), so the report gives the retention: prototype accuracy / baseline
accuracy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pecmae_hub.models.head import PrototypeHead
from pecmae_hub.models.modes import evaluating
from pecmae_hub.storage.atomic import atomic_write_text
from pecmae_hub.training.features import FeatureSet


@torch.no_grad()
def chunk_logits(head: PrototypeHead, x, batch_size: int = 4096) -> torch.Tensor:
    """(N, C) logits of raw chunks ``x`` (N, D), computed in eval mode (the head's mode is restored)."""
    with evaluating(head):
        x = torch.as_tensor(x)
        return torch.cat([head(x[s : s + batch_size]).float().cpu() for s in range(0, len(x), batch_size)])


def mean_by_track(values: torch.Tensor | np.ndarray, track_index, n_tracks: int) -> np.ndarray:
    """Average the rows of ``values`` (N, C) per track (``track_index`` (N,)) -> (n_tracks, C)."""
    values = torch.as_tensor(values, dtype=torch.float64)
    idx = torch.as_tensor(np.asarray(track_index), dtype=torch.long)
    sums = torch.zeros(n_tracks, values.shape[1], dtype=torch.float64).index_add_(0, idx, values)
    counts = torch.bincount(idx, minlength=n_tracks).clamp_min(1).to(torch.float64)
    return (sums / counts[:, None]).numpy()


def track_logits(head: PrototypeHead, fs: FeatureSet, batch_size: int = 4096) -> np.ndarray:
    """(n_tracks, C) mean chunk logits of every track of ``fs``."""
    x, _, t = fs.chunks()
    return mean_by_track(chunk_logits(head, x, batch_size), t, len(fs))


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], label_names: Sequence[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support (keyed by label name) and the confusion matrix."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    ids = list(range(len(label_names)))
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    present = s > 0  # macro-F1 over the classes that occur in the evaluated split
    return {
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else float("nan"),
        "macro_f1": float(f[present].mean()) if present.any() else float("nan"),
        "n_tracks": len(y_true),
        "per_class": {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, name in enumerate(label_names)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
    }


def linear_probe(train_set: FeatureSet, test_set: FeatureSet, norm_mean: float, norm_std: float, seed: int = 0) -> dict:
    """Logistic regression on normalised chunk z; track prediction = argmax of mean decision scores."""
    from sklearn.linear_model import LogisticRegression

    xtr, ytr, _ = train_set.chunks()
    xte, _, tte = test_set.chunks()
    scale = 2.0 * norm_std
    clf = LogisticRegression(max_iter=1000, random_state=seed).fit((xtr - norm_mean) / scale, ytr)
    scores = clf.decision_function((xte - norm_mean) / scale)
    if scores.ndim == 1:  # binary: sklearn returns the score of classes_[1]
        scores = np.stack([-scores, scores], axis=1)
    full = np.full((len(xte), len(train_set.label_names)), -np.inf)
    full[:, clf.classes_] = scores
    tr = mean_by_track(np.where(np.isfinite(full), full, -1e30), tte, len(test_set))
    return classification_metrics(test_set.labels, tr.argmax(1), test_set.label_names)


def mlp_baseline(
    train_set: FeatureSet,
    test_set: FeatureSet,
    norm_mean: float,
    norm_std: float,
    steps: int = 2000,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
) -> dict:
    """Upstream MLP baseline (docs/architecture.md §10.1): Linear(D, 128), ReLU, Linear(128, C);
    Adam(lr, wd 1e-5), CE, final weights."""
    xtr, ytr, _ = train_set.chunks()
    xte, _, tte = test_set.chunks()
    scale = 2.0 * norm_std
    xtr_t = torch.from_numpy((xtr - norm_mean) / scale).float()
    ytr_t = torch.from_numpy(ytr)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mlp = nn.Sequential(nn.Linear(xtr.shape[1], 128), nn.ReLU(), nn.Linear(128, len(train_set.label_names)))
        opt = torch.optim.Adam(mlp.parameters(), lr=lr, weight_decay=1e-5)
        g = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            idx = torch.randint(len(xtr_t), (min(batch_size, len(xtr_t)),), generator=g)
            loss = nn.functional.cross_entropy(mlp(xtr_t[idx]), ytr_t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        logits = mlp(torch.from_numpy((xte - norm_mean) / scale).float())
    tr = mean_by_track(logits, tte, len(test_set))
    return classification_metrics(test_set.labels, tr.argmax(1), test_set.label_names)


def plot_confusion_matrix(cm, label_names: Sequence[str], path: str | os.PathLike, title: str = "") -> Path:
    """Save a confusion-matrix PNG (rows: true class, columns: predicted class)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    n = len(label_names)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 + 0.6 * n), max(3.5, 1.2 + 0.55 * n)))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), label_names, rotation=45, ha="right")
    ax.set_yticks(range(n), label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(n):
        for j in range(n):
            color = "white" if cm[i, j] > cm.max() / 2 else "black"
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color=color)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def evaluate_head(
    head: PrototypeHead,
    test_set: FeatureSet,
    train_set: FeatureSet | None = None,
    out_dir: str | os.PathLike | None = None,
    *,
    mlp_steps: int = 2000,
    seed: int = 0,
) -> dict:
    """Evaluate ``head`` on ``test_set`` (track level); with ``train_set`` also the linear probe and MLP.

    Writes ``evaluation.json`` and ``confusion_matrix.png`` to ``out_dir`` when given. Returns the
    result dict: ``prototype`` (and ``linear_probe``, ``mlp``) metrics, ``retention``, ``predictions``.
    """
    names = head.labels
    test_set = test_set.with_label_names(names)
    logits = track_logits(head, test_set)
    pred = logits.argmax(1)
    result = {
        "labels": names,
        "n_tracks": len(test_set),
        "n_chunks": test_set.n_chunks,
        "missing_tracks": len(test_set.missing),
        "prototype": classification_metrics(test_set.labels, pred, names),
        "linear_probe": None,
        "mlp": None,
        "retention": {},
        "predictions": [
            {"track": t, "label": names[y], "predicted": names[p]}
            for t, y, p in zip(test_set.track_ids, test_set.labels, pred)
        ],
    }
    if train_set is not None:
        train_set = train_set.with_label_names(names)
        mu, sd = head.config.norm_mean, head.config.norm_std
        if len(set(train_set.labels)) >= 2:
            result["linear_probe"] = linear_probe(train_set, test_set, mu, sd, seed)
        if mlp_steps > 0:
            result["mlp"] = mlp_baseline(train_set, test_set, mu, sd, steps=mlp_steps, seed=seed)
        acc = result["prototype"]["accuracy"]
        for key in ("linear_probe", "mlp"):
            if result[key] is not None and result[key]["accuracy"] > 0:
                result["retention"][key] = acc / result[key]["accuracy"]
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "evaluation.json", json.dumps(result, indent=1) + "\n")
        plot_confusion_matrix(
            result["prototype"]["confusion_matrix"],
            names,
            out / "confusion_matrix.png",
            f"prototype head: accuracy {result['prototype']['accuracy']:.3f}",
        )
    return result


def format_report(result: dict) -> str:
    """A readable text report of an :func:`evaluate_head` result."""
    m = result["prototype"]
    width = max(12, *(len(n) for n in result["labels"]))
    lines = [f"{'class':>{width}}  precision  recall  f1-score  support"]
    for name, row in m["per_class"].items():
        lines.append(
            f"{name:>{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  {row['f1']:8.3f}  {row['support']:7d}"
        )
    lines.append("")
    lines.append(
        f"prototype head: track accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} "
        f"({result['n_tracks']} tracks, {result['n_chunks']} chunks)"
    )
    for key, title in (("linear_probe", "linear probe"), ("mlp", "MLP baseline")):
        if result.get(key):
            ret = result["retention"].get(key)
            lines.append(
                f"{title}: track accuracy {result[key]['accuracy']:.4f}, macro-F1 {result[key]['macro_f1']:.4f}"
                + (f"; retention {ret:.1%}" if ret is not None else "")
            )
    return "\n".join(lines)
