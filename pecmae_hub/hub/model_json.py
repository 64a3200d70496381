"""The shapes of a model's JSON files, checked when they are read: a malformed file is a typed error.

A model folder or repo comes from whoever published it, so its JSON files (``pecmae.json``,
``metrics.json``, ``nearest.json``, ``prototypes/index.json``, ``nearest/index.json``, ``fidelity.json``) may
hold anything that parses. :meth:`pecmae_hub.hub.files.ModelFiles.json` checks each one against its shape here, so a
wrong type is a :class:`~pecmae_hub.errors.CheckpointError` naming the file and the field when the model is
loaded (or the file first read), not an ``AttributeError`` or a ``ValueError`` from deep inside the code
that uses it. Fields a file may lack stay optional; unknown fields are allowed (a newer writer).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pecmae_hub.errors import CheckpointError
from pecmae_hub.models.fidelity_record import FIDELITY_NAME, check_record_shape

Check = Callable[[Any, str], None]


def _fail(source: str, what: str, value: Any) -> CheckpointError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return CheckpointError(f"{source} is malformed: {what}, got {shown}; the model's files are damaged")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fields(
    data: dict,
    source: str,
    rules: dict[str, tuple[Callable[[Any], bool], str]],
    where: str = "",
    nullable: bool = False,
) -> None:
    for key, (ok, what) in rules.items():
        if key in data and not (ok(data[key]) or (nullable and data[key] is None)):
            raise _fail(source, f"{where}{key!r} must be {what}", data[key])


def _list_of(data: dict, key: str, source: str, check: Callable[[dict, str], None]) -> None:
    if key not in data:
        return
    items = data[key]
    if not isinstance(items, list):
        raise _fail(source, f"{key!r} must be a list", items)
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise _fail(source, f"{key}[{i}] must be an object", item)
        check(item, f"{key}[{i}].")


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def check_object(data: Any, source: str) -> None:
    """Every model JSON file holds one JSON object."""
    if not isinstance(data, dict):
        raise _fail(source, "the file must hold a JSON object", data)


def check_info(data: Any, source: str) -> None:
    """``pecmae.json``: the model's name, data set, licence and card texts."""
    check_object(data, source)
    text = (lambda v: isinstance(v, str), "a string")
    _fields(
        data,
        source,
        {
            **{k: text for k in ("name", "dataset", "dataset_name", "split", "license", "description", "recipe")},
            "training_data": text,
            **{k: (_strings, "a list of strings") for k in ("tags", "datasets", "limitations", "licence_notes")},
            "chunk_seconds": (lambda v: _number(v) and v > 0, "a positive number"),
            "evaluation": (lambda v: isinstance(v, dict), "an object"),
            "paper_results": (lambda v: isinstance(v, dict), "an object"),
        },
        nullable=True,  # an unknown value: the card says so
    )


def check_nearest(data: Any, source: str) -> None:
    """``nearest.json``: for each prototype, the training chunks nearest to it."""
    check_object(data, source)

    def chunk(item: dict, where: str) -> None:
        _fields(
            item,
            source,
            {
                "track": (lambda v: isinstance(v, str), "a string"),
                "chunk": (_whole, "a whole number"),
                "distance": (_number, "a finite number"),
            },
            where,
        )

    def prototype(item: dict, where: str) -> None:
        if not _whole(item.get("index")):
            raise _fail(source, f"{where}'index' must be a whole number", item.get("index"))
        _list_of(item, "nearest", source, lambda sub, w: chunk(sub, where + w))

    _list_of(data, "prototypes", source, prototype)


def check_render_index(data: Any, source: str) -> None:
    """``prototypes/index.json``: the settings of the pre-rendered prototype WAVs and their files."""
    check_object(data, source)
    _fields(
        data,
        source,
        {
            "steps": (lambda v: _whole(v) and v >= 1, "a whole number of steps, 1 or more"),
            "guidance": (_number, "a finite number"),
            "seed": (lambda v: _whole(v) and v >= 0, "a whole number, 0 or more"),
            "scheduler": (lambda v: isinstance(v, (str, dict)), "a sampler name or object"),
            "autoencoder_fingerprint": (lambda v: isinstance(v, str), "a string"),
        },
    )

    def entry(item: dict, where: str) -> None:
        if not _whole(item.get("index")) or not isinstance(item.get("file"), str):
            raise _fail(source, f"{where} needs a whole-number 'index' and a 'file' name", item)

    _list_of(data, "prototypes", source, entry)


def check_nearest_audio_index(data: Any, source: str) -> None:
    """``nearest/index.json``: the shipped audio of the nearest training chunks."""
    check_object(data, source)

    def entry(item: dict, where: str) -> None:
        if not (_whole(item.get("prototype")) and _whole(item.get("rank")) and isinstance(item.get("file"), str)):
            raise _fail(source, f"{where} needs whole-number 'prototype' and 'rank' and a 'file' name", item)

    _list_of(data, "entries", source, entry)


#: the check of each JSON file of a model (by its path inside the model); others must hold an object
CHECKS: dict[str, Check] = {
    "pecmae.json": check_info,
    "metrics.json": check_object,
    "nearest.json": check_nearest,
    "prototypes/index.json": check_render_index,
    "nearest/index.json": check_nearest_audio_index,
    FIDELITY_NAME: check_record_shape,
}
