"""What every resumable trainer here shares: its ``checkpoint.pt`` and its ``train_log.csv``.

A checkpoint holds the ``state_dict`` of each named part (model, optimiser, schedule ...), the random
generator's state and the step; it is written atomically and read with ``weights_only=True``. The log is a CSV
appended to across resumed runs, its header written once.
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from pecmae_hub.storage.atomic import atomic_write


def load_checkpoint(path: Path, parts: dict[str, Any], generator: torch.Generator) -> int:
    """Restore each part of ``parts`` (name -> object with ``load_state_dict``; None: skipped) that the checkpoint
    at ``path`` holds, and ``generator``; returns the step to continue from (0 without a checkpoint)."""
    if not path.exists():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)
    for name, part in parts.items():
        if part is not None and name in state:  # a part saved only once it was in use (e.g. discriminators)
            part.load_state_dict(state[name])
    generator.set_state(state["generator"])
    return int(state["step"])


def save_checkpoint(path: Path, parts: dict[str, Any], generator: torch.Generator, step: int) -> None:
    """Write ``path`` atomically: the ``state_dict`` of every part that is not None, ``generator`` and ``step``."""
    state = {name: part.state_dict() for name, part in parts.items() if part is not None}
    state |= {"generator": generator.get_state(), "step": step}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


@contextlib.contextmanager
def train_log(path: Path, columns: list[str]) -> Iterator[tuple[Any, Any]]:
    """``(file, csv writer)`` appending to the log at ``path``; the header ``columns`` goes into a new log only."""
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        writer = csv.writer(fh)
        if new:
            writer.writerow(columns)
        yield fh, writer
