"""Speed of the upstream-size autoencoder on this machine; prints one JSON object per line.

Real base-size architecture (``AutoencoderConfig.upstream()``) with random weights, fp32:
- ``gemm``: this CPU's fp32 GEMM rate (torch.mm of 2048² matrices, best of several), measured in
  the same run so that utilisation figures are comparable across machines;
- ``encode``: seconds to encode 30 s of 24 kHz audio to z (7 full 4 s chunks + one 2 s chunk),
  best of ``--repeats``; its FLOPs (matmul/conv/attention via FlopCounterMode, LSTMs analytically)
  and utilisation = FLOPs / seconds / GEMM rate;
- ``decode``: seconds to sonify one z into one 4 s chunk (40 steps, guidance 1.0) including the
  EnCodec decoder, best of ``--decode-repeats``, with FLOPs and utilisation likewise;
- ``memory``: peak RSS of the process (resource.getrusage).
Targets (2-core CPU): encode 30 s ≤ 4 s, sonify ≤ 30 s. Upstream code: ≈11 s and ≈64 s.

The machine is shared: run it a few times and take the best; ``--threads`` pins torch threads.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time

import numpy as np
import torch
from torch import nn


def emit(**record) -> None:
    print(json.dumps(record), flush=True)


def gemm_gflops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def count_flops(model: nn.Module, fn) -> float:
    """FLOPs of ``fn()``: FlopCounterMode for matmul/conv/SDPA plus nn.LSTM analytically (it is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    lstm_flops = [0.0]

    def hook(mod: nn.LSTM, inputs, _out):
        x = inputs[0]
        steps, batch = (x.shape[0], x.shape[1]) if not mod.batch_first else (x.shape[1], x.shape[0])
        h = mod.hidden_size
        for layer in range(mod.num_layers):
            i = mod.input_size if layer == 0 else h
            lstm_flops[0] += 2.0 * steps * batch * 4 * h * (i + h)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.LSTM)]
    try:
        with FlopCounterMode(display=False) as counter:
            fn()
    finally:
        for handle in handles:
            handle.remove()
    return counter.get_total_flops() + lstm_flops[0]


def best_time(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="encode repetitions (best is reported)")
    parser.add_argument("--decode-repeats", type=int, default=1, help="sonify repetitions (best is reported)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=30.0, help="audio length to encode")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--skip-decode", action="store_true")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    from pecmae_hub.audio import SAMPLE_RATE
    from pecmae_hub.autoencoder import Autoencoder, AutoencoderConfig

    emit(bench="env", python=platform.python_version(), torch=torch.__version__, machine=platform.machine(),
         processor=platform.processor() or None, threads=torch.get_num_threads(),
         interop_threads=torch.get_num_interop_threads(), dtype="float32")
    gemm = gemm_gflops()
    emit(bench="gemm", n=2048, gflops=round(gemm, 1))

    torch.manual_seed(0)
    t = time.perf_counter()
    ae = Autoencoder(AutoencoderConfig.upstream())
    emit(bench="build", seconds=round(time.perf_counter() - t, 3),
         parameters=sum(p.numel() for p in ae.parameters()))

    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal(int(args.seconds * SAMPLE_RATE))).astype(np.float32)
    ae.encode(wav[: SAMPLE_RATE], sr=SAMPLE_RATE)  # warm-up (allocator, oneDNN primitive caches)
    z_holder = {}

    def run_encode():
        z_holder["z"] = ae.encode(wav, sr=SAMPLE_RATE)

    best, times = best_time(run_encode, args.repeats)
    with torch.inference_mode():
        flops = count_flops(ae, run_encode)
    emit(bench="encode", audio_seconds=args.seconds, n_chunks=int(z_holder["z"].shape[0]), seconds=round(best, 3),
         all_seconds=[round(x, 3) for x in times], gflop=round(flops / 1e9, 1),
         gflops=round(flops / best / 1e9, 1), utilisation=round(flops / best / 1e9 / gemm, 3),
         realtime_factor=round(args.seconds / best, 1), target_seconds=4.0, upstream_seconds=11.0)

    if not args.skip_decode:
        z = z_holder["z"][:1]

        def run_decode():
            z_holder["wav"] = ae.decode(z, steps=args.steps, guidance=args.guidance, seed=0)

        best, times = best_time(run_decode, args.decode_repeats)
        with torch.inference_mode():
            flops = count_flops(ae, lambda: ae.decode(z, steps=args.steps, guidance=args.guidance, seed=0))
        emit(bench="decode", steps=args.steps, guidance=args.guidance, audio_seconds=len(z_holder["wav"]) / SAMPLE_RATE,
             seconds=round(best, 3), all_seconds=[round(x, 3) for x in times], gflop=round(flops / 1e9, 1),
             gflops=round(flops / best / 1e9, 1), utilisation=round(flops / best / 1e9 / gemm, 3),
             target_seconds=30.0, upstream_seconds=64.0)

    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    emit(bench="memory", peak_rss_mb=round(peak_kb / 1024, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
