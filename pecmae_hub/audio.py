"""Audio constants and audio input: any file/array/bytes -> 24 kHz mono float32, then chunks.

One place for the numbers every model shares (whisper-style): the sample rate, the 75 Hz frame
rate of EnCodec latents and of our log-mel stand-in, the chunking rule of the upstream
``ChunkDiffusionSampler``, the file extensions :func:`load_audio` decodes, and which files a
command works on (:func:`collect_audio_files`). torch is imported only when a tensor is involved,
so finding and decoding files stays light.
"""
from __future__ import annotations

import io
import math
import os
import sys
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, NamedTuple, Sequence, TypeGuard, Union

import numpy as np

from pecmae_hub.errors import AudioError, DatasetError

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 24_000
HOP_LENGTH = 320
FRAME_RATE = SAMPLE_RATE // HOP_LENGTH  # 75 frames per second

#: suffixes (lower case) of the files :func:`load_audio` decodes with libsndfile; every command that
#: looks for audio in a folder uses this list. m4a/aac are absent: libsndfile cannot decode them.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au")

AudioInput = Union[str, os.PathLike, bytes, np.ndarray, "torch.Tensor"]


def _is_tensor(value: object) -> TypeGuard[torch.Tensor]:
    # a tensor can only exist once torch is imported, so there is no need to import it here
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


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

    ``audio`` may be a file path (anything libsndfile reads, see :data:`AUDIO_EXTENSIONS`), the bytes of such a
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
    elif isinstance(audio, np.ndarray) or _is_tensor(audio):
        name = name or "<array>"
        if sr is None:
            raise AudioError("an audio array needs its sample rate: pass sr=... (e.g. sr=44100)")
        data = audio.detach().cpu().numpy() if _is_tensor(audio) else np.asarray(audio)
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
    import torch

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


# ---- which files a command works on ---------------------------------------------------------------
# ``pecmae classify``, ``pecmae extract`` and the folder data sets share these rules, so that a folder
# gives the same files everywhere.


class AudioFile(NamedTuple):
    """One track: ``path`` to read (spelled as given or found) and ``relpath``, where it sits in its input.

    ``relpath`` is relative to the folder it was found in or the list file's folder; for an explicit
    file it is ``<parent folder name>/<name>`` (just ``<name>`` when it is the only input).
    """

    path: str
    relpath: str


def is_audio_file(path: str | os.PathLike, extensions: Iterable[str] = AUDIO_EXTENSIONS) -> bool:
    """Whether ``path`` has one of ``extensions`` (case-insensitive) and is not a hidden file."""
    name = os.path.basename(os.fspath(path))
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in {e.lower() for e in extensions}


def find_audio_files(folder: str | os.PathLike, extensions: Iterable[str] = AUDIO_EXTENSIONS) -> list[Path]:
    """The audio files under ``folder`` (recursive), sorted by path, hidden files skipped."""
    exts = {e.lower() for e in extensions}
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and is_audio_file(p, exts))


def read_list_file(path: str | os.PathLike) -> list[AudioFile]:
    """Tracks of a list file: one path per line (``#`` comments, blank lines skipped).

    Relative paths are resolved against the list's folder; ``relpath`` is the path relative to that
    folder when the file is inside it, else ``<parent folder name>/<name>``.
    """
    base = Path(path).parent.resolve()
    out = []
    for line in Path(path).read_text(encoding="utf-8-sig").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line) if os.path.isabs(line) else (base / line).resolve()
        rel = p.relative_to(base).as_posix() if p.is_relative_to(base) else f"{p.parent.name}/{p.name}"
        out.append(AudioFile(str(p), rel))
    return out


def _folder(folder: Path) -> list[AudioFile]:
    return [AudioFile(str(p), p.relative_to(folder).as_posix()) for p in find_audio_files(folder)]


def file_key(path: str | os.PathLike) -> str:
    """A key under which the spellings of one file (``a.wav``, ``./a.wav``, a symlink to it) are equal."""
    try:
        return str(Path(path).resolve())
    except (OSError, RuntimeError, ValueError):  # a symlink loop or an odd name: compare as written
        return os.path.abspath(path)


def unique_files(files: Iterable[AudioFile]) -> list[AudioFile]:
    """``files`` without repeats of one file (compared by resolved path); the first spelling is kept."""
    seen: set[str] = set()
    out = []
    for f in files:
        key = file_key(f.path)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def collect_audio_files(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[AudioFile]:
    """The tracks of ``inputs``: one folder, list file or audio file, or a sequence of folders and files.

    - a folder is searched recursively for :data:`AUDIO_EXTENSIONS` (any case); hidden files
      (``.name``, e.g. macOS ``._song.wav``) are skipped; files come sorted by path;
    - a single path that is a file with another extension is a list file (:func:`read_list_file`);
    - a file in a sequence is kept as given, whatever its extension and even when it is missing, so
      that the caller can report each failure; a single path must exist;
    - one file under several spellings (``a.wav``, ``./a.wav``, a symlink) is one track, listed under
      the first spelling.

    Raises:
        DatasetError: a single path that does not exist, or no audio file at all.
    """
    if isinstance(inputs, (str, os.PathLike)):
        src = Path(inputs)
        if src.is_dir():
            files = _folder(src)
        elif src.is_file() and src.suffix.lower() in AUDIO_EXTENSIONS:
            files = [AudioFile(os.fspath(inputs), src.name)]
        elif src.is_file():
            files = read_list_file(src)
        else:
            raise DatasetError(f"input not found: {src} (give an audio folder, a list file or an audio file)")
    else:
        inputs = list(inputs)
        files = []
        for item in inputs:
            p = Path(item)
            if p.is_dir():
                files += _folder(p)
            else:
                files.append(AudioFile(os.fspath(item), f"{p.parent.name}/{p.name}".lstrip("/")))
    if not files:
        shown = os.fspath(inputs) if isinstance(inputs, (str, os.PathLike)) else ", ".join(str(i) for i in inputs)
        raise DatasetError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) found in {shown}")
    return unique_files(files)
