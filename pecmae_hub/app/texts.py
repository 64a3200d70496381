"""Markdown and JSON shown by the app: the model's plain-language intro, prediction headlines, the
out-of-domain warning, captions of the prototypes and their nearest training chunks, the model card and
facts, links and the citation.

Prototypes are named for people: ``violin — prototype 2 of 3`` (numbered from 1), never by the internal
index ``p``; the API keeps ``label:k`` (k from 0) as the value of a prototype."""

from __future__ import annotations

import html
import math
import os
import re
from importlib import metadata

from pecmae_hub.app.access import display_name, embedded_names, scrub_paths
from pecmae_hub.app.models import model_files, optional_file
from pecmae_hub.app.plots import pct, prototype_label, ranked_classes, seconds, segments
from pecmae_hub.app.settings import format_seconds, on_spaces
from pecmae_hub.hub.cards import model_limitations, sonification_note
from pecmae_hub.hub.nearest_audio import describe_chunk, index_entry, track_facts
from pecmae_hub.render_index import index_settings

_FRONT_MATTER = re.compile(r"\A---\s*\n.*?\n---\s*\n", re.S)
AGREEMENT = 0.75  # below this share of audible chunks voting for the label, the headline says "mixed"
MAX_SEGMENTS = 8  # segments listed in a "mixed" headline
BORDERLINE = 1.25  # an out-of-domain score up to this multiple of the threshold is a borderline case
PAPER_URL = "https://arxiv.org/abs/2402.09318"
UPSTREAM_CODE_URL = "https://github.com/palonso/pecmae"  # the PECMAE authors' code (docs/architecture.md §1.1)
CITATION = """@inproceedings{alonso2024pecmae,
  title     = {Leveraging Pre-Trained Autoencoders for Interpretable Prototype Learning of Music Audio},
  author    = {Alonso-Jim{\\'e}nez, Pablo and Pepino, Leonardo and Batlle-Roca, Roser and Zinemanas, Pablo
               and Bogdanov, Dmitry and Serra, Xavier and Rocamora, Mart{\\'i}n},
  booktitle = {ICASSP 2024 Workshop on Explainable Machine Learning for Speech and Audio (XAI-SA)},
  year      = {2024},
  eprint    = {2402.09318},
  archivePrefix = {arXiv}
}"""


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


def prototypes_note(model) -> str:
    """The Prototypes tab's one-line note on what the model's decoder reproduces and what it cannot (its model
    card says the same), or an empty string for a model that states none."""
    note = sonification_note(dict(model.info or {}))
    return f"**What you hear.** {html.escape(note)}" if note else ""


def about_block(intro: str, heading: str = "About this model") -> str:
    """The model's introduction in a foldable block (open; folded at first on phones, see ``ui``)."""
    return f'<details class="pecmae-about" open><summary>{html.escape(heading)}</summary>\n\n{intro}\n\n</details>'


def summary_text(prediction, chunk_seconds: float | None = None) -> str:
    """The headline: the label and its score when the chunks agree; "mixed" and the segments when they do not.
    For audio unlike the model's training data (``in_domain`` False) the label is headed "Best guess" and
    points to the warning above it (:func:`ood_callout`)."""
    text = _headline(prediction, chunk_seconds)
    if prediction.in_domain is False:
        text = text.replace("### ", "### Best guess: ", 1) + (
            "\n\n_Not a recognition: this audio is unlike what the model was trained on (see the warning)._"
        )
    return text


def ood_verdict(prediction, threshold: float | None) -> str | None:
    """``"clear"``, ``"borderline"`` (score at most :data:`BORDERLINE` x the threshold), or None (in domain or
    no scorer)."""
    if prediction.in_domain is not False or prediction.ood_score is None:
        return None
    return "borderline" if threshold and prediction.ood_score <= BORDERLINE * threshold else "clear"


