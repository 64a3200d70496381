"""One results file written by several processes (``accelerate launch ... pecmae classify --out preds.csv``).

Rank 0 holds ``--out`` (its lock, its repair, its one-model check: :class:`~pecmae_hub.batch.results.ResultsFile`)
for the whole run; every rank, rank 0 included, writes the rows of its share to its own **shard file**
``.<name>.shards/rank-<r>.<ext>``, itself a locked, repaired, one-row-per-flush results file. When every
rank has finished, rank 0 appends the shard rows to ``--out`` in input order (each shard is a contiguous
slice of the pending inputs, so rank order is input order) and deletes the shards. The file then reads
exactly as after a one-process run: the rows it held before, then this run's rows in input order.

Resume: a run that stopped (a rank killed, a machine lost) leaves its shard files; the next run, with any
number of processes, merges them into ``--out`` first (rows that worked replace error rows of the same
input) and only then decides what is pending, so nothing is done twice and nothing is lost. A shard file
still locked by a live process of an older run makes the new run fail, as a second run on one file does.

The shard folder must be on a file system that every machine of the run sees (as ``--out`` itself);
rank 0 checks that every shard holds the rows its rank reported, and names the rank when it does not.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pecmae_hub.audio import file_key
from pecmae_hub.batch.results import ResultsFile, output_format
from pecmae_hub.distributed import Guard, processes
from pecmae_hub.errors import ProcessGroupError

if TYPE_CHECKING:
    from pecmae_hub.prediction import Prediction


def shard_folder(out: str | os.PathLike) -> Path:
    """Where the ranks of a run on ``out`` write their shard files: ``.<name>.shards/`` next to it."""
    out = Path(os.path.realpath(out))
    return out.with_name(f".{out.name}.shards")


def shard_file(out: str | os.PathLike, rank: int) -> Path:
    """The shard file of ``rank`` for ``out`` (same format as ``out``)."""
    return shard_folder(out) / f"rank-{rank:05d}{Path(out).suffix.lower()}"


class ShardedResults:
    """The results file of a run of several processes: the interface of ``ResultsFile`` on every rank.

    ``pending`` gives every rank the same pending inputs (decided by rank 0); :func:`pecmae_hub.distributed.shard`
    or ``split_dataset_by_node`` gives each rank its share; ``write`` goes to the rank's shard file;
    ``failed`` waits for every rank, merges (rank 0) and returns the failures of the whole run on every rank.
    """

    def __init__(self, path: str | os.PathLike, *, keep_errors: bool = False, key: Callable[[str], str] = file_key):
        self.path = Path(path)
        self.format = output_format(path)
        self.keep_errors, self._key = keep_errors, key
        self.state = processes()
        self.is_main = self.state.is_main_process
        self.guard = Guard("classify")
        self.repairs: list[str] = []
        self._main: ResultsFile | None = None
        self._shard: ResultsFile | None = None
        self._written = 0
        self._failed: list[tuple[str, str]] | None = None
        self._leftovers: list[Path] = []

    # ---- the run -----------------------------------------------------------------------------------
    def __enter__(self) -> ShardedResults:
        self.guard.__enter__()
        try:
            if self.is_main:
                self._main = ResultsFile(self.path, keep_errors=self.keep_errors, key=self._key).__enter__()
                self._absorb_leftovers()
                self.repairs = list(self._main.repairs)
            self.guard.exchange()  # an error of rank 0 (busy, not ours, unwritable) stops every rank here
        except BaseException as exc:
            self._close(exc)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc is None and self._failed is None:
                self.failed([])
        except BaseException as err:
            self._close(err)
            raise
        self._close(exc)
        return False

    def _close(self, exc: BaseException | None) -> None:
        for results in (self._shard, self._main):
            if results is not None:
                results.__exit__(None, None, None)
        self._shard = self._main = None
        self.guard.__exit__(type(exc) if exc else None, exc, None)

    def pending(self, inputs: list[str]) -> list[str]:
        """The pending inputs, as rank 0 reads them from ``--out``; the same list on every rank."""
        mine = self._main.pending(inputs) if self._main is not None else None
        return self.guard.exchange(mine)[0]

    def begin(self, model: str, fingerprint: str, labels: list[str], top_k: int) -> None:
        """Rank 0 checks ``--out`` against the model (and rewrites it); then every rank opens its shard file."""
        if self._main is not None:
            self._main.begin(model, fingerprint, labels, top_k)  # the merged leftovers are in --out now
            for path in self._leftovers:
                path.unlink()
        self.guard.exchange()  # another model's file: every rank stops; no rank opens a leftover shard
        shard_folder(self.path).mkdir(exist_ok=True)
        self._shard = ResultsFile(shard_file(self.path, self.state.process_index), key=self._key).__enter__()
        self._shard.begin(model, fingerprint, labels, top_k)

    def write(self, path: str, prediction: Prediction | None = None, error: str = "") -> None:
        """Append the row of ``path`` to this rank's shard file; check in with the others now and then."""
        if self._shard is None:
            raise ProcessGroupError("ShardedResults.begin() must be called before rows are written")
        self._shard.write(path, prediction, error)
        self._written += 1
        self.guard.tick()

    def failed(self, inputs: list[str]) -> list[tuple[str, str]]:
        """Wait for every rank, merge the shards into ``--out`` (rank 0), and return ``(path, error)`` of every
        input whose row is an error row, on every rank."""
        if self._failed is None:
            if self._shard is not None:
                self._shard.__exit__(None, None, None)  # closed (and unlocked) before rank 0 reads it
                self._shard = None
            counts = self.guard.finish(self._written)
            failed = self._merge(counts, inputs) if self._main is not None else None
            self._failed = self.guard.exchange(failed)[0]
        return list(self._failed)

    # ---- rank 0 ------------------------------------------------------------------------------------
    def _read_shards(self) -> list[tuple[Path, ResultsFile]]:
        folder = shard_folder(self.path)
        out = []
        for path in sorted(folder.glob(f"rank-*{Path(self.path).suffix.lower()}")) if folder.is_dir() else []:
            with ResultsFile(path, key=self._key) as part:  # OutputBusyError when a live process still writes it
                out.append((path, part))
        return out

    def _absorb_leftovers(self) -> None:
        """Merge shard files left by an interrupted run (any number of processes) before deciding what is pending."""
        assert self._main is not None
        for path, part in self._read_shards():
            rows = part.records()
            if rows:
                self._main.absorb(
                    rows, part.columns, f"merged {len(rows)} row(s) left by an interrupted run ({path.name})"
                )
            self._leftovers.append(path)

    def _merge(self, counts: list[int], inputs: list[str]) -> list[tuple[str, str]]:
        assert self._main is not None
        parts = dict(self._read_shards())
        for rank, count in enumerate(counts):
            path = shard_file(self.path, rank)
            rows = parts[path].records() if path in parts else []
            if len(rows) < count:
                raise ProcessGroupError(
                    f"classify: rank {rank} wrote {count} row(s) but rank 0 finds {len(rows)} in {path}: --out must be "
                    "on a file system that every machine of the run sees"
                )
            for row_path, _, _, error, text in rows:
                self._main.write_record(row_path, error, text)
        for path in parts:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        with contextlib.suppress(OSError):
            shard_folder(self.path).rmdir()
        return self._main.failed(inputs)


