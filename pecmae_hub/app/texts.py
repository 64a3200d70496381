"""Markdown and JSON shown by the app: prediction summaries, prototype captions, model card and facts."""
from __future__ import annotations

import re

from pecmae_hub.app.access import display_name
from pecmae_hub.app.models import model_files, optional_file
from pecmae_hub.app.plots import ranked_classes
from pecmae_hub.app.settings import format_seconds

_FRONT_MATTER = re.compile(r"\A---\s*\n.*?\n---\s*\n", re.S)


def summary_text(prediction) -> str:
    """One paragraph on a prediction: label, confidence, runner-up, length and chunk votes."""
    ranked = ranked_classes(prediction.scores)
    votes = sum(1 for c in prediction.chunk_labels if c == prediction.label)
    n = len(prediction.chunk_labels)
    silent = n - sum(prediction.audible)
    text = f"### {prediction.label} — {prediction.scores[prediction.label]:.1%}\n\n"
    if len(ranked) > 1:
        text += f"Runner-up: **{ranked[1]}** ({prediction.scores[ranked[1]]:.1%}). "
    text += (f"{format_seconds(round(prediction.duration, 2))} of audio in {n} chunk{'s' * (n != 1)}; "
             f"{votes} of them vote **{prediction.label}** on their own.")
    if silent:
        text += f" {silent} silent chunk{'s' * (silent != 1)} took no part in the decision."
    return text


def nearest_text(rows: list[dict], limit: int = 3) -> str:
    """Markdown list of the nearest training chunks of a prototype: track id, chunk, distance."""
    return "\n".join(f"- `{r.get('track')}` · chunk {r.get('chunk')} · d = {float(r.get('distance', 0.0)):.3f}"
                     for r in rows[:limit])


def prototype_caption(rank: int, item: dict, has_audio: bool = True) -> str:
    """Caption of a top prototype: class, k, index, contribution, similarity and nearest training chunks."""
    text = (f"**#{rank} · {item['class']} · prototype {item['k']}** (p{item['p']})  \n"
            f"contribution {item['contribution']:+.3f} · similarity {item.get('similarity', 0.0):.3f}")
    if item.get("nearest"):
        text += "  \nNearest training chunks:\n" + nearest_text(item["nearest"])
    else:
        text += "  \n_No nearest-training-sample table ships with this model._"
    if not has_audio:
        text += "  \n_No pre-rendered audio: decode it in the Prototypes tab._"
    return text


def model_card(model) -> str:
    """The model card (README.md) without its YAML front matter, or a short stand-in."""
    path = optional_file(model, "README.md")
    if path is None:
        return f"# {model.name}\n\n_This model has no model card (README.md)._"
    return _FRONT_MATTER.sub("", path.read_text(encoding="utf-8"), count=1).strip()


_QUALITY = re.compile(r"acc|f1|precision|recall|auc|map|loss|error", re.I)


def _metric_rows(metrics: dict | None) -> list[tuple[str, float]]:
    """Quality metrics of a ``metrics.json``: flat (``{"accuracy": …}``) or per split (``{"test": {…}}``);
    bookkeeping numbers (steps, seeds, sizes, timings) and per-class tables are left out."""
    values = (metrics or {}).get("metrics", metrics or {})
    rows = []
    for key, value in values.items():
        if isinstance(value, dict) and key not in ("config", "per_class"):
            rows += [(f"{key} {name}", v) for name, v in _metric_rows(value)]
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and _QUALITY.search(str(key)):
            rows.append((str(key).replace("_", " "), float(value)))
    return rows


def model_overview(model, index: dict | None) -> str:
    """Labels, prototype counts, chunking, metrics and pre-render settings as markdown."""
    head, ae = model.head, model.autoencoder
    lines = [
        f"### {model.name}",
        f"**Classes ({len(model.labels)}):** " + ", ".join(f"`{c}`" for c in model.labels),
        f"**Prototypes:** {head.num_prototypes} ({head.protos_per_class} per class, {head.config.distance} distance)",
        f"**Chunks:** {format_seconds(ae.chunk_seconds)} · embedding size {ae.embedding_dim} · "
        f"front end `{ae.config.frontend}` · device `{model.device}`",
    ]
    dataset = (model.info or {}).get("dataset")
    if dataset:
        lines.append(f"**Training data:** {dataset}")
    if index:
        lines.append(f"**Pre-rendered prototypes:** {len(index.get('prototypes', []))} "
                     f"(steps {index.get('steps')}, guidance {index.get('guidance')}, seed {index.get('seed')})")
    else:
        lines.append("**Pre-rendered prototypes:** none (decode them in the Prototypes tab)")
    rows = _metric_rows(model.metrics)
    if rows:
        split = (model.metrics or {}).get("split")
        split = f" ({split})" if isinstance(split, str) else ""
        lines.append(f"\n**Metrics**{split}\n\n| metric | value |\n|---|---|\n"
                     + "\n".join(f"| {k} | {v:.4f} |" for k, v in rows))
    else:
        lines.append("_No evaluation metrics (metrics.json) ship with this model._")
    return "\n\n".join(lines)


def client_safe(obj):
    """``obj`` with every ``"path"`` key renamed ``"folder"``: ``gradio_client`` takes any JSON dict holding a
    string ``"path"`` for a file to download (the head config's ``autoencoder.path`` would break clients)."""
    if isinstance(obj, dict):
        return {("folder" if k == "path" else k): client_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [client_safe(v) for v in obj]
    return obj


def _source(files) -> str | None:
    """Where a model came from, as a client may see it: a Hub repo at its commit, or a folder's own name."""
    if files is None:
        return None
    if getattr(files, "folder", None) is not None:
        return f"folder {display_name(str(files.folder))}"
    return files.describe()


def model_config(model, index: dict | None) -> dict:
    """Machine-readable facts: labels, head and autoencoder configuration, metrics, renders, source.

    (Keys named ``path`` appear as ``folder``; see :func:`client_safe`.)
    """
    files = model_files(model)
    renders = {k: v for k, v in (index or {}).items() if k != "prototypes"} or None
    return client_safe({
        "name": model.name,
        "source": _source(files),
        "labels": list(model.labels),
        "num_prototypes": model.head.num_prototypes,
        "protos_per_class": model.head.protos_per_class,
        "device": str(model.device),
        "head": model.head.config.to_dict(),
        "autoencoder": model.autoencoder.config.to_dict(),
        "autoencoder_ref": model.autoencoder_ref.to_dict(),
        "metrics": model.metrics,
        "info": model.info,
        "prototype_renders": renders,
    })
