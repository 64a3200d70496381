"""What classification returns: a :class:`Prediction` per input (or a :class:`ClassificationFailure`),
and :func:`explain`, the prototypes behind a decision."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from pecmae_hub.errors import ConfigError


def percent_text(value: float) -> str:
    """A score or share (0-1) as text that never rounds to a false 100 % or 0 %: ``99.8 %``, ``> 99.9 %``,
    ``< 0.1 %`` (the app and the command line print scores this one way)."""
    v = 100.0 * float(value)
    if v >= 99.95:
        return "> 99.9 %"
    if v < 0.05:
        return "< 0.1 %"
    return f"{v:.1f} %"


@dataclasses.dataclass
class Prediction:
    """One classified input; every field is plain JSON (lists, dicts, floats).

    ``similarities`` is (n_chunks, P); ``contributions[c]`` holds, for every prototype p, the mean
    over the audible chunks of ``linear.weight[c, p] * similarity[p]`` (they sum, with the bias, to
    ``logits[c]``). ``top_prototypes`` lists the prototypes that pushed hardest towards ``label``.

    ``chunk_silent[i]`` marks a chunk with nothing audible (:func:`pecmae_hub.audio.is_silent`): it takes
    no part in ``label``, ``scores``, ``logits`` or ``contributions``, and its ``chunk_labels[i]`` is None
    (no answer is made up for silence). An input whose every chunk is silent raises ``AudioError``.

    ``ood_score`` says how unlike the training audio the input is (the model's
    :class:`~pecmae_hub.models.ood.OODScorer` track score; about 1 for training data, higher is
    stranger) and ``in_domain`` whether it is within the threshold calibrated when the head was
    trained; both are None for a model without a scorer. When ``in_domain`` is False, ``label`` is
    the nearest class of a model that was not made for this input. ``ood_percentile`` puts the score on
    a scale a person reads: the share (0-1) of the model's training clips of the same length that lie
    closer to the training audio (0.97: "further than 97 % of training clips"); None when the scorer
    keeps no reference.

    ``precision`` is the numeric mode the model ran at (``"fp32"``, ``"int8"``, ``"bf16"``, ``"fp16"``: what
    ``precision="auto"`` chose, see :mod:`pecmae_hub.models.fidelity_record`).
    """

    source: str
    label: str
    scores: dict[str, float]
    logits: dict[str, float]
    chunk_labels: list[str | None]
    chunk_starts: list[float]
    chunk_ends: list[float]
    similarities: list[list[float]]
    contributions: dict[str, list[float]]
    top_prototypes: list[dict]
    duration: float
    model: str = ""
    precision: str = "fp32"
    chunk_silent: list[bool] = dataclasses.field(default_factory=list)
    ood_score: float | None = None
    in_domain: bool | None = None
    ood_percentile: float | None = None
    ok: bool = True

    @property
    def confidence(self) -> float:
        return self.scores[self.label]

    @property
    def audible(self) -> list[bool]:
        """Per chunk, whether it took part in the decision (not silent)."""
        silent = self.chunk_silent or [False] * len(self.chunk_labels)
        return [not s for s in silent]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Prediction:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


@dataclasses.dataclass
class ClassificationFailure:
    """An input of a list call that could not be classified: where, which typed error, and why.

    ``PECMAE.classify([...])`` returns one item per input, in order: a :class:`Prediction` for each
    input that worked and a ``ClassificationFailure`` for each that did not, so a bad file never
    costs the results of the others. ``ok`` tells them apart.
    """

    source: str
    error: str  # the error class, e.g. "AudioError"
    message: str
    ok: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def explain(
    prediction: Prediction, top_k: int = 3, label: str | None = None, nearest: dict | None = None
) -> list[dict]:
    """The ``top_k`` prototypes contributing most to ``label`` (default: the predicted one).

    Each item: ``{"class", "k", "p", "contribution", "similarity"}`` (similarity: mean over audible chunks)
    plus ``"nearest"`` (training chunks closest to the prototype) when a ``nearest.json`` table is given.
    """
    label = label or prediction.label
    if label not in prediction.contributions:
        raise ConfigError(f"unknown class {label!r}; classes: {list(prediction.contributions)}")
    labels = list(prediction.contributions)
    contrib = prediction.contributions[label]
    per_class = len(contrib) // len(labels)
    sims = np.asarray(prediction.similarities, dtype=np.float64)
    audible = np.asarray(prediction.audible, dtype=bool)
    sims = (sims[audible] if audible.any() else sims).mean(axis=0)  # the chunks behind the decision
    table = {int(e["index"]): e.get("nearest", []) for e in (nearest or {}).get("prototypes", [])}
    out = []
    for p in sorted(range(len(contrib)), key=lambda i: -contrib[i])[: max(0, top_k)]:
        item = {
            "class": labels[p // per_class],
            "k": p % per_class,
            "p": p,
            "contribution": float(contrib[p]),
            "similarity": float(sims[p]),
        }
        if p in table:
            item["nearest"] = table[p]
        out.append(item)
    return out
