"""Streaming decode of audio files: 24 kHz mono blocks equal to :func:`pecmae_hub.audio.load_audio`'s samples.

A file is never decoded whole: it is read in blocks of at most :data:`BLOCK_BYTES` of decoded samples
(all channels together), each block is mixed down to mono at once, and each stretch of output is
resampled from the input around it, with enough context on both sides that every output sample is
computed from exactly the samples (and the zero padding at the true ends) that resampling the whole
file would use, so the concatenated blocks equal resampling the whole mixed-down file. Memory is
bounded by the block size, whatever the channel count and sample rate; :func:`decode_file` (what
``load_audio`` uses for files) adds only the 24 kHz mono result (4 bytes per output sample).
The same checks as ``load_audio`` apply (rate, channels, length, NaN/inf, sample scale), raised as
:class:`AudioError`.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator
from fractions import Fraction

import numpy as np

from pecmae_hub.audio import (
    MAX_SECONDS,
    SAMPLE_RATE,
    check_audio_source,
    check_channels,
    check_duration,
    check_sample_rate,
    check_samples,
    resample,
)
from pecmae_hub.errors import AudioError

_BLOCK_SECONDS = 20.0  # input decoded per read, at most ...
BLOCK_BYTES = 8 * 1024 * 1024  # ... and at most this many bytes of float32 samples (all channels) per read
_PREALLOCATE_MAX = 1 << 30  # output samples preallocated from the header at most (beyond: grown as read)


def _open(source, name: str):
    """A ``soundfile.SoundFile`` for a path (any bytes in its name) or a file object; AudioError otherwise."""
    import soundfile as sf

    if isinstance(source, str):
        source = os.fsencode(source)  # a name that is not valid UTF-8 (surrogate escapes) opens as its bytes
    try:
        return sf.SoundFile(source)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError ...
        raise AudioError(f"cannot decode audio {name}: {exc}") from None


def _mono_blocks(source, name: str, max_seconds: float | None) -> tuple[int, int, Iterator[np.ndarray]]:
    """(sample rate, frames the header announces, iterator of float32 mono blocks at that rate), after the
    header checks. Each block holds at most :data:`BLOCK_BYTES` of decoded samples before its mixdown."""
    handle = _open(source, name)
    try:  # the header first: rate, channels and length are checked before a sample is decoded
        sr = check_sample_rate(handle.samplerate, name)
        channels = check_channels(handle.channels, name)
        if handle.frames > 0:
            check_duration(handle.frames, sr, name, max_seconds)
    except AudioError:
        handle.close()
        raise
    block = max(1, min(int(_BLOCK_SECONDS * sr), BLOCK_BYTES // (4 * channels)))

    def blocks():
        total = 0
        with handle:
            while True:
                try:
                    data = handle.read(block, dtype="float32", always_2d=True)
                except Exception as exc:
                    raise AudioError(f"cannot decode audio {name}: {exc}") from None
                if not len(data):
                    break
                check_samples(data, name)
                total += len(data)
                check_duration(total, sr, name, max_seconds)
                mono = data.T.mean(axis=0)  # (channels, samples).mean(axis=0), as for an array
                del data  # one block of all channels in memory at a time, not two
                yield mono
        if total == 0:
            raise AudioError(f"audio has zero length: {name}")

    return sr, max(0, handle.frames), blocks()


def _resampled(blocks: Iterator[np.ndarray], sr: int) -> Iterator[np.ndarray]:
    """Resample a stream of mono blocks from ``sr`` to 24 kHz, sample-exact with whole-signal resampling."""
    ratio = Fraction(SAMPLE_RATE, sr).limit_denominator(1000)
    up, down = ratio.numerator, ratio.denominator
    if up == down:
        yield from blocks
        return
    # input samples that reach one output sample through the polyphase filter (10·max(up, down) taps
    # on each side in the upsampled domain, see scipy.signal.resample_poly), rounded up generously
    margin = math.ceil(2 * 10 * max(up, down) / up) + 2 * down + 2
    buf, start, done_out = np.zeros(0, np.float32), 0, 0  # buf holds input samples start, start+1, ...
    eof = False
    while not eof:
        block = next(blocks, None)
        if block is None:
            eof = True
        else:
            buf = np.concatenate([buf, block])
        end = start + len(buf)
        # outputs m whose inputs lie below `end` (or anything, once the true end is known)
        limit = -(-end * up // down) if eof else max(0, (end - margin) * up // down)
        if limit <= done_out:
            continue
        lo = max(0, (done_out * down // up - margin) // down * down)  # a multiple of `down`: same filter phase
        hi = end if eof else min(end, -(-limit * down // up) + margin)
        seg = resample(buf[lo - start : hi - start], sr)
        offset = lo * up // down
        yield seg[done_out - offset : limit - offset]
        done_out = limit
        keep = max(0, (done_out * down // up - margin) // down * down)
        buf, start = buf[keep - start :], keep


def decode_peak_bytes(seconds: float) -> int:
    """The documented bound on the memory :func:`decode_file` holds in samples for ``seconds`` of audio:
    one block of decoded samples with its mixdown (1.25 x :data:`BLOCK_BYTES`) plus 8 bytes per output
    sample (the 24 kHz result, twice over if the header under-reports the length). Whatever the channel
    count and rate: 10.5 MB + 0.19 MB per second of audio, 126 MB for the app's 600 s limit."""
    return int(1.25 * BLOCK_BYTES + 8 * SAMPLE_RATE * seconds)


