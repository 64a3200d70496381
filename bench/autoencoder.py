"""Autoencoder inference: speed and fidelity, each figure a ratio to a baseline measured in the same run.

One JSON object per line:
- ``gemm``: this CPU's fp32 GEMM rate (torch.mm of 2048² matrices); ``encode`` re-measures it in its own
  rounds (``gemm_gflops_same_rounds``) as the baseline of its utilisation figures;
- ``encode``: z of ``--seconds`` of audio on the upstream-size architecture (random weights, seed 0), the fp32
  path and the fast option (``precision="int8"``), repetitions interleaved, medians. Ratios: fast/fp32
  speed-up, fp32 utilisation of the GEMM rate (nominal upstream FLOPs / s / GEMM rate); fidelity: cosine
  of the fast option's z to fp32's (min and mean over chunks);
- ``encode_default``: the default path (``precision="auto"``, decided by the model's fidelity record) of the
  upstream-size model converted from the test suite's upstream-layout weights (``bench/reference.py``), its
  speed-up over fp32 in the same rounds, the precision auto chose and why;
- ``codec_encode`` / ``codec_decode``: the EnCodec SEANet on one 4 s chunk: ``RefCodec`` (``bench/reference.py``:
  plain ``nn.Conv1d``/``nn.ConvTranspose1d`` under ``weight_norm``, ``nn.LSTM``, channels-first: encodec 0.1.1's
  structure as we re-stated it, standing in for the upstream codec) against ours in fp32 and in bf16 (where the
  CPU has it); fidelity: relative error to the reference output;
- ``embedded``: the shipped gm-solos model on fresh held-out TimGM6mb clips: fp32, forced int8 and the default
  path (``auto``): prediction agreement with fp32, accuracy, z cosine, speed ratio to fp32;
- ``memory``: peak RSS of ``Autoencoder.encode`` on a WAV file, in child processes: 1 min (upstream-size
  model) and 1 h (the embedded model) streamed, and the 1 h file loaded whole first (the old way); ratios
  1 h / 1 min and streamed / whole, and the throughput ratio streamed / whole.

Usage: ``python bench/autoencoder.py [--quick] [--threads N] [--work DIR] [--skip-memory] [--skip-embedded]``.
On a shared machine compare the ratios, not the seconds; ``--threads 1`` is steadier under load.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from reference import RefCodec

SR = 24_000


def emit(**record) -> None:
    print(json.dumps(record), flush=True)


def gemm_gflops(n: int = 2048, repeats: int = 7) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def interleaved(fns: dict, repeats: int, warm: bool = True) -> dict:
    """Median seconds of each function, the repetitions interleaved so that load changes hit all alike."""
    for fn in fns.values() if warm else ():
        fn()
    times: dict = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(_timed(fn))
    return {k: statistics.median(v) for k, v in times.items()}


# the reference codec (encodec 0.1.1's structure) is bench/reference.py's RefCodec


def _seanet_flops(model, length: int) -> float:
    from pecmae_hub.models.encodec import SLSTM, SConv1d, SConvTranspose1d, SEANetResnetBlock

    def conv(c, n):
        w = c.conv.conv.weight_v
        return 2.0 * w.numel() * -(-n // c.stride), -(-n // c.stride)

    flops = 0.0
    for m in model:
        if isinstance(m, SConv1d):
            f, length = conv(m, length)
            flops += f
        elif isinstance(m, SConvTranspose1d):
            flops += 2.0 * m.convtr.convtr.weight_v.numel() * length
            length *= m.stride
        elif isinstance(m, SEANetResnetBlock):
            flops += sum(conv(c, length)[0] for c in (m.block[1], m.block[3], m.shortcut))
        elif isinstance(m, SLSTM):
            h = m.lstm.hidden_size
            flops += 2.0 * length * 4 * h * 2 * h * m.lstm.num_layers
    return flops


def _transformer_flops(enc, tokens: int) -> float:
    ff = enc.ff_layer[0].weight.numel()
    inner, dim = enc.encoder_layers[0].att_layer.wq.weight.shape
    per_layer = 2.0 * tokens * dim * inner * 4 + 4.0 * tokens * tokens * inner + 4.0 * tokens * ff
    return per_layer * len(enc.encoder_layers)


def encode_flops(ae, chunk_lengths) -> float:
    total = 0.0
    for n in chunk_lengths:
        frames = -(-n // 320)
        total += _seanet_flops(ae.codec.encoder.model, n)
        total += 2.0 * frames * ae.frame_encoder.feat_projector.weight.numel()
        total += _transformer_flops(ae.frame_encoder.visible_encoder, frames)
        total += _transformer_flops(ae.cls_encoder.encoder, frames + 1)
    return total


# Parts --------------------------------------------------------------------------------------------------
def bench_encode(args) -> None:
    from pecmae_hub.audio import chunk_bounds
    from pecmae_hub.models.autoencoder import Autoencoder, AutoencoderConfig
    from pecmae_hub.models.precision import apply_precision

    torch.manual_seed(0)
    ae = Autoencoder(AutoencoderConfig.upstream())
    fast = apply_precision(copy.deepcopy(ae), "int8")
    wav = (0.1 * np.random.default_rng(0).standard_normal(int(args.seconds * SR))).astype(np.float32)
    for m in (ae, fast):
        m.encode(wav[:SR], sr=SR)  # warm-up: allocator, oneDNN primitives, cached weights
    out = {}
    fns = {p: lambda m=m, p=p: out.__setitem__(p, m.encode(wav, sr=SR)) for p, m in (("fp32", ae), ("int8", fast))}
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    fns["gemm"] = lambda: [torch.mm(a, b) for _ in range(3)]  # the GEMM rate in the same rounds
    med = interleaved(fns, args.repeats, warm=False)
    gemm = 3 * 2 * 2048**3 / med["gemm"] / 1e9  # median rate over the rounds, not the one-off figure above
    cos = F.cosine_similarity(out["int8"], out["fp32"], dim=-1)
    flops = encode_flops(ae, [e - s for s, e in chunk_bounds(len(wav), ae.chunk_samples)])
    emit(
        bench="encode",
        audio_seconds=args.seconds,
        n_chunks=len(cos),
        fp32_seconds=round(med["fp32"], 3),
        int8_seconds=round(med["int8"], 3),
        int8_speedup=round(med["fp32"] / med["int8"], 2),
        fp32_utilisation=round(flops / med["fp32"] / 1e9 / gemm, 3),
        int8_effective_utilisation=round(flops / med["int8"] / 1e9 / gemm, 3),
        gemm_gflops_same_rounds=round(gemm, 1),
        z_cosine_min=round(cos.min().item(), 6),
        z_cosine_mean=round(cos.mean().item(), 6),
        codec_dtype=str(fast.codec.compute_dtype).replace("torch.", ""),
        repeats=args.repeats,
    )


def bench_encode_default(args) -> None:
    """The default path (``precision="auto"``) of the upstream-size model as a user gets it: converted from the
    test suite's upstream-layout weights with its fidelity record (``bench/reference.py``), against fp32."""
    import tempfile
    from pathlib import Path

    import reference

    from pecmae_hub.models.autoencoder import Autoencoder

    with tempfile.TemporaryDirectory(prefix="bench-ae-") as tmp:
        folder = reference.upstream_size_model(Path(args.work or tmp), log=lambda text: None)
        exact = Autoencoder.from_pretrained(folder, precision="fp32")
        default = Autoencoder.from_pretrained(folder)
    wav = (0.1 * np.random.default_rng(0).standard_normal(int(args.seconds * SR))).astype(np.float32)
    for m in (exact, default):
        m.encode(wav[:SR], sr=SR)  # warm-up
    out = {}
    paths = (("fp32", exact), ("default", default))
    med = interleaved({p: lambda m=m, p=p: out.__setitem__(p, m.encode(wav, sr=SR)) for p, m in paths}, args.repeats)
    cos = F.cosine_similarity(out["default"], out["fp32"], dim=-1)
    emit(
        bench="encode_default",
        model="upstream-size, converted from the test weights, with its fidelity record",
        audio_seconds=args.seconds,
        default_precision=default.precision,
        default_precision_reason=default.precision_reason,
        fp32_seconds=round(med["fp32"], 3),
        default_seconds=round(med["default"], 3),
        default_speedup_vs_fp32=round(med["fp32"] / med["default"], 2),
        z_cosine_min=round(cos.min().item(), 6),
        repeats=args.repeats,
    )


