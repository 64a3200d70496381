"""GM-Solos: an 8-class solo-instrument data set rendered from General MIDI sound banks.

The classes and their order are those of Medley-Solos-DB. Each clip is a melody (a random scale
melody or a real corpus melody, see :mod:`pecmae_hub.gm_solos_melodies`) played by one GM preset
of one sound bank with FluidSynth at 24 kHz, then passed through a random recording chain (EQ,
chorus, reverb, noise) and normalised to a jittered RMS level. Three banks are for training; the
fourth (TimGM6mb) is held out as the test bank. Everything is drawn from a per-clip
``numpy.random.default_rng`` seeded by (seed, bank, class, index), so a clip is reproducible
bit for bit: FluidSynth's own reverb and chorus are off and every clip gets a fresh synth.
"""
from __future__ import annotations

import csv
import ctypes
import sys
import warnings
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from pecmae_hub.audio import SAMPLE_RATE, write_wav
from pecmae_hub.errors import ConfigError, DatasetError, PecmaeError
from pecmae_hub.storage.atomic import atomic_path
from pecmae_hub.data.gm_solos.melodies import INSTRUMENTS, Note, compose

LABELS = tuple(i.label for i in INSTRUMENTS)
PROGRAMS = {i.label: i.programs for i in INSTRUMENTS}

BANKS = {
    "fluidr3": "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "musescore": "/usr/share/sounds/sf3/MuseScore_General_Lite.sf3",
    "csound": "/usr/share/sounds/sf2/sf_GMbank.sf2",
    "timgm6mb": "/usr/share/sounds/sf2/TimGM6mb.sf2",
}
BANK_PACKAGES = {"fluidr3": "fluid-soundfont-gm", "musescore": "musescore-general-soundfont-small",
                 "csound": "csound-soundfont", "timgm6mb": "timgm6mb-soundfont"}  # Debian packages
TRAIN_BANKS = ("fluidr3", "musescore", "csound")
TEST_BANKS = ("timgm6mb",)
METADATA_COLUMNS = ("path", "label", "label_id", "bank", "program", "melody_source", "seed", "index", "split")
BLOCK = 64  # FluidSynth renders in 64-sample blocks: events are placed on block boundaries
SILENCE_RMS = 10 ** (-70 / 20)
MAX_ATTEMPTS = 4


def label_slug(label: str) -> str:
    """File-name form of a label: ``"distorted electric guitar"`` -> ``"distorted_electric_guitar"``."""
    return label.replace(" ", "_")


def default_split(bank: str) -> str:
    """``"test"`` for the held-out bank(s), ``"train"`` otherwise."""
    return "test" if bank in TEST_BANKS else "train"


def bank_path(bank: str) -> Path:
    """Path of a bank's sound font; :class:`DatasetError` naming the Debian package if it is missing."""
    if bank not in BANKS:
        raise DatasetError(f"unknown sound bank {bank!r}; choose from {', '.join(BANKS)}")
    path = Path(BANKS[bank])
    if not path.exists():
        raise DatasetError(f"sound bank {bank!r} not found at {path}: install it with "
                           f"`apt-get install {BANK_PACKAGES[bank]}`")
    return path


# ----------------------------------------------------------------------------------- synthesis
# FluidSynth recycles voice objects and leaves traces of a voice's previous note in its next one,
# so one synth per clip is needed for bit-exact clips. Loading a bank is slow (the MuseScore sf3
# decodes for ≈2 s), so each bank is loaded once per process into an "owner" synth and its sound
# font is lent to a fresh synth for every clip (≈1 ms) with fluid_synth_add_sfont/remove_sfont.
_LOADED: dict[str, tuple[object, int, int]] = {}  # bank -> (owner synth, sound-font id, fluid_sfont_t*)
_SYNTH_OPTIONS = {"synth.reverb.active": 0, "synth.chorus.active": 0, "synth.cpu-cores": 1}


