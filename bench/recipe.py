"""Projected wall time of ``pecmae recipe gtzan`` on this machine; prints one JSON object per line.

Real-size architecture (``Autoencoder(AutoencoderConfig.upstream())``, random weights: speed does not
depend on the values) and the paper's ``gtzan`` training preset:

- ``extract``: the recipe's extract stage (``extract_features``: decoding a 22.05 kHz WAV, resampling
  to 24 kHz, 7 full 4-s chunks + one 2-s chunk per 30-s track, batches of 32 chunks) on ``--tracks``
  generated 30-s tracks; seconds of audio per second, seconds per track;
- ``train``: seconds per step of the prototype head with the ``gtzan`` preset (batch 256, K = 5,
  D = 768, transformer summariser) over ``--steps`` steps on 5 848 random training chunks (the size
  of the paper split: 731 tracks x 8 chunks), the same probe the recipe prints before training;
- ``render``: seconds to sonify one prototype (40 diffusion steps + EnCodec decoder), x 50 prototypes;
- ``evaluate`` (not with ``--quick``): the evaluate stage (prototype head, linear probe, 2 000-step MLP) on
  val and test of the paper split's sizes;
- ``projection``: the stages added up, for GTZAN's 999 decodable tracks x 30 s (the paper split
  itself extracts 918) and the preset's 150 000 steps.

The machine is shared: ``load_average`` is recorded with the figures. ``--threads`` pins torch threads.

    python bench/recipe.py [--quick] [--tracks 3] [--steps 300] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

GTZAN_TRACKS, GTZAN_SPLIT_TRACKS, TRACK_SECONDS, PRESET_STEPS, PROTOTYPES = 999, 918, 30.0, 150_000, 50


def emit(**record) -> None:
    print(json.dumps(record), flush=True)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bench_extract(ae, n_tracks: int, batch_size: int = 32) -> dict:
    import soundfile as sf

    from pecmae_hub.training.extract import extract_features

    sr = 22_050
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench-recipe-") as tmp:
        (Path(tmp) / "audio").mkdir()
        for i in range(n_tracks):
            t = np.arange(int(sr * TRACK_SECONDS)) / sr
            wav = 0.3 * np.sin(2 * np.pi * 220 * (i + 1) * t) + 0.05 * rng.standard_normal(len(t))
            sf.write(Path(tmp) / "audio" / f"track{i}.wav", wav.astype(np.float32), sr)
        t0 = time.perf_counter()
        summary = extract_features(
            Path(tmp) / "audio", Path(tmp) / "features", ae, device="cpu", batch_size=batch_size, progress=False
        )
        seconds = time.perf_counter() - t0
    assert summary.written == n_tracks, summary.failures
    return {
        "tracks": n_tracks,
        "seconds": round(seconds, 2),
        "seconds_per_track": round(seconds / n_tracks, 3),
        "audio_seconds_per_second": round(n_tracks * TRACK_SECONDS / seconds, 2),
        "chunks": summary.chunks,
    }


def bench_train(steps: int) -> dict:
    from pecmae_hub.recipes.timing import time_head_steps
    from pecmae_hub.training.head import TrainConfig

    cfg = TrainConfig.from_preset("gtzan", device="cpu")
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 585)[:5848]
    x = (rng.standard_normal((5848, 768)) * 0.4 + 0.1 + 0.05 * y[:, None]).astype(np.float32)
    per_step = time_head_steps(x, y, 10, cfg, steps=steps, warmup=5)
    return {
        "steps_timed": steps,
        "ms_per_step": round(per_step * 1000, 2),
        "preset_steps": cfg.total_steps,
        "projected_seconds": round(per_step * cfg.total_steps, 1),
    }


def bench_render(ae) -> dict:
    z = torch.randn(1, ae.embedding_dim) * 0.4
    t0 = time.perf_counter()
    ae.decode(z, steps=40, guidance=1.0, seed=0)
    one = time.perf_counter() - t0
    return {
        "seconds_per_prototype": round(one, 2),
        "prototypes": PROTOTYPES,
        "projected_seconds": round(one * PROTOTYPES, 1),
    }


def bench_evaluate() -> dict:
    from pecmae_hub.models.head import PrototypeHead
    from pecmae_hub.training.evaluation import evaluate_head
    from pecmae_hub.training.features import FeatureSet

    rng = np.random.default_rng(0)

    def fs(n):
        labels = [i % 10 for i in range(n)]
        return FeatureSet(
            [(rng.standard_normal((8, 768)) * 0.4 + 0.05 * y).astype(np.float32) for y in labels],
            labels,
            [f"t{i}" for i in range(n)],
            [f"c{i}" for i in range(10)],
        )

    train, splits = fs(731), {"val": fs(96), "test": fs(91)}
    head = PrototypeHead([f"c{i}" for i in range(10)], 768, 5, norm_mean=0.1, norm_std=0.4)
    t0 = time.perf_counter()
    for split in splits.values():
        evaluate_head(head, split, train, None, mlp_steps=2000)
    return {"seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 track, 60 training steps, no evaluate timing")
    parser.add_argument("--tracks", type=int, default=3, help="30-s tracks to extract (default 3)")
    parser.add_argument("--steps", type=int, default=300, help="head training steps to time (default 300)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tracks, steps = (1, 60) if args.quick else (args.tracks, args.steps)

    from pecmae_hub.models.autoencoder import Autoencoder, AutoencoderConfig

    emit(
        bench="machine",
        cpu=cpu_name(),
        cores=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        torch=torch.__version__,
        python=sys.version.split()[0],
        cuda=torch.cuda.is_available(),
        load_average=[round(v, 2) for v in os.getloadavg()],
        quick=args.quick,
    )
    torch.manual_seed(0)
    ae = Autoencoder(AutoencoderConfig.upstream()).eval()
    extract = bench_extract(ae, tracks)
    emit(bench="extract", model="AutoencoderConfig.upstream() (random weights, fp32, cpu)", **extract)
    train = bench_train(steps)
    emit(bench="train", preset="gtzan", **train)
    render = bench_render(ae)
    emit(bench="render", steps=40, **render)
    evaluate = None if args.quick else bench_evaluate()
    if evaluate:
        emit(bench="evaluate", **evaluate)
    per_track = extract["seconds_per_track"]
    stages = {
        "extract_999_tracks": round(per_track * GTZAN_TRACKS, 1),
        "extract_918_split_tracks": round(per_track * GTZAN_SPLIT_TRACKS, 1),
        "train_150k_steps": train["projected_seconds"],
        "render_50_prototypes": render["projected_seconds"],
        "evaluate": evaluate["seconds"] if evaluate else None,
    }
    total = (
        stages["extract_999_tracks"]
        + stages["train_150k_steps"]
        + stages["render_50_prototypes"]
        + (stages["evaluate"] or 0)
    )
    emit(
        bench="projection",
        what="pecmae recipe gtzan (999 x 30 s tracks, 150k steps, 50 renders)",
        stages_seconds=stages,
        total_seconds=round(total, 1),
        total_hours=round(total / 3600, 2),
        load_average=[round(v, 2) for v in os.getloadavg()],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
