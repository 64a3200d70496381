"""Scale-out figures of ``pecmae classify`` / ``extract`` / ``train`` on this machine; one JSON object per line.

Measured here (CPU; the workers are started with ``accelerate launch --multi_gpu``, which on a machine
without a visible GPU gives gloo processes on the CPU; timings exclude start-up: every process loads its
model, waits at a barrier, then the sharded loop is timed until the last process is done):

- ``classify_scaling``: tracks/s of classify (``--scaling-model``, default the embedded gm-solos, int8) with
  1 process x 1 thread, 1 process x 2 threads and 2 processes x 1 thread, and the ratio of the last two
  to the first; the machine's cores and load average are printed with it;
- ``per_process``: one process's throughput, in 30-s tracks per hour, of ``classify`` with the paper's
  model size (EnCodecMAE-base autoencoder + GTZAN head, random weights: speed does not depend on the
  values) at int8, and of ``extract`` at fp32 (what the GTZAN recipe does);
- ``train_step``: seconds per head training step with the ``gtzan`` preset (global batch 256, D = 768,
  K = 5, transformer summariser) on 1 process and split over 2 processes;
- ``projection``: 1 000 000 30-s tracks classified, and the GTZAN recipe's extract (999 tracks) and train
  (150 000 head steps) stages, on N CPU processes of this kind from the measured one-process figures:
  extract / classify divided by N (the shards share nothing but check-ins; the 2-process ratio measured
  here is printed apart, because on a shared 2-core machine it measures the machine's load), a training
  step as 1/N of the compute plus the all-reduce cost measured with 2 processes; and on N GPUs, marked
  ``projected``: no GPU was lent to
  measure, so a GPU's time is the operation count of the work (counted with torch's FlopCounterMode)
  over an assumed sustained rate (``--gpu-tflops``, default 50 TFLOP/s: bf16 on an H100 at ~5 % of peak,
  a cautious figure for batch-32 inference of a base-size transformer), and a head step at least 1 ms
  (kernel launches of a small step), whatever N.

    python bench/scale.py [--quick] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TRACK_SECONDS, TRACKS_1M, GTZAN_TRACKS, GTZAN_STEPS, GTZAN_SPLIT = 30.0, 1_000_000, 999, 150_000, (731, 8)
HERE = Path(__file__).resolve()


def emit(**record) -> None:
    print(json.dumps(record), flush=True)


def write_tracks(folder: Path, n: int, sr: int = 22_050) -> list[str]:
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(TRACK_SECONDS * sr)) / sr
    paths = []
    for i in range(n):
        wave = 0.3 * np.sin(2 * np.pi * (110 + 30 * i) * t) + 0.05 * rng.standard_normal(len(t))
        path = folder / f"track{i:03d}.wav"
        sf.write(path, wave.astype(np.float32), sr)
        paths.append(str(path))
    return paths


def paper_size_model(folder: Path) -> Path:
    """A model folder of the paper's size: EnCodecMAE-base autoencoder (random) + a 10-class K=5 head."""
    import torch

    from pecmae_hub.models.autoencoder import Autoencoder, AutoencoderConfig
    from pecmae_hub.models.head import PrototypeHead
    from pecmae_hub.pipeline import PECMAE

    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(0)
    ae = Autoencoder(AutoencoderConfig.upstream())
    head = PrototypeHead([f"genre{i}" for i in range(10)], ae.embedding_dim, 5, norm_mean=0.0, norm_std=1.0)
    PECMAE(ae, head, name="paper-size").save_pretrained(folder)
    return folder


# ---- the worker: runs inside each process of `accelerate launch` ---------------------------------------
def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from pecmae_hub.distributed import processes, shard

    state = processes()
    tracks = Path(args.tracks).read_text().splitlines()
    mine = shard(tracks)
    if args.task == "classify":
        from pecmae_hub.pipeline import PECMAE

        model = PECMAE.from_pretrained(args.model, device="cpu", precision=args.precision)

        def work() -> None:
            for path in mine:
                model.classify(path, top_k=0)
    else:
        from pecmae_hub.training.extract import extract_features

        out = Path(args.out) / f"run{os.getpid()}"

        def work() -> None:
            extract_features(mine, out, args.model, device="cpu", progress=False)

    state.wait_for_everyone()
    t0 = time.perf_counter()
    work()
    state.wait_for_everyone()
    seconds = time.perf_counter() - t0
    if state.is_main_process:
        Path(args.result).write_text(json.dumps({"seconds": seconds, "tracks": len(tracks)}))


