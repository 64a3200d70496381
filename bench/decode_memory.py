"""Peak memory of decoding hostile and long uploads (issue 20, D1). Prints one JSON line per figure.

Each figure is the peak resident memory (VmHWM) a fresh child process gains, over what it held before:
- ``bomb``: a small Ogg Vorbis file of 64 channels at 192 kHz, decoded by ``load_audio`` (blocks of at most
  8 MiB, mixed down while reading) against the former whole-file decode (``soundfile.read`` of every
  channel, then the mixdown and resampling), measured in the same run: the ratio is the saving;
- ``app``: the app's path for its longest accepted input (``PECMAE_MAX_SECONDS``, 600 s) of 44.1 kHz stereo:
  decode, then classify with the embedded model, above the memory of the loaded model; the documented
  target is 300 MB (docs/app.md, "Limits").

Usage: python bench/decode_memory.py [--quick] [--bomb-seconds 20] [--clip-seconds 600]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

MB = 1024 * 1024


def peak() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))


def write_bomb(path: str, seconds: float, sr: int = 192_000, channels: int = 64) -> None:
    import soundfile as sf

    n, block = int(sr * seconds), sr // 4
    chunk = np.zeros((block, channels), np.float32)
    chunk[:, 0] = 0.3 * np.sin(2 * np.pi * 440 * np.arange(block) / sr)
    with sf.SoundFile(path, "w", samplerate=sr, channels=channels, format="OGG", subtype="VORBIS") as f:
        for start in range(0, n, block):
            f.write(chunk[: min(block, n - start)])


def write_clip(path: str, seconds: float, sr: int = 44_100) -> None:
    import soundfile as sf

    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", samplerate=sr, channels=2, subtype="PCM_16") as f:
        for start in range(0, int(sr * seconds), sr * 10):
            t = np.arange(start, min(start + sr * 10, int(sr * seconds))) / sr
            tone = 0.2 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(len(t))
            f.write(np.stack([tone, tone], axis=1))


def child(mode: str, path: str) -> None:
    import soundfile as sf

    from pecmae_hub.audio import load_audio, resample

    resample(np.zeros(64, np.float32), 192_000)  # scipy imported before measuring
    if mode == "app":
        from pecmae_hub.pipeline import PECMAE

        model = PECMAE.from_pretrained("gm-solos", device="cpu")
        model.classify(np.sin(np.arange(48_000) / 5).astype(np.float32), sr=24_000)  # warm
    before = peak()
    if mode == "whole":  # the former load_audio: every channel decoded at once, then mixed down
        data, sr = sf.read(path, dtype="float32", always_2d=True)
        resample(data.T.mean(axis=0), sr)
    elif mode == "blocks":
        load_audio(path)
    else:
        wav = load_audio(path, max_seconds=3600)
        model.classify(wav, sr=24_000)
    print(json.dumps({"grown_mb": round((peak() - before) / MB, 1), "before_mb": round(before / MB, 1)}))


def run_child(mode: str, path: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, path], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s bomb, 120 s clip")
    parser.add_argument("--bomb-seconds", type=float, default=None)
    parser.add_argument("--clip-seconds", type=float, default=None)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    bomb_s = args.bomb_seconds or (3.0 if args.quick else 20.0)
    clip_s = args.clip_seconds or (120.0 if args.quick else 600.0)
    with tempfile.TemporaryDirectory(prefix="pecmae-bench-") as tmp:
        bomb, clip = os.path.join(tmp, "bomb.ogg"), os.path.join(tmp, "clip.wav")
        write_bomb(bomb, bomb_s)
        whole, blocks = run_child("whole", bomb), run_child("blocks", bomb)
        decoded = int(192_000 * bomb_s) * 64 * 4
        print(
            json.dumps(
                {
                    "bench": "bomb",
                    "file": f"Ogg Vorbis, 64 channels, 192 kHz, {bomb_s:g} s, {os.path.getsize(bomb) / 1024:.0f} KiB",
                    "decoded_mb": round(decoded / MB, 1),
                    "whole_file_grown_mb": whole["grown_mb"],
                    "load_audio_grown_mb": blocks["grown_mb"],
                    "blocks_over_whole": round(blocks["grown_mb"] / max(whole["grown_mb"], 0.1), 3),
                }
            ),
            flush=True,
        )
        write_clip(clip, clip_s)
        app = run_child("app", clip)
        print(
            json.dumps(
                {
                    "bench": "app",
                    "file": f"WAV, 44.1 kHz stereo 16-bit, {clip_s:g} s",
                    "model_loaded_mb": app["before_mb"],
                    "grown_above_model_mb": app["grown_mb"],
                    "target_mb": 300,
                    "over_target": round(app["grown_mb"] / 300, 3),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
