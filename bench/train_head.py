"""Training step of the prototype head (GTZAN preset shapes) against a plain upstream-style step, same run.

Shapes: batch 256, C = 10 classes, K = 5 prototypes per class, D = 768, transformer summariser, l2
distance, class-mode prototype loss. One JSON object per line, every figure a ratio to a baseline
measured in the same run:

- ``reference_step``: upstream's training computation written plainly (:class:`ReferenceHead`): the stock
  ``nn.TransformerEncoder`` on the prototypes, the (B, P, D) broadcast distance, the loss with a loop over
  the classes of the batch, ``torch.optim.Adam`` with default options, OneCycleLR, no Accelerate;
- ``train_step``: ours (``pecmae_hub.training.head.train_step`` through Accelerate on the CPU), its time,
  ``speedup_vs_reference`` and where the time goes (forward, loss, backward, optimiser as fractions);
- ``loss_parity``: both steps from the same weights with dropout off: max relative difference of the
  losses over the steps (the same maths, float tolerance);
- ``train_head_loop`` (not with ``--quick``): the whole ``train_head`` loop per step (data loading,
  validation every 100 steps) as a ratio to the bare step.

Repetitions are interleaved (reference, ours, ...) and medians reported. ``--threads 1`` is steadier on a
shared machine. Usage: ``python bench/train_head.py [--quick] [--threads N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pecmae_hub.models.head import PrototypeHead
from pecmae_hub.training.head import TrainConfig, head_loss, make_accelerator, make_optimizer, train_step

B, C, K, D, PRESET_STEPS = 256, 10, 5, 768, 150_000
MU, SD = 0.1, 0.4


def emit(**record) -> None:
    print(json.dumps(record), flush=True)


class ReferenceHead(nn.Module):
    """Upstream ``PrototypeNet`` (transformer summariser, l2), computed the straightforward way."""

    def __init__(self):
        super().__init__()
        self.protos = nn.Parameter(torch.randn(C * K, 1, D))
        self.linear = nn.Linear(C * K, C)
        with torch.no_grad():
            self.linear.weight.copy_((torch.arange(C * K)[None] // K == torch.arange(C)[:, None]).float())
        layer = nn.TransformerEncoderLayer(D, 1, 2048, 0.1, batch_first=True)
        self.time_summarizer = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)

    def forward(self, x):  # x: normalised (B, D)
        protos = self.time_summarizer(self.protos)[:, 0]
        d = ((x[:, None, :] - protos[None, :, :]) ** 2).mean(-1)
        return self.linear(torch.exp(-d)), d


def reference_loss(logits, d, y, alpha=0.75, temperature=0.1):
    minima = [d[y == c][:, c * K : (c + 1) * K].min(0).values for c in y.unique().tolist()]
    return alpha * torch.cat(minima).mean() + (1 - alpha) * F.cross_entropy(logits / temperature, y)


def _no_dropout(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        if isinstance(m, nn.MultiheadAttention):
            m.dropout = 0.0


class Steps:
    """A reference and an ours step function on the same batch, from the same initial weights."""

    def __init__(self, total_steps: int, dropout: bool = True, seed: int = 0):
        torch.manual_seed(seed)
        self.ref = ReferenceHead().train()
        ours = PrototypeHead([f"c{i}" for i in range(C)], D, K, "l2", "transformer", MU, SD)
        ours.load_state_dict(self.ref.state_dict())
        if not dropout:
            _no_dropout(self.ref)
            _no_dropout(ours)
        self.cfg = TrainConfig(protos_per_class=K, total_steps=total_steps, device="cpu")
        self.ref_opt = torch.optim.Adam(self.ref.parameters(), lr=self.cfg.max_lr, weight_decay=self.cfg.weight_decay)
        self.ref_sched = torch.optim.lr_scheduler.OneCycleLR(
            self.ref_opt, max_lr=self.cfg.max_lr, total_steps=total_steps
        )
        self.acc = make_accelerator(self.cfg)
        opt = make_optimizer(ours, self.cfg)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.cfg.max_lr, total_steps=total_steps)
        self.model, self.opt = self.acc.prepare(ours, opt)
        self.model.train()
        g = torch.Generator().manual_seed(seed + 1)
        self.x = torch.randn(B, D, generator=g) * SD + MU
        self.y = torch.arange(B) % C

    def reference(self) -> float:
        logits, d = self.ref((self.x - MU) / (2 * SD))
        loss = reference_loss(logits, d, self.y)
        self.ref_opt.zero_grad()
        loss.backward()
        self.ref_opt.step()
        self.ref_sched.step()
        return loss.item()

    def ours(self) -> float:
        return train_step(self.model, self.opt, self.sched, self.acc, self.x, self.y, self.cfg)[0].item()

    def ours_parts(self, upto: str) -> None:
        """Our step cut after ``upto`` (forward | loss | backward) for the time breakdown."""
        logits, d = self.model(self.x, return_distances=True)
        if upto == "forward":
            return
        loss = head_loss(logits, d, self.y, K, self.cfg.alpha, self.cfg.temperature, "class")[0]
        if upto == "loss":
            return
        self.opt.zero_grad(set_to_none=True)
        loss.backward()


def timed_rounds(fns: dict, rounds: int, steps: int) -> dict:
    """Median ms per call of each function; rounds interleaved, ``steps`` calls per round."""
    for fn in fns.values():
        fn()
    times: dict = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            for _ in range(steps):
                fn()
            times[k].append((time.perf_counter() - t) / steps * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def time_train_head(steps: int) -> float:
    """ms per step of the whole ``train_head`` loop on GTZAN-sized synthetic data (731 x 8 training chunks)."""
    from pecmae_hub.training.features import FeatureSet
    from pecmae_hub.training.head import train_head

    rng = np.random.default_rng(0)
    centers = rng.normal(MU, SD, (C, D)).astype(np.float32)

    def tracks(n):
        labels = [i % C for i in range(n)]
        feats = [centers[c] + rng.normal(0, SD, (8, D)).astype(np.float32) for c in labels]
        return FeatureSet(feats, labels, [f"t{i}" for i in range(n)], [f"c{i}" for i in range(C)])

    cfg = TrainConfig(protos_per_class=K, total_steps=steps, eval_every=100, device="cpu")
    _, metrics = train_head(tracks(731), tracks(96), None, cfg, None, progress=False)
    return metrics["loop_seconds"] / steps * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds and steps, no train_head loop")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 7, quick 3)")
    ap.add_argument("--steps", type=int, default=None, help="steps per round (default 8, quick 4)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--loop-steps", type=int, default=None, help="train_head loop steps (default 300, quick 0)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds, steps = args.rounds or (3 if args.quick else 7), args.steps or (4 if args.quick else 8)
    loop_steps = args.loop_steps if args.loop_steps is not None else (0 if args.quick else 300)
    common = {"batch": B, "classes": C, "protos_per_class": K, "dim": D, "threads": torch.get_num_threads()}
    emit(bench="env", torch=torch.__version__, load_avg_1min=round(os.getloadavg()[0], 2), **common)

    s = Steps(total_steps=10 * rounds * steps + 100)
    med = timed_rounds(
        {
            "reference": s.reference,
            "ours": s.ours,
            "forward": lambda: s.ours_parts("forward"),
            "loss": lambda: s.ours_parts("loss"),
            "backward": lambda: s.ours_parts("backward"),
        },
        rounds,
        steps,
    )
    ours, ref = med["ours"], med["reference"]
    emit(
        bench="reference_step",
        ms_per_step=round(ref, 2),
        note="stock TransformerEncoder, (B,P,D) distance, "
        "class loop, torch.optim.Adam (defaults), OneCycleLR, no Accelerate",
    )
    fwd, loss, bwd = med["forward"], med["loss"], med["backward"]
    emit(
        bench="train_step",
        ms_per_step=round(ours, 2),
        speedup_vs_reference=round(ref / ours, 2),
        target_speedup=6.0,
        fraction_forward=round(fwd / ours, 3),
        fraction_loss=round(max(loss - fwd, 0) / ours, 3),
        fraction_backward=round(max(bwd - loss, 0) / ours, 3),
        fraction_optimizer=round(max(ours - bwd, 0) / ours, 3),
        gtzan_preset_minutes=round(ours * PRESET_STEPS / 6e4, 1),
        load_avg_1min=round(os.getloadavg()[0], 2),
    )

    p = Steps(total_steps=100, dropout=False, seed=1)
    pairs = [(p.reference(), p.ours()) for _ in range(10 if args.quick else 30)]
    diff = max(abs(a - b) / abs(a) for a, b in pairs)
    emit(
        bench="loss_parity",
        steps=len(pairs),
        dropout=False,
        max_rel_diff=float(f"{diff:.2e}"),
        first_loss=round(pairs[0][0], 6),
        last_loss_reference=round(pairs[-1][0], 6),
        last_loss_ours=round(pairs[-1][1], 6),
    )
    if loop_steps:
        loop = time_train_head(loop_steps)
        emit(
            bench="train_head_loop",
            steps=loop_steps,
            ms_per_step=round(loop, 2),
            ratio_to_bare_step=round(loop / ours, 2),
            note="data loading + validation every 100 steps included",
        )


if __name__ == "__main__":
    main()
