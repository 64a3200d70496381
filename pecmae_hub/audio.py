"""Audio constants and audio input: any file/array/bytes -> 24 kHz mono float32, then chunks.

One place for the numbers every model shares (whisper-style): the sample rate, the 75 Hz frame
rate of EnCodec latents and of our log-mel stand-in, and the chunking rule of the upstream
``ChunkDiffusionSampler``.
"""
from __future__ import annotations

import io
import math
import os
from fractions import Fraction
from typing import Union

import numpy as np
import torch

from pecmae_hub.errors import AudioError

SAMPLE_RATE = 24_000
HOP_LENGTH = 320
FRAME_RATE = SAMPLE_RATE // HOP_LENGTH  # 75 frames per second

AudioInput = Union[str, os.PathLike, bytes, np.ndarray, torch.Tensor]


def frames_for_samples(n_samples: int) -> int:
    """Number of 75 Hz frames EnCodec (and our mel front end) give for ``n_samples``: ceil(L / 320)."""
    return math.ceil(n_samples / HOP_LENGTH)


def resample(wav: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited polyphase resampling of a 1-D or (channels, samples) float array along the last axis."""
    if sr_in == sr_out:
        return wav
    from scipy.signal import resample_poly

    ratio = Fraction(sr_out, sr_in).limit_denominator(1000)
    return resample_poly(wav, ratio.numerator, ratio.denominator, axis=-1).astype(np.float32)


def _read_file(source, name: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        data, sr = sf.read(source, dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError ...
        raise AudioError(f"cannot decode audio {name}: {exc}") from None
    return data.T, sr  # (channels, samples)


def load_audio(audio: AudioInput, sr: int | None = None, *, name: str | None = None) -> np.ndarray:
    """Return ``audio`` as 24 kHz mono float32 samples, shape ``(n_samples,)``.

    ``audio`` may be a file path (anything libsndfile reads: wav, flac, ogg, mp3), the bytes of such a
    file, or a numpy/torch array of samples, then ``sr`` is required. Arrays may be ``(samples,)``,
    ``(channels, samples)`` or ``(samples, channels)`` (the shorter axis is taken as channels).
    Channels are averaged (as ``librosa.load(mono=True)`` upstream); no loudness normalisation.

    Raises:
        AudioError: unreadable/empty file, zero-length audio, NaN/inf samples, missing ``sr``.
    """
    if isinstance(audio, (str, os.PathLike)):
        path = os.fspath(audio)
        name = name or path
        if not os.path.exists(path):
            raise AudioError(f"audio file not found: {path}")
        if os.path.getsize(path) == 0:
            raise AudioError(f"audio file is empty (0 bytes): {path}")
        data, sr = _read_file(path, name)
    elif isinstance(audio, (bytes, bytearray)):
        name = name or "<bytes>"
        if len(audio) == 0:
            raise AudioError("audio bytes are empty")
        data, sr = _read_file(io.BytesIO(audio), name)
    elif isinstance(audio, (np.ndarray, torch.Tensor)):
        name = name or "<array>"
        if sr is None:
            raise AudioError("an audio array needs its sample rate: pass sr=... (e.g. sr=44100)")
        data = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
        if data.ndim == 1:
            data = data[None, :]
        elif data.ndim == 2:
            if data.shape[0] > data.shape[1]:
                data = data.T
        else:
            raise AudioError(f"audio array must be 1-D or 2-D (channels, samples), got shape {tuple(data.shape)}")
        if not np.issubdtype(data.dtype, np.floating):
            if np.issubdtype(data.dtype, np.signedinteger):  # PCM: full scale is 2^(bits-1), as libsndfile reads it
                data = data.astype(np.float32) / float(-np.iinfo(data.dtype).min)
            elif np.issubdtype(data.dtype, np.unsignedinteger):  # offset-binary PCM (8-bit WAV)
                half = float(np.iinfo(data.dtype).max // 2 + 1)
                data = (data.astype(np.float32) - half) / half
            else:
                raise AudioError(f"audio array must hold numbers, got dtype {data.dtype}")
    else:
        raise AudioError(
            f"unsupported audio input of type {type(audio).__name__}: pass a path, bytes, or a numpy/torch array with sr"
        )
    if sr is None or sr <= 0:
        raise AudioError(f"invalid sample rate {sr!r} for {name}")
    if data.shape[-1] == 0:
        raise AudioError(f"audio has zero length: {name}")
    data = data.astype(np.float32, copy=False)
    if not np.isfinite(data).all():
        raise AudioError(f"audio contains NaN or infinite samples: {name}")
    mono = data.mean(axis=0)
    return np.ascontiguousarray(resample(mono, int(sr)), dtype=np.float32)


def chunk_bounds(n_samples: int, chunk_samples: int) -> list[tuple[int, int]]:
    """Upstream chunking: non-overlapping windows starting at 0, W, 2W ... while start < L.

    The trailing partial chunk is kept (it is shorter; the encoder masks its padding so it gives
    the same z as encoding it alone).
    """
    return [(s, min(s + chunk_samples, n_samples)) for s in range(0, n_samples, chunk_samples)]


def chunk_audio(wav: np.ndarray | torch.Tensor, chunk_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split mono audio into a zero-padded batch ``(n_chunks, chunk_samples)`` and the true lengths."""
    wav = torch.as_tensor(wav, dtype=torch.float32)
    bounds = chunk_bounds(wav.shape[-1], chunk_samples)
    batch = torch.zeros(len(bounds), chunk_samples)
    lengths = torch.zeros(len(bounds), dtype=torch.long)
    for i, (s, e) in enumerate(bounds):
        batch[i, : e - s] = wav[s:e]
        lengths[i] = e - s
    return batch, lengths


def write_wav(path: str | os.PathLike, wav: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write float audio as 16-bit PCM WAV (clipped to [-1, 1])."""
    import soundfile as sf

    sf.write(os.fspath(path), np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0), sr, subtype="PCM_16")
