"""The "why" views of a prediction as responsive HTML (legible on a phone and on a desktop).

- :func:`explanation_html`: the timeline of per-chunk predictions, then, for the predicted class and the
  runner-up, the prototypes behind their scores as bars in **points**: ``weight[c, p] · similarity[p] /
  temperature`` averaged over the audible chunks. A class's points (the bars plus one "everything else"
  row holding the small prototypes and the class bias) sum to ``logit / temperature``, and the scores are
  the softmax of those sums, so a lead of one point multiplies the odds by e.
- :func:`similarity_html`: every chunk × every prototype as a heat map, on one colour scale for all rows.
- :func:`scores_html`: the class scores as bars, worded like the headline (:func:`pct`).

Every class keeps one saturated colour everywhere (:func:`class_colors`); no class is grey. When the audio
is unlike the training data the scores and the evidence are drawn faded (``dim=True``): they explain a
guess.
"""

from __future__ import annotations

import colorsys
import html
import math

from pecmae_hub.prediction import percent_text as pct  # the one way a score is written

SILENT_LABEL = "silent"
#: distinct, saturated colours that carry white text; more classes get golden-angle hues
PALETTE = (
    "#1971c2",
    "#e8590c",
    "#2b8a3e",
    "#7048e8",
    "#c92a2a",
    "#0b7285",
    "#ae3ec9",
    "#8d6e00",
    "#364fc7",
    "#d6336c",
    "#5c940d",
    "#a0522d",
)
BAR_ROWS = 5  # prototypes shown one by one per class panel, at most
MIN_SHARE = 0.05  # ... and only those with at least this share of the panel's largest bar
MAX_COLUMNS = 48  # the heat map averages neighbouring chunks beyond this many columns
_esc = html.escape


def class_colors(labels: list[str]) -> dict[str, str]:
    """A stable hex colour per class, in label order."""
    colors = {}
    for i, label in enumerate(labels):
        if i < len(PALETTE):
            colors[label] = PALETTE[i]
        else:
            r, g, b = colorsys.hls_to_rgb((i * 0.381966) % 1.0, 0.4, 0.65)
            colors[label] = f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"
    return colors


def ranked_classes(scores: dict[str, float]) -> list[str]:
    """Class names by decreasing score."""
    return sorted(scores, key=lambda c: -scores[c])


def times(value: float) -> str:
    """An odds ratio in words: ``3.2``, ``150``, ``1,300``, ``over a million``."""
    if value >= 1e6:
        return "over a million"
    if value >= 1000:
        return f"{float(f'{value:.2g}'):,.0f}"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def seconds(value: float) -> str:
    """``3`` → ``3``; ``1.5`` → ``1.5`` (for time ranges)."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def segments(prediction) -> list[dict]:
    """Runs of consecutive chunks with the same answer: ``[{"label", "start", "end", "chunks"}]``
    (``label`` None for silent chunks)."""
    runs: list[dict] = []
    for s, e, c in zip(prediction.chunk_starts, prediction.chunk_ends, prediction.chunk_labels):
        if runs and runs[-1]["label"] == c:
            runs[-1]["end"], runs[-1]["chunks"] = e, runs[-1]["chunks"] + 1
        else:
            runs.append({"label": c, "start": s, "end": e, "chunks": 1})
    return runs


def prototype_label(label: str, k: int, per_class: int) -> str:
    """``violin — prototype 2 of 3`` for the k-th (from 0) of a class's ``per_class`` prototypes."""
    return f"{label} — prototype {k + 1} of {per_class}" if per_class > 1 else f"{label} — prototype"


def prototype_name(p: int, labels: list[str], per_class: int) -> str:
    """Short name of prototype p for bars and table rows: ``violin 2/3`` (label-major: p = class · K + k)."""
    return f"{labels[p // per_class]} {p % per_class + 1}/{per_class}"


