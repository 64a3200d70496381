"""Projected durations of long recipe stages, from the throughput of their first items.

Shared by the recipes (printed before a long stage, or as soon as its first batches are done) and by
``bench/recipe.py`` (which times the same things on purpose-made inputs):

- :class:`Projection`: a per-item callback that prints, once, the measured rate and the projected
  remaining time after the first few items (e.g. the first tracks of ``extract_features``);
- :func:`time_head_steps`: seconds per optimisation step of a prototype head with the given
  training config on the given chunks, measured on a throw-away head (same shapes, same loss, same
  optimiser; no mixed precision, so on a GPU it is a slight over-estimate);
- :func:`format_duration`: ``"2 h 05 min"``, ``"3 min 20 s"``, ``"12.3 s"``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch


def format_duration(seconds: float) -> str:
    """A short human duration."""
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    return f"{hours / 24:.1f} days"


class Projection:
    """Call once per finished item; after ``min_items`` items (or ``min_seconds`` with at least one),
    writes one line: items done, rate and the projected time for the ``total - done`` items left.

    ``extra`` adds a remark to that line (e.g. seconds of audio per second); ``write`` defaults to
    ``tqdm.write`` so that the line does not break a progress bar.
    """

    def __init__(
        self,
        stage: str,
        total: int,
        unit: str = "track",
        min_items: int = 3,
        min_seconds: float = 20.0,
        write: Callable[[str], None] | None = None,
        extra: Callable[[int, float], str] | None = None,
    ):
        from tqdm.auto import tqdm

        self.stage, self.total, self.unit = stage, int(total), unit
        self.min_items, self.min_seconds = int(min_items), float(min_seconds)
        self.write, self.extra = write or tqdm.write, extra
        self.done, self.t0, self.message = 0, time.perf_counter(), None

    def __call__(self, *_args) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.t0
        if self.message is None and (self.done >= self.min_items or elapsed >= self.min_seconds):
            rate = elapsed / self.done
            left = max(0, self.total - self.done)
            remark = f"; {self.extra(self.done, elapsed)}" if self.extra else ""
            self.message = (
                f"{self.stage}: first {self.done} {self.unit}s in {format_duration(elapsed)} "
                f"({rate:.2f} s/{self.unit}{remark}); projected {format_duration(rate * left)} "
                f"for the {left} left"
            )
            self.write(self.message)


def time_head_steps(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    cfg,
    steps: int = 30,
    warmup: int = 3,
    device: str | torch.device = "cpu",
) -> float:
    """Seconds per training step of a head configured by ``cfg`` (a ``TrainConfig``) on chunks ``x`` (N, D)
    with class ids ``y`` (N,), measured over ``steps`` steps after ``warmup`` untimed ones."""
    from pecmae_hub.models.head import PrototypeHead
    from pecmae_hub.training.head import head_loss, make_optimizer

    device = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        head = PrototypeHead(
            [f"c{i}" for i in range(num_classes)],
            x.shape[1],
            cfg.protos_per_class,
            cfg.distance,
            cfg.summarizer,
            float(x.mean()),
            float(x.std() or 1.0),
            temperature=cfg.temperature,
        )
    head = head.to(device).train()
    optimizer = make_optimizer(head, cfg)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.max_lr, total_steps=steps + warmup)
    xs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    ys = torch.from_numpy(np.asarray(y, dtype=np.int64))
    batch = min(cfg.batch_size, len(xs))

    def step() -> torch.Tensor:
        idx = torch.randint(len(xs), (batch,), generator=gen)
        xb, yb = xs[idx].to(device), ys[idx].to(device)
        logits, d = head(xb, return_distances=True)
        loss, _, _ = head_loss(logits, d, yb, cfg.protos_per_class, cfg.alpha, cfg.temperature, cfg.proto_loss_samples)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        return loss.detach()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    steps = max(1, int(steps))
    t0 = time.perf_counter()
    for _ in range(steps):
        last = step()
    float(last)  # waits for the device
    return (time.perf_counter() - t0) / steps