def _source(audio, name: str | None, what: str):
    """``(name, what soundfile opens)`` of a path or the bytes of a file."""
    if isinstance(audio, (str, os.PathLike)):
        return check_audio_source(audio, name), os.fspath(audio)
    if isinstance(audio, (bytes, bytearray)):
        return check_audio_source(audio, name), io.BytesIO(audio)
    raise AudioError(f"{what} reads files and bytes, got {type(audio).__name__}")


def stream_audio(audio, *, name: str | None = None, max_seconds: float | None = MAX_SECONDS) -> Iterator[np.ndarray]:
    """Yield consecutive float32 blocks of 24 kHz mono audio from a file path or the bytes of a file.

    ``np.concatenate(list(stream_audio(x)))`` equals ``load_audio(x)``; the blocks have no fixed length.

    Raises:
        AudioError: as :func:`~pecmae_hub.audio.load_audio` (raised when the offending block is reached).
    """
    name, source = _source(audio, name, "stream_audio")
    sr, _, blocks = _mono_blocks(source, name, max_seconds)
    yield from _resampled(blocks, sr)


def decode_file(audio, *, name: str | None = None, max_seconds: float | None = MAX_SECONDS) -> np.ndarray:
    """A whole file (path or bytes) as 24 kHz mono float32, decoded in bounded blocks (see the module doc).

    Peak memory: the result (4 bytes per output sample, preallocated from the header's length) plus one
    block of :data:`BLOCK_BYTES` and its resampling context, whatever the channel count and rate.
    """
    name, source = _source(audio, name, "decode_file")
    sr, frames, blocks = _mono_blocks(source, name, max_seconds)
    ratio = Fraction(SAMPLE_RATE, sr).limit_denominator(1000)
    expected = -(-frames * ratio.numerator // ratio.denominator)  # resample_poly's output length
    out = np.empty(expected if 0 < expected <= _PREALLOCATE_MAX else 0, np.float32)
    extra: list[np.ndarray] = []  # only when the header under-reports the length
    n = 0
    for block in _resampled(blocks, sr):
        room = min(len(block), len(out) - n)
        out[n : n + room] = block[:room]
        n += room
        if room < len(block):
            extra.append(block[room:])
    if extra:
        return np.concatenate([out[:n], *extra])
    return out[:n] if n < len(out) else out


def chunk_batches(blocks, chunk_samples: int, batch_size: int) -> Iterator[np.ndarray]:
    """Regroup a stream of 1-D sample blocks into arrays of up to ``batch_size`` whole chunks
    ``(n, chunk_samples)``; a trailing partial chunk comes last, alone, as ``(1, length)``.

    Views of the input are used where a batch lies inside one block (an in-memory array is not copied).
    """
    per = chunk_samples * batch_size
    pending: list[np.ndarray] = []
    size = 0
    for block in blocks:
        pending.append(block)
        size += len(block)
        while size >= per:
            flat = pending[0] if len(pending) == 1 else np.concatenate(pending)
            yield flat[:per].reshape(batch_size, chunk_samples)
            pending, size = [flat[per:]], size - per
    flat = pending[0] if len(pending) == 1 else np.concatenate(pending) if pending else np.zeros(0, np.float32)
    whole = len(flat) // chunk_samples
    if whole:
        yield flat[: whole * chunk_samples].reshape(whole, chunk_samples)
    if len(flat) > whole * chunk_samples:
        yield flat[whole * chunk_samples :][None]
