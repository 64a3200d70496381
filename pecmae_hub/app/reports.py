"""What the app writes for its users and its operator: the current clip's result as files to download, and
"report a wrong prediction" kept on the server.

- :func:`result_files`: the clip's result as CSV and JSON, written by :mod:`pecmae_hub.batch.results`, so
  they hold exactly the columns and keys of ``pecmae classify --out x.csv`` / ``x.jsonl`` (the ``path`` is the
  clip's file name, never a server path).
- :class:`WrongPredictionLog`: one row per report in ``<PECMAE_REPORTS_DIR>/dataset1.csv`` (Gradio's
  ``CSVLogger``: concurrency-safe, a new file when the columns change) with a copy of the clip next to it.
  Nothing leaves the server; the operator reads the CSV.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import gradio as gr

from pecmae_hub.app import settings as cfg
from pecmae_hub.batch.results import ResultsFile, StreamResults, model_fingerprint

OTHER = "something else (none of these classes)"  # the report's answer for audio of no class of the model


def _stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).stem).strip("-")[:60] or "clip"


def result_files(folder: Path, model, prediction, clip_name: str, top_k: int) -> list[str]:
    """Write ``<clip>.<model>.csv`` and ``.json`` of one prediction into a folder of their own under
    ``folder``; returns their paths (CSV first)."""
    digest = hashlib.sha1(f"{model.name}\n{clip_name}\n{prediction.to_json()}".encode()).hexdigest()[:16]
    out = Path(folder) / digest
    out.mkdir(parents=True, exist_ok=True)
    base = f"{_stem(clip_name)}.{_stem(str(model.name))}"
    fingerprint = model_fingerprint(model)
    csv_path, json_path = out / f"{base}.csv", out / f"{base}.json"
    if not csv_path.exists():
        with ResultsFile(csv_path) as results:
            results.begin(model.name, fingerprint, list(model.labels), top_k)
            results.write(clip_name, prediction)
    if not json_path.exists():
        buffer = io.StringIO()
        with StreamResults(buffer) as stream:  # the JSONL row of `pecmae classify --out x.jsonl`
            stream.begin(model.name, fingerprint, list(model.labels), top_k)
            stream.write(clip_name, prediction)
        json_path.write_text(buffer.getvalue(), encoding="utf-8")
    return [str(csv_path), str(json_path)]


class WrongPredictionLog:
    """Reports of wrong predictions, kept in a CSV on the server (see the module docstring)."""

    COLUMNS = ("clip", "model", "predicted", "confidence", "in_domain", "correct label", "note")

    def __init__(self, folder: str | Path | None = None):
        self.folder = Path(folder) if folder is not None else cfg.reports_dir()
        self._logger = gr.CSVLogger(verbose=False)
        components = [gr.Audio(label="clip", type="filepath", render=False)] + [
            gr.Textbox(label=name, render=False) for name in self.COLUMNS[1:]
        ]
        self._logger.setup(components, self.folder)

    @property
    def csv_path(self) -> Path | None:
        """The CSV written so far (None before the first report)."""
        return getattr(self._logger, "dataset_filepath", None)

    def add(self, audio_path: str, details: dict, correct: str, note: str) -> int:
        """Log one report (the clip is copied next to the CSV); returns how many reports the CSV holds."""
        row = [
            {"path": str(audio_path), "orig_name": Path(audio_path).name},
            str(details.get("model", "")),
            str(details.get("label", "")),
            f"{float(details.get('scores', {}).get(details.get('label'), 0.0)):.4f}",
            "" if details.get("in_domain") is None else str(bool(details["in_domain"])).lower(),
            correct,
            " ".join(str(note or "").split())[:500],
        ]
        return self._logger.flag(row)
