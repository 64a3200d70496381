"""Audio input: every kind of source → 24 kHz mono float32; typed errors naming the problem; chunking."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from pecmae_hub.audio import (
    AUDIO_EXTENSIONS,
    FRAME_RATE,
    HOP_LENGTH,
    SAMPLE_RATE,
    chunk_audio,
    chunk_bounds,
    collect_audio_files,
    frames_for_samples,
    is_audio_file,
    load_audio,
    write_wav,
)
from pecmae_hub.errors import AudioError, DatasetError, PecmaeError


def _signal(sr: int, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(sr * seconds))) / sr
    mono = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1250 * t)
    if channels == 1:
        return mono.astype(np.float32)
    return np.stack([mono, 0.5 * mono], axis=1).astype(np.float32)  # (samples, channels)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    x = _signal(SAMPLE_RATE, 1.0)
    out = {"x": x}
    formats = [("wav", "WAV", "PCM_16"), ("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS")]
    if "MP3" in sf.available_formats():
        formats.append(("mp3", "MP3", None))
    for ext, fmt, subtype in formats:
        path = root / f"tone.{ext}"
        sf.write(path, x, SAMPLE_RATE, format=fmt, subtype=subtype)
        out[ext] = path
    return out


def test_constants():
    assert (SAMPLE_RATE, HOP_LENGTH, FRAME_RATE) == (24_000, 320, 75)
    assert frames_for_samples(96_000) == 300 and frames_for_samples(96_001) == 301 and frames_for_samples(1) == 1


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3"])
def test_file_formats(files, ext):
    if ext not in files:
        pytest.skip(f"libsndfile here cannot write {ext}")
    wav = load_audio(files[ext])
    assert wav.dtype == np.float32 and wav.ndim == 1 and len(wav) == SAMPLE_RATE
    if ext in ("wav", "flac"):  # lossless 16-bit
        assert np.abs(wav - files["x"]).max() < 1e-4
    else:  # lossy: same loudness
        assert math.isclose(np.sqrt(np.mean(wav**2)), np.sqrt(np.mean(files["x"] ** 2)), rel_tol=0.1)
    assert np.array_equal(load_audio(str(files[ext])), wav)


def test_bytes_numpy_torch_and_int16_agree(files):
    from_file = load_audio(files["wav"])
    assert np.array_equal(load_audio(files["wav"].read_bytes()), from_file)
    assert np.array_equal(load_audio(bytearray(files["wav"].read_bytes())), from_file)
    pcm, sr = sf.read(files["wav"], dtype="int16")
    assert np.array_equal(load_audio(pcm, sr=sr), from_file)  # int16 full scale is 32768, as libsndfile reads it
    assert np.array_equal(load_audio(torch.from_numpy(pcm), sr=sr), from_file)
    assert np.array_equal(load_audio(files["x"], sr=SAMPLE_RATE), files["x"])
    assert np.array_equal(load_audio(torch.from_numpy(files["x"]), sr=SAMPLE_RATE), files["x"])
    assert np.array_equal(load_audio(files["x"].astype(np.float64), sr=SAMPLE_RATE), files["x"])
    u8 = np.array([0, 128, 255], dtype=np.uint8)  # 8-bit WAV is offset binary
    assert np.allclose(load_audio(u8, sr=SAMPLE_RATE), [-1.0, 0.0, 127 / 128])


def test_stereo_44k_and_8k_mono_lengths():
    stereo = _signal(44_100, 2.0, channels=2)  # (samples, channels)
    mono = load_audio(stereo, sr=44_100)
    assert len(mono) == math.ceil(len(stereo) * 24_000 / 44_100) == 48_000
    assert np.array_equal(load_audio(stereo.T.copy(), sr=44_100), mono)  # (channels, samples) too
    ref = load_audio(stereo.mean(axis=1), sr=44_100)  # channels are averaged
    assert np.abs(mono - ref).max() < 1e-6
    assert len(load_audio(_signal(8_000, 1.5), sr=8_000)) == 36_000
    assert len(load_audio(_signal(22_050, 30.01), sr=22_050)) == math.ceil(round(22_050 * 30.01) * 160 / 147)


def test_stereo_file_is_downmixed(tmp_path):
    stereo = _signal(44_100, 0.5, channels=2)
    sf.write(tmp_path / "s.wav", stereo, 44_100, subtype="FLOAT")
    assert np.abs(load_audio(tmp_path / "s.wav") - load_audio(stereo.mean(1), sr=44_100)).max() < 1e-6


def test_errors_name_the_problem(tmp_path):
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio" * 50)
    with pytest.raises(AudioError, match=r"cannot decode audio .*garbage\.wav"):
        load_audio(garbage)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(empty)
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="bytes are empty"):
        load_audio(b"")
    with pytest.raises(AudioError, match="cannot decode"):
        load_audio(b"\x00\x01garbage" * 10)
    with pytest.raises(AudioError, match="zero length"):
        load_audio(np.zeros(0, dtype=np.float32), sr=SAMPLE_RATE)
    with pytest.raises(AudioError, match="NaN or infinite"):
        load_audio(np.array([0.0, np.nan, 0.1], dtype=np.float32), sr=SAMPLE_RATE)
    with pytest.raises(AudioError, match="NaN or infinite"):
        load_audio(torch.tensor([0.0, float("inf")]), sr=SAMPLE_RATE)
    with pytest.raises(AudioError, match="needs its sample rate"):
        load_audio(np.zeros(100, dtype=np.float32))
    with pytest.raises(AudioError, match="invalid sample rate"):
        load_audio(np.zeros(100, dtype=np.float32), sr=0)
    with pytest.raises(AudioError, match="1-D or 2-D"):
        load_audio(np.zeros((2, 2, 100), dtype=np.float32), sr=SAMPLE_RATE)
    with pytest.raises(AudioError, match="dtype"):
        load_audio(np.array(["a", "b"]), sr=SAMPLE_RATE)
    with pytest.raises(AudioError, match="unsupported audio input"):
        load_audio(12345)
    assert issubclass(AudioError, PecmaeError) and issubclass(AudioError, ValueError)


def test_chunking_rule():
    assert chunk_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]  # the partial last chunk is kept
    assert chunk_bounds(8, 4) == [(0, 4), (4, 8)] and chunk_bounds(3, 4) == [(0, 3)]
    gtzan = math.ceil(round(22_050 * 30.01) * 160 / 147)
    assert len(chunk_bounds(gtzan, 96_000)) == 8 and len(chunk_bounds(gtzan, 240_000)) == 4
    assert len(chunk_bounds(math.ceil(round(22_050 * 2.97) * 160 / 147), 96_000)) == 1
    batch, lengths = chunk_audio(np.arange(10, dtype=np.float32), 4)
    assert batch.shape == (3, 4) and lengths.tolist() == [4, 4, 2]
    assert batch[2].tolist() == [8.0, 9.0, 0.0, 0.0]


def test_write_wav_roundtrip_clips(tmp_path):
    wav = np.array([0.0, 0.5, -0.5, 2.0, -3.0], dtype=np.float32)
    write_wav(tmp_path / "o.wav", wav)
    back, sr = sf.read(tmp_path / "o.wav", dtype="float32")
    assert sr == SAMPLE_RATE and np.allclose(back, np.clip(wav, -1, 1), atol=1e-4)


# ---- AUDIO_EXTENSIONS and collect_audio_files ------------------------------------------------------
_WRITE_FORMAT = {
    ".wav": ("WAV", None),
    ".flac": ("FLAC", None),
    ".ogg": ("OGG", None),
    ".oga": ("OGG", None),
    ".opus": ("OGG", "OPUS"),
    ".mp3": ("MP3", None),
    ".aif": ("AIFF", None),
    ".aiff": ("AIFF", None),
    ".au": ("AU", None),
}


@pytest.mark.parametrize("ext", AUDIO_EXTENSIONS)
def test_every_listed_extension_is_decoded(tmp_path, ext):
    fmt, subtype = _WRITE_FORMAT[ext]
    if fmt not in sf.available_formats():
        pytest.skip(f"this libsndfile has no {fmt}")
    sr = 48_000 if subtype == "OPUS" else SAMPLE_RATE  # Opus only runs at 48 kHz (and friends)
    sf.write(tmp_path / f"tone{ext}", _signal(sr, 0.5), sr, format=fmt, subtype=subtype)
    assert load_audio(tmp_path / f"tone{ext}").shape == (SAMPLE_RATE // 2,)
    assert ext == ext.lower() and ext not in (".m4a", ".aac")  # libsndfile cannot decode those


def test_collect_audio_files_folder_list_sequence_and_spellings(tmp_path, monkeypatch):
    root = tmp_path / "music"
    (root / "sub").mkdir(parents=True)
    for name in ("b.WAV", "sub/a.flac", "._b.wav", "notes.txt", "sub/c.m4a"):
        (root / name).write_bytes(b"x")
    found = collect_audio_files(root)
    assert [(Path(f.path).relative_to(root).as_posix(), f.relpath) for f in found] == [
        ("b.WAV", "b.WAV"),
        ("sub/a.flac", "sub/a.flac"),
        ("sub/c.m4a", "sub/c.m4a"),
    ]  # hidden and non-audio files skipped; m4a listed, to be reported as unsupported (load_audio refuses it)
    monkeypatch.chdir(tmp_path)
    (root / "link.wav").symlink_to(root / "b.WAV")
    listed = collect_audio_files(["music/b.WAV", "./music/b.WAV", str(root / "link.wav"), "missing.wav", "music/sub"])
    assert [f.path for f in listed] == ["music/b.WAV", "missing.wav", "music/sub/a.flac", "music/sub/c.m4a"]
    assert [f.relpath for f in listed] == ["music/b.WAV", "missing.wav", "a.flac", "c.m4a"]
    (tmp_path / "list.txt").write_text("# tracks\nmusic/b.WAV\n\nmusic/sub/a.flac\nmusic/./b.WAV\n")
    assert [f.relpath for f in collect_audio_files(tmp_path / "list.txt")] == ["music/b.WAV", "music/sub/a.flac"]
    assert collect_audio_files(root / "b.WAV") == [(str(root / "b.WAV"), "b.WAV")]
    with pytest.raises(DatasetError, match="input not found"):
        collect_audio_files(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no audio files"):
        collect_audio_files(tmp_path / "empty")
    assert not any(is_audio_file(n) for n in ("._x.wav", "x.m4a", "x.txt")) and is_audio_file("X.Opus")


def test_audio_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, pecmae_hub.audio as a; a.collect_audio_files; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# ---- input checks: sample rate, duration, scale, silence; output formats ----------------------------
def test_sample_rate_is_a_sane_number():
    from pecmae_hub.audio import check_sample_rate

    assert check_sample_rate(44_100) == 44_100 and check_sample_rate(np.int64(8000)) == 8000
    assert check_sample_rate(48_000.0) == 48_000
    for bad in ("24000", None, True, 999, 768_001, 22_050.5, float("inf"), [24000]):
        with pytest.raises(AudioError):
            check_sample_rate(bad)


def test_duration_is_checked_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "two.wav"
    sf.write(path, _signal(SAMPLE_RATE, 2.0), SAMPLE_RATE)
    monkeypatch.setattr(sf.SoundFile, "read", lambda *a, **k: pytest.fail("decoded a file that is too long"))
    with pytest.raises(AudioError, match=r"2\.0 s long .* limit of 1 s"):
        load_audio(path, max_seconds=1)
    with pytest.raises(AudioError, match="limit of 1 s"):
        load_audio(path.read_bytes(), max_seconds=1)
    monkeypatch.undo()
    assert len(load_audio(path, max_seconds=None)) == 2 * SAMPLE_RATE


def test_float_scale_and_dtypes():
    x = _signal(SAMPLE_RATE, 0.2)
    assert np.array_equal(load_audio(x * 1.5, sr=SAMPLE_RATE), x * 1.5)  # a little over full scale is kept
    with pytest.raises(AudioError, match="divide int16 samples by 32768"):
        load_audio(x * 32767, sr=SAMPLE_RATE)
    bf16 = load_audio(torch.from_numpy(x).to(torch.bfloat16), sr=SAMPLE_RATE)
    assert bf16.dtype == np.float32 and np.abs(bf16 - x).max() < 4e-3
    i32 = load_audio((x.astype(np.float64) * 2**31).astype(np.int32), sr=SAMPLE_RATE)
    assert np.abs(i32 - x).max() < 1e-6
    for bad in (x > 0, x.astype(np.complex64), torch.from_numpy(x) > 0):
        with pytest.raises(AudioError, match="real samples|dtype"):
            load_audio(bad, sr=SAMPLE_RATE)


def test_silence_is_one_definition():
    from pecmae_hub.audio import SILENCE_DBFS, is_silent, silence_error, silent_chunks

    rng = np.random.default_rng(0)
    assert SILENCE_DBFS == -70.0
    assert is_silent(np.zeros(100)) and is_silent(np.zeros(0)) and is_silent(np.full(100, 0.01))  # DC: silent
    assert is_silent(3e-5 * rng.standard_normal(24_000)) and not is_silent(3e-3 * rng.standard_normal(24_000))
    wav = np.concatenate([np.zeros(10), _signal(SAMPLE_RATE, 20 / SAMPLE_RATE), np.zeros(10)])
    assert silent_chunks(wav, 10) == [True, False, False, True]
    assert "x.wav is silent" in str(silence_error("x.wav"))


def test_output_formats(tmp_path):
    from pecmae_hub.audio import output_audio_format, write_audio
    from pecmae_hub.errors import ConfigError

    assert output_audio_format("a.WAV") == ("WAV", "PCM_16") and output_audio_format("a.mp3")[0] == "MP3"
    for name in ("a.m4a", "a", "a.txt"):
        with pytest.raises(ConfigError, match="cannot write audio"):
            output_audio_format(name)
    x = _signal(SAMPLE_RATE, 0.5)
    for ext in (".flac", ".ogg", ".mp3"):
        write_audio(tmp_path / f"o{ext}", x * 3)  # clipped, any writable format
        assert sf.info(tmp_path / f"o{ext}").samplerate == SAMPLE_RATE
