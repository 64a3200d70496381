"""Inputs of ``pecmae classify`` / ``pecmae extract``: audio files, or a Hugging Face dataset streamed row by row.

``hf://datasets/ORG/NAME[@REVISION]`` (``--split``; default: the dataset's only split) is opened with
``datasets.load_dataset(..., streaming=True)``: nothing is downloaded in full, rows are read as they are
classified. The audio column (``--audio-column``, default: the dataset's only ``Audio`` column) is read
with ``Audio(decode=False)`` and its bytes are decoded by :func:`pecmae_hub.audio.load_audio`, the decoder
of every other input. Two reasons: a dataset row then gives exactly the prediction of the same file on
disk, and ``datasets``' own decoder needs ``torchcodec`` (FFmpeg), which need not load beside a CPU build of
torch.

Row identity (the ``path`` column of the results, the resume key and the file name of extracted
features) is the value of the id column (``--id-column``, default ``id`` when the dataset has one), or
else the row's index in the split. Under ``accelerate launch`` each process reads its part with
``datasets.distributed.split_dataset_by_node``: whole shards (files) per process when there is an id
column and the shard count divides by the process count, else every N-th row (strategy ``examples``,
which also keeps the index of a row known to its process).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pecmae_hub.audio import collect_audio_files, file_key
from pecmae_hub.distributed import processes, shard
from pecmae_hub.errors import ConfigError, DatasetError
from pecmae_hub.extras import require

DATASET_PREFIX = "hf://datasets/"


def is_dataset_uri(text: str | os.PathLike) -> bool:
    """True for ``hf://datasets/ORG/NAME[@REVISION]``."""
    return isinstance(text, str) and text.startswith(DATASET_PREFIX)


def parse_dataset_uri(uri: str) -> tuple[str, str | None]:
    """``(repo_id, revision)`` of ``hf://datasets/ORG/NAME[@REVISION]``."""
    repo, _, revision = uri[len(DATASET_PREFIX) :].strip("/").partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ConfigError(f"{uri!r} is not a dataset address: use hf://datasets/ORG/NAME (or ...@REVISION)")
    return repo, revision or None


class FileSource:
    """Audio files (folders searched recursively, list files, single files); the key is the resolved path."""

    key = staticmethod(file_key)

    def __init__(self, paths):
        self.files = collect_audio_files(paths)

    def input_keys(self) -> list[str]:
        return [f.path for f in self.files]

    def share(self, todo: list[str]) -> tuple[Iterator[tuple[str, Any]], int | None]:
        """This process's pending inputs as ``(key, audio)`` pairs, and how many."""
        mine = shard(todo)
        return ((p, p) for p in mine), len(mine)


