"""What GM-Solos clips play: the instruments, their melodies and the performance.

See :mod:`pecmae_hub.gm_solos` for the rendering and the data set. Two melody sources, both
drawn from a caller's ``numpy.random.Generator`` so a clip is reproducible:

* :func:`scale_melody`: a random key and mode, mostly stepwise motion with occasional leaps and
  rests, inside an instrument's pitch range;
* :func:`corpus_melody`: a window of a real melody line from a small fixed set of ``music21``
  corpus works (Bach chorale voices, Essen folk songs, fiddle tunes), transposed into range.
  Each work is parsed at most once per process (≈0.1 s) and its note lists kept in memory.

A melody is a list of ``(onset_beats, duration_beats, midi_pitch)``; :func:`perform` turns it into
timed ``Note`` events (seconds, velocity, articulation, timing jitter); :func:`compose` draws a
whole clip for one :class:`Instrument` (program, melody, second voice, performance, controllers).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from pecmae_hub.errors import DatasetError

@dataclass(frozen=True)
class Instrument:
    """A class: its label, GM programs (1-based; one is picked per clip) and MIDI pitch range."""

    label: str
    programs: tuple[int, ...]
    low: int
    high: int
    sustained: bool  # wind/bowed/sung: modulation-wheel vibrato and expression swells
    second_voice: str = ""  # "left-hand" (piano) or "power" (fifths, guitar) in 40 % of clips


# Medley-Solos-DB classes in its order; ranges are practical sounding ranges in MIDI note numbers
INSTRUMENTS = (
    Instrument("clarinet", (72,), 50, 89, True),
    Instrument("distorted electric guitar", (31,), 40, 81, False, "power"),
    Instrument("female singer", (53, 54), 55, 79, True),  # choir aahs / voice oohs
    Instrument("flute", (74,), 60, 93, True),
    Instrument("piano", (1,), 36, 96, False, "left-hand"),
    Instrument("tenor saxophone", (67,), 44, 75, True),
    Instrument("trumpet", (57,), 55, 82, True),
    Instrument("violin", (41,), 55, 93, True),
)

Line = list  # list[tuple[float, float, int]]: (onset in beats, duration in beats, MIDI pitch)

MODES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "harmonic-minor": (0, 2, 3, 5, 7, 8, 11),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "major-pentatonic": (0, 2, 4, 7, 9),
    "minor-pentatonic": (0, 3, 5, 7, 10),
    "blues": (0, 3, 5, 6, 7, 10),
}

# Fixed corpus set (work name, number inside an opus or None). Chorales give four lines each.
CORPUS_WORKS = tuple(
    [(f"bach/bwv{n}", None) for n in (
        "66.6", "1.6", "10.7", "101.7", "102.7", "103.6", "104.6", "108.6",
        "11.6", "110.7", "269", "347", "153.1", "86.6", "267", "40.8",
    )]
    + [("essenFolksong/erk5", None)]  # an opus of 27 short German folk songs (≈0.7 s to parse)
    + [(f"ryansMammoth/{n}", None) for n in (
        "AcrobatsHornpipe", "AcaciaReel", "AdmiralsHornpipe", "AldridgesHornpipe",
    )]
)


@dataclass(frozen=True)
class Note:
    """One performed note: onset and length in seconds, MIDI pitch and velocity, MIDI channel."""

    start: float
    length: float
    pitch: int
    velocity: int
    channel: int = 0


def _line_from_part(part) -> Line:
    notes = []
    for n in part.flatten().stripTies().notes:
        ql = float(n.quarterLength)
        if ql <= 0:  # grace notes
            continue
        pitch = n.pitch.midi if n.isNote else max(p.midi for p in n.pitches)
        notes.append((float(n.offset), ql, int(pitch)))
    return notes


@lru_cache(maxsize=None)
def load_work(name: str, number: int | None = None) -> tuple[tuple[str, Line], ...]:
    """Parse one corpus work once per process; return ``((line_name, notes), ...)`` for its lines."""
    try:
        from music21 import corpus
    except ImportError:
        raise DatasetError("GM-Solos corpus melodies need music21: pip install 'pecmae-hub[data]'") from None
    parsed = corpus.parse(name, number=number) if number is not None else corpus.parse(name)
    scores = list(parsed.scores) if hasattr(parsed, "scores") else [parsed]
    lines = []
    for s_i, score in enumerate(scores):
        for p_i, part in enumerate(score.parts):
            notes = _line_from_part(part)
            if len(notes) >= 8:
                label = part.partName or f"part{p_i}"
                lines.append((label if len(scores) == 1 else f"{s_i + 1}:{label}", notes))
    return tuple(lines)


def fit_to_range(pitches: np.ndarray, low: int, high: int, rng: np.random.Generator) -> np.ndarray:
    """Transpose ``pitches`` by a random whole number of semitones into ``[low, high]``.

    When the span is wider than the range, centre it and fold the outliers in by octaves.
    """
    lo, hi = int(pitches.min()), int(pitches.max())
    if hi - lo <= high - low:
        shift = int(rng.integers(low - lo, high - hi + 1))
        return pitches + shift
    out = pitches + ((low + high) // 2 - int(np.median(pitches)))
    while (out < low).any() or (out > high).any():
        out = np.where(out < low, out + 12, np.where(out > high, out - 12, out))
    return out


def scale_melody(rng: np.random.Generator, low: int, high: int, n_beats: float) -> tuple[Line, str]:
    """Random-key, random-mode melody in ``[low, high]`` lasting at least ``n_beats`` beats."""
    mode = str(rng.choice(list(MODES)))
    tonic = int(rng.integers(12))
    scale = [p for p in range(low, high + 1) if (p - tonic) % 12 in MODES[mode]]
    pos = int(rng.integers(len(scale) // 5, len(scale) - len(scale) // 5))
    durs, probs = [(1.0, 2.0, 0.5), (0.5, 1.0, 1.5), (0.25, 0.5, 0.75)][int(rng.integers(3))], (0.5, 0.3, 0.2)
    direction, t, notes = int(rng.choice([-1, 1])), 0.0, []
    while t < n_beats:
        dur = float(rng.choice(durs, p=probs))
        if rng.random() < 0.07:  # a rest
            t += dur
            continue
        notes.append((t, dur, scale[pos]))
        t += dur
        if rng.random() < 0.15:  # leap of a third to an octave
            step = int(rng.integers(2, 8))
        else:
            step = int(rng.choice([0, 1, 1, 1, 2]))
        if rng.random() < 0.3:
            direction = -direction
        nxt = pos + direction * step
        if not 0 <= nxt < len(scale):
            direction, nxt = -direction, pos - direction * step
        pos = min(max(nxt, 0), len(scale) - 1)
    return notes, f"scale:{mode}"


def corpus_melody(rng: np.random.Generator, low: int, high: int, n_beats: float) -> tuple[Line, str]:
    """A window of ``n_beats`` from a random line of a random :data:`CORPUS_WORKS` work, in range."""
    name, number = CORPUS_WORKS[int(rng.integers(len(CORPUS_WORKS)))]
    lines = load_work(name, number)
    line_name, notes = lines[int(rng.integers(len(lines)))]
    total = notes[-1][0] + notes[-1][1]
    starts = [o for o, _, _ in notes if o <= total - n_beats] or [0.0]
    start = float(starts[int(rng.integers(len(starts)))])  # windows begin on a note
    out, loop = [], 0.0
    while not out or out[-1][0] < start + n_beats:  # repeat short lines
        out += [(o + loop, d, p) for o, d, p in notes if start <= o + loop < start + n_beats + 4]
        loop += total
        if loop > start + n_beats + total:
            break
    pitches = fit_to_range(np.array([p for _, _, p in out]), low, high, rng)
    window = [(o - start, d, int(p)) for (o, d, _), p in zip(out, pitches)]
    return window, f"corpus:{name}#{line_name}"


def add_second_voice(rng: np.random.Generator, melody: Line, kind: str, low: int, high: int) -> Line:
    """Second voice under/over ``melody``: ``"power"`` fifths (guitar) or ``"left-hand"`` (piano)."""
    if kind == "power":
        return [(o, d, p + 7) for o, d, p in melody if p + 7 <= high]
    extra, span = [], float(rng.choice([1.0, 2.0]))
    end = max(o + d for o, d, _ in melody)
    for beat in np.arange(0.0, end, span):
        sounding = [p for o, d, p in melody if o <= beat < o + d] or [p for o, _, p in melody if o >= beat][:1]
        if not sounding:
            continue
        bass = sounding[0] - 12 - int(rng.choice([0, 0, 5, 7]))
        while bass < low:
            bass += 12
        if bass < sounding[0]:
            extra.append((float(beat), span, bass))
    return extra


def perform(rng: np.random.Generator, lines: list[Line], bpm: float) -> tuple[list[Note], str]:
    """Time ``lines`` (channel = line index; beat 0 at 0 s) at ``bpm`` beats per minute.

    Picks one articulation per clip (legato / normal / staccato note lengths), a base velocity with
    per-note jitter and downbeat accents, and small onset jitter. Returns the notes and the
    articulation name.
    """
    articulation = str(rng.choice(["legato", "normal", "staccato"], p=[0.4, 0.4, 0.2]))
    ratio_lo, ratio_hi = {"legato": (0.95, 1.08), "normal": (0.72, 0.92), "staccato": (0.3, 0.55)}[articulation]
    base_vel = float(rng.uniform(50, 115))
    beat_s = 60.0 / bpm
    notes = []
    for channel, line in enumerate(lines):
        line_notes = []
        for onset, dur, pitch in line:
            start = max(onset * beat_s + float(rng.normal(0, 0.008)), 0.0)
            length = max(dur * beat_s * float(rng.uniform(ratio_lo, ratio_hi)), 0.04)
            accent = 8.0 if onset % 1.0 == 0 and rng.random() < 0.5 else 0.0
            vel = int(np.clip(round(base_vel + accent + rng.normal(0, 6) - 8 * channel), 1, 127))
            line_notes.append(Note(start, length, int(pitch), vel, channel))
        next_start: dict[int, float] = {}  # a legato note ends at the latest when its key is struck again
        for k in range(len(line_notes) - 1, -1, -1):
            n = line_notes[k]
            if n.pitch in next_start and n.start + n.length > next_start[n.pitch]:
                line_notes[k] = Note(n.start, max(next_start[n.pitch] - n.start, 0.0), n.pitch, n.velocity, channel)
            next_start[n.pitch] = n.start
        notes += line_notes
    return notes, articulation


def compose(rng: np.random.Generator, inst: Instrument, seconds: float) -> tuple[int, list[Note], list, dict]:
    """Draw one clip of ``seconds`` for ``inst``: program, notes, controls and a description.

    Controls are ``(seconds, channel, cc, value)``: modulation (CC1) and an expression swell (CC11)
    for sustained instruments. Half the melodies come from the corpus, half are scale melodies.
    """
    program = int(rng.choice(inst.programs))
    bpm = float(rng.uniform(60, 150))
    make = corpus_melody if rng.random() < 0.5 else scale_melody
    melody, source = make(rng, inst.low, inst.high, seconds * bpm / 60 + 1)
    lines = [melody]
    if inst.second_voice and rng.random() < 0.4:
        lines.append(add_second_voice(rng, melody, inst.second_voice, inst.low, inst.high))
    notes, articulation = perform(rng, lines, bpm)
    controls = []
    if inst.sustained:
        controls.append((0.0, 0, 1, int(rng.integers(10, 70)) if rng.random() < 0.5 else 0))
        swell = np.linspace(rng.uniform(70, 127), rng.uniform(70, 127), 7)
        controls += [(seconds * k / 6, 0, 11, int(v)) for k, v in enumerate(swell)]
    info = {"program": program, "melody_source": source, "articulation": articulation, "bpm": round(bpm, 1)}
    return program, notes, controls, info