class SharedStream:
    """``--out -`` under several processes: the main process prints every process's JSONL rows on its
    standard output as they reach it (its own at once, the others' at each check-in; each process's rows
    in input order, the processes interleaved). Nothing to resume, as with one process."""

    format = "stdout"

    def __init__(self, stream):
        import io

        from pecmae_hub.batch.results import StreamResults

        self.state = processes()
        self.is_main = self.state.is_main_process
        self.stream = stream
        self._buffer = io.StringIO()
        self._results = StreamResults(stream if self.is_main else self._buffer)
        self.guard = Guard("classify", send=self._send, receive=self._receive)
        self.repairs: list[str] = []
        self._paths: list[str] = []
        self._failed: dict[str, str] | None = None

    def __enter__(self) -> SharedStream:
        self.guard.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc is None and self._failed is None:
                self.failed([])
        finally:
            self.guard.__exit__(exc_type, exc, tb)
            self._results.__exit__(None, None, None)

    def _send(self) -> str:
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text

    def _receive(self, texts: list) -> None:
        if self.is_main and any(texts):
            self.stream.write("".join(t for t in texts if t))
            self.stream.flush()

    def pending(self, inputs: list[str]) -> list[str]:
        return list(inputs)

    def begin(self, model: str, fingerprint: str, labels: list[str], top_k: int) -> None:
        self._results.begin(model, fingerprint, labels, top_k)
        self.guard.exchange()  # every process has its model

    def write(self, path: str, prediction: Prediction | None = None, error: str = "") -> None:
        self._results.write(path, prediction, error)
        self._paths.append(path)
        self.guard.tick()

    def failed(self, inputs: list[str]) -> list[tuple[str, str]]:
        """Wait for every process (printing their last rows); the failures of the whole run, on every rank."""
        if self._failed is None:
            self.guard.finish()
            mine = dict(self._results.failed(self._paths))
            self._failed = {k: v for part in self.guard.exchange(mine) for k, v in part.items()}
        return [(p, self._failed[p]) for p in inputs if p in self._failed]


def open_results(out: str, *, keep_errors: bool = False, key: Callable[[str], str] = file_key):
    """The results object of ``pecmae classify --out``: :class:`ShardedResults` under several processes (or when an
    interrupted run of several left shard files to merge), else a :class:`~pecmae_hub.batch.results.ResultsFile`;
    for ``-`` (standard output) ``StreamResults``, or :class:`SharedStream` under several processes."""
    import sys

    from pecmae_hub.batch.results import StreamResults

    fmt = output_format(out)
    if fmt == "stdout":
        return SharedStream(sys.stdout) if processes().num_processes > 1 else StreamResults(sys.stdout)
    if processes().num_processes > 1 or shard_folder(out).is_dir():  # several processes now, or in a stopped run
        return ShardedResults(out, keep_errors=keep_errors, key=key)
    return ResultsFile(out, keep_errors=keep_errors, key=key)
