"""Model cards of PECMAE repos (classifier and autoencoder), built with huggingface_hub's ModelCard / ModelCardData.

Both cards share :func:`card_text`: the YAML front matter comes from ``ModelCardData`` (never written
by hand), always with ``library_name: pecmae-hub``. The classifier card reads the model's
``pecmae.json`` info; besides ``dataset``, ``datasets``, ``split``, ``license``, ``description`` and
``tags`` it renders, when present: ``dataset_name`` (display name in ``model-index``),
``licence_notes`` (list of lines), ``evaluation`` (per split: ``prototype``/``linear_probe``/``mlp``
metrics and ``retention``, as the paper recipes write it), ``paper_results`` (published figures to
print beside ours) and ``recipe`` (the command that re-creates the model).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pecmae_hub.hub.registry import LIBRARY_NAME

_METRIC_WORDS = re.compile(r"acc|f1|precision|recall|auc|map\b", re.I)


def metric_entries(metrics: dict | None) -> tuple[str | None, list[tuple[str, str, float]]]:
    """The evaluation split and its ``(type, display name, value)`` metrics from a ``metrics.json`` dict.

    Accepted layouts: ``{"metrics": {...}, "split": ...}``, ``pecmae train``'s ``{"test": {...}, "val":
    {...}, ...}`` (test preferred) or flat ``{"accuracy": ..., "split": ...}``. Only accuracy-, F1-,
    precision-, recall- and AUC-like numbers count (not seeds, step counts or sizes).
    """
    if not metrics:
        return None, []
    split = metrics.get("split")
    values = metrics.get("metrics")
    if not isinstance(values, dict):
        for name in ("test", "val"):
            if isinstance(metrics.get(name), dict):
                values, split = metrics[name], split or name
                break
        else:
            values = metrics
    out = []
    for key, value in values.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and _METRIC_WORDS.search(key):
            kind = "f1" if "f1" in key.lower() else key.lower()
            out.append((kind, key.replace("_", " "), float(value)))
    return split, out


def card_text(body: str, **metadata: Any) -> str:
    """A ``README.md``: ``ModelCardData(library_name=pecmae-hub, **metadata)`` as front matter, then ``body``."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(library_name=LIBRARY_NAME, **metadata)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}").content


def render_model_card(
    *,
    model_name: str,
    labels: list[str],
    protos_per_class: int,
    info: dict | None = None,
    metrics: dict | None = None,
    base_model: str | None = None,
    repo_id: str | None = None,
    render_settings: dict | None = None,
) -> str:
    """The ``README.md`` of a PECMAE repo: YAML front matter (library, task, tags, datasets, base model,
    license, model-index) and a text on the model, its data split, usage and its prototypes."""
    from huggingface_hub import EvalResult

    info = dict(info or {})
    dataset = info.get("dataset") or "unknown"
    dataset_name = info.get("dataset_name") or dataset
    metric_split, entries = metric_entries(metrics)
    split = metric_split or info.get("split") or "the dataset's standard split"
    eval_results = [
        EvalResult(
            task_type="audio-classification",
            task_name="Audio classification",
            dataset_type=dataset,
            dataset_name=dataset_name,
            dataset_split=str(split),
            metric_type=kind,
            metric_name=name,
            metric_value=value,
        )
        for kind, name, value in entries
    ]
    metadata = dict(
        pipeline_tag="audio-classification",
        license=info.get("license", "mit"),
        tags=sorted({"pecmae", "prototype-learning", "interpretability", "audio", "music", *info.get("tags", [])}),
        datasets=hub_dataset_ids(info) or None,
        base_model=base_model,
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
    )
    ref = repo_id or model_name
    k = protos_per_class
    metric_lines = "\n".join(f"| {name} | {value:.4f} |" for _, name, value in entries)
    settings = render_settings or {}
    sections = _evaluation_section(info) + _licence_section(info) + _limitations_section(info, labels, dataset_name)
    no_metrics = "No evaluation metrics were recorded for this model."
    metrics_table = "| metric | value |\n|---|---|\n" + metric_lines if metric_lines else no_metrics
    body = f"""
# {model_name}: PECMAE prototype classifier

{info.get("description") or f"Interpretable music audio classifier trained on {dataset}."}

PECMAE ([arXiv 2402.09318](https://arxiv.org/abs/2402.09318)) classifies audio by comparing the
embedding of every {info.get("chunk_seconds", 4)}-second chunk with **{len(labels) * k} learned prototypes**
({k} per class). A linear layer turns the similarities into class scores, so every decision can be
traced to the prototypes that drove it, and each prototype can be turned back into audio by the
autoencoder's diffusion decoder.

- Classes ({len(labels)}): {", ".join(labels)}
- Autoencoder: {base_model or "shipped in this repository (`autoencoder/`)"}
- Training data: {dataset_name}; evaluation split: {split}
{f"- Data split: {info['split']}" + chr(10) if info.get("split") and info.get("split") != split else ""}
{metrics_table}
{sections}
## Usage

PECMAE Hub is not on the Python package index: install it from a clone of its repository
(`pip install torch==2.13.0 -e .` in the clone), then

```bash
pecmae classify song.mp3 --model {ref} --out predictions.csv
```

```python
from pecmae_hub.pipeline import PECMAE

model = PECMAE.from_pretrained("{ref}")
prediction = model.classify("song.mp3")
print(prediction.label, prediction.scores)
for proto in prediction.top_prototypes:  # the prototypes that drove the decision
    print(proto["class"], proto["k"], proto["contribution"])
```

## Listening to the prototypes

`prototypes/` holds one WAV per prototype (`p<index>_<class>_<k>.wav`, 24 kHz), {_render_description(settings)}
(see `prototypes/index.json`). Other settings are decoded on the fly:
{_sonification_note(info)}
```python
audio = model.sonify(("{labels[0]}", 0))  # float32, 24 kHz; the pre-rendered WAV when the settings match
```

or `pecmae sonify --model {ref} --prototype {labels[0]}:0 --out prototype.wav`.
"""
    return card_text(body, **metadata)


