"""Write ``examples/speech.wav``: the deliberately out-of-domain example clip (a voice, not an instrument).

    python scripts/make_speech_example.py [OUT]

The clip is the espeak-ng speech synthesiser (Debian package ``espeak-ng``) reading the sentence below,
resampled to 24 kHz mono, trimmed to 3 s like the instrument examples and normalised to -20 dBFS RMS
(the level of the GM-Solos clips). espeak-ng is GPL-3.0 software, but the audio it produces from our own
text is not covered by its licence; the clip is released under CC0-1.0 (see ``examples/README.md``).
The output is deterministic for one espeak-ng version (1.51 wrote the shipped file).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SENTENCE = "Hello! This is a voice speaking, not a musical instrument. Which instrument am I?"
VOICE, WORDS_PER_MINUTE = "en-us", 165
SECONDS, RMS_DBFS = 3.0, -20.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", type=Path, default=ROOT / "examples" / "speech.wav", help="WAV to write")
    args = parser.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        print("make_speech_example: espeak-ng is not installed (apt-get install espeak-ng)", file=sys.stderr)
        return 1
    from pecmae_hub.audio import SAMPLE_RATE, load_audio, write_wav

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "speech.wav"
        subprocess.run(
            ["espeak-ng", "-v", VOICE, "-s", str(WORDS_PER_MINUTE), "-w", str(raw), SENTENCE],
            check=True,
            capture_output=True,
        )
        wav = load_audio(raw)  # espeak-ng writes 22.05 kHz: resampled to 24 kHz
    start = int(np.argmax(np.abs(wav) > 1e-3))  # from the first sound
    wav = wav[start : start + int(SECONDS * SAMPLE_RATE)].astype(np.float64)
    wav *= 10 ** (RMS_DBFS / 20) / np.sqrt(np.mean(wav**2))
    wav *= min(1.0, 0.95 / np.abs(wav).max())
    write_wav(args.out, wav.astype(np.float32))
    print(f"wrote {args.out} ({len(wav) / SAMPLE_RATE:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