@lru_cache(maxsize=None)
def _lib():
    try:
        import soundfile  # noqa: F401  (before libfluidsynth: see _check_libsndfile)
        import fluidsynth
    except (ImportError, OSError) as exc:
        raise DatasetError(f"GM-Solos needs pyfluidsynth and libfluidsynth3 ({exc}): "
                           "pip install 'pecmae-hub[data]' and apt-get install libfluidsynth3") from None
    lib, ptr, i = fluidsynth._fl, ctypes.c_void_p, ctypes.c_int
    for name, res, args in [("fluid_synth_get_sfont_by_id", ptr, [ptr, i]), ("fluid_synth_add_sfont", i, [ptr, ptr]),
                            ("fluid_synth_remove_sfont", i, [ptr, ptr]), ("fluid_set_log_function", ptr, [i, ptr, ptr]),
                            ("fluid_synth_write_float", i, [ptr, i, ptr, i, i, ptr, i, i])]:
        getattr(lib, name).restype, getattr(lib, name).argtypes = res, args
    _check_libsndfile()
    return fluidsynth, lib


def _check_libsndfile() -> None:
    """FluidSynth decodes sf3 (Ogg Vorbis) samples with libsndfile. The soundfile wheel bundles another
    libsndfile build with the same soname; whichever loads first serves both, and the two decode the
    MuseScore bank 1 LSB apart. We load soundfile first; warn if libfluidsynth was loaded earlier."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "libsndfile" in line}
    except OSError:
        return
    if len(paths) > 1:
        warnings.warn("fluidsynth was imported before soundfile, so sf3 banks (musescore) may render 1 LSB "
                      "differently from other processes; import pecmae_hub.gm_solos first", RuntimeWarning)


def _loaded(bank: str) -> tuple[object, int, int]:
    if bank not in _LOADED:
        path = bank_path(bank)
        fluidsynth, lib = _lib()
        owner = fluidsynth.Synth(gain=0.2, samplerate=float(SAMPLE_RATE), channels=16, **_SYNTH_OPTIONS)
        sfid = owner.sfload(str(path))
        if sfid < 0:
            raise DatasetError(f"FluidSynth could not load sound bank {bank!r} from {path}")
        _LOADED[bank] = (owner, sfid, lib.fluid_synth_get_sfont_by_id(owner.synth, sfid))
    return _LOADED[bank]


def bank_presets(bank: str) -> dict[int, str | None]:
    """Preset name of every GM-Solos program (1-based) in ``bank``; ``None`` where it is missing."""
    owner, sfid, _ = _loaded(bank)
    return {p: owner.sfpreset_name(sfid, 0, p - 1) for i in INSTRUMENTS for p in i.programs}


def _write_float(lib, synth, n: int) -> np.ndarray:
    left, right = np.zeros(n, np.float32), np.zeros(n, np.float32)
    lib.fluid_synth_write_float(synth.synth, n, left.ctypes.data, 0, 1, right.ctypes.data, 0, 1)
    return 0.5 * (left + right)


def _q(seconds: float) -> int:
    return max(int(round(seconds * SAMPLE_RATE / BLOCK)), 0) * BLOCK


def synthesize(bank: str, program: int, notes: list[Note], controls: list, n_samples: int) -> np.ndarray:
    """Render ``notes`` and ``(seconds, channel, cc, value)`` controls dry: mono float32, ``n_samples`` long."""
    owner, sfid, sfont = _loaded(bank)
    if owner.sfpreset_name(sfid, 0, program - 1) is None:
        raise DatasetError(f"sound bank {bank!r} has no preset for GM program {program}")
    fluidsynth, lib = _lib()
    warn = lib.fluid_set_log_function(2, None, None)  # silence "no preset on channel" while lending
    synth = fluidsynth.Synth(gain=0.2, samplerate=float(SAMPLE_RATE), channels=16, **_SYNTH_OPTIONS)
    try:
        sid = lib.fluid_synth_add_sfont(synth.synth, sfont)
        for ch in sorted({n.channel for n in notes} | {c[1] for c in controls}):
            synth.program_select(ch, sid, 0, program - 1)
        events = [(_q(t), 1, ch, cc, val) for t, ch, cc, val in controls]  # at one time: off, cc, on
        for n in notes:
            events += [(_q(n.start), 2, n.channel, n.pitch, n.velocity),
                       (max(_q(n.start + n.length), _q(n.start) + BLOCK), 0, n.channel, n.pitch, 0)]
        chunks, cur = [], 0
        for pos, kind, ch, a, b in sorted(events):
            if pos >= n_samples:
                break
            if pos > cur:
                chunks.append(_write_float(lib, synth, pos - cur))
                cur = pos
            if kind == 0:
                synth.noteoff(ch, a)
            elif kind == 1:
                synth.cc(ch, a, b)
            else:
                synth.noteon(ch, a, b)
        chunks.append(_write_float(lib, synth, n_samples - cur))
    finally:
        lib.fluid_synth_remove_sfont(synth.synth, sfont)
        synth.delete()
        lib.fluid_set_log_function(2, warn, None)
    return np.concatenate(chunks)


# ------------------------------------------------------------------------------ effect chain
def _biquad(kind: str, f0: float, gain_db: float, q: float = 0.707) -> tuple[np.ndarray, np.ndarray]:
    """RBJ audio-EQ-cookbook peaking / low-shelf / high-shelf coefficients (b, a)."""
    amp, w0 = 10 ** (gain_db / 40), 2 * np.pi * f0 / SAMPLE_RATE
    cw, alpha = np.cos(w0), np.sin(w0) / (2 * q)
    if kind == "peak":
        b = [1 + alpha * amp, -2 * cw, 1 - alpha * amp]
        a = [1 + alpha / amp, -2 * cw, 1 - alpha / amp]
    else:
        s, sa = (1 if kind == "low" else -1), 2 * np.sqrt(amp) * alpha
        b = [amp * ((amp + 1) - s * (amp - 1) * cw + sa), s * 2 * amp * ((amp - 1) - s * (amp + 1) * cw),
             amp * ((amp + 1) - s * (amp - 1) * cw - sa)]
        a = [(amp + 1) + s * (amp - 1) * cw + sa, -s * 2 * ((amp - 1) + s * (amp + 1) * cw),
             (amp + 1) + s * (amp - 1) * cw - sa]
    return np.asarray(b) / a[0], np.asarray(a) / a[0]


def apply_effects(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Random recording chain: high-pass, 1-3 EQ bands, chorus, synthetic-room reverb, noise."""
    from scipy.signal import butter, fftconvolve, lfilter

    n, t = len(x), np.arange(len(x)) / SAMPLE_RATE
    if rng.random() < 0.5:
        x = lfilter(*butter(2, rng.uniform(30, 120), "highpass", fs=SAMPLE_RATE), x)
    for _ in range(int(rng.integers(1, 4))):
        kind = str(rng.choice(["low", "high", "peak"]))
        f0 = {"low": rng.uniform(80, 400), "high": rng.uniform(2500, 8000), "peak": rng.uniform(200, 5000)}[kind]
        x = lfilter(*_biquad(kind, f0, rng.uniform(-6, 6), rng.uniform(0.5, 2.0) if kind == "peak" else 0.707), x)
    if rng.random() < 0.3:  # chorus: one modulated delay line
        delay = (rng.uniform(0.008, 0.025) + rng.uniform(0.001, 0.004) * np.sin(
            2 * np.pi * rng.uniform(0.2, 1.5) * t + rng.uniform(0, 2 * np.pi))) * SAMPLE_RATE
        mix = rng.uniform(0.2, 0.5)
        x = (1 - 0.5 * mix) * x + mix * np.interp(np.arange(n) - delay, np.arange(n), x, left=0.0)
    if rng.random() < 0.75:  # reverb: exponentially decaying, low-passed noise after a pre-delay
        rt60 = rng.uniform(0.25, 2.0)
        tail = lfilter([1 - (c := rng.uniform(0.05, 0.7))], [1, -c], rng.standard_normal(int(rt60 * SAMPLE_RATE)))
        tail *= np.exp(-6.91 * np.arange(len(tail)) / (rt60 * SAMPLE_RATE))
        ir = np.concatenate([np.zeros(int(rng.uniform(0, 0.03) * SAMPLE_RATE)), tail])
        wet = rng.uniform(0.05, 0.45)
        x = (1 - wet) * x + wet * fftconvolve(x, ir / np.sqrt(np.sum(ir**2)))[:n]
    if rng.random() < 0.5:  # white-to-pinkish noise 30-60 dB below the signal
        noise = lfilter([1], [1, -(c := rng.uniform(0, 0.9))], rng.standard_normal(n))
        x = x + noise * _rms(x) / _rms(noise) * 10 ** (-rng.uniform(30, 60) / 20)
    return x


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) + 1e-12


