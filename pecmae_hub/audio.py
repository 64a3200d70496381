"""Audio constants and audio input: any file/array/bytes -> 24 kHz mono float32, then chunks.

One place for the numbers every model shares (whisper-style): the sample rate, the 75 Hz frame
rate of EnCodec latents and of our log-mel stand-in, the chunking rule of the upstream
``ChunkDiffusionSampler``, the file extensions :func:`load_audio` decodes, and which files a
command works on (:func:`collect_audio_files`). torch is imported only when a tensor is involved,
so finding and decoding files stays light.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeGuard, Union

import numpy as np

from pecmae_hub.errors import AudioError, ConfigError, DatasetError

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 24_000
HOP_LENGTH = 320
FRAME_RATE = SAMPLE_RATE // HOP_LENGTH  # 75 frames per second

#: suffixes (lower case) of the files :func:`load_audio` decodes with libsndfile; every command that
#: looks for audio in a folder uses this list.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au")
#: audio formats libsndfile cannot decode (AAC/ALAC in MP4, WMA ...): a folder's files of these types are
#: listed as inputs so that each is reported as unsupported (:func:`unsupported_format_error`), never skipped
#: without a word
UNSUPPORTED_AUDIO_EXTENSIONS = (".m4a", ".aac", ".mp4", ".m4b", ".alac", ".wma", ".ac3", ".amr")

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


#: full-scale range of float samples; a float input whose peak exceeds :data:`MAX_FLOAT_PEAK` is on the wrong scale
MAX_FLOAT_PEAK = 2.0
#: sample rates accepted for arrays and files (Hz): telephone-band recordings to 768 kHz studio files
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 768_000
#: longest input :func:`load_audio` accepts by default (seconds); pass ``max_seconds`` to change it
MAX_SECONDS = 3600.0
#: shortest input a model classifies (seconds): shorter clips hold too little sound for a 1.5-4 s chunk
#: model, and would get a made-up answer (see :func:`check_min_duration`)
MIN_SECONDS = 0.25
#: most channels a file may have (Vorbis and Opus stop at 255; more is a malformed or hostile file).
#: Files are decoded in blocks of bounded size whatever their channel count (pecmae_hub.audio_stream)
MAX_CHANNELS = 256
#: level (RMS, DC offset removed) under which a chunk counts as silent: digital silence, dither, hiss of a
#: muted input. One definition for the library, the command line and the app (:func:`is_silent`).
SILENCE_DBFS = -70.0
SILENCE_RMS = 10 ** (SILENCE_DBFS / 20)


def check_sample_rate(sr: object, name: str = "<array>") -> int:
    """``sr`` as an int number of Hz in ``MIN_SAMPLE_RATE..MAX_SAMPLE_RATE``, or :class:`AudioError`.

    A string, a bool, a fraction of a Hz or an absurd rate is refused: a wrong ``sr`` silently
    stretches the audio (``sr=7`` turns 3 s of samples into 3 hours of work).
    """
    if sr is None:
        raise AudioError(f"an audio array needs its sample rate: pass sr=... (e.g. sr=44100) for {name}")
    if isinstance(sr, (bool, np.bool_)) or not isinstance(sr, (int, float, np.integer, np.floating)):
        raise AudioError(
            f"invalid sample rate {sr!r} ({type(sr).__name__}) for {name}: sr must be a number of "
            "samples per second, e.g. sr=44100 (not a string)"
        )
    if not math.isfinite(float(sr)) or float(sr) != int(sr):
        raise AudioError(f"invalid sample rate {sr!r} for {name}: sr must be a whole number of Hz, e.g. sr=44100")
    if not MIN_SAMPLE_RATE <= int(sr) <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"invalid sample rate {sr!r} for {name}: expected {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz "
            "(is it the rate of the samples, e.g. 44100 or 24000?)"
        )
    return int(sr)


def check_channels(channels: object, name: str) -> int:
    """``channels`` of a file header as an int in ``1..MAX_CHANNELS``, or :class:`AudioError`."""
    if not isinstance(channels, (int, np.integer)) or not 1 <= int(channels) <= MAX_CHANNELS:
        raise AudioError(
            f"{name} declares {channels} audio channels; at most {MAX_CHANNELS} are accepted "
            "(is the file damaged?): mix it down to mono or stereo first"
        )
    return int(channels)


def check_samples(data: np.ndarray, name: str) -> None:
    """:class:`AudioError` when float samples hold NaN/inf or lie on the wrong scale (peak above 2)."""
    if not data.size:
        return
    high, low = float(np.max(data)), float(np.min(data))  # no temporary array as large as the data
    if not (math.isfinite(high) and math.isfinite(low)):
        raise AudioError(f"audio contains NaN or infinite samples: {name}")
    peak = max(high, -low)
    if peak > MAX_FLOAT_PEAK:
        raise AudioError(
            f"samples of {name} reach {peak:g}, but audio samples must lie in [-1, 1]: the scale is wrong. "
            "For int16 PCM values stored as floats, divide int16 samples by 32768 (or pass the int16 array "
            "itself, which is scaled for you)"
        )


def check_min_duration(n_samples: int, sr: int, name: str, min_seconds: float = MIN_SECONDS) -> float:
    """Seconds of ``n_samples`` at ``sr``; :class:`AudioError` when shorter than ``min_seconds``."""
    seconds = n_samples / sr
    if seconds < min_seconds:
        raise AudioError(
            f"{name} is only {seconds * 1000:.3g} ms long ({n_samples} samples at {sr} Hz); at least "
            f"{min_seconds:g} s of audio is needed to classify it"
        )
    return seconds


def check_duration(n_samples: int, sr: int, name: str, max_seconds: float | None = MAX_SECONDS) -> float:
    """Seconds of ``n_samples`` at ``sr``; :class:`AudioError` when longer than ``max_seconds`` (None: no limit)."""
    seconds = n_samples / sr
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(
            f"{name} is {seconds:.1f} s long ({n_samples} samples at {sr} Hz), longer than the "
            f"limit of {max_seconds:g} s: cut it into parts, or raise the limit (max_seconds=..., "
            "`pecmae classify --max-seconds`)"
        )
    return seconds


def is_silent(samples: np.ndarray) -> bool:
    """Whether ``samples`` (one chunk) hold nothing audible: empty, or an RMS level (DC offset removed)
    below :data:`SILENCE_DBFS`. Digital silence and near-silence (dither, hiss) are judged alike."""
    samples = np.asarray(samples, dtype=np.float64)
    return samples.size == 0 or float(np.std(samples)) < SILENCE_RMS


def silent_chunks(wav: np.ndarray, chunk_samples: int) -> list[bool]:
    """For each chunk of :func:`chunk_bounds`, whether it is silent (:func:`is_silent`).

    An input whose chunks are all silent has nothing to classify (:func:`silence_error`); the others are
    classified on their audible chunks only."""
    return [is_silent(wav[s:e]) for s, e in chunk_bounds(len(wav), chunk_samples)]


def silence_error(name: str) -> AudioError:
    """The error for an input without one audible chunk (the same words in the library, CLI and app)."""
    return AudioError(f"{name} is silent (no chunk louder than {SILENCE_DBFS:g} dBFS): there is nothing to classify")


def _array_samples(audio, name: str) -> np.ndarray:
    """A numpy/torch array as float32 ``(channels, samples)``; ints are scaled by their type's range."""
    if _is_tensor(audio):
        import torch

        tensor = audio.detach()
        if tensor.is_complex() or tensor.dtype == torch.bool:
            raise AudioError(f"audio tensor {name} has dtype {tensor.dtype}: pass real samples (float or int PCM)")
        if tensor.is_floating_point() and tensor.dtype not in (torch.float32, torch.float64):
            tensor = tensor.float()  # bfloat16, float16, float8: numpy has no bfloat16
        try:
            data = tensor.cpu().numpy()
        except (TypeError, RuntimeError) as exc:
            raise AudioError(
                f"audio tensor {name} of dtype {tensor.dtype} cannot be read ({exc}): convert it with tensor.float()"
            ) from None
    else:
        data = np.asarray(audio)
    if data.ndim == 1:
        data = data[None, :]
    elif data.ndim == 2:
        if data.shape[0] > data.shape[1]:
            data = data.T
    else:
        raise AudioError(f"audio array must be 1-D or 2-D (channels, samples), got shape {tuple(data.shape)}")
    if np.issubdtype(data.dtype, np.floating):
        return data.astype(np.float32, copy=False)
    if np.issubdtype(data.dtype, np.signedinteger):  # PCM: full scale is 2^(bits-1), as libsndfile reads it
        _check_int_width(data, name)
        return (data.astype(np.float64) / float(-np.iinfo(data.dtype).min)).astype(np.float32)
    if np.issubdtype(data.dtype, np.unsignedinteger):  # offset-binary PCM (8-bit WAV)
        half = float(np.iinfo(data.dtype).max // 2 + 1)
        return ((data.astype(np.float64) - half) / half).astype(np.float32)
    kind = "complex" if np.issubdtype(data.dtype, np.complexfloating) else "not numbers"
    raise AudioError(
        f"audio array must hold real samples (float, or int PCM), got dtype {data.dtype} ({kind}) for {name}"
    )


def _check_int_width(data: np.ndarray, name: str) -> None:
    """Refuse an int32/int64 array that is near-silence as PCM of its own width (below :data:`SILENCE_DBFS`)
    but not silent: it almost surely holds narrower samples (16-bit values in an int64 built from a list)."""
    if data.dtype.itemsize < 4 or data.size == 0:
        return
    peak = int(np.max(np.abs(data.astype(np.int64, copy=False)), initial=0))
    bits = data.dtype.itemsize * 8
    if 0 < peak < SILENCE_RMS * 2 ** (bits - 1):
        width = next(b for b in (16, 24, 32) if peak <= 2 ** (b - 1))
        fix = {16: "audio.astype(np.int16)", 24: "audio / 8388608.0 (as float)", 32: "audio.astype(np.int32)"}
        raise AudioError(
            f"audio array {name} is {data.dtype} but its samples all fit in {width} bits (peak {peak}): as "
            f"{bits}-bit PCM that is below {SILENCE_DBFS:g} dBFS. If these are {width}-bit samples pass "
            f"{fix[width]}"
        )


def unsupported_format_error(path: str | os.PathLike, name: str | None = None) -> AudioError | None:
    """The error for a file whose type libsndfile cannot decode (:data:`UNSUPPORTED_AUDIO_EXTENSIONS`), or None."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in UNSUPPORTED_AUDIO_EXTENSIONS:
        return None
    return AudioError(
        f"{name or os.fspath(path)}: {suffix} files (AAC, ALAC, WMA ...) are not supported; convert it first, e.g. "
        f"`ffmpeg -i INPUT{suffix} OUTPUT.flac` (supported: {', '.join(AUDIO_EXTENSIONS)})"
    )


def check_audio_source(audio, name: str | None = None) -> str:
    """The display name of a file path or file bytes, after checking the file exists and is not empty
    (:class:`AudioError` otherwise); shared by :func:`load_audio` and streamed decoding."""
    if isinstance(audio, (bytes, bytearray)):
        if len(audio) == 0:
            raise AudioError("audio bytes are empty")
        return name or "<bytes>"
    path = os.fspath(audio)
    if not os.path.exists(path):
        raise AudioError(f"audio file not found: {path}")
    if os.path.getsize(path) == 0:
        raise AudioError(f"audio file is empty (0 bytes): {path}")
    unsupported = unsupported_format_error(path, name)
    if unsupported is not None:
        raise unsupported
    return name or path


def load_audio(
    audio: AudioInput, sr: int | None = None, *, name: str | None = None, max_seconds: float | None = MAX_SECONDS
) -> np.ndarray:
    """Return ``audio`` as 24 kHz mono float32 samples, shape ``(n_samples,)``.

    ``audio`` may be a file path (anything libsndfile reads, see :data:`AUDIO_EXTENSIONS`), the bytes of such a
    file, or a numpy/torch array of samples, then ``sr`` is required. Arrays may be ``(samples,)``,
    ``(channels, samples)`` or ``(samples, channels)`` (the shorter axis is taken as channels); float
    arrays (float16/bfloat16 too) hold samples in [-1, 1], int arrays PCM values scaled by their type's
    range (int16 by 32768). Channels are averaged (as ``librosa.load(mono=True)`` upstream); no loudness
    normalisation. The sample rate, channel count and the length they imply are checked before any decoding
    or resampling. Files are decoded in blocks of bounded size and mixed down while reading
    (:func:`pecmae_hub.audio_stream.decode_file`): peak memory is the 24 kHz mono result plus one block,
    whatever the file's channel count and rate.

    Raises:
        AudioError: unreadable/empty file, an unsupported format (m4a, aac ...), zero-length audio, NaN/inf
            samples, float samples on the wrong scale (peak above :data:`MAX_FLOAT_PEAK`), an unsupported dtype,
            int32/int64 samples that hold 16-bit values, a missing or insane ``sr`` (outside
            ``MIN_SAMPLE_RATE..MAX_SAMPLE_RATE``), more than :data:`MAX_CHANNELS` channels, audio longer than
            ``max_seconds`` (None: no limit).
    """
    if isinstance(audio, (str, os.PathLike, bytes, bytearray)):
        # decoded in blocks of bounded size, mixed down and resampled while reading (pecmae_hub.audio_stream)
        from pecmae_hub.audio_stream import decode_file

        return np.ascontiguousarray(decode_file(audio, name=name, max_seconds=max_seconds), dtype=np.float32)
    if isinstance(audio, np.ndarray) or _is_tensor(audio):
        name = name or "<array>"
        sr = check_sample_rate(sr, name)
        if audio.ndim in (1, 2):  # the length it implies, before converting anything
            check_duration(int(max(audio.shape)), sr, name, max_seconds)
        data = _array_samples(audio, name)
    else:
        raise AudioError(
            f"unsupported audio input of type {type(audio).__name__}: pass a path, bytes, or a numpy/torch array "
            "with sr"
        )
    if data.size == 0 or data.shape[-1] == 0:
        raise AudioError(f"audio has zero length: {name}")
    check_duration(data.shape[-1], sr, name, max_seconds)
    check_samples(data, name)
    mono = data.mean(axis=0)
    return np.ascontiguousarray(resample(mono, sr), dtype=np.float32)


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


#: output suffix -> (libsndfile format, subtype); None: the format's default (lossy codecs)
_WRITE_FORMATS = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
    ".oga": ("OGG", "VORBIS"),
    ".opus": ("OGG", "OPUS"),
    ".mp3": ("MP3", None),
    ".aif": ("AIFF", "PCM_16"),
    ".aiff": ("AIFF", "PCM_16"),
    ".au": ("AU", "PCM_16"),
}


def output_audio_format(path: str | os.PathLike) -> tuple[str, str]:
    """``(format, subtype)`` that :func:`write_audio` uses for ``path``, chosen by its suffix.

    Raises:
        ConfigError: a suffix this libsndfile cannot write (checked before any decoding work).
    """
    import soundfile as sf

    suffix = Path(path).suffix.lower()
    if suffix not in _WRITE_FORMATS:
        raise ConfigError(
            f"cannot write audio to {os.fspath(path)!r}: give a file ending in {', '.join(_WRITE_FORMATS)}"
        )
    fmt, subtype = _WRITE_FORMATS[suffix]
    if fmt not in sf.available_formats():
        raise ConfigError(f"this libsndfile cannot write {fmt} ({suffix}): use .wav or .flac")
    subtype = subtype or sf.default_subtype(fmt)
    if not sf.check_format(fmt, subtype):
        raise ConfigError(f"this libsndfile cannot write {fmt}/{subtype} ({suffix}): use .wav or .flac")
    return fmt, subtype


def write_audio(path: str | os.PathLike, wav: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write float audio (clipped to [-1, 1]) in the format of ``path``'s suffix (see :func:`output_audio_format`)."""
    import soundfile as sf

    fmt, subtype = output_audio_format(path)
    sf.write(os.fspath(path), np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0), sr, format=fmt, subtype=subtype)


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
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DatasetError(
            f"{path} is not a list file (one audio path per line, UTF-8 text) nor audio of a supported type "
            f"({', '.join(AUDIO_EXTENSIONS)})"
        ) from None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line) if os.path.isabs(line) else (base / line).resolve()
        rel = p.relative_to(base).as_posix() if p.is_relative_to(base) else f"{p.parent.name}/{p.name}"
        out.append(AudioFile(str(p), rel))
    return out


