"""Markdown and JSON shown by the app: the model's plain-language intro, prediction headlines, captions of
the prototypes and their nearest training chunks, the model card and facts."""

from __future__ import annotations

import math
import re

from pecmae_hub.app.access import display_name, scrub_paths
from pecmae_hub.app.models import model_files, optional_file
from pecmae_hub.app.plots import pct, ranked_classes, seconds, segments
from pecmae_hub.app.settings import format_seconds
from pecmae_hub.hub.cards import model_limitations
from pecmae_hub.hub.nearest_audio import describe_chunk, index_entry, track_facts

_FRONT_MATTER = re.compile(r"\A---\s*\n.*?\n---\s*\n", re.S)
AGREEMENT = 0.75  # below this share of audible chunks voting for the label, the headline says "mixed"
MAX_SEGMENTS = 8  # segments listed in a "mixed" headline


def model_intro(model) -> str:
    """What the model knows, in plain words: classes, training data, chunk length, prototypes, limits."""
    info, labels, head = dict(model.info or {}), list(model.labels), model.head
    chunk = model.autoencoder.chunk_seconds
    data = info.get("training_data") or info.get("dataset_name") or info.get("dataset") or "an unnamed data set"
    limits = model_limitations({**info, "chunk_seconds": chunk}, labels, info.get("dataset_name"))
    first = (
        limits[0]
        if info.get("limitations")
        else "It always answers with one of these classes, even for audio that is none of them."
    )
    return (
        f"**{model.name}** recognises **{len(labels)} classes**: {', '.join(labels)}. Trained on {data}. "
        f"It listens in **{format_seconds(chunk)} chunks**, each compared with its {head.num_prototypes} "
        f"prototypes ({head.protos_per_class} per class).\n\n"
        f"**Limits:** {first}<details><summary>More limits</summary>\n\n"
        + "\n".join(f"- {line}" for line in (limits[1:] if info.get("limitations") else limits))
        + "\n\n</details>"
    )


def summary_text(prediction, chunk_seconds: float | None = None) -> str:
    """The headline: the label and its score when the chunks agree; "mixed" and the segments when they do not;
    preceded by a plain warning when the audio is unlike the model's training data (``in_domain`` False)."""
    text = _headline(prediction, chunk_seconds)
    if prediction.in_domain is False:
        text = (
            "**⚠ This audio is unlike the audio this model was trained on** (out-of-domain score "
            f"{prediction.ood_score:.2f}): it still answers with the closest of its classes, so treat the label "
            "below as a guess, not a recognition.\n\n" + text
        )
    return text


def _headline(prediction, chunk_seconds: float | None = None) -> str:
    ranked = ranked_classes(prediction.scores)
    audible = [c for c in prediction.chunk_labels if c is not None]
    votes = sum(1 for c in audible if c == prediction.label)
    n, silent = len(prediction.chunk_labels), len(prediction.chunk_labels) - len(audible)
    size = f" of {format_seconds(chunk_seconds)}" if chunk_seconds else ""
    length = f"{format_seconds(round(prediction.duration, 2))} of audio in {n} chunk{'s' * (n != 1)}{size}."
    if silent:
        length += f" {silent} silent chunk{'s' * (silent != 1)} took no part in the decision."
    if not audible or votes / len(audible) >= AGREEMENT:
        text = f"### {prediction.label} — {pct(prediction.scores[prediction.label])}\n\n"
        if votes == len(audible):
            who = {0: "No chunk is audible", 1: "The only audible chunk says", 2: "Both chunks say"}.get(
                votes, f"All {votes} chunks say"
            )
            text += f"**{who}** {prediction.label}. " if votes else f"**{who}.** "
        else:
            others = sorted({c for c in audible if c != prediction.label}, key=lambda c: -audible.count(c))
            text += (
                f"**{votes} of {len(audible)} chunks** say {prediction.label}; the others: "
                + ", ".join(f"{c} ({audible.count(c)})" for c in others)
                + ". "
            )
        if len(ranked) > 1:
            text += f"Runner-up: **{ranked[1]}** ({pct(prediction.scores[ranked[1]])}). "
        return text + length
    runs = [r for r in segments(prediction) if r["label"] is not None]
    listed = " · ".join(f"**{r['label']}** {seconds(r['start'])}–{seconds(r['end'])} s" for r in runs[:MAX_SEGMENTS])
    if len(runs) > MAX_SEGMENTS:
        listed += f" · … {len(runs) - MAX_SEGMENTS} more changes"
    return (
        f"### Mixed: the chunks disagree\n\n{listed}\n\n"
        f"Only {votes} of {len(audible)} chunks say **{prediction.label}**, the label of the clip's average "
        f"({pct(prediction.scores[prediction.label])}): read the timeline below rather than one label. " + length
    )