def timed(task: str, model: str, tracks: list[str], work: Path, processes: int, threads: int, **kw) -> float:
    """Tracks per second of ``task`` on ``processes`` x ``threads`` (start-up excluded)."""
    listing = work / "tracks.txt"
    listing.write_text("\n".join(tracks))
    result = work / f"result-{task}-{processes}x{threads}.json"
    worker_args = ["--worker", task, "--model", model, "--tracks", str(listing), "--threads", str(threads)]
    worker_args += ["--result", str(result), "--out", str(work), "--precision", kw.get("precision", "fp32")]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), CUDA_VISIBLE_DEVICES="")
    if processes == 1:
        cmd = [sys.executable, str(HERE), *worker_args]
    else:
        port = str(29_500 + os.getpid() % 1000)
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes)]
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port]
        cmd += [str(HERE), *worker_args]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=3600)
    record = json.loads(result.read_text())
    return record["tracks"] / record["seconds"]


def train_step_seconds(work: Path, processes: int, steps: int) -> float:
    """Seconds per step of `pecmae train --preset gtzan` on random features of the paper split's size."""
    features = work / "features"
    if not features.is_dir():
        rng = np.random.default_rng(0)
        features.mkdir()
        n, chunks = GTZAN_SPLIT
        rows = []
        for i in range(n):
            np.save(features / f"t{i:04d}.npy", rng.standard_normal((chunks, 768)).astype(np.float32))
            rows.append(f"genre{i % 10}\tt{i:04d}.wav\n")
        (work / "train.tsv").write_text("".join(rows))
        (work / "val.tsv").write_text("".join(rows[:40]))
    out = work / f"head{processes}"
    args = ["train", "--features", str(features), "--split-train", str(work / "train.tsv"), "--split-val"]
    args += [str(work / "val.tsv"), "--preset", "gtzan", "--total-steps", str(steps), "--eval-every", str(steps)]
    args += ["--out", str(out), "--no-progress", "--nearest-k", "1", "--threads", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    if processes == 1:
        cmd = [sys.executable, "-m", "pecmae_hub.cli", *args]
    else:
        port = str(29_600 + os.getpid() % 1000)
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes)]
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port]
        cmd += ["-m", "pecmae_hub.cli", *args]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=3600)
    metrics = json.loads((out / "metrics.json").read_text())
    return metrics["loop_seconds"] / steps


def flops_per_track(model_dir: Path) -> float:
    """Floating-point operations to encode one 30-s track (7 full 4-s chunks + one 2-s chunk) and classify it."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pecmae_hub.pipeline import PECMAE

    model = PECMAE.from_pretrained(model_dir, device="cpu")
    ae = model.autoencoder
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        z = ae.encode_chunks(torch.zeros(1, ae.chunk_samples))
        model.head(z)
    per_chunk = counter.get_total_flops()
    return per_chunk * TRACK_SECONDS / ae.chunk_seconds


def flops_per_train_step() -> float:
    """Floating-point operations of one head training step of the ``gtzan`` preset (batch 256, forward + backward)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pecmae_hub.models.head import PrototypeHead
    from pecmae_hub.training.head import TrainConfig, head_loss

    cfg = TrainConfig.from_preset("gtzan")
    head = PrototypeHead([f"g{i}" for i in range(10)], 768, cfg.protos_per_class, norm_mean=0.0, norm_std=1.0)
    x, y = torch.randn(cfg.batch_size, 768), torch.randint(0, 10, (cfg.batch_size,))
    with FlopCounterMode(display=False) as counter:
        logits, d = head(x, return_distances=True)
        head_loss(logits, d, y, cfg.protos_per_class, cfg.alpha, cfg.temperature)[0].backward()
    return counter.get_total_flops()


def hours(seconds: float) -> float:
    return float(f"{seconds / 3600:.3g}")


def _row(n: int, device: str, projected: bool, classify_s: float, extract_s: float, train_s: float) -> dict:
    return {
        "n": n,
        "device": device,
        "projected": projected,
        "classify_1M_h": hours(classify_s),
        "gtzan_extract_h": hours(extract_s),
        "gtzan_train_h": hours(train_s),
    }