def class_points(prediction, label: str, temperature: float) -> tuple[float, list[tuple[int, float]], float]:
    """``(total, [(p, points)], bias points)`` of ``label``: total = logit / temperature = Σ points + bias."""
    contrib = prediction.contributions[label]
    bias = float(prediction.logits[label]) - sum(contrib)
    return (
        float(prediction.logits[label]) / temperature,
        [(p, v / temperature) for p, v in enumerate(contrib)],
        bias / temperature,
    )


def evidence_rows(prediction, label: str, temperature: float, labels: list[str], per_class: int) -> list[dict]:
    """The bars of one class panel: the biggest prototypes, then one row for everything else (exact sum)."""
    total, items, _bias = class_points(prediction, label, temperature)
    biggest = max((abs(v) for _, v in items), default=0.0)
    order = sorted(items, key=lambda pv: -abs(pv[1]))
    shown = [(p, v) for p, v in order[:BAR_ROWS] if abs(v) >= MIN_SHARE * biggest and abs(v) > 0]
    rows = [
        {"name": prototype_name(p, labels, per_class), "class": labels[p // per_class], "points": v} for p, v in shown
    ]
    rest = total - sum(v for _, v in shown)
    n_rest = len(items) - len(shown)
    if abs(rest) >= 0.05 or n_rest:
        name = f"{n_rest} other prototype{'s' * (n_rest != 1)} + baseline" if n_rest else "baseline"
        rows.append({"name": name, "class": None, "points": rest})
    return rows


def _bar_rows(rows: list[dict], colors: dict[str, str]) -> str:
    lo = min([0.0] + [r["points"] for r in rows])
    hi = max([0.0] + [r["points"] for r in rows])
    span = (hi - lo) or 1.0
    zero = -lo / span * 100
    out = []
    for r in rows:
        v = r["points"]
        width = abs(v) / span * 100
        left = zero if v >= 0 else zero - width
        style = f"left:{left:.2f}%;width:{max(width, 0.4):.2f}%;" + (
            f"background:{colors[r['class']]}" if r["class"] else ""
        )
        kind = "pe-fill" if r["class"] else "pe-fill pe-rest"
        out.append(
            f'<div class="pe-row"><div class="pe-name">{_esc(r["name"])}</div>'
            f'<div class="pe-bar"><div class="{kind}" style="{style}"></div>'
            f'<div class="pe-zero" style="left:{zero:.2f}%"></div></div>'
            f'<div class="pe-val">{v:+.1f}</div></div>'
        )
    return "".join(out)


def _panel(
    prediction, label: str, title: str, temperature: float, labels: list[str], per_class: int, colors: dict[str, str]
) -> str:
    total = class_points(prediction, label, temperature)[0]
    rows = evidence_rows(prediction, label, temperature, labels, per_class)
    return (
        f'<section class="pe-panel"><h4><span class="pe-chip" style="background:{colors[label]}"></span>'
        f"{_esc(title)} · {pct(prediction.scores[label])}</h4>"
        f'<div class="pe-sub">{total:.1f} points in total</div>{_bar_rows(rows, colors)}</section>'
    )


def timeline_html(prediction, colors: dict[str, str], chunk_seconds: float | None = None) -> str:
    """A strip of coloured segments, one per run of chunks with the same answer, with a time axis."""
    runs = segments(prediction)
    end = prediction.chunk_ends[-1] if prediction.chunk_ends else prediction.duration
    words = ", ".join(f"{r['label'] or SILENT_LABEL} {seconds(r['start'])}–{seconds(r['end'])} s" for r in runs)
    segs = []
    for r in runs:
        color = colors.get(r["label"], "") if r["label"] else ""
        cls = "pe-seg" if r["label"] else "pe-seg pe-silent"
        tip = f"{r['label'] or SILENT_LABEL}: {seconds(r['start'])}–{seconds(r['end'])} s"
        segs.append(
            f'<div class="{cls}" style="flex:{max(r["end"] - r["start"], 1e-3):.3f} 1 0;'
            f'{f"background:{color}" if color else ""}" title="{_esc(tip)}">'
            f"<span>{_esc(r['label'] or SILENT_LABEL)}</span></div>"
        )
    per = f"{seconds(chunk_seconds)} s chunk" if chunk_seconds else "chunk"
    return (
        f'<div class="pe-block"><h4>What the model hears, {per} by {per}</h4>'
        f'<div class="pe-track" role="img" aria-label="{_esc(words)}">{"".join(segs)}</div>'
        f'<div class="pe-axis"><span>0 s</span><span>{seconds(end)} s</span></div></div>'
    )


def explanation_html(
    prediction, labels: list[str], temperature: float, chunk_seconds: float | None = None, dim: bool = False
) -> str:
    """The timeline and the evidence of the predicted class and the runner-up (see the module docstring)."""
    labels = list(labels or prediction.contributions)
    per_class = max(1, len(next(iter(prediction.contributions.values()))) // len(labels))
    colors = class_colors(labels)
    ranked = ranked_classes(prediction.scores)
    top = ranked[0]
    panels = [_panel(prediction, top, f"Why {top}", temperature, labels, per_class, colors)]
    note = ""
    if len(ranked) > 1:
        second = ranked[1]
        panels.append(_panel(prediction, second, f"Runner-up {second}", temperature, labels, per_class, colors))
        lead = (prediction.logits[top] - prediction.logits[second]) / temperature
        note = (
            f" {_esc(top[:1].upper() + top[1:])} leads {_esc(second)} by {lead:.1f} points, so it is about "
            f"{times(math.exp(min(lead, 50.0)))} times as likely ({pct(prediction.scores[top])} vs "
            f"{pct(prediction.scores[second])})."
        )
    legend = "".join(
        f'<span class="pe-key"><span class="pe-chip" style="background:{colors[c]}"></span>{_esc(c)}</span>'
        for c in labels
    )
    guess = (
        '<p class="pe-guess">These bars explain a guess: the audio is unlike what the model was trained on.</p>'
        if dim
        else ""
    )
    return (
        f'<div class="pe-why{" pe-dim" if dim else ""}">{guess}{timeline_html(prediction, colors, chunk_seconds)}'
        f'<div class="pe-panels">{"".join(panels)}</div>'
        f'<p class="pe-note"><b>How to read the bars:</b> each bar is one prototype\'s evidence in points '
        f"(how close your audio is to that prototype × the weight the model gives it, divided by the "
        f"model's temperature {temperature:g}). A class's points add up to its score: every point of "
        f"lead multiplies the odds by e ≈ 2.7.{note}</p>"
        f'<div class="pe-legend">{legend}</div></div>'
    )


#: the heat map's one colour scale: from the page background (least similar) to this colour (most similar)
HEAT_RGB = (37, 52, 148)


def similarity_html(prediction, labels: list[str], max_columns: int = MAX_COLUMNS) -> str:
    """Heat map of the similarity (0–1, 1 = identical) of every chunk (columns) to every prototype (rows), one
    colour scale for every row (so rows compare), the rows' class shown by a chip."""
    labels = list(labels)
    sims = [list(map(float, row)) for row in prediction.similarities]
    if not sims:
        return '<p class="pe-note">No chunks.</p>'
    n, n_protos = len(sims), len(sims[0])
    per_class = max(1, n_protos // len(labels))
    colors = class_colors(labels)
    size = max(1, math.ceil(n / max_columns))
    groups = [list(range(i, min(i + size, n))) for i in range(0, n, size)]
    columns = [[sum(sims[i][p] for i in g) / len(g) for p in range(n_protos)] for g in groups]
    audible = prediction.audible
    lo = min(min(c) for c in columns)
    hi = max(max(c) for c in columns)
    every = 1 if len(groups) <= 12 else max(2, math.ceil(len(groups) / 10))
    head = "".join(
        f'<th scope="col">{seconds(prediction.chunk_starts[g[0]]) + " s" if j % every == 0 else ""}</th>'
        for j, g in enumerate(groups)
    )
    best = [max(range(n_protos), key=lambda p: col[p]) for col in columns]
    r, g, b = HEAT_RGB
    body = []
    for p in range(n_protos):
        label = labels[p // per_class]
        cells = []
        for j, col in enumerate(columns):
            alpha = 0.04 + 0.96 * ((col[p] - lo) / ((hi - lo) or 1.0))
            quiet = not any(audible[i] for i in groups[j])
            start, end = prediction.chunk_starts[groups[j][0]], prediction.chunk_ends[groups[j][-1]]
            where = f"{seconds(start)}–{seconds(end)} s"
            tip = f"{prototype_name(p, labels, per_class)} · {where} · similarity {col[p]:.2f}"
            cls = " ".join(x for x in ("pe-best" if best[j] == p else "", "pe-quiet" if quiet else "") if x)
            cells.append(
                f"<td{f' class={chr(34)}{cls}{chr(34)}' if cls else ''} "
                f'style="background:rgba({r},{g},{b},{alpha:.2f})" title="{_esc(tip)}"></td>'
            )
        strong = " pe-top" if label == prediction.label else ""
        body.append(
            f'<tr><th scope="row" class="pe-pname{strong}"><span class="pe-chip" '
            f'style="background:{colors[label]}"></span>{_esc(prototype_name(p, labels, per_class))}</th>'
            f"{''.join(cells)}</tr>"
        )
    scale = (
        f'<div class="pe-scale"><span>{lo:.2f}</span><span class="pe-ramp" style="background:linear-gradient('
        f'to right, rgba({r},{g},{b},0.04), rgb({r},{g},{b}))"></span><span>{hi:.2f}</span></div>'
    )
    note = (
        f"Darker = closer: one scale for every row, from the least to the most similar cell of this clip "
        f"(similarity {lo:.2f} to {hi:.2f}; 1 = identical). The outlined cell of each column is the prototype "
        f"closest to that moment." + (f" Each column averages {size} chunks." if size > 1 else "")
    )
    return (
        f'<div class="pe-simwrap"><table class="pe-sim"><thead><tr><th scope="col">prototype</th>{head}</tr>'
        f'</thead><tbody>{"".join(body)}</tbody></table></div>{scale}<p class="pe-note">{note}</p>'
    )


def scores_html(prediction, labels: list[str], top: int = 5, dim: bool = False) -> str:
    """The ``top`` class scores as bars in the classes' colours, in the headline's words (:func:`pct`)."""
    colors = class_colors(list(labels) or list(prediction.scores))
    ranked = ranked_classes(prediction.scores)[:top]
    rows = "".join(
        f'<div class="pe-score"><span class="pe-sname"><span class="pe-chip" style="background:{colors[c]}">'
        f'</span>{_esc(c)}</span><span class="pe-sbar"><span style="width:{100 * prediction.scores[c]:.1f}%;'
        f'background:{colors[c]}"></span></span><span class="pe-val">{pct(prediction.scores[c])}</span></div>'
        for c in ranked
    )
    title = "Class scores: a guess" if dim else "Class scores (whole clip)"
    return f'<div class="pe-scores{" pe-dim" if dim else ""}"><h4>{title}</h4>{rows}</div>'


#: styles of the views above (added to the app's CSS); sizes in px/rem so text stays legible at any width
FIGURE_CSS = """
.pe-why, .pe-simwrap, .pe-why + .pe-note {font-size: 14px; line-height: 1.4; color: var(--body-text-color);}
.pe-why h4 {margin: 0 0 6px; font-size: 15px; font-weight: 600; display: flex; align-items: center; gap: 6px;}
.pe-block {margin-bottom: 14px;}
.pe-track {display: flex; width: 100%; height: 34px; border-radius: 6px; overflow: hidden; gap: 2px;}
.pe-seg {display: flex; align-items: center; justify-content: center; min-width: 3px; overflow: hidden;
         color: #fff; font-size: 13px; font-weight: 600; text-shadow: 0 1px 1px rgba(0,0,0,.35);}
.pe-seg span {overflow: hidden; text-overflow: ellipsis; white-space: nowrap; padding: 0 4px;}
.pe-seg.pe-silent {background: repeating-linear-gradient(45deg, #d0d4da, #d0d4da 4px, #f1f3f5 4px, #f1f3f5 8px);
                   color: #333; text-shadow: none;}
.pe-axis {display: flex; justify-content: space-between; font-size: 12px; opacity: .8; margin-top: 2px;}
.pe-panels {display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 300px), 1fr)); gap: 12px 24px;}
.pe-panel {min-width: 0;}
.pe-sub {font-size: 13px; opacity: .85; margin-bottom: 4px;}
.pe-row {display: grid; grid-template-columns: minmax(7em, 40%) 1fr 3.4em; align-items: center; gap: 8px;
         min-height: 26px;}
.pe-name {overflow-wrap: anywhere; font-size: 13px;}
.pe-bar {position: relative; height: 16px; background: var(--background-fill-secondary, #f3f4f6); border-radius: 3px;}
.pe-fill {position: absolute; top: 0; bottom: 0; border-radius: 3px;}
.pe-fill.pe-rest {background: transparent; border: 2px dashed var(--body-text-color, #333); box-sizing: border-box;}
.pe-zero {position: absolute; top: -3px; bottom: -3px; width: 1px; background: var(--body-text-color, #333);}
.pe-val {text-align: right; font-variant-numeric: tabular-nums; font-size: 13px;}
.pe-chip {display: inline-block; width: 12px; height: 12px; border-radius: 3px; flex: none; margin-right: 4px;
          vertical-align: -1px;}
.pe-note {font-size: 13px; opacity: .9; margin: 10px 0 4px;}
.pe-legend {display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 13px;}
.pe-key {white-space: nowrap;}
.pe-simwrap {overflow-x: auto; max-width: 100%;}
.pe-sim {border-collapse: separate; border-spacing: 1px; font-size: 12px; margin: 0;}
.pe-sim th {font-weight: 400; white-space: nowrap; padding: 0 6px 0 0; text-align: left; border: none;
            background: none;}
.pe-sim thead th {font-size: 11px; padding: 0 2px; min-width: 26px; text-align: center;}
.pe-sim th[scope=row] {position: sticky; left: 0; z-index: 1; background: var(--block-background-fill, #fff);}
.pe-sim .pe-pname.pe-top {font-weight: 700;}
.pe-sim td {min-width: 26px; height: 17px; padding: 0; border: none; border-radius: 2px;}
.pe-sim td.pe-best {outline: 2px solid var(--body-text-color, #222); outline-offset: -2px;}
.pe-sim td.pe-quiet {opacity: .3;}
.pe-scale {display: flex; align-items: center; gap: 6px; font-size: 12px; margin-top: 6px;}
.pe-ramp {display: inline-block; width: 140px; height: 10px; border-radius: 2px; border: 1px solid #c5cad3;}
.pe-scores {font-size: 14px; color: var(--body-text-color);}
.pe-scores h4 {margin: 0 0 6px; font-size: 14px; font-weight: 600;}
.pe-score {display: grid; grid-template-columns: minmax(6em, 42%) 1fr 5em; align-items: center; gap: 8px;
           min-height: 24px;}
.pe-sname {overflow-wrap: anywhere;}
.pe-sbar {height: 12px; background: var(--background-fill-secondary, #f3f4f6); border-radius: 3px; overflow: hidden;}
.pe-sbar span {display: block; height: 100%; border-radius: 3px;}
.pe-dim .pe-sbar span, .pe-dim .pe-fill, .pe-dim .pe-seg, .pe-dim .pe-chip {filter: grayscale(1); opacity: .45;}
.pe-dim .pe-val, .pe-dim .pe-sname {color: #4b5563;}
.pe-guess {font-size: 14px; font-weight: 600; margin: 0 0 8px; color: #8a1c1c;}
"""