def nearest_chunks(model, p: int, rows: list[dict], count: int = 2) -> list[dict]:
    """The ``count`` nearest training chunks of prototype ``p`` in plain words:
    ``[{"rank", "words", "similarity", "entry"}]`` (``entry``: the shipped audio's index entry, or None)."""
    index = getattr(model, "nearest_audio_index", None)
    chunk = float(model.autoencoder.chunk_seconds)
    sources = (index or {}).get("sources") or {}
    out = []
    for rank, row in enumerate(rows[:count]):
        entry = index_entry(index, p, rank)
        facts = (
            entry
            if entry and entry.get("track") == row.get("track")
            else track_facts(str(row.get("track")), int(row.get("chunk", 0)), chunk, sources)
        )
        out.append(
            {
                "rank": rank,
                "words": describe_chunk(facts),
                "similarity": math.exp(-float(row.get("distance", 0.0))),
                "entry": entry,
            }
        )
    return out


def nearest_label(item: dict) -> str:
    """The label of a nearest-chunk player: ``Closest training chunk 1: violin, Csound bank, clip 59, …``."""
    return f"Closest training chunk {item['rank'] + 1}: {item['words']}"


def prototype_caption(rank: int, item: dict, temperature: float, nearest: list[dict], has_audio: bool = True) -> str:
    """Caption of a top prototype: what it is, its points, the audio's similarity, its nearest training chunks."""
    text = (
        f"**#{rank} · {item['class']} prototype #{item['k']}** (p{item['p']}) — "
        f"{item['contribution'] / temperature:+.1f} points  \n"
        f"Your audio's similarity to it: {item.get('similarity', 0.0):.2f} (1 = identical)."
    )
    if not has_audio:
        text += "  \n_No pre-rendered audio: decode it in the Prototypes tab._"
    if nearest:
        text += "\n\n**Closest real training chunks** (similarity to the prototype):\n" + "\n".join(
            f"{n['rank'] + 1}. {n['words']} — {n['similarity']:.2f}"
            + ("" if n["entry"] else " _(text only: this model ships no audio of it)_")
            for n in nearest
        )
    else:
        text += "  \n_This model ships no table of nearest training chunks._"
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
        f"**Prototypes:** {head.num_prototypes} ({head.protos_per_class} per class, {head.config.distance} distance, "
        f"temperature {head.config.temperature:g})",
        f"**Chunks:** {format_seconds(ae.chunk_seconds)} · embedding size {ae.embedding_dim} · "
        f"front end `{ae.config.frontend}` · device `{model.device}`",
        precision_line(model),
    ]
    dataset = (model.info or {}).get("dataset")
    if dataset:
        lines.append(f"**Training data:** {dataset}")
    if index:
        lines.append(
            f"**Pre-rendered prototypes:** {len(index.get('prototypes', []))} "
            f"(steps {index.get('steps')}, guidance {index.get('guidance')}, seed {index.get('seed')})"
        )
    else:
        lines.append("**Pre-rendered prototypes:** none (decode them in the Prototypes tab)")
    nearest = getattr(model, "nearest_audio_index", None)
    lines.append(
        f"**Nearest training chunks with audio:** {len(nearest.get('entries', []))}"
        if nearest
        else "**Nearest training chunks with audio:** none (named in words only)"
    )
    rows = _metric_rows(model.metrics)
    if rows:
        split = (model.metrics or {}).get("split")
        split = f" ({split})" if isinstance(split, str) else ""
        lines.append(
            f"\n**Metrics**{split}\n\n| metric | value |\n|---|---|\n"
            + "\n".join(f"| {k} | {v:.4f} |" for k, v in rows)
        )
    else:
        lines.append("_No evaluation metrics (metrics.json) ship with this model._")
    return "\n\n".join(lines)


def precision_line(model) -> str:
    """The numeric mode the model runs at, and why (``precision="auto"``: its fidelity record decides)."""
    reason = getattr(model, "precision_reason", "asked for")
    why = "" if reason == "asked for" else f" (auto: {reason})"
    return f"**Precision:** `{model.precision}`{why}"


def client_safe(obj):
    """``obj`` with every ``"path"`` key renamed ``"folder"``: ``gradio_client`` takes any JSON dict holding a
    string ``"path"`` for a file to download (the head config's ``autoencoder.path`` would break clients);
    absolute paths inside strings are cut to their last part (:func:`scrub_paths`): no server path is shown."""
    if isinstance(obj, dict):
        return {("folder" if k == "path" else k): client_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [client_safe(v) for v in obj]
    return scrub_paths(obj) if isinstance(obj, str) else obj


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
    return client_safe(
        {
            "name": model.name,
            "source": _source(files),
            "labels": list(model.labels),
            "num_prototypes": model.head.num_prototypes,
            "protos_per_class": model.head.protos_per_class,
            "chunk_seconds": model.autoencoder.chunk_seconds,
            "device": str(model.device),
            "precision": model.precision,
            "precision_reason": getattr(model, "precision_reason", "asked for"),
            "head": model.head.config.to_dict(),
            "autoencoder": model.autoencoder.config.to_dict(),
            "autoencoder_ref": model.autoencoder_ref.to_dict(),
            "metrics": model.metrics,
            "info": model.info,
            "prototype_renders": renders,
        }
    )