def projection_rows(classify_rate, extract_rate, step_1, step_2, track_flops, step_flops, gpu_tflops):
    """The projection table (rows) and the all-reduce cost of a head step measured with 2 processes.

    The shards of extract / classify share nothing but check-ins: N processes on N free cores (or machines)
    are projected at N x one process (the 2-process ratio measured here is printed apart: on a shared
    2-core machine it measures the load as much as the code). A training step is a ring all-reduce of the
    head's gradients plus 1/N of the compute: step_N = step_1 / N + c, with c = step_2 - step_1 / 2
    measured here (a ring all-reduce costs about the same for any N).
    """
    comm = max(step_2 - step_1 / 2, 0.0)
    rows = []
    for n in (1, 2, 8, 32, 128):
        step = {1: step_1, 2: step_2}.get(n, step_1 / n + comm)
        classify_s, extract_s = TRACKS_1M / (classify_rate * n), GTZAN_TRACKS / (extract_rate * n)
        rows.append(_row(n, "CPU process, 1 thread", n > 1, classify_s, extract_s, GTZAN_STEPS * step))
    gpu_rate = gpu_tflops * 1e12 / track_flops  # tracks per second of one GPU
    gpu_step = max(step_flops / (gpu_tflops * 1e12), 1e-3)  # at least ~1 ms: kernel launches of a small step
    for n in (1, 8, 32):
        extract_s = GTZAN_TRACKS / (gpu_rate * n)
        rows.append(_row(n, "GPU", True, TRACKS_1M / (gpu_rate * n), extract_s, GTZAN_STEPS * gpu_step))
    return rows, comm


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tracks and steps")
    parser.add_argument("--markdown", action="store_true", help="also print the projection table as Markdown")
    parser.add_argument("--gpu-tflops", type=float, default=50.0, help="assumed sustained TFLOP/s of one GPU")
    parser.add_argument("--scaling-model", default="gm-solos", help="model of the 1-vs-2-process ratio")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    for hidden in ("--model", "--tracks", "--result", "--out", "--precision"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.task = args.worker
        worker(args)
        return 0

    cores = os.cpu_count()
    emit(machine=f"{cores} CPU cores", load_average=[round(x, 2) for x in os.getloadavg()])
    with tempfile.TemporaryDirectory(prefix="pecmae-scale-") as tmp:
        work = Path(tmp)
        tracks = write_tracks(work / "tracks", 6 if args.quick else 16)

        # 1 vs 2 processes, the same total number of threads for the fair comparison
        runs = {
            "1x1": timed("classify", args.scaling_model, tracks, work, 1, 1, precision="int8"),
            "1x2": timed("classify", args.scaling_model, tracks, work, 1, 2, precision="int8"),
            "2x1": timed("classify", args.scaling_model, tracks, work, 2, 1, precision="int8"),
        }
        efficiency = runs["2x1"] / runs["1x1"] / 2
        emit(
            bench="classify_scaling",
            model=args.scaling_model,
            precision="int8",
            tracks=len(tracks),
            tracks_per_s={k: round(v, 3) for k, v in runs.items()},
            ratio_2_processes_vs_1=round(runs["2x1"] / runs["1x1"], 3),
            ratio_2_processes_vs_1_process_2_threads=round(runs["2x1"] / runs["1x2"], 3),
            scaling_efficiency=round(efficiency, 3),
            threads_per_process=1,
            load_average=[round(x, 2) for x in os.getloadavg()],
        )

        paper = str(paper_size_model(work / "paper-model"))
        few = tracks[: 1 if args.quick else 2]
        classify_rate = timed("classify", paper, few, work, 1, 1, precision="int8")
        extract_rate = timed("extract", str(Path(paper) / "autoencoder"), few, work, 1, 1)
        emit(
            bench="per_process",
            model="EnCodecMAE-base size + GTZAN head",
            threads=1,
            classify_int8_tracks_per_hour=round(classify_rate * 3600, 1),
            extract_fp32_tracks_per_hour=round(extract_rate * 3600, 1),
        )

        steps = 10 if args.quick else 30
        step_1, step_2 = train_step_seconds(work, 1, steps), train_step_seconds(work, 2, steps)
        emit(
            bench="train_step",
            preset="gtzan",
            global_batch=256,
            seconds_per_step={"1x1": round(step_1, 4), "2x1": round(step_2, 4)},
            ratio_2_processes_vs_1=round(step_1 / step_2, 3),
        )

        track_flops, step_flops = flops_per_track(Path(paper)), flops_per_train_step()
    rows, comm = projection_rows(classify_rate, extract_rate, step_1, step_2, track_flops, step_flops, args.gpu_tflops)
    emit(
        bench="projection",
        gflop_per_track=round(track_flops / 1e9, 1),
        gflop_per_train_step=round(step_flops / 1e9, 2),
        train_allreduce_s_measured_here=round(comm, 4),
        assumed_gpu_tflops=args.gpu_tflops,
        scaling_used="linear in N (separate cores or machines)",
        scaling_efficiency_measured_here=round(efficiency, 3),
        rows=rows,
    )
    if args.markdown:
        head = ["N", "device", "classify 1M x 30-s tracks, int8 (h)", "GTZAN extract, 999 tracks (h)"]
        print("\n| " + " | ".join([*head, "GTZAN train, 150k steps (h)", "from"]) + " |")
        print("|---" * 6 + "|")
        for r in rows:
            note = "projected" if r["projected"] else "measured here"
            if r["n"] == 2 and r["device"].startswith("CPU"):
                note = "projected; train step measured here"
            cells = [r["n"], r["device"], r["classify_1M_h"], r["gtzan_extract_h"], r["gtzan_train_h"], note]
            print("| " + " | ".join(map(str, cells)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
