"""What ``pecmae classify`` prints on a terminal: one short line per input instead of ~8 KB of JSON.

When standard output is a terminal and no ``--out`` is given, :class:`TableResults` prints an aligned table
(path, label, confidence, in domain) as the inputs finish, above the progress bar (``tqdm.write``, so the
two never interleave). Pipes and ``--out -`` keep JSONL (:class:`pecmae_hub.batch.results.StreamResults`).
It has the interface of the other results writers (``pending``, ``begin``, ``write``, ``failed``).
"""

from __future__ import annotations

import shutil
from typing import TextIO

from pecmae_hub.prediction import Prediction, percent_text

LABEL_WIDTH, SCORE_WIDTH, DOMAIN_WIDTH = 26, 10, 13
MIN_PATH_WIDTH = 16


def domain_text(prediction: Prediction) -> str:
    """``yes``, ``NO (a guess)`` or ``-`` (a model without an out-of-domain scorer)."""
    return {True: "yes", False: "NO (a guess)", None: "-"}[prediction.in_domain]


def fit(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, its end kept (a file name matters more than its folders)."""
    return text if len(text) <= width else "…" + text[-(width - 1) :]


class TableResults:
    """Results as a table on a terminal (see the module docstring); nothing to resume or lock."""

    format = "table"

    def __init__(self, stream: TextIO, width: int | None = None):
        self.stream = stream
        self.repairs: list[str] = []
        self._failed: dict[str, str] = {}
        columns = width or shutil.get_terminal_size((100, 24)).columns
        self.path_width = max(MIN_PATH_WIDTH, columns - LABEL_WIDTH - SCORE_WIDTH - DOMAIN_WIDTH - 3)

    def __enter__(self) -> TableResults:
        return self

    def __exit__(self, *exc) -> None:
        self.stream.flush()

    def _line(self, path: str, label: str, score: str, domain: str) -> str:
        return (
            f"{fit(path, self.path_width):<{self.path_width}} {fit(label, LABEL_WIDTH):<{LABEL_WIDTH}} "
            f"{score:>{SCORE_WIDTH}} {domain:<{DOMAIN_WIDTH}}".rstrip()
        )

    def _print(self, line: str) -> None:
        from tqdm.auto import tqdm

        tqdm.write(line, file=self.stream)  # clears the progress bar, prints, redraws it

    def pending(self, inputs: list[str]) -> list[str]:
        return list(inputs)

    def begin(self, model: str, fingerprint: str, labels: list[str], top_k: int) -> None:
        self._print(self._line("path", "label", "confidence", "in domain"))

    def write(self, path: str, prediction: Prediction | None = None, error: str = "") -> None:
        if prediction is None:
            self._failed[path] = " ".join(str(error).split())
            self._print(self._line(path, "failed: " + error.split(":", 1)[0], "", "-"))
            return
        self._print(self._line(path, prediction.label, percent_text(prediction.confidence), domain_text(prediction)))

    def failed(self, inputs: list[str]) -> list[tuple[str, str]]:
        return [(p, self._failed[p]) for p in inputs if p in self._failed]