def ood_callout(prediction, threshold: float | None, n_classes: int) -> str:
    """The out-of-domain warning as a block of HTML (empty for audio the model knows): what it means, how
    far the audio is on a scale of the training clips, and what to do with the label."""
    verdict = ood_verdict(prediction, threshold)
    if verdict is None:
        return ""
    share = prediction.ood_percentile
    if share is None:
        far = f"Its out-of-domain score is {prediction.ood_score:.2f}"
    elif share >= 1.0:
        far = "It is further from the training audio than any of the model's training clips"
    else:
        far = f"It is further from the training audio than {pct(share)} of the model's training clips"
    limit = f" (score {prediction.ood_score:.2f}; the model trusts up to {threshold:.2f})" if threshold else ""
    if verdict == "clear":
        title = "This does not sound like anything this model was trained on."
        advice = (
            f"The model still names the closest of its {n_classes} classes, so the label below is a guess, "
            "not a recognition."
        )
    else:
        title = "This audio is at the edge of what this model knows."
        advice = "The label below may still be right, but treat it with care and check it by ear."
    return (
        f'<div class="pe-ood pe-ood-{verdict}" role="alert" id="ood-warning-{verdict}">'
        f'<div class="pe-ood-icon" aria-hidden="true">⚠</div><div><p class="pe-ood-title">{html.escape(title)}</p>'
        f"<p>{html.escape(far + limit)}. {html.escape(advice)}</p></div></div>"
    )


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


def closeness(item: dict) -> str:
    """How close the audio is to a top prototype, on the training chunks' scale when the model keeps one:
    ``closer to it than 62 % of the violin training chunks (similarity 0.96)``."""
    sim = float(item.get("similarity", 0.0))
    share = item.get("similarity_percentile")
    if share is None:
        return f"similarity {sim:.2f} (1 = identical)"
    return f"closer to it than {pct(share)} of the {item['class']} training chunks (similarity {sim:.2f})"


def prototype_caption(
    rank: int, item: dict, temperature: float, nearest: list[dict], has_audio: bool = True, per_class: int = 1
) -> str:
    """Caption of a top prototype: its rank, which prototype it is, its points, how close the audio is to it,
    and its nearest training chunks."""
    text = (
        f"**{rank}. {prototype_label(item['class'], int(item['k']), per_class)}** · "
        f"{item['contribution'] / temperature:+.1f} points  \nYour audio: {closeness(item)}."
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
        settings = render_words(index_settings(index))
        lines.append(f"**Pre-rendered prototypes:** {len(index.get('prototypes', []))} ({settings})")
    else:
        lines.append("**Pre-rendered prototypes:** none (decode them in the Prototypes tab)")
    lines.append(f"**Where it comes from:** {model_home(model)}")
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


def render_words(settings: dict) -> str:
    """Render settings in words: ``unipc sampler, 14 steps, guidance 1, seed 0, noise temperature 0.4, vocos
    vocoder, -20 LUFS``
    (``settings``: :func:`pecmae_hub.render_index.index_settings` of an index, or the settings of a decode)."""
    spec = settings.get("scheduler") or "upstream"  # a render that names no sampler used the exact one
    sampler = str(spec.get("name", "upstream") if isinstance(spec, dict) else spec)
    name = "exact upstream sampler" if sampler == "upstream" else f"{sampler} sampler"
    text = f"{name}, {settings.get('steps')} steps, guidance {settings.get('guidance'):g}, seed {settings.get('seed')}"
    if settings.get("temperature", 1.0) != 1.0:
        text += f", noise temperature {settings['temperature']:g}"
    text += f", {settings['vocoder']} vocoder" if settings.get("vocoder") else ""
    return text + (f", {settings['loudness_lufs']:g} LUFS" if settings.get("loudness_lufs") is not None else "")


def model_home(model) -> str:
    """Markdown link to the model's Hub page, or where it lives when it has none."""
    files = model_files(model)
    repo = getattr(files, "repo_id", None)
    if repo and getattr(files, "folder", None) is None:
        from huggingface_hub import constants

        return f"[{repo} on the Hugging Face Hub]({constants.ENDPOINT}/{repo})"
    if getattr(model, "name", None) in embedded_names():
        return "embedded in the PECMAE Hub package (no Hub page; its card is above)"
    return "a model folder on this server (no Hub page)"


def code_links() -> str:
    """Markdown links: the paper, the PECMAE authors' code, and this app's code (the Space's files on Spaces,
    else the package's project URL when it declares one)."""
    links = [f"[PECMAE paper (arXiv 2402.09318)]({PAPER_URL})", f"[PECMAE reference code]({UPSTREAM_CODE_URL})"]
    space = os.environ.get("SPACE_ID", "").strip()
    if on_spaces() and space:
        links.append(f"[this app's code](https://huggingface.co/spaces/{space}/tree/main)")
    else:
        try:
            urls = metadata.metadata("pecmae-hub").get_all("Project-URL") or []
        except metadata.PackageNotFoundError:
            urls = []
        home = next((u.split(",", 1)[1].strip() for u in urls if "," in u), None)
        links.append(f"[this app's code]({home})" if home else "this app's code: the `pecmae_hub` package (`app/`)")
    return " · ".join(links)