def bench_codec(args) -> None:
    from pecmae_hub.models.encodec import EncodecCodec
    from pecmae_hub.models.precision import cpu_has_native_bf16

    torch.manual_seed(0)
    ours = EncodecCodec().eval()
    ref = RefCodec().eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    low = copy.deepcopy(ours)
    dtypes = ["fp32"] + (["bf16"] if cpu_has_native_bf16() else [])
    low.set_compute_dtype(torch.bfloat16)
    wav = torch.randn(1, 4 * SR, generator=torch.Generator().manual_seed(1)) * 0.1
    with torch.inference_mode():
        lat = ours.encode(wav)
        for part, ref_fn, fn in (
            ("encode", lambda: ref.encoder.model(wav[:, None]).transpose(1, 2), ours.encode),
            ("decode", lambda: ref.decoder.model(lat.transpose(1, 2))[:, 0], ours.decode),
        ):
            arg = wav if part == "encode" else lat
            fns = {"reference": ref_fn, "fp32": lambda fn=fn, arg=arg: fn(arg)}
            if "bf16" in dtypes:
                fns["bf16"] = lambda arg=arg, part=part: getattr(low, part)(arg)
            med = interleaved(fns, args.codec_repeats)
            expect = ref_fn()
            errs = {k: ((fns[k]() - expect).norm() / expect.norm()).item() for k in dtypes}
            emit(
                bench=f"codec_{part}",
                audio_seconds=4.0,
                reference_seconds=round(med["reference"], 4),
                **{f"{k}_seconds": round(med[k], 4) for k in dtypes},
                **{f"{k}_speedup_vs_reference": round(med["reference"] / med[k], 2) for k in dtypes},
                **{f"{k}_rel_error": float(f"{errs[k]:.2e}") for k in dtypes},
                repeats=args.codec_repeats,
            )


