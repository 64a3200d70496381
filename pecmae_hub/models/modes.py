"""Temporarily switching a module's train/eval mode."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """Run the block with ``module`` in eval mode (no dropout), then restore its previous mode.

    The mode is restored even when the block raises, so a caller that is training can evaluate
    in the middle of it without switching dropout off for the rest of its run.
    """
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)
