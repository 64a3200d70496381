"""Split files: ``label<TAB>relative/path`` TSVs and ``labels.txt``, the one reader and writer of both.

The TSVs are those of the upstream groundtruth files (no header, one track per line); ``labels.txt``
lists the class names in id order. Data sets (:mod:`pecmae_hub.data.splits`), feature sets
(:mod:`pecmae_hub.training.features`) and the converters read them here, so every command accepts
the same files and reports a bad line as ``file:line``.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from pecmae_hub.errors import ConfigError, DatasetError
from pecmae_hub.storage.atomic import atomic_write_text

Item = tuple[str, str]
LABELS_FILE = "labels.txt"


def _check_field(value: str, what: str) -> str:
    if not value or any(c in value for c in "\t\r\n"):
        raise DatasetError(f"{what} {value!r} is empty or contains a tab or line break")
    return value


def write_tsv(split_items: Iterable[Item], path: str | Path) -> Path:
    """Write ``label<TAB>relative/path`` lines (no header, LF), atomically, and return the path."""
    lines = [f"{_check_field(str(label), 'label')}\t{_check_field(str(rel), 'path')}\n"
             for label, rel in split_items]
    return atomic_write_text(path, "".join(lines))


def _is_header(label: str, rel: str) -> bool:
    return label.lower() == "label" and rel.lower() in ("path", "relpath", "filename", "file")


def read_tsv(path: str | Path, labels: Sequence[str] | None = None, *,
             aliases: dict[str, str] | None = None) -> list[Item]:
    """Read a split file: ``label<TAB>relative/path`` lines, as the upstream groundtruth TSVs.

    Tolerated: a UTF-8 BOM, CRLF, blank lines, ``#`` comment lines, spaces around fields and a
    ``label<TAB>path`` header on line 1. ``aliases`` rename labels first (e.g. GTZAN ``blu`` ->
    ``blues``). Raises :class:`DatasetError` naming ``file:line`` for a line without exactly two
    fields, a path listed twice with different labels and, with ``labels``, a label outside it.
    An empty file gives no items.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"split file not found: {path}")
    known = None if labels is None else set(labels)
    items: list[Item] = []
    seen: dict[str, tuple[str, int]] = {}
    with open(path, encoding="utf-8-sig", newline="") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            label, _, rel = (part.strip() for part in line.partition("\t"))
            if not label or not rel or "\t" in rel:
                raise DatasetError(f"{path}:{lineno}: expected 'label<TAB>relative/path', got {line!r}")
            if lineno == 1 and _is_header(label, rel):
                continue
            label = (aliases or {}).get(label, label)
            if known is not None and label not in known:
                raise DatasetError(f"{path}:{lineno}: unknown label {label!r}; "
                                   f"known labels: {', '.join(labels)}")
            first_label, first_line = seen.setdefault(rel, (label, lineno))
            if first_label != label:
                raise DatasetError(f"{path}:{lineno}: {rel} is labelled {label!r}, but {first_label!r} "
                                   f"on line {first_line}")
            items.append((label, rel))
    return items



def read_labels(path: str | Path) -> list[str]:
    """Read ``labels.txt``: one class name per line, in id order (blank lines ignored).

    Raises :class:`DatasetError` for a missing or empty file, or a repeated label (naming ``file:line``).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"labels file not found: {path}")
    labels: dict[str, int] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        name = line.strip()
        if name in labels:
            raise DatasetError(f"{path}:{lineno}: label {name!r} repeated (first on line {labels[name]})")
        if name:
            labels[name] = lineno
    if not labels:
        raise DatasetError(f"labels file {path} lists no labels")
    return list(labels)


def parse_labels(value: str | os.PathLike | Sequence[str]) -> list[str]:
    """Class names from a list, a labels file (:func:`read_labels`) or a comma-separated string.

    Raises :class:`ConfigError` for an empty or repeating list or string, :class:`DatasetError` for a
    bad file.
    """
    if isinstance(value, (str, os.PathLike)) and os.path.isfile(value):
        return read_labels(value)
    if isinstance(value, (str, os.PathLike)):
        value = os.fspath(value).split(",")
    labels = [x for x in (str(v).strip() for v in value) if x]
    if not labels:
        raise ConfigError(f"no labels found in {value!r}: give a comma list (a,b,c) or a file with one label per line")
    if len(set(labels)) != len(labels):
        raise ConfigError(f"repeated labels in {labels}")
    return labels


def write_labels(path: str | Path, labels: Sequence[str]) -> Path:
    """Write ``labels.txt`` (one label per line, in id order, LF), atomically, and return the path."""
    return atomic_write_text(path, "".join(f"{_check_field(str(name), 'label')}\n" for name in labels))