def _render_description(settings: dict) -> str:
    """How the shipped prototype WAVs were made, in words (sampler, steps, guidance, seed, vocoder, level)."""
    sampler = (settings.get("scheduler") or {"name": "upstream"}).get("name", "upstream")
    words = (
        f"rendered with the {'exact' if sampler == 'upstream' else sampler} sampler at {settings.get('steps', 40)} "
        f"diffusion steps, guidance {settings.get('guidance', 1.0)} and seed {settings.get('seed', 0)}"
    )
    if settings.get("vocoder"):
        words += f", the {settings['vocoder']} vocoder"
    if settings.get("loudness_lufs") is not None:
        words += f", normalised to {settings['loudness_lufs']:g} LUFS with true peaks at or under -1 dBFS"
    return words


def sonification_note(info: dict) -> str | None:
    """The model's one-line note on what its decoder reproduces and what it cannot (``info``), or None."""
    note = info.get("sonification_note")
    return str(note) if note else None


def _sonification_note(info: dict) -> str:
    note = sonification_note(info)
    return f"\n> **What you hear.** {note}\n" if note else ""


def _pct(value) -> str:
    return "–" if value is None else f"{100 * float(value):.1f} %"


def _evaluation_section(info: dict) -> str:
    """Markdown of ``info["evaluation"]`` (per split: prototype head vs baselines) and the paper's figures."""
    evaluation, paper = info.get("evaluation") or {}, info.get("paper_results") or {}
    if not evaluation:
        return ""
    lines = [
        "",
        "## Evaluation",
        "",
        "Track-level results (argmax of the mean chunk logits) on the held-out splits; "
        "the baselines are trained on the same embeddings.",
        "",
        "| split | tracks | prototype head acc. | macro-F1 | linear probe acc. | MLP acc. | retention vs MLP |",
        "|---|---|---|---|---|---|---|",
    ]
    for split, r in evaluation.items():
        proto, lin, mlp = (r.get(k) or {} for k in ("prototype", "linear_probe", "mlp"))
        ret = (r.get("retention") or {}).get("mlp")
        lines.append(
            f"| {split} | {r.get('n_tracks', '–')} | {_pct(proto.get('accuracy'))} | "
            f"{_pct(proto.get('macro_f1'))} | {_pct(lin.get('accuracy'))} | {_pct(mlp.get('accuracy'))} | "
            f"{_pct(ret)} |"
        )
    if paper:
        lines += [
            "",
            f"Published in the paper ({paper.get('source', 'arXiv 2402.09318')}): "
            + ", ".join(f"{k} {_pct(v)}" for k, v in paper.items() if k != "source"),
        ]
    if info.get("recipe"):
        lines += ["", f"Re-create this model with `{info['recipe']}`."]
    return "\n".join(lines) + "\n"


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hub_dataset_ids(info: dict) -> list[str]:
    """The entries of ``info["datasets"]`` that are Hub dataset ids (``owner/name``): the card's ``datasets:``
    key lists only data sets that exist on the Hub; a local name (``gm-solos``) is left out, not invented."""
    return [str(d) for d in info.get("datasets") or [] if _HUB_ID.match(str(d))]


def model_limitations(info: dict, labels: Sequence[str], dataset_name: str | None = None) -> list[str]:
    """What the model cannot do, in plain words: ``info["limitations"]`` first, then the limits every
    PECMAE classifier shares (a closed label set, chunk-wise judgement, one training data set)."""
    chunk = info.get("chunk_seconds")
    data = dataset_name or info.get("dataset_name") or info.get("dataset") or "its training data"
    lines = [str(x) for x in info.get("limitations") or []]
    lines += [
        f"It always answers with one of its {len(labels)} classes ({', '.join(labels)}): audio of anything else "
        "still gets the closest of these labels, so a confident score is not proof that the audio belongs to them.",
        f"It judges {f'{chunk:g}-second' if chunk else 'short'} chunks one at a time and averages them; for audio "
        "that changes along the way, read the per-chunk predictions rather than the single label.",
        f"It was trained and evaluated on {data} only; its accuracy on other recordings is not measured.",
    ]
    return lines


