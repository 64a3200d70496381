"""Training-step speed of the prototype head on CPU (the GTZAN preset's shapes).

Prints JSON lines: ms/step and steps/s of the full training step (forward, class-mode loss,
backward, Adam + OneCycle) at batch 256, C=10, K=5, D=768 with the transformer summariser; the
projected wall time of the 150k-step preset; the whole ``train_head`` loop per step; and the same
step with a naive distance that materialises the (B, P, D) difference tensor as upstream, and
fully upstream-style (that distance, the stock TransformerEncoder, unfused Adam), with speed ratios.
Target: the whole preset within 1 hour on a 2-core machine, i.e. <= 24 ms/step.

    python bench/train_head.py [--steps 60] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from pecmae_hub.models.head import PrototypeHead
from pecmae_hub.training.head import TrainConfig, make_accelerator, make_optimizer, train_step

B, C, K, D, PRESET_STEPS = 256, 10, 5, 768, 150_000


class NaiveHead(PrototypeHead):
    """Upstream-style distance: ((x[:, None] - p[None]) ** 2).mean(-1) over a (B, P, D) tensor."""

    def _distances_normalized(self, x):
        p = self._normalized_prototypes()
        return ((x[:, None, :] - p[None, :, :]) ** 2).mean(-1)


class UpstreamStyleHead(NaiveHead):
    """Naive distance plus the stock ``nn.TransformerEncoder`` summariser (full Q/K/V attention)."""

    def _normalized_prototypes(self):
        return self.time_summarizer(self.protos)[:, 0].float()


def time_steps(head_cls, steps: int, warmup: int, seed: int = 0, plain_adam: bool = False) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) per step."""
    torch.manual_seed(seed)
    cfg = TrainConfig(protos_per_class=K, total_steps=steps + warmup, device="cpu")
    acc = make_accelerator(cfg)
    head = head_cls([f"c{i}" for i in range(C)], D, K, "l2", "transformer", 0.1, 0.4)
    opt = torch.optim.Adam(head.parameters(), lr=cfg.max_lr, weight_decay=cfg.weight_decay) if plain_adam \
        else make_optimizer(head, cfg)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.max_lr, total_steps=cfg.total_steps)
    model, opt = acc.prepare(head, opt)
    model.train()
    x = torch.randn(B, D) * 0.4 + 0.1
    y = torch.arange(B) % C
    for _ in range(warmup):
        train_step(model, opt, sched, acc, x, y, cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        loss, _, _ = train_step(model, opt, sched, acc, x, y, cfg)
    loss.item()
    return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps


def time_train_head(steps: int) -> float:
    """Seconds per step of the whole ``train_head`` loop (data loading, validation every 100 steps)
    on GTZAN-sized synthetic data (731 x 8 training chunks, 96 x 8 validation chunks)."""
    from pecmae_hub.training.features import FeatureSet
    from pecmae_hub.training.head import train_head

    rng = np.random.default_rng(0)
    centers = rng.normal(0.1, 0.4, (C, D)).astype(np.float32)

    def tracks(n):
        labels = [i % C for i in range(n)]
        feats = [centers[c] + rng.normal(0, 0.4, (8, D)).astype(np.float32) for c in labels]
        return FeatureSet(feats, labels, [f"t{i}" for i in range(n)], [f"c{i}" for i in range(C)])

    cfg = TrainConfig(protos_per_class=K, total_steps=steps, eval_every=100, device="cpu")
    _, metrics = train_head(tracks(731), tracks(96), None, cfg, None, progress=False)
    return metrics["loop_seconds"] / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--loop-steps", type=int, default=200, help="steps of the full train_head loop (0: skip)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    common = {"batch": B, "classes": C, "protos_per_class": K, "dim": D, "summarizer": "transformer",
              "loss": "class", "threads": torch.get_num_threads(), "device": "cpu"}
    # the machine may be shared: the load average tells how much of the wall time is other processes
    load = os.getloadavg()[0]
    ours, ours_cpu = time_steps(PrototypeHead, args.steps, args.warmup)
    print(json.dumps({"bench": "train_step", **common, "ms_per_step": round(ours * 1e3, 2),
                      "cpu_ms_per_step": round(ours_cpu * 1e3, 2), "steps_per_s": round(1 / ours, 2),
                      "load_avg_1min": round(load, 2)}))
    print(json.dumps({"bench": "gtzan_preset_projection", "steps": PRESET_STEPS,
                      "projected_minutes": round(ours * PRESET_STEPS / 60, 1), "target_minutes": 60,
                      "meets_target": ours * PRESET_STEPS <= 3600}))
    if args.loop_steps:
        loop = time_train_head(args.loop_steps)
        print(json.dumps({"bench": "train_head_loop", **common, "steps": args.loop_steps,
                          "ms_per_step": round(loop * 1e3, 2), "projected_minutes": round(loop * PRESET_STEPS / 60, 1),
                          "note": "data loading + validation every 100 steps included"}))
    naive, naive_cpu = time_steps(NaiveHead, args.steps, args.warmup)
    print(json.dumps({"bench": "train_step_naive_bpd", **common, "ms_per_step": round(naive * 1e3, 2),
                      "cpu_ms_per_step": round(naive_cpu * 1e3, 2), "steps_per_s": round(1 / naive, 2),
                      "speedup_of_ours": round(naive / ours, 2), "load_avg_1min": round(os.getloadavg()[0], 2)}))
    up, up_cpu = time_steps(UpstreamStyleHead, args.steps, args.warmup, plain_adam=True)
    print(json.dumps({"bench": "train_step_upstream_style", **common, "ms_per_step": round(up * 1e3, 2),
                      "cpu_ms_per_step": round(up_cpu * 1e3, 2), "steps_per_s": round(1 / up, 2),
                      "speedup_of_ours": round(up / ours, 2), "load_avg_1min": round(os.getloadavg()[0], 2),
                      "note": "naive distance + stock TransformerEncoder + unfused Adam"}))

if __name__ == "__main__":
    main()
