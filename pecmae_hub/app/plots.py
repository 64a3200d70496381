"""The "why" figure of a prediction (matplotlib, Agg, object API only: safe to draw from worker threads).

Top row: the prototypes that contributed most to the predicted class and to the runner-up (bars are
``linear.weight[c, p] · similarity[p]`` averaged over chunks; their sum plus the bias is the class
logit). Bottom row: the timeline of per-chunk predictions.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # never a GUI backend, also when Gradio imports pyplot to close figures

from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

BAR_COUNT = 5  # prototypes per class panel
SILENT_LABEL, SILENT_COLOR = "(silent)", "#bbbbbb"  # chunks left out of the decision


def class_colors(labels: list[str]) -> dict[str, tuple]:
    """A stable colour per class (tab10, then tab20 for larger label sets)."""
    cmap = matplotlib.colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def ranked_classes(scores: dict[str, float]) -> list[str]:
    """Class names by decreasing score."""
    return sorted(scores, key=lambda c: -scores[c])


def top_contributions(contributions: dict[str, list[float]], label: str, count: int = BAR_COUNT) -> list[tuple[int, float]]:
    """``(prototype index, contribution)`` of the ``count`` largest contributions to ``label``."""
    values = contributions[label]
    order = sorted((p for p in range(len(values)) if abs(values[p]) > 1e-12), key=lambda p: -values[p])
    return [(p, float(values[p])) for p in order[:count]]


def prototype_name(p: int, labels: list[str], per_class: int) -> str:
    """``violin #2`` for prototype p (label-major layout: p = class · K + k)."""
    return f"{labels[p // per_class]} #{p % per_class}"


def _contribution_panel(ax, prediction, label: str, title: str, colors: dict, labels: list[str], per_class: int) -> None:
    bars = top_contributions(prediction.contributions, label)[::-1]  # largest on top
    if not bars:
        ax.set_axis_off()
        ax.set_title(f"{title}: no prototype contributes", fontsize=10, loc="left")
        return
    names = [prototype_name(p, labels, per_class) for p, _ in bars]
    values = [v for _, v in bars]
    ax.barh(range(len(bars)), values, color=[colors[labels[p // per_class]] for p, _ in bars],
            edgecolor="white", height=0.7)
    ax.set_yticks(range(len(bars)), names, fontsize=9)
    ax.axvline(0.0, color="#444", linewidth=0.8)
    ax.set_title(title, fontsize=10, loc="left", fontweight="bold")
    ax.set_xlabel("contribution to the class score", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    lo, hi = min(0.0, *values), max(0.0, *values)
    pad = 0.22 * (hi - lo or 1.0)
    ax.set_xlim(lo - (pad if lo < 0 else 0.0), hi + pad)
    for i, v in enumerate(values):
        ax.text(v + (0.02 * (hi - lo or 1.0)) * (1 if v >= 0 else -1), i, f"{v:+.3f}", va="center",
                ha="left" if v >= 0 else "right", fontsize=8, color="#333")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _timeline_panel(ax, prediction, colors: dict, ranked: list[str]) -> None:
    starts, ends, chunk_labels = prediction.chunk_starts, prediction.chunk_ends, prediction.chunk_labels
    shown = [c for c in ranked if c in set(chunk_labels) or c in ranked[:2]]
    if None in chunk_labels:  # silent chunks: no answer, shown on their own grey row
        shown.append(None)
    rows = {c: i for i, c in enumerate(reversed(shown))}
    for s, e, c in zip(starts, ends, chunk_labels):
        ax.broken_barh([(s, max(e - s, 1e-3))], (rows[c] - 0.35, 0.7), facecolors=colors.get(c, SILENT_COLOR),
                       edgecolor="white", linewidth=0.6)
    ax.set_yticks(list(rows.values()), [SILENT_LABEL if c is None else c for c in rows], fontsize=9)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlim(0, max(ends[-1] if ends else 1.0, 1e-3))
    ax.set_xlabel("time (s)", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    votes = sum(1 for c in chunk_labels if c == prediction.label)
    audible = sum(1 for c in chunk_labels if c is not None)
    ax.set_title(f"Per-chunk predictions ({votes}/{audible} audible chunks say {prediction.label})",
                 fontsize=10, loc="left", fontweight="bold")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.grid(axis="x", color="#ddd", linewidth=0.6)
    ax.set_axisbelow(True)


def explanation_figure(prediction, labels: list[str] | None = None) -> Figure:
    """The figure explaining ``prediction`` (a :class:`pecmae_hub.pipeline.Prediction`).

    ``labels`` are the model's classes in id order (default: the order of ``prediction.scores``).
    """
    labels = list(labels or prediction.contributions or prediction.scores)
    n_protos = len(next(iter(prediction.contributions.values())))
    per_class = max(1, n_protos // len(labels))
    colors = class_colors(labels)
    ranked = ranked_classes(prediction.scores)
    n_rows = len([c for c in ranked if c in set(prediction.chunk_labels) or c in ranked[:2]])
    n_rows += None in prediction.chunk_labels
    fig = Figure(figsize=(10, 4.2 + 0.32 * n_rows), dpi=110, layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=[2.6, 0.6 + 0.35 * n_rows])
    top = ranked[0]
    _contribution_panel(fig.add_subplot(grid[0, 0]), prediction, top,
                        f"Why {top} ({prediction.scores[top]:.0%})", colors, labels, per_class)
    if len(ranked) > 1:
        second = ranked[1]
        _contribution_panel(fig.add_subplot(grid[0, 1]), prediction, second,
                            f"Runner-up {second} ({prediction.scores[second]:.0%})", colors, labels, per_class)
    _timeline_panel(fig.add_subplot(grid[1, :]), prediction, colors, ranked)
    handles = [Patch(color=colors[c], label=c) for c in labels]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(labels), 8), fontsize=8, frameon=False)
    return fig
