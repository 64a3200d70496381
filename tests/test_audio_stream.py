"""Streaming decode: the same samples as load_audio for every rate and block size; streamed encode = encode."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

import pecmae_hub.audio_stream as stream
from pecmae_hub.audio import load_audio
from pecmae_hub.audio_stream import chunk_batches, stream_audio
from pecmae_hub.errors import AudioError
from pecmae_hub.models.autoencoder import Autoencoder, AutoencoderConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _write(path, sr, channels, seconds, seed=0, subtype="FLOAT"):
    rng = np.random.default_rng(seed)
    n = int(sr * seconds) + int(rng.integers(0, 500))
    sf.write(path, (0.3 * rng.standard_normal((n, channels))).astype(np.float32), sr, subtype=subtype)
    return path


@pytest.mark.parametrize(
    "sr,channels", [(24_000, 1), (44_100, 2), (48_000, 1), (22_050, 2), (16_000, 1), (8_000, 2), (96_000, 1)]
)
def test_stream_equals_load_audio_bit_for_bit(tmp_path, monkeypatch, sr, channels):
    path = _write(tmp_path / "a.wav", sr, channels, 5.3, seed=sr)
    whole = load_audio(path)
    for block_seconds in (0.31, 1.7):  # many blocks, with block edges at every filter phase
        monkeypatch.setattr(stream, "_BLOCK_SECONDS", block_seconds)
        blocks = list(stream_audio(path))
        assert len(blocks) > 2
        assert np.array_equal(np.concatenate(blocks), whole)
    assert np.array_equal(np.concatenate(list(stream_audio(path.read_bytes()))), whole)


def test_stream_errors_match_load_audio(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        list(stream_audio(tmp_path / "missing.wav"))
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        list(stream_audio(tmp_path / "empty.wav"))
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio")
    with pytest.raises(AudioError, match="cannot decode"):
        list(stream_audio(tmp_path / "bad.wav"))
    bad = np.zeros(24_000, np.float32)
    bad[20_000] = np.nan
    sf.write(tmp_path / "nan.wav", bad, 24_000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        list(stream_audio(tmp_path / "nan.wav"))
    sf.write(tmp_path / "long.wav", np.zeros(48_000, np.float32), 24_000)
    with pytest.raises(AudioError, match="longer than"):
        list(stream_audio(tmp_path / "long.wav", max_seconds=1.0))
    with pytest.raises(AudioError, match="files and bytes"):
        list(stream_audio(np.zeros(10)))


def test_chunk_batches_regroups_blocks():
    signal = np.arange(23, dtype=np.float32)
    blocks = [signal[:4], signal[4:5], signal[5:17], signal[17:]]
    out = list(chunk_batches(blocks, chunk_samples=3, batch_size=2))
    assert [b.shape for b in out] == [(2, 3), (2, 3), (2, 3), (1, 3), (1, 2)]
    assert np.array_equal(np.concatenate([b.ravel() for b in out]), signal)
    whole = np.arange(12, dtype=np.float32)
    (only,) = chunk_batches([whole], 3, 4)
    assert np.shares_memory(only, whole)  # an in-memory array is batched from views, not copies


def test_streamed_encode_equals_encoding_the_loaded_array(tmp_path):
    torch.manual_seed(0)
    ae = Autoencoder(AutoencoderConfig.tiny("mel"))
    path = _write(tmp_path / "b.wav", 44_100, 2, 7.4, subtype="PCM_16")
    z_path = ae.encode(path, batch_size=3)
    z_array = ae.encode(load_audio(path), sr=24_000, batch_size=3)
    assert z_path.shape == (8, ae.embedding_dim) and torch.equal(z_path, z_array)
    assert torch.equal(ae.encode(path.read_bytes(), batch_size=3), z_path)
    # another batch size regroups the chunks: the same z up to GEMM summation order
    torch.testing.assert_close(ae.encode(path, batch_size=2), z_path, atol=1e-5, rtol=1e-5)
