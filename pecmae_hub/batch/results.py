"""The results file of ``pecmae classify``: one row per input, always parseable, one model per file.

``--out preds.csv`` or ``preds.jsonl`` is appended to one flushed row at a time, so a batch killed
half-way keeps every finished row, and a rerun does only what is missing. This module makes that safe:

- **lock**: :class:`OutputLock` holds an OS lock (``fcntl.flock``) on ``.<name>.lock`` next to the
  file for the whole run; a second run on the same file fails at once with :class:`OutputBusyError`.
  The OS drops the lock when the process ends, even by ``kill -9``;
- **repair**: a last row cut short by a crash (no final newline, an open CSV quote, JSON that does
  not parse), duplicated headers and rows of one input are dropped before anything is appended;
- **one model**: every row names the model (``model``: its name, ``model_fingerprint``: the
  autoencoder's fingerprint and a hash of the head's weights); appending rows of another model, or
  CSV columns of another layout, is refused with a typed error;
- **resume**: inputs are matched by resolved path (``a.wav`` = ``./a.wav``); inputs with an ``error``
  row are tried again unless ``keep_errors``.

CSV columns (:func:`csv_columns`): ``path, model, model_fingerprint, precision, label, confidence, duration,
n_chunks, silent_chunks, top1_prototype, top1_contribution, … topK_…, error, p_<class>…``.
JSONL rows: ``{"path", "model", "model_fingerprint", "error", …}`` plus the whole
:class:`~pecmae_hub.prediction.Prediction` for inputs that worked.

In CSV only, a text cell (path, model, label, prototype, error) that begins with ``=``, ``+``, ``-``, ``@``,
a tab or a carriage return gets a leading ``'`` (the OWASP rule against formula injection: a file named
``=1+2.wav`` must not become a spreadsheet formula); so does one that begins with ``'``, so that reading
the file back (resuming) strips exactly one. JSONL holds the values as they are.

A file that cannot be written (a full disk, a quota, a read-only file system) is an
:class:`~pecmae_hub.errors.OutputError` naming the file and the cause: the rows written before it stay, and
the next run continues from them.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from pecmae_hub.audio import file_key
from pecmae_hub.batch.lock import OutputBusyError, OutputLock
from pecmae_hub.errors import ConfigError, OutputError
from pecmae_hub.storage.atomic import atomic_path

if TYPE_CHECKING:
    from pecmae_hub.prediction import Prediction

__all__ = [
    "STDOUT",
    "OutputBusyError",
    "OutputLock",
    "ResultsFile",
    "StreamResults",
    "check_output_file",
    "csv_columns",
    "model_fingerprint",
    "output_format",
]

STDOUT = "-"
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
ENCODING, ERRORS = "utf-8", "surrogateescape"  # file names need not be valid UTF-8: they round-trip


def output_format(out: str | os.PathLike) -> str:
    """``"csv"``, ``"jsonl"`` or ``"stdout"`` (``-``: JSONL streamed to standard output)."""
    if os.fspath(out) == STDOUT:
        return "stdout"
    fmt = FORMATS.get(Path(out).suffix.lower())
    if fmt is None:
        raise ConfigError(f"--out must end in .csv or .jsonl (or be '-' for JSONL on standard output), got {out!r}")
    return fmt


def check_output_file(out: str | os.PathLike, what: str = "--out") -> Path:
    """``out`` as a Path, or :class:`ConfigError` when it cannot be written: a missing or unwritable folder,
    a folder given as the file. Checked before any work, so that no result is computed for nothing."""
    path = Path(out)
    parent = path.parent
    if path.is_dir():
        raise ConfigError(f"{what} {os.fspath(out)} is a folder: give a file name inside it")
    if not parent.exists():
        raise ConfigError(
            f"the folder of {what} {os.fspath(out)} does not exist: create it first "
            f"(mkdir -p {parent}) or choose another {what}"
        )
    if not parent.is_dir():
        raise ConfigError(f"{what} {os.fspath(out)}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {what} {os.fspath(out)}: no permission to write in {parent}")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"cannot write {what} {os.fspath(out)}: the file is read-only")
    return path


def model_fingerprint(model) -> str:
    """``<autoencoder fingerprint>-<head hash>``: what a results row was computed with.

    The head hash covers the head's configuration (labels, K, distance, normalisation, temperature;
    not where its autoencoder came from) and every weight, so two heads with the same labels differ.
    """
    head = model.head
    digest = hashlib.sha256()
    config = {k: v for k, v in head.config.to_dict().items() if k != "autoencoder"}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(head.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return f"{model.autoencoder.fingerprint()}-{digest.hexdigest()[:16]}"


def csv_columns(labels: list[str], top_k: int) -> list[str]:
    """The CSV header for a model's ``labels`` and ``top_k`` listed prototypes."""
    tops = [f"top{i}_{what}" for i in range(1, top_k + 1) for what in ("prototype", "contribution")]
    return (
        [
            "path",
            "model",
            "model_fingerprint",
            "precision",
            "label",
            "confidence",
            "in_domain",
            "ood_score",
            "duration",
            "n_chunks",
            "silent_chunks",
        ]
        + tops
        + ["error"]
        + [f"p_{c}" for c in labels]
    )