def _limitations_section(info: dict, labels: Sequence[str], dataset_name: str) -> str:
    return "\n## Limitations\n\n" + "\n".join(f"- {n}" for n in model_limitations(info, labels, dataset_name)) + "\n"


def _licence_section(info: dict) -> str:
    notes = info.get("licence_notes") or []
    if not notes:
        return ""
    return "\n## Licence notes\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def render_autoencoder_reference_card(
    *, title: str, source: str, config: Any, licence: str, licence_notes: Sequence[str]
) -> str:
    """A short ``README.md`` for an autoencoder uploaded on its own (e.g. by ``pecmae recipe ... --push``)
    when no conversion card came with it: where it came from, its size and its licence notes."""
    lines = [
        f"# {title}",
        "",
        f"PECMAE autoencoder in the pecmae-hub format, from {source}.",
        "",
        f"- chunk length {config.chunk_seconds:g} s; embedding dimension D = {config.model_dim}; "
        f"front end: {config.frontend}",
    ]
    if getattr(config, "source", ""):
        lines.append(f"- provenance: {config.source}")
    lines += ["", "## Licence notes", ""] + [f"- {n}" for n in licence_notes]
    lines += [
        "",
        "## Usage",
        "",
        "Install pecmae-hub from a clone of its repository (`pip install torch==2.13.0 -e .`), then:",
        "",
        "```python",
        "from pecmae_hub import Autoencoder",
        "",
        'ae = Autoencoder.from_pretrained("ORG/NAME")',
        'z = ae.encode("song.wav")   # (n_chunks, D)',
        "```",
        "",
    ]
    tags = ["pecmae", "audio", "music"]
    return card_text("\n" + "\n".join(lines), license=licence, tags=tags)


def render_autoencoder_card(
    *,
    title: str,
    intro: str,
    config: Any,
    chunk_frames: int,
    sources: Sequence[Any],
    licence_notes: Sequence[str],
    notes: Sequence[str] = (),
    dropped: Mapping[str, int] | None = None,
) -> str:
    """The ``README.md`` of an autoencoder folder (e.g. one made by ``pecmae convert``).

    ``config`` is its ``AutoencoderConfig``; ``sources`` are the files it was made from, each with
    ``role``, ``name``, ``container``, ``size`` and ``sha256`` (``convert.checkpoint_io.SourceFile``);
    ``licence_notes`` one line per source licence; ``notes`` and ``dropped`` (what -> tensor count)
    what the conversion did. The front matter says ``license: other`` (the upstream licences apply).
    """
    cfg = config
    lines = [
        f"# {title}",
        "",
        intro,
        "",
        "## Source files",
        "",
        "| role | file | container | size (bytes) | sha256 |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {s.role} | `{s.name}` | {s.container} | {s.size} | `{s.sha256}` |" for s in sources]
    lines += ["", "## Licence notes", ""]
    lines += [f"- {text}" for text in licence_notes]
    lines += [
        "- The converted weights are a derivative of the files above: their terms apply to it. "
        "This card does not grant any licence.",
        "",
        "## Configuration",
        "",
        f"- chunk length: {cfg.chunk_seconds:g} s ({chunk_frames} frames at 75 Hz); "
        f"embedding dimension D = {cfg.model_dim}",
        f"- frame encoder: {cfg.frame_layers} ResiDual layers, {cfg.frame_heads} heads, FFN {cfg.ff_dim}",
    ]
    if cfg.cls_layers:
        lines.append(
            f"- CLS encoder: {cfg.cls_layers} layers, {cfg.cls_heads} heads; z = the CLS output (never zeroed)"
        )
    if cfg.denoiser_layers:
        lines.append(
            f"- denoiser: {cfg.denoiser_layers} layers, {cfg.denoiser_heads} heads; v-diffusion, angle schedule"
        )
    if notes or dropped:
        lines += ["", "## Conversion notes", ""]
        lines += [f"- {note}" for note in notes]
        lines += [f"- dropped {count} tensors: {what}" for what, count in sorted((dropped or {}).items())]
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "from pecmae_hub import Autoencoder",
        "",
        'ae = Autoencoder.from_pretrained("path/or/org-name")',
        'z = ae.encode("song.wav")            # (n_chunks, D)',
    ]
    if cfg.denoiser_layers:
        lines.append("audio = ae.decode(z[:1], steps=40, guidance=1.0, seed=0)  # 24 kHz")
    lines += ["```", ""]
    tags = ["pecmae", "audio", "music", "encodec", "encodecmae", "converted"]
    return card_text("\n" + "\n".join(lines), license="other", license_name="upstream-licences", tags=tags)