def bench_embedded(args) -> None:
    """The shipped model on fresh held-out clips: fp32, forced int8 and the default path (``precision="auto"``,
    what ``from_pretrained`` gives without options) side by side."""
    from pecmae_hub import PECMAE
    from pecmae_hub.data.gm_solos.render import LABELS, render_clip
    from pecmae_hub.models.precision import apply_precision

    exact = PECMAE.from_pretrained("gm-solos", device="cpu", precision="fp32")
    default = PECMAE.from_pretrained("gm-solos", device="cpu")  # the default: "auto", decided by fidelity.json
    paths = {
        "fp32": exact.autoencoder,
        "int8": apply_precision(copy.deepcopy(exact.autoencoder), "int8"),
        "default": default.autoencoder,
    }
    labels: dict = {k: [] for k in paths}
    cos_min = {k: 1.0 for k in paths}
    times = {k: 0.0 for k in paths}
    truth = []
    for c, label in enumerate(LABELS):
        for i in range(args.clips):
            wav = render_clip("timgm6mb", label, i, seed=424242)  # seeds the recipe never used
            z = {}
            for name, ae in paths.items():  # interleaved per clip: load changes hit every path alike
                t = time.perf_counter()
                z[name] = ae.encode(wav, sr=SR)
                times[name] += time.perf_counter() - t
                cos_min[name] = min(cos_min[name], F.cosine_similarity(z["fp32"], z[name], dim=-1).min().item())
                with torch.no_grad():
                    labels[name].append(exact.head(z[name]).mean(0).argmax().item())
            truth.append(c)
    n = len(truth)
    figures = {}
    for name in ("int8", "default"):
        figures |= {
            f"{name}_prediction_agreement": round(sum(a == b for a, b in zip(labels[name], labels["fp32"])) / n, 4),
            f"{name}_accuracy": round(sum(a == b for a, b in zip(labels[name], truth)) / n, 4),
            f"{name}_z_cosine_min": round(cos_min[name], 6),
            f"{name}_speedup_vs_fp32": round(times["fp32"] / times[name], 2),
        }
    emit(
        bench="embedded",
        model="gm-solos",
        bank="timgm6mb",
        clips=n,
        fp32_accuracy=round(sum(a == b for a, b in zip(labels["fp32"], truth)) / n, 4),
        default_precision=default.precision,
        default_precision_reason=default.precision_reason,
        **figures,
    )


def _write_noise_wav(path: str, seconds: float, sr: int = 44_100, channels: int = 2) -> None:
    import soundfile as sf

    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", sr, channels, subtype="PCM_16") as f:
        left = int(seconds * sr)
        while left:
            n = min(left, 60 * sr)
            f.write((0.1 * rng.standard_normal((n, channels))).astype(np.float32))
            left -= n


