"""Speed of the upstream-size autoencoder on this machine; prints one JSON object per line.

Real base-size architecture (``AutoencoderConfig.upstream()``) with random weights, fp32:
- ``gemm``: this CPU's fp32 GEMM rate (torch.mm of 2048² matrices, best of several), measured in
  the same run so that utilisation figures are comparable across machines;
- ``encode``: seconds to encode 30 s of 24 kHz audio to z (7 full 4 s chunks + one 2 s chunk),
  best of ``--repeats``; the nominal FLOPs of the upstream computation (convs, LSTMs, every
  projection/attention/FFN of every token, counted analytically: the same figure whatever the
  implementation skips) and utilisation = FLOPs / seconds / GEMM rate;
- ``decode``: seconds to sonify one z into one 4 s chunk (40 steps, guidance 1.0) including the
  EnCodec decoder, best of ``--decode-repeats``, with FLOPs and utilisation likewise;
- ``memory``: peak RSS of the process (resource.getrusage).
Targets (2-core CPU): encode 30 s ≤ 4 s, sonify ≤ 30 s. Upstream code: ≈11 s and ≈64 s.

The machine is shared: run it a few times and take the best; ``mean_cpu_seconds`` far below
``seconds`` × threads means other processes took the cores. ``--threads`` pins torch threads.
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


def _seanet_flops(model: nn.Sequential, length: int) -> tuple[float, int]:
    """Multiply-add FLOPs (×2) of a SEANet Sequential on ``length`` input steps; returns (flops, out length)."""
    from pecmae_hub.models.encodec import SConv1d, SConvTranspose1d, SEANetResnetBlock, SLSTM

    def conv(c: SConv1d, n: int) -> tuple[float, int]:
        w = c.conv.conv.weight_v
        out = -(-n // c.stride)
        return 2.0 * w.shape[0] * w.shape[1] * w.shape[2] * out, out

    flops = 0.0
    for m in model:
        if isinstance(m, SConv1d):
            f, length = conv(m, length)
            flops += f
        elif isinstance(m, SConvTranspose1d):
            w = m.convtr.convtr.weight_v  # (Cin, Cout, k)
            flops += 2.0 * w.shape[0] * w.shape[1] * w.shape[2] * length
            length *= m.convtr.convtr.stride
        elif isinstance(m, SEANetResnetBlock):
            for c in (m.block[1], m.block[3], m.shortcut):
                flops += conv(c, length)[0]
        elif isinstance(m, SLSTM):
            h, i = m.lstm.hidden_size, m.lstm.input_size
            flops += sum(2.0 * length * 4 * h * ((i if layer == 0 else h) + h) for layer in range(m.lstm.num_layers))
    return flops, length


def _transformer_flops(enc, tokens: int) -> float:
    """Q/K/V/O projections, attention scores and mixing, shared FFN: every layer, every token."""
    flops = 0.0
    ff_in, ff_out = enc.ff_layer[0].weight.shape[1], enc.ff_layer[0].weight.shape[0]
    for layer in enc.encoder_layers:
        att = layer.att_layer
        inner, dim = att.wq.weight.shape
        flops += 2.0 * tokens * dim * inner * 4 + 2.0 * 2 * tokens * tokens * inner + 2.0 * 2 * tokens * ff_in * ff_out
    return flops


def encode_flops(ae, chunk_lengths: list[int]) -> float:
    """Nominal FLOPs of the upstream computation of z for chunks of these lengths (the work upstream does;
    the same figure before and after any optimisation, so utilisation figures compare)."""
    total = 0.0
    for length in chunk_lengths:
        f, frames = _seanet_flops(ae.codec.encoder.model, length)
        total += f + 2.0 * frames * ae.frame_encoder.feat_projector.weight.numel()
        total += _transformer_flops(ae.frame_encoder.visible_encoder, frames)
        if ae.cls_encoder is not None:
            total += _transformer_flops(ae.cls_encoder.encoder, frames + 1)
    return total


def decode_flops(ae, n_chunks: int, steps: int, guidance: float) -> float:
    """Nominal FLOPs of sampling ``n_chunks`` chunks and vocoding them with the EnCodec decoder."""
    t = ae.chunk_frames
    rows = n_chunks * (2 if guidance > 0 else 1)
    den = ae.denoiser
    per_row = (_transformer_flops(den.denoiser, t + 2) + 2.0 * t * (den.in_adapter.weight.numel() + den.out_adapter.weight.numel())
               + 2.0 * den.time_embedding[2].weight.numel())
    return steps * rows * per_row + n_chunks * _seanet_flops(ae.codec.decoder.model, t)[0]


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
    from pecmae_hub.models.autoencoder import Autoencoder, AutoencoderConfig

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

    from pecmae_hub.audio import chunk_bounds

    cpu0 = time.process_time()
    best, times = best_time(run_encode, args.repeats)
    cpu = (time.process_time() - cpu0) / args.repeats
    lengths = [e - s for s, e in chunk_bounds(len(wav), ae.chunk_samples)]
    flops = encode_flops(ae, lengths)
    gemm = max(gemm, gemm_gflops())  # the machine is shared: keep the best GEMM rate seen
    emit(bench="encode", audio_seconds=args.seconds, n_chunks=int(z_holder["z"].shape[0]), seconds=round(best, 3),
         all_seconds=[round(x, 3) for x in times], mean_cpu_seconds=round(cpu, 3), gflop=round(flops / 1e9, 1),
         gflops=round(flops / best / 1e9, 1), utilisation=round(flops / best / 1e9 / gemm, 3),
         gemm_gflops=round(gemm, 1), realtime_factor=round(args.seconds / best, 1), target_seconds=4.0,
         upstream_seconds=11.0)

    if not args.skip_decode:
        z = z_holder["z"][:1]

        def run_decode():
            z_holder["wav"] = ae.decode(z, steps=args.steps, guidance=args.guidance, seed=0)

        cpu0 = time.process_time()
        best, times = best_time(run_decode, args.decode_repeats)
        cpu = (time.process_time() - cpu0) / args.decode_repeats
        flops = decode_flops(ae, 1, args.steps, args.guidance)
        gemm = max(gemm, gemm_gflops())
        emit(bench="decode", steps=args.steps, guidance=args.guidance, audio_seconds=len(z_holder["wav"]) / SAMPLE_RATE,
             seconds=round(best, 3), all_seconds=[round(x, 3) for x in times], mean_cpu_seconds=round(cpu, 3),
             gflop=round(flops / 1e9, 1), gflops=round(flops / best / 1e9, 1),
             utilisation=round(flops / best / 1e9 / gemm, 3), gemm_gflops=round(gemm, 1), target_seconds=30.0,
             upstream_seconds=64.0)

    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    emit(bench="memory", peak_rss_mb=round(peak_kb / 1024, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
