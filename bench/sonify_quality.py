"""What a listener hears from the embedded gm-solos model, judged by measures that do not depend on it.

Fresh clips of the held-out TimGM6mb bank (a seed and indices the recipe never used; the first chunk of
each) go through every stage of sonification, and each version is judged by:
- ``voiced``: pYIN's voiced probability averaged over frames (librosa, fmin 60 Hz, fmax 1600 Hz, frame 2048):
  an independent pitch tracker, not our model;
- ``flatness``: spectral flatness (0 = pure tones, 1 = white noise);
- ``spread_lu``: loudness spread (max − min of BS.1770 integrated loudness over the items), and ``clipped``:
  items whose delivered samples reach full scale (|x| ≥ 0.999);
- ``accuracy``: the model's own accuracy on the version (a weaker judge: a model can recognise its own
  output without a person hearing the instrument), or for prototypes, how many are re-classified as their
  own class;
- ``cpu_s_per_s``: process CPU seconds per second of synthesised audio.

Rows: the real chunks; the vocoder ceiling (each chunk's true mel through Griffin-Lim, the baseline, and
through the neural vocoder); reconstructions (z of each chunk decoded with the default sampler) by the
previous decoder + Griffin-Lim (the baseline, loaded from git revision ``--baseline-rev``) and by the
shipped decoder + vocoder; the prototypes as previously shipped (``--baseline-rev``) and as shipped now.
Baseline audio is judged as users got it (clipped to ±1 when written); the shipped path is loudness
normalised by the package. Ratios new/baseline are printed for every judge, from this run.

Speed: decoding one prototype with the package's default settings (sampler, steps, vocoder) against the
previous default (UniPC 14 steps + the previous decoder + Griffin-Lim), median of ``--repeats``.

Usage: python bench/sonify_quality.py [--quick] [--per-class 20] [--baseline-rev 48d9e08] [--threads 1]
Needs the [bench] extra (librosa) and the [data] extra (FluidSynth rendering).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parent.parent
SR = 24_000


def voiced_probability(wav: np.ndarray) -> float:
    import librosa

    _, _, prob = librosa.pyin(np.asarray(wav, np.float64), fmin=60, fmax=1600, sr=SR, frame_length=2048)
    return float(np.nanmean(prob))


def flatness(wav: np.ndarray) -> float:
    import librosa

    return float(np.mean(librosa.feature.spectral_flatness(y=np.asarray(wav, np.float32), n_fft=2048)))


def judge(name: str, wavs: list[np.ndarray], labels: list[str], model, cpu_s: float | None = None) -> dict:
    from pecmae_hub.loudness import integrated_loudness

    loud = [integrated_loudness(w, SR) for w in wavs]
    loud = [v for v in loud if np.isfinite(v)]
    row = {
        "row": name,
        "n": len(wavs),
        "voiced": float(np.mean([voiced_probability(w) for w in wavs])),
        "flatness": float(np.mean([flatness(w) for w in wavs])),
        "spread_lu": float(max(loud) - min(loud)) if loud else float("nan"),
        "clipped": int(sum(np.max(np.abs(w)) >= 0.999 for w in wavs)),
        "accuracy": float(np.mean([model.classify(w, sr=SR).label == y for w, y in zip(wavs, labels)])),
    }
    if cpu_s is not None:
        row["cpu_s_per_s"] = cpu_s / (sum(len(w) for w in wavs) / SR)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    return row


def baseline_folder(rev: str, dest: Path) -> Path:
    """The model folder as it was at git revision ``rev`` (checkpoints/gm-solos), written to ``dest``."""
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", rev, "checkpoints/gm-solos"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for name in files:
        blob = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{name}"], check=True, capture_output=True)
        path = dest / Path(name).relative_to("checkpoints/gm-solos")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob.stdout)
    return dest


def cpu_decode(ae, z, **kwargs) -> tuple[list[np.ndarray], float]:
    """Decode each z row as one prototype is decoded (seeded noise per row); returns audio and CPU seconds."""
    out, start = [], time.process_time()
    for i in range(len(z)):
        gen = torch.Generator().manual_seed(i)
        noise = torch.randn((1, ae.chunk_frames, ae.config.signal_dim), generator=gen)
        out.append(ae.decode(z[i : i + 1], noise=noise, **kwargs))
    return out, time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gm-solos")
    parser.add_argument("--per-class", type=int, default=20, help="fresh TimGM6mb clips per class")
    parser.add_argument("--quick", action="store_true", help="5 clips per class, 3 speed repeats")
    parser.add_argument("--baseline-rev", default="48d9e08", help="git revision of the previous shipped model")
    parser.add_argument("--repeats", type=int, default=7, help="timed decodes of one prototype per setting")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    per_class, repeats = (5, 3) if args.quick else (args.per_class, args.repeats)
    torch.set_num_threads(args.threads)

    from pecmae_hub import PECMAE
    from pecmae_hub.data.gm_solos.render import LABELS, render_clip
    from pecmae_hub.loudness import normalize_loudness

    model = PECMAE.from_pretrained(args.model)
    ae = model.autoencoder
    steps, scheduler = model.render_settings_for()
    index = model.render_settings or {}
    settings = {
        "steps": steps,
        "scheduler": scheduler,
        "guidance": index.get("guidance", 1.0),
        "temperature": model.default_temperature(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        old = PECMAE.from_pretrained(baseline_folder(args.baseline_rev, Path(tmp) / "old"))
        old_ae = old.autoencoder
        # its shipped renders as files (format 1: rendered without loudness normalisation)
        paths = [old.prototype_audio_path(p, loudness=None) for p in range(old.head.num_prototypes)]
        assert all(paths), f"no pre-rendered prototypes at {args.baseline_rev}"
        old_protos = [sf.read(str(path), dtype="float32")[0] for path in paths]
        old_settings = dict(zip(("steps", "scheduler"), old.render_settings_for()))
    assert old_ae.fingerprint() == ae.fingerprint(), "the baseline must share the encoder (same z)"
    print(json.dumps({"settings": {**settings, "vocoder": index.get("vocoder")}, "per_class": per_class}))

    labels = [label for label in LABELS for _ in range(per_class)]
    clips = [
        render_clip("timgm6mb", label, 70_000 + i, seed=7101)[: ae.chunk_samples]
        for label in LABELS
        for i in range(per_class)
    ]
    batch = torch.from_numpy(np.stack(clips))
    with torch.inference_mode():
        mel = ae.codec.encode(batch)
        z = ae.encode_chunks(batch)

    def delivered(wav):  # as users got the baseline: raw, clipped to full scale when written
        return np.clip(wav, -1.0, 1.0).astype(np.float32)

    rows = {"real": judge("real chunks", [normalize_loudness(c)[0] for c in clips], labels, model)}
    start = time.process_time()
    gl = list(old_ae.synthesize(mel, "griffin-lim"))
    rows["gl"] = judge(
        "vocoder ceiling: Griffin-Lim (baseline)",
        [delivered(w) for w in gl],
        labels,
        model,
        time.process_time() - start,
    )
    if ae.vocoder is not None:
        start = time.process_time()
        voc = [normalize_loudness(w)[0] for w in ae.synthesize(mel)]
        rows["voc"] = judge("vocoder ceiling: neural vocoder", voc, labels, model, time.process_time() - start)
    old_recon, cpu = cpu_decode(old_ae, z, vocoder="griffin-lim", loudness=None, **settings)
    rows["old_recon"] = judge(
        "reconstruction: previous decoder + Griffin-Lim (baseline)",
        [delivered(w) for w in old_recon],
        labels,
        model,
        cpu,
    )
    new_recon, cpu = cpu_decode(ae, z, **settings)
    rows["recon"] = judge("reconstruction: shipped decoder + vocoder", new_recon, labels, model, cpu)
    proto_labels = [model.head.prototype_name(p)[0] for p in range(model.head.num_prototypes)]
    rows["old_proto"] = judge(
        "prototypes: previously shipped (baseline)", [delivered(w) for w in old_protos], proto_labels, model
    )
    rows["proto"] = judge(
        "prototypes: shipped", [model.sonify(p) for p in range(model.head.num_prototypes)], proto_labels, model
    )
    for new, base in (("voc", "gl"), ("recon", "old_recon"), ("proto", "old_proto")):
        if new in rows:
            ratios = {k: rows[new][k] / rows[base][k] for k in ("voiced", "accuracy") if rows[base][k]}
            print(json.dumps({"ratio": f"{new}/{base}", **{k: round(v, 3) for k, v in ratios.items()}}))

    # speed of one decoded prototype (CPU seconds): today's default settings against the previous model's
    # default (the settings of its pre-renders, which sonify used by default: exact sampler, 40 steps) and
    # against UniPC 14 (the package default for a model without pre-renders), each with Griffin-Lim
    z0 = model.head.effective_prototypes()[:1]

    def timed(fn):
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            start = time.process_time()
            fn()
            times.append(time.process_time() - start)
        return statistics.median(times)

    now = timed(lambda: ae.decode(z0, seed=0, **settings))
    before = timed(lambda: old_ae.decode(z0, seed=0, vocoder="griffin-lim", loudness=None, **old_settings))
    unipc = timed(lambda: old_ae.decode(z0, seed=0, steps=14, scheduler="unipc", vocoder="griffin-lim", loudness=None))
    print(
        json.dumps(
            {
                "speed": "one decoded prototype, default settings (CPU s)",
                "now": round(now, 3),
                "previous_default": round(before, 3),
                "previous_default_settings": {k: str(v) for k, v in old_settings.items()},
                "previous_unipc14_griffin_lim": round(unipc, 3),
                "ratio_previous_default_over_now": round(before / now, 2),
                "ratio_previous_unipc14_over_now": round(unipc / now, 2),
                "threads": args.threads,
            }
        )
    )


if __name__ == "__main__":
    main()