def bench_memory(args) -> None:
    tmp = tempfile.mkdtemp(prefix="pecmae-bench-")
    long_seconds = 600.0 if args.quick else 3600.0
    runs = [
        ("1min", "upstream", "stream", 60.0),
        ("1min", "embedded", "stream", 60.0),
        ("long", "embedded", "stream", long_seconds),
        ("long", "embedded", "whole", long_seconds),
    ]
    results = {}
    try:
        _write_noise_wav(os.path.join(tmp, "1min.wav"), 60.0)
        throughput = _stream_throughput(os.path.join(tmp, "1min.wav"), 3 if args.quick else 5)
        for tag, model, mode, seconds in runs:
            path = os.path.join(tmp, f"{tag}.wav")
            if not os.path.exists(path):
                _write_noise_wav(path, seconds)
            cmd = [
                sys.executable,
                __file__,
                "--memory-child",
                model,
                mode,
                path,
                "--threads",
                str(torch.get_num_threads()),
            ]
            run = subprocess.run(cmd, check=True, capture_output=True, text=True)
            results[(tag, model, mode)] = res = json.loads(run.stdout.splitlines()[-1])
            emit(
                bench="memory_run",
                audio_seconds=seconds,
                file="44.1 kHz stereo PCM16 WAV",
                model=model,
                mode=mode,
                **res,
            )
    finally:
        for name in os.listdir(tmp):
            os.remove(os.path.join(tmp, name))
        os.rmdir(tmp)
    s1, sl, wl = (
        results[k]
        for k in (("1min", "embedded", "stream"), ("long", "embedded", "stream"), ("long", "embedded", "whole"))
    )
    emit(
        bench="memory",
        long_seconds=long_seconds,
        upstream_1min_peak_rss_mb=results[("1min", "upstream", "stream")]["peak_rss_mb"],
        embedded_1min_peak_rss_mb=s1["peak_rss_mb"],
        embedded_long_peak_rss_mb=sl["peak_rss_mb"],
        embedded_long_whole_file_peak_rss_mb=wl["peak_rss_mb"],
        long_over_1min_rss=round(sl["peak_rss_mb"] / s1["peak_rss_mb"], 2),
        streamed_over_whole_rss=round(sl["peak_rss_mb"] / wl["peak_rss_mb"], 2),
        streamed_throughput_vs_whole=throughput,
    )


def _peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; ru_maxrss would include the parent's peak from before exec)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _stream_throughput(path: str, repeats: int) -> float:
    """Speed of encode(path) (streamed) over encode(load_audio(path)) (whole file), embedded model, interleaved."""
    from pecmae_hub import PECMAE
    from pecmae_hub.audio import load_audio

    ae = PECMAE.from_pretrained("gm-solos", device="cpu").autoencoder
    med = interleaved({"stream": lambda: ae.encode(path), "whole": lambda: ae.encode(load_audio(path), sr=SR)}, repeats)
    return round(med["whole"] / med["stream"], 2)


def memory_child(model: str, mode: str, path: str) -> None:
    from pecmae_hub.audio import load_audio
    from pecmae_hub.models.autoencoder import Autoencoder, AutoencoderConfig

    if model == "upstream":
        torch.manual_seed(0)
        ae = Autoencoder(AutoencoderConfig.upstream())
    else:
        from pecmae_hub import PECMAE

        ae = PECMAE.from_pretrained("gm-solos", device="cpu").autoencoder
    ae.encode(np.zeros(SR, np.float32), sr=SR)  # warm-up, counted in the base
    base = _peak_rss_mb()
    t = time.perf_counter()
    z = ae.encode(path) if mode == "stream" else ae.encode(load_audio(path, max_seconds=None), sr=SR)
    emit(
        peak_rss_mb=round(_peak_rss_mb(), 1),
        model_loaded_rss_mb=round(base, 1),
        seconds=round(time.perf_counter() - t, 2),
        n_chunks=int(z.shape[0]),
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short run: 8 s encode, fewer repeats and clips, a 10 min file instead of 1 h",
    )
    parser.add_argument("--seconds", type=float, default=None, help="audio to encode (default 30, quick 8)")
    parser.add_argument("--repeats", type=int, default=None, help="encode repetitions per path (default 3, quick 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument(
        "--clips", type=int, default=None, help="held-out clips per class for the embedded model (default 50, quick 5)"
    )
    parser.add_argument("--work", help="folder for the converted upstream-size model (kept for later runs)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument("--memory-child", nargs=3, metavar=("MODEL", "MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(*args.memory_child)
        return 0
    args.seconds = args.seconds or (8.0 if args.quick else 30.0)
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.codec_repeats = 3 if args.quick else 7
    args.clips = args.clips or (5 if args.quick else 50)  # per class (8 classes)
    emit(
        bench="env",
        python=platform.python_version(),
        torch=torch.__version__,
        machine=platform.machine(),
        threads=torch.get_num_threads(),
        load_avg_1min=round(os.getloadavg()[0], 2),
        quick=args.quick,
    )
    gemm = gemm_gflops()
    emit(bench="gemm", n=2048, gflops=round(gemm, 1))
    bench_encode(args)
    bench_encode_default(args)
    bench_codec(args)
    if not args.skip_embedded:
        bench_embedded(args)
    if not args.skip_memory:
        bench_memory(args)
    emit(bench="end", load_avg_1min=round(os.getloadavg()[0], 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