def normalize(rng: np.random.Generator, x: np.ndarray, target_db: float = -20.0, jitter_db: float = 3.0):
    """Scale to ``target_db`` ± ``jitter_db`` dBFS RMS, then down so the peak stays below 0.95."""
    y = x * (10 ** (rng.uniform(target_db - jitter_db, target_db + jitter_db) / 20) / _rms(x))
    peak = float(np.max(np.abs(y)))
    return (y * (0.95 / peak) if peak > 0.95 else y).astype(np.float32)


# -------------------------------------------------------------------------------------- clips
def _render(bank: str, label: str, index: int, seed: int, duration: float) -> tuple[np.ndarray, dict]:
    if label not in LABELS:
        raise DatasetError(f"unknown GM-Solos label {label!r}; labels are {', '.join(LABELS)}")
    class_id, inst = LABELS.index(label), INSTRUMENTS[LABELS.index(label)]
    bank_path(bank)
    if seed < 0 or index < 0 or duration <= 0:
        raise ConfigError(f"seed and index must be >= 0 and duration > 0, got {seed}, {index}, {duration}")
    n_clip = int(round(duration * SAMPLE_RATE))
    for attempt in range(MAX_ATTEMPTS):
        rng = np.random.default_rng([seed, zlib.crc32(bank.encode()), class_id, index, attempt])
        preroll = _q(rng.uniform(0.0, 1.0))  # start mid-phrase: render from before the clip
        program, notes, controls, info = compose(rng, inst, preroll / SAMPLE_RATE + duration)
        n_total = -(-(preroll + n_clip) // BLOCK) * BLOCK
        dry = synthesize(bank, program, notes, controls, n_total)
        if _rms(dry[preroll:preroll + n_clip]) < SILENCE_RMS:
            continue
        wet = apply_effects(rng, dry.astype(np.float64))[preroll:preroll + n_clip]
        return normalize(rng, wet), {**info, "attempt": attempt}
    raise DatasetError(f"{bank}/{label} clip {index} (seed {seed}) came out silent {MAX_ATTEMPTS} times")


def render_clip(bank: str, label: str, index: int, seed: int = 0, duration: float = 3.0) -> np.ndarray:
    """Render one GM-Solos clip: 24 kHz mono float32 of ``round(duration * 24000)`` samples.

    The same ``(seed, bank, label, index, duration)`` always gives the same array, bit for bit.

    Raises:
        DatasetError: unknown bank or label, missing sound-font file (names the Debian package),
            missing preset, or a clip that stays silent after retries.
    """
    return _render(bank, label, index, seed, duration)[0]


def render_examples(out_dir, bank: str = "timgm6mb", seed: int = 12345, index: int = 0) -> list[Path]:
    """Write one 3 s clip per class as ``<out_dir>/<label_slug>.wav`` (16-bit); return the paths."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    paths = [Path(out_dir) / f"{label_slug(label)}.wav" for label in LABELS]
    for label, path in zip(LABELS, paths):
        write_wav(path, render_clip(bank, label, index, seed))
    return paths


# ------------------------------------------------------------------------------------ data set
def clip_relpath(bank: str, label: str, index: int) -> str:
    """``<bank>/<label_slug>/<bank>_<label_slug>_<index:05d>.wav``."""
    slug = label_slug(label)
    return f"{bank}/{slug}/{bank}_{slug}_{index:05d}.wav"


def read_metadata(path) -> dict[str, dict[str, str]]:
    """Rows of a GM-Solos ``metadata.csv`` keyed by relative path (empty if the file is absent)."""
    path = Path(path)
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != METADATA_COLUMNS:
            raise DatasetError(f"{path} is not a GM-Solos metadata table: columns {reader.fieldnames}")
        return {row["path"]: row for row in reader}


def _write_metadata(path: Path, rows: dict) -> None:
    order = {b: i for i, b in enumerate(BANKS)}
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METADATA_COLUMNS)
        writer.writeheader()
        writer.writerows(sorted(rows.values(), key=lambda r: (
            order.get(r["bank"], len(order)), r["bank"], int(r["label_id"]), int(r["index"]))))


def _render_task(task: tuple) -> dict:
    """Worker: render one clip, write its WAV atomically, return its metadata row (or an error)."""
    out_dir, bank, label, index, seed, duration, split = task
    rel = clip_relpath(bank, label, index)
    try:
        audio, info = _render(bank, label, index, seed, duration)
    except PecmaeError as exc:
        return {"error": f"{rel}: {exc}"}
    with atomic_path(Path(out_dir) / rel) as tmp:
        write_wav(tmp, audio)
    return {"path": rel, "label": label, "label_id": LABELS.index(label), "bank": bank,
            "program": info["program"], "melody_source": info["melody_source"], "seed": seed,
            "index": index, "split": split}


def generate_dataset(out_dir, banks, n_per_class: int, seed: int = 0, split_name: str | None = None,
                     progress: bool = True, workers: int = 1, duration: float = 3.0) -> Path:
    """Render ``n_per_class`` clips per class and bank under ``out_dir``; return ``metadata.csv``.

    WAVs go to ``<out>/<bank>/<label_slug>/<bank>_<label_slug>_<index:05d>.wav`` (24 kHz, 16-bit).
    ``metadata.csv`` (columns :data:`METADATA_COLUMNS`) is merged with the rows already there, so
    several calls (e.g. training banks, then the test bank) share one table. Resumable: a WAV that
    exists with a metadata row of the same seed is skipped (only its split is updated). The split
    defaults to :func:`default_split` of each bank. ``workers`` (1 or 2) processes render.

    Raises:
        DatasetError: a missing bank (before rendering), or clips that failed (after the others finished).
    """
    banks = [banks] if isinstance(banks, str) else list(banks)
    for bank in banks:
        bank_path(bank)
    if n_per_class < 0 or workers not in (1, 2):
        raise ConfigError(f"n_per_class must be >= 0 and workers 1 or 2, got {n_per_class}, {workers}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "metadata.csv"
    rows, todo, errors = read_metadata(meta_path), [], []
    for bank in banks:
        split = split_name or default_split(bank)
        for label in LABELS:
            for index in range(n_per_class):
                rel = clip_relpath(bank, label, index)
                row = rows.get(rel)
                if row is not None and (out / rel).exists() and int(row["seed"]) == seed:
                    row["split"] = split
                else:
                    todo.append((str(out), bank, label, index, seed, duration, split))
    from tqdm.auto import tqdm

    total = len(banks) * len(LABELS) * n_per_class
    bar = tqdm(total=total, initial=total - len(todo), disable=not progress, desc="gm-solos", unit="clip")
    pool = None
    try:
        if workers > 1 and len(todo) > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
            results = pool.map(_render_task, todo, chunksize=8)
        else:
            results = map(_render_task, todo)
        for done, result in enumerate(results, 1):
            if "error" in result:
                errors.append(result["error"])
                print(f"gm-solos: {result['error']}", file=sys.stderr)
            else:
                rows[result["path"]] = {k: str(v) for k, v in result.items()}
            bar.update(1)
            if done % 200 == 0:
                _write_metadata(meta_path, rows)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        bar.close()
        _write_metadata(meta_path, rows)
    if errors:
        raise DatasetError(f"{len(errors)} GM-Solos clip(s) failed (the rest were written): {errors[:3]}")
    return meta_path


# ------------------------------------------------------------------------------------------ CLI