def _folder(folder: Path) -> list[AudioFile]:
    # files of unsupported audio types are listed too, so that each is reported (load_audio refuses them by name)
    found = find_audio_files(folder, AUDIO_EXTENSIONS + UNSUPPORTED_AUDIO_EXTENSIONS)
    return [AudioFile(str(p), p.relative_to(folder).as_posix()) for p in found]


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

    - a folder is searched recursively for :data:`AUDIO_EXTENSIONS` (any case), and for
      :data:`UNSUPPORTED_AUDIO_EXTENSIONS`, so that those are reported as unsupported instead of skipped;
      hidden files (``.name``, e.g. macOS ``._song.wav``) are skipped; files come sorted by path;
    - a single path (or a sequence of one) that is a file with another extension is a list file
      (:func:`read_list_file`);
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
        elif src.is_file() and src.suffix.lower() in AUDIO_EXTENSIONS + UNSUPPORTED_AUDIO_EXTENSIONS:
            files = [AudioFile(os.fspath(inputs), src.name)]
        elif src.is_file():
            files = read_list_file(src)
        else:
            raise DatasetError(f"input not found: {src} (give an audio folder, a list file or an audio file)")
    else:
        inputs = list(inputs)
        only = Path(inputs[0]) if len(inputs) == 1 else None
        if (
            only is not None
            and only.is_file()
            and only.suffix.lower() not in AUDIO_EXTENSIONS + UNSUPPORTED_AUDIO_EXTENSIONS
        ):
            return collect_audio_files(inputs[0])  # `pecmae classify LIST.txt`: one list file, as documented
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
