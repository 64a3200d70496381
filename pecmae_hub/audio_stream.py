"""Streaming decode of long audio files: 24 kHz mono blocks equal to :func:`pecmae_hub.audio.load_audio`'s samples.

``load_audio`` decodes a whole file, then mixes and resamples it: an hour of 44.1 kHz stereo takes
gigabytes on the way. :func:`stream_audio` reads the file in blocks and resamples each stretch of output
from the input around it, with enough context on both sides that every output sample is computed from
exactly the samples (and the zero padding at the true ends) that resampling the whole file would use,
so the concatenated blocks equal ``load_audio``'s array. Memory is bounded by the block size.
The same checks as ``load_audio`` apply (rate, length, NaN/inf, sample scale), raised as :class:`AudioError`.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator
from fractions import Fraction

import numpy as np

from pecmae_hub.audio import (
    MAX_FLOAT_PEAK,
    MAX_SECONDS,
    SAMPLE_RATE,
    check_audio_source,
    check_duration,
    check_sample_rate,
    resample,
)
from pecmae_hub.errors import AudioError

_BLOCK_SECONDS = 20.0  # input decoded per read


def _check_block(block: np.ndarray, name: str) -> None:
    if not np.isfinite(block).all():
        raise AudioError(f"audio contains NaN or infinite samples: {name}")
    if block.size and float(np.max(np.abs(block))) > MAX_FLOAT_PEAK:
        raise AudioError(
            f"samples of {name} exceed {MAX_FLOAT_PEAK:g}, but audio samples must lie in [-1, 1]: the scale is wrong"
        )


def _mono_blocks(source, name: str, max_seconds: float | None) -> tuple[int, Iterator[np.ndarray]]:
    """(sample rate, iterator of float32 mono blocks at that rate), after the header checks."""
    import soundfile as sf

    try:
        handle = sf.SoundFile(source)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError ...
        raise AudioError(f"cannot decode audio {name}: {exc}") from None
    try:
        sr = check_sample_rate(handle.samplerate, name)
        if handle.frames > 0:
            check_duration(handle.frames, sr, name, max_seconds)
    except AudioError:
        handle.close()
        raise
    block = max(1, int(_BLOCK_SECONDS * sr))

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
                _check_block(data, name)
                total += len(data)
                check_duration(total, sr, name, max_seconds)
                yield data.T.mean(axis=0)  # as load_audio: (channels, samples).mean(axis=0)
        if total == 0:
            raise AudioError(f"audio has zero length: {name}")

    return sr, blocks()


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


def stream_audio(audio, *, name: str | None = None, max_seconds: float | None = MAX_SECONDS) -> Iterator[np.ndarray]:
    """Yield consecutive float32 blocks of 24 kHz mono audio from a file path or the bytes of a file.

    ``np.concatenate(list(stream_audio(x)))`` equals ``load_audio(x)``; the blocks have no fixed length.

    Raises:
        AudioError: as :func:`~pecmae_hub.audio.load_audio` (raised when the offending block is reached).
    """
    if isinstance(audio, (str, os.PathLike)):
        name = check_audio_source(audio, name)
        source = os.fspath(audio)
    elif isinstance(audio, (bytes, bytearray)):
        name = check_audio_source(audio, name)
        source = io.BytesIO(audio)
    else:
        raise AudioError(f"stream_audio reads files and bytes, got {type(audio).__name__}")
    sr, blocks = _mono_blocks(source, name, max_seconds)
    yield from _resampled(blocks, sr)


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