_OUR_CSV_START = "path,model,model_fingerprint,"  # how every file of ours begins: anything else is not ours
_OUR_JSON_START = '{"path": '


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")  # the last one keeps the escape reversible


def csv_cell(text: str) -> str:
    """A text value as a CSV cell that no spreadsheet reads as a formula (see the module docstring)."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def csv_value(cell: str) -> str:
    """The value of a text cell written by :func:`csv_cell`."""
    return cell[1:] if cell.startswith("'") else cell


def write_failure(path: str | os.PathLike, exc: OSError) -> OutputError:
    """The one typed error for a results (or model) file that cannot be written, by cause."""
    why = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EFBIG: "the file is too large for this file system",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return OutputError(
        f"cannot write {os.fspath(path)}: {why} ({type(exc).__name__}, errno {exc.errno}). The rows written "
        "before this one are kept: free some space (or fix the cause) and run the same command again to continue"
    )


def _csv_row(
    path: str, model: str, fingerprint: str, labels: list[str], top_k: int, pred: Prediction | None, error: str
) -> list[str]:
    path, model = csv_cell(path), csv_cell(model)
    if pred is None:
        return [path, model, fingerprint] + [""] * (8 + 2 * top_k) + [csv_cell(_one_line(error))] + [""] * len(labels)
    tops = []
    for i in range(top_k):
        t = pred.top_prototypes[i] if i < len(pred.top_prototypes) else None
        tops += [csv_cell(f"{t['class']}:{t['k']}"), f"{t['contribution']:.6f}"] if t else ["", ""]
    in_domain = "" if pred.in_domain is None else str(bool(pred.in_domain)).lower()
    ood = "" if pred.ood_score is None else f"{pred.ood_score:.4f}"
    return (
        [
            path,
            model,
            fingerprint,
            pred.precision,
            csv_cell(pred.label),
            f"{pred.confidence:.6f}",
            in_domain,
            ood,
            f"{pred.duration:.3f}",
            str(len(pred.chunk_starts)),
            str(sum(pred.chunk_silent)),
        ]
        + tops
        + [""]
        + [f"{pred.scores[c]:.6f}" for c in labels]
    )


def _json_row(path: str, model: str, fingerprint: str, pred: Prediction | None, error: str) -> str:
    record = {"path": path, "model": model, "model_fingerprint": fingerprint, "error": error or None}
    if pred is not None:
        record.update({k: v for k, v in pred.to_dict().items() if k not in record})
    return json.dumps(record) + "\n"


def _csv_text(row: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(row)
    return buf.getvalue()


@dataclass
class _Row:
    path: str
    model: str
    fingerprint: str
    error: str
    text: str  # the record as it stands in the file (rewritten as is)


def _split_csv(text: str) -> tuple[list[str], bool]:
    """Complete CSV records (raw text, quoted newlines kept) and whether a torn tail followed them.

    csv doubles every quote inside a field, so a record ends at a newline after an even number of quotes."""
    records, buf, quotes = [], "", 0
    for piece in text.split("\n")[:-1]:
        buf += piece + "\n"
        quotes += piece.count('"')
        if quotes % 2 == 0:
            records.append(buf)
            buf, quotes = "", 0
    return records, bool(buf or (text and not text.endswith("\n")))


class _Parsed:
    """What an existing results file holds: its header (CSV), the valid rows, and what was wrong."""

    def __init__(self, text: str, fmt: str, name: str):
        self.header: list[str] | None = None
        self.header_text = ""
        self.rows: list[_Row] = []
        self.problems: list[str] = []
        if fmt == "csv":
            self._csv(text, name)
        else:
            self._jsonl(text, name)

    def _csv(self, text: str, name: str) -> None:
        records, torn = _split_csv(text)
        if torn:
            self.problems.append("its last row was cut short (an interrupted run)")
        if not records:
            if text and not _OUR_CSV_START.startswith(text[: len(_OUR_CSV_START)]):
                raise ConfigError(f"{name} exists but is not a results file of `pecmae classify`: choose another --out")
            return
        self.header = next(csv.reader(io.StringIO(records[0], newline="")), [])
        if not {"path", "model", "model_fingerprint", "error"} <= set(self.header):
            raise ConfigError(
                f"{name} exists but is not a results file of this `pecmae classify` (no path, "
                "model_fingerprint and error columns; older versions wrote none): choose another --out"
            )
        self.header_text = records[0]
        col = {c: i for i, c in enumerate(self.header)}
        bad = 0
        for record in records[1:]:
            row = next(csv.reader(io.StringIO(record, newline="")), [])
            if len(row) != len(self.header) or row == self.header or not row[col["path"]]:
                bad += 1
                continue
            self.rows.append(
                _Row(
                    csv_value(row[col["path"]]),
                    csv_value(row[col["model"]]),
                    row[col["model_fingerprint"]],
                    csv_value(row[col["error"]]),
                    record,
                )
            )
        if bad:
            self.problems.append(f"{bad} malformed row(s) or repeated header(s)")

    def _jsonl(self, text: str, name: str) -> None:
        lines = text.split("\n")
        if lines[-1].strip():
            self.problems.append("its last row was cut short (an interrupted run)")
        bad = 0
        for line in lines[:-1]:
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not (
                isinstance(record, dict)
                and isinstance(record.get("path"), str)
                and isinstance(record.get("model_fingerprint"), str)
            ):
                bad += 1
                continue
            self.rows.append(
                _Row(
                    record["path"],
                    str(record.get("model") or ""),
                    record["model_fingerprint"],
                    str(record.get("error") or ""),
                    line.rstrip("\r") + "\n",
                )
            )
        if text.strip() and not self.rows and (bad or not text.startswith(_OUR_JSON_START)):
            raise ConfigError(
                f"{name} exists but holds no `pecmae classify` results (no line with path and "
                "model_fingerprint; older versions wrote none): choose another --out"
            )
        if bad:
            self.problems.append(f"{bad} unreadable line(s)")


class ResultsFile:
    """An open ``--out`` file: locked, read, repaired, checked against the model, appended to.

    ::

        with ResultsFile("preds.csv") as results:      # OutputBusyError if another run holds it
            todo = results.pending(inputs)             # not yet done (failed ones too, unless keep_errors)
            results.begin(model.name, model_fingerprint(model), model.labels, top_k=3)
            for path in todo:
                results.write(path, prediction)        # or results.write(path, error="AudioError: ...")
            failed = results.failed(inputs)
    """

    def __init__(self, path: str | os.PathLike, *, keep_errors: bool = False, key: Callable[[str], str] = file_key):
        self.path = Path(path)
        self._key = key  # what makes two rows one input: the resolved path, or a data set row's id as is
        self.format = output_format(path)
        if self.format == "stdout":
            raise ConfigError("ResultsFile writes a file; use StreamResults for standard output")
        self.keep_errors = keep_errors
        self.repairs: list[str] = []
        self._real = Path(os.path.realpath(self.path))  # one lock and one file for every spelling (symlinks too)
        self._lock = OutputLock(self._real)
        self._file: TextIO | None = None
        self._retry: set[str] = set()
        self._status: dict[str, str] = {}  # input key -> error ('' when it worked)

    def __enter__(self) -> ResultsFile:
        check_output_file(self.path)
        self._lock.acquire()
        try:
            text = self._real.read_bytes().decode(ENCODING, ERRORS) if self._real.exists() else ""
            self._parsed = _Parsed(text, self.format, str(self.path))
        except BaseException:
            self._lock.release()
            raise
        self.repairs = list(self._parsed.problems)
        self._rows: dict[str, _Row] = {}
        duplicates = 0
        for row in self._parsed.rows:  # one row per input: the first that worked, else the first
            key = self._key(row.path)
            kept = self._rows.get(key)
            if kept is None or (kept.error and not row.error):
                self._rows[key] = row
            duplicates += kept is not None
        if duplicates:
            self.repairs.append(f"{duplicates} repeated row(s) of one input")
        self._status = {k: r.error for k, r in self._rows.items()}
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):  # what could not be written was reported by _append already
                self._file.close()
            self._file = None
        self._lock.release()

    def pending(self, inputs: list[str]) -> list[str]:
        """The inputs that still need a row: not in the file, or (unless ``keep_errors``) failed there."""
        todo = []
        for path in inputs:
            key = self._key(path)
            row = self._rows.get(key)
            if row is None or (row.error and not self.keep_errors):
                todo.append(path)
                if row is not None:
                    self._retry.add(key)
        return todo

    def begin(self, model: str, fingerprint: str, labels: list[str], top_k: int) -> None:
        """Check that the file's rows and columns are this model's, repair it, and open it for appending.

        Raises:
            ConfigError: rows of another model (fingerprint), or CSV columns of another layout.
        """
        self._model, self._fingerprint, self._labels, self._top_k = model, fingerprint, list(labels), int(top_k)
        others = {r.fingerprint: r.model for r in self._rows.values() if r.fingerprint != fingerprint}
        if others:
            fp, name = next(iter(others.items()))
            raise ConfigError(
                f"{self.path} holds results of model {name!r} (fingerprint {fp}), not of this model {model!r} "
                f"({fingerprint}): one file must not mix models. Choose another --out, or delete {self.path} "
                "to start over"
            )
        header = csv_columns(self._labels, self._top_k) if self.format == "csv" else None
        if header is not None and self._parsed.header is not None and self._parsed.header != header:
            old, new = self._parsed.header, header
            if [c for c in new if c != "precision"] == old:
                hint = "it was written by an earlier pecmae-hub, without the precision column"
            elif old[-len(labels) :] == new[-len(labels) :]:
                hint = f"its prototype columns are for --top-k {sum(c.endswith('_prototype') for c in old)}"
            else:
                hint = "its class columns are another model's"
            raise ConfigError(
                f"{self.path} has other columns than this run would write ({hint}): "
                "rerun with the same options, or choose another --out"
            )
        kept = [r for k, r in self._rows.items() if k not in self._retry]
        for key in self._retry:
            self._status.pop(key, None)
        if self.repairs or self._retry or len(kept) != len(self._parsed.rows):
            head = (self._parsed.header_text or _csv_text(header)) if header is not None else ""
            try:
                with (
                    atomic_path(self._real) as tmp,
                    open(tmp, "w", newline="", encoding=ENCODING, errors=ERRORS) as f,
                ):
                    f.write(head + "".join(r.text for r in kept))
            except OSError as exc:
                raise write_failure(self.path, exc) from None
        self._file = open(self._real, "a", newline="", encoding=ENCODING, errors=ERRORS)  # noqa: SIM115 - until exit
        if header is not None and self._parsed.header is None and self._file.tell() == 0:
            self._append(_csv_text(header))

    def _append(self, text: str) -> None:
        if self._file is None:
            raise ConfigError("ResultsFile.begin() must be called before rows are written")
        try:
            self._file.write(text)  # one write and flush per row: a crash tears at most the last line
            self._file.flush()
        except OSError as exc:
            raise write_failure(self.path, exc) from None

    def write(self, path: str, prediction: Prediction | None = None, error: str = "") -> None:
        """Append the row of ``path``: its ``prediction``, or the ``error`` text when it failed."""
        if self.format == "csv":
            text = _csv_text(
                _csv_row(path, self._model, self._fingerprint, self._labels, self._top_k, prediction, error)
            )
        else:
            text = _json_row(path, self._model, self._fingerprint, prediction, error)
        self._append(text)
        self._status[self._key(path)] = _one_line(error) if prediction is None else ""

    def failed(self, inputs: list[str]) -> list[tuple[str, str]]:
        """``(path, error)`` of every input whose row in the file is an error row."""
        return [(p, self._status[self._key(p)]) for p in inputs if self._status.get(self._key(p))]

    # ---- rows as text: the shard files of several processes (pecmae_hub.batch.shards) -------------
    @property
    def columns(self) -> list[str] | None:
        """The CSV header read from the file (None for JSONL or an empty file)."""
        return self._parsed.header

    def records(self) -> list[tuple[str, str, str, str, str]]:
        """``(path, model, fingerprint, error, row text)`` of the rows read from the file (one per input)."""
        return [(r.path, r.model, r.fingerprint, r.error, r.text) for r in self._rows.values()]

    def absorb(self, records: list[tuple[str, str, str, str, str]], columns: list[str] | None, note: str) -> None:
        """Take rows read from another file of this run (call before :meth:`pending`): a row that worked
        replaces an error row of the same input. :meth:`begin` checks them (model, CSV columns) and writes
        them into the file."""
        if columns is not None and self._parsed.header is None:
            self._parsed.header = columns
        elif columns is not None and columns != self._parsed.header:
            raise ConfigError(f"{note}: its columns differ from those of {self.path}; choose another --out")
        for path, model, fingerprint, error, text in records:
            key, kept = self._key(path), self._rows.get(self._key(path))
            if kept is None or (kept.error and not error):
                self._rows[key] = _Row(path, model, fingerprint, error, text)
                self._status[key] = error
        self.repairs.append(note)

    def write_record(self, path: str, error: str, text: str) -> None:
        """Append a row already written by another process (its text as is)."""
        self._append(text)
        self._status[self._key(path)] = error


class StreamResults:
    """JSONL rows written to a text stream (``--out -``: standard output); nothing to resume or lock."""

    format = "stdout"

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.repairs: list[str] = []
        self._failed: dict[str, str] = {}

    def __enter__(self) -> StreamResults:
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(OSError):  # reported by write() already
            self.stream.flush()

    def pending(self, inputs: list[str]) -> list[str]:
        return list(inputs)

    def begin(self, model: str, fingerprint: str, labels: list[str], top_k: int) -> None:
        self._model, self._fingerprint = model, fingerprint

    def write(self, path: str, prediction: Prediction | None = None, error: str = "") -> None:
        try:
            self.stream.write(_json_row(path, self._model, self._fingerprint, prediction, error))
            self.stream.flush()
        except OSError as exc:  # standard output redirected to a full disk
            raise write_failure(getattr(self.stream, "name", "standard output"), exc) from None
        if prediction is None:
            self._failed[path] = _one_line(error)

    def failed(self, inputs: list[str]) -> list[tuple[str, str]]:
        return [(p, self._failed[p]) for p in inputs if p in self._failed]