@dataclass
class DatasetSource:
    """A ``datasets`` dataset (streamed or in memory) read as ``(row id, audio bytes)`` pairs."""

    dataset: Any
    audio_column: str
    id_column: str | None = None
    name: str = "dataset"

    key = staticmethod(str)

    @classmethod
    def open(
        cls,
        dataset,
        *,
        audio_column: str | None = None,
        id_column: str | None = None,
        name: str = "dataset",
    ) -> DatasetSource:
        """Wrap a ``datasets.Dataset`` / ``IterableDataset``: pick and check the audio and id columns, and read
        the audio as bytes (``Audio(decode=False)``).

        Raises:
            DatasetError: no audio column (or several and none chosen), or a named column that is missing.
        """
        datasets = require("datasets", "reading Hugging Face datasets")
        features = dataset.features or {}
        audio_columns = [c for c, f in features.items() if isinstance(f, datasets.Audio)]
        if audio_column is None:
            if len(audio_columns) != 1:
                found = ", ".join(audio_columns) or f"none among {', '.join(features) or 'its columns'}"
                raise DatasetError(f"{name}: choose the audio column with --audio-column (Audio columns: {found})")
            audio_column = audio_columns[0]
        for what, column in (("audio", audio_column), ("id", id_column)):
            if column is not None and features and column not in features:
                raise DatasetError(f"{name} has no {what} column {column!r}; its columns: {', '.join(features)}")
        if id_column is None and "id" in features:
            id_column = "id"
        if audio_column in audio_columns:
            dataset = dataset.cast_column(audio_column, datasets.Audio(decode=False))
        return cls(dataset, audio_column, id_column, name)

    @classmethod
    def from_uri(
        cls,
        uri: str,
        *,
        split: str | None = None,
        audio_column: str | None = None,
        id_column: str | None = None,
        config: str | None = None,
        token: str | bool | None = None,
    ) -> DatasetSource:
        """Stream ``hf://datasets/ORG/NAME[@REVISION]``'s ``split`` (no full download; ``None``: its only split).

        Raises:
            DatasetError: the dataset, its revision or its split cannot be opened (the message says why).
        """
        datasets = require("datasets", f"reading {uri}")
        repo, revision = parse_dataset_uri(uri)
        try:
            splits = datasets.load_dataset(repo, config, revision=revision, streaming=True, token=token)
        except Exception as exc:  # the library's errors vary by cause (no repo, no revision, no data files)
            raise DatasetError(
                f"cannot stream {uri}: {type(exc).__name__}: {' '.join(str(exc).split())[:400]}"
            ) from None
        names = list(splits)
        if split is None and len(names) != 1:
            raise DatasetError(f"{uri} has the splits {', '.join(names)}: choose one with --split")
        split = names[0] if split is None else split
        if split not in splits:
            raise DatasetError(f"{uri} has no split {split!r}; its splits: {', '.join(names)}")
        return cls.open(splits[split], audio_column=audio_column, id_column=id_column, name=f"{uri} ({split})")

    def input_keys(self) -> list[str]:
        """Every row's id (or index) in order, read from the id column alone (no audio is downloaded)."""
        if not self.id_column and hasattr(self.dataset, "__len__"):  # in memory: its length is known
            return [str(i) for i in range(len(self.dataset))]
        column = [self.id_column] if self.id_column else []
        keys = [str(row[self.id_column]) if self.id_column else str(i) for i, row in enumerate(self._select(column))]
        if self.id_column and len(set(keys)) != len(keys):
            seen: set[str] = set()
            twice = next(k for k in keys if k in seen or seen.add(k))  # type: ignore[func-returns-value]
            raise DatasetError(
                f"{self.name}: id column {self.id_column!r} repeats {twice!r}; give a unique --id-column"
            )
        return keys

    def _select(self, columns: list[str]):
        return self._readable(self.dataset.select_columns(columns))

    def _readable(self, rows) -> Iterator[dict]:
        """``rows`` iterated, with the one failure of ``datasets`` 5 that users can act on made clear."""
        try:
            yield from rows
        except ImportError as exc:
            if "torchcodec" not in str(exc):
                raise
            raise DatasetError(
                f"{self.name} is stored as audio files, which `datasets` reads only with torchcodec (FFmpeg): "
                "stream its parquet conversion instead (hf://datasets/ORG/NAME@refs/convert/parquet) or install "
                "torchcodec"
            ) from None

    def split(self):
        """This process's part of the dataset (``split_dataset_by_node``), and the strategy used."""
        state = processes()
        if state.num_processes == 1:
            return self.dataset, "all"
        from datasets.distributed import split_dataset_by_node

        streamed = not hasattr(self.dataset, "__len__")
        if not streamed:  # a map-style dataset is split into contiguous blocks: index known from its offset
            return split_dataset_by_node(self.dataset, state.process_index, state.num_processes), "contiguous"
        if self.id_column and self.dataset.num_shards % state.num_processes == 0:
            return split_dataset_by_node(self.dataset, state.process_index, state.num_processes, strategy="shards"), (
                "shards"
            )
        return split_dataset_by_node(
            self.dataset, state.process_index, state.num_processes, strategy="examples"
        ), "examples"

    def rows(self) -> Iterator[tuple[str, Any]]:
        """``(key, audio)`` of every row of this process's part: audio bytes, a path, or an error text."""
        state = processes()
        part, strategy = self.split()
        n, r = state.num_processes, state.process_index
        offset = 0
        if strategy == "contiguous":
            total = len(self.dataset)
            offset = (total // n) * r + min(r, total % n)
        for i, row in enumerate(self._readable(part)):
            if self.id_column:
                key = str(row[self.id_column])
            else:
                key = str(i * n + r if strategy == "examples" else offset + i)
            yield key, _audio_of(row.get(self.audio_column), self.audio_column)

    def share(self, todo: list[str]) -> tuple[Iterator[tuple[str, Any]], int | None]:
        """This process's pending rows as ``(key, audio)`` pairs, and how many when known in advance."""
        wanted = set(todo)
        return ((k, a) for k, a in self.rows() if k in wanted), None


def _audio_of(cell, column: str):
    """What :func:`pecmae_hub.audio.load_audio` reads for one cell of an ``Audio(decode=False)`` column."""
    if isinstance(cell, dict) and cell.get("bytes"):
        return bytes(cell["bytes"])
    if isinstance(cell, dict) and cell.get("path"):
        return _read_path(cell["path"])
    if isinstance(cell, (bytes, str)):
        return cell if isinstance(cell, bytes) else _read_path(cell)
    return DatasetError(f"the {column!r} cell of this row holds no audio ({type(cell).__name__})")


def _read_path(path: str):
    """The bytes behind a path of a streamed dataset (local, ``hf://`` or http URL), read with ``datasets``."""
    from datasets.utils.file_utils import xopen

    try:
        with xopen(path, "rb") as f:
            return f.read()
    except Exception as exc:
        return DatasetError(f"cannot read audio {path}: {type(exc).__name__}: {exc}")


def open_source(
    inputs,
    *,
    split: str | None = None,
    audio_column: str | None = None,
    id_column: str | None = None,
):
    """A :class:`DatasetSource` for one ``hf://datasets/...`` input, else a :class:`FileSource`."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    uris = [i for i in items if is_dataset_uri(i)]
    if uris:
        if len(items) != 1:
            raise ConfigError("give one hf://datasets/ORG/NAME input alone (not mixed with files or other datasets)")
        return DatasetSource.from_uri(str(uris[0]), split=split, audio_column=audio_column, id_column=id_column)
    if audio_column or id_column or split:
        raise ConfigError("--split, --audio-column and --id-column apply to hf://datasets/... inputs only")
    return FileSource(inputs)
