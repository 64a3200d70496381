"""Training-step speed of the prototype head on CPU (the GTZAN preset's shapes).

Prints JSON lines: ms/step and steps/s of the full training step (forward, class-mode loss,
backward, Adam + OneCycle) at batch 256, C=10, K=5, D=768 with the transformer summariser; the
projected wall time of the 150k-step preset; and the same step with a naive distance that
materialises the (B, P, D) difference tensor as upstream, with the speed ratio.
Target: the whole preset within 1 hour on a 2-core machine, i.e. <= 24 ms/step.

    python bench/train_head.py [--steps 60] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from pecmae_hub.head import PrototypeHead
from pecmae_hub.training import TrainConfig, make_accelerator, train_step

B, C, K, D, PRESET_STEPS = 256, 10, 5, 768, 150_000


class NaiveHead(PrototypeHead):
    """Upstream-style distance: ((x[:, None] - p[None]) ** 2).mean(-1) over a (B, P, D) tensor."""

    def _distances_normalized(self, x):
        p = self._normalized_prototypes()
        return ((x[:, None, :] - p[None, :, :]) ** 2).mean(-1)


def time_steps(head_cls, steps: int, warmup: int, seed: int = 0) -> float:
    torch.manual_seed(seed)
    cfg = TrainConfig(protos_per_class=K, total_steps=steps + warmup, device="cpu")
    acc = make_accelerator(cfg)
    head = head_cls([f"c{i}" for i in range(C)], D, K, "l2", "transformer", 0.1, 0.4)
    opt = torch.optim.Adam(head.parameters(), lr=cfg.max_lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.max_lr, total_steps=cfg.total_steps)
    model, opt = acc.prepare(head, opt)
    model.train()
    x = torch.randn(B, D) * 0.4 + 0.1
    y = torch.arange(B) % C
    for _ in range(warmup):
        train_step(model, opt, sched, acc, x, y, cfg)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss, _, _ = train_step(model, opt, sched, acc, x, y, cfg)
    loss.item()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    common = {"batch": B, "classes": C, "protos_per_class": K, "dim": D, "summarizer": "transformer",
              "loss": "class", "threads": torch.get_num_threads(), "device": "cpu"}
    ours = time_steps(PrototypeHead, args.steps, args.warmup)
    print(json.dumps({"bench": "train_step", **common, "ms_per_step": round(ours * 1e3, 3),
                      "steps_per_s": round(1 / ours, 2)}))
    print(json.dumps({"bench": "gtzan_preset_projection", "steps": PRESET_STEPS,
                      "projected_minutes": round(ours * PRESET_STEPS / 60, 1), "target_minutes": 60,
                      "meets_target": ours * PRESET_STEPS <= 3600}))
    naive = time_steps(NaiveHead, args.steps, args.warmup)
    print(json.dumps({"bench": "train_step_naive_bpd", **common, "ms_per_step": round(naive * 1e3, 3),
                      "steps_per_s": round(1 / naive, 2), "speedup_of_ours": round(naive / ours, 2)}))


if __name__ == "__main__":
    main()
