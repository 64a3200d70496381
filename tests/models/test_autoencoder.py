"""Autoencoder: chunk counts, padded+masked batches, decoding contracts, reproducibility, save/load, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from upstream_layout import rel_err

from pecmae_hub.audio import SAMPLE_RATE
from pecmae_hub.errors import CheckpointError, ConfigError, InputShapeError
from pecmae_hub.models.autoencoder import Autoencoder, AutoencoderConfig, join_chunks


def _tiny(frontend="mel", **kw):
    torch.manual_seed(0)
    return Autoencoder(AutoencoderConfig.tiny(frontend, **kw))


@pytest.fixture(scope="module")
def mel_ae():
    return _tiny("mel")


@pytest.fixture(scope="module")
def encodec_ae():
    return _tiny("encodec")


def _noise(seconds, sr, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal(int(round(seconds * sr)))).astype(np.float32)


@pytest.mark.parametrize("chunk_seconds,gtzan,medley", [(4.0, 8, 1), (10.0, 4, 1)])
def test_number_of_z_per_clip(chunk_seconds, gtzan, medley):
    ae = _tiny("mel", chunk_seconds=chunk_seconds)
    assert ae.chunk_samples == chunk_seconds * SAMPLE_RATE and ae.chunk_frames == chunk_seconds * 75
    z = ae.encode(_noise(30.01, 22_050), sr=22_050)  # GTZAN: 30.01 s at 22.05 kHz
    assert z.shape == (gtzan, ae.embedding_dim) and z.dtype == torch.float32
    assert ae.encode(_noise(2.97, 22_050), sr=22_050).shape == (medley, ae.embedding_dim)  # Medley-Solos-DB


@pytest.mark.parametrize("frontend,tol", [("mel", 1e-5), ("encodec", 2e-3)])
def test_padded_masked_batch_matches_unpadded(frontend, tol):
    """Padding a partial chunk to the window and masking frames ≥ ceil(len/320) ≈ encoding it alone.

    mel: identical (its STFT window ends inside the valid frames); EnCodec: the last, partial frame
    sees zeros instead of the reflect padding (≈5e-4 relative here), padding *without* the mask is far off.
    """
    ae = _tiny(frontend, chunk_seconds=1.0)
    wav = torch.from_numpy(_noise(1.0, SAMPLE_RATE, seed=1))
    length = 12_345
    batch = torch.zeros(2, ae.chunk_samples)
    batch[0] = wav
    batch[1, :length] = wav[:length]
    with torch.inference_mode():
        z = ae.encode_chunks(batch, torch.tensor([ae.chunk_samples, length]))
        alone = ae.encode_chunks(wav[None, :length])
        full = ae.encode_chunks(wav[None])
        unmasked = ae.encode_chunks(batch)
    assert rel_err(z[1], alone[0]) < tol
    assert rel_err(z[0], full[0]) < 1e-5
    assert rel_err(unmasked[1], alone[0]) > 10 * tol
    # encode() keeps the partial last chunk and gives the same z as encoding it alone
    z_public = ae.encode(np.concatenate([wav.numpy(), wav[:length].numpy()]), sr=SAMPLE_RATE)
    assert z_public.shape == (2, ae.embedding_dim)
    assert rel_err(z_public[0], full[0]) < 1e-5 and rel_err(z_public[1], alone[0]) < 1e-5


def test_encode_frames_and_batch_size(mel_ae):
    wav = _noise(2.5, SAMPLE_RATE, seed=2)
    frames = mel_ae.encode_frames(wav, sr=SAMPLE_RATE)
    assert frames.shape == (math.ceil(2.5 * 75), mel_ae.embedding_dim)
    assert torch.allclose(
        mel_ae.encode(wav, sr=SAMPLE_RATE, batch_size=1), mel_ae.encode(wav, sr=SAMPLE_RATE), atol=1e-5
    )


def test_decode_shapes_and_reproducibility(mel_ae):
    z = mel_ae.encode(_noise(2.0, SAMPLE_RATE, seed=3), sr=SAMPLE_RATE)
    a = mel_ae.decode(z, steps=3, seed=7)
    assert a.dtype == np.float32 and a.shape == (2 * mel_ae.chunk_samples,) and np.isfinite(a).all()
    assert np.array_equal(mel_ae.decode(z, steps=3, seed=7), a)  # same seed → same audio
    assert not np.array_equal(mel_ae.decode(z, steps=3, seed=8), a)
    noise = torch.randn((2, mel_ae.chunk_frames, mel_ae.config.signal_dim), generator=torch.Generator().manual_seed(7))
    assert np.array_equal(mel_ae.decode(z, steps=3, noise=noise), a)  # the seed only draws this noise
    assert np.array_equal(mel_ae.decode(z, steps=3, noise=noise.numpy()), a)
    lat = mel_ae.decode_latents(z[0], steps=2, guidance=0.0, seed=1)  # a single (D,) z is accepted
    assert lat.shape == (1, mel_ae.chunk_frames, mel_ae.config.signal_dim)
    assert mel_ae.decode(z[:, None, :], steps=1, seed=0).shape == (2 * mel_ae.chunk_samples,)  # (n, 1, D) too


def test_decode_encodec_length(encodec_ae):
    z = torch.randn(1, encodec_ae.embedding_dim)
    assert encodec_ae.decode(z, steps=2, seed=0).shape == (encodec_ae.chunk_samples,)


def test_decode_errors(mel_ae):
    d = mel_ae.embedding_dim
    with pytest.raises(InputShapeError, match=rf"z must have shape \(n_chunks, {d}\), got \(2, {d + 1}\)"):
        mel_ae.decode(torch.zeros(2, d + 1))
    with pytest.raises(InputShapeError, match="z must have shape"):
        mel_ae.decode(torch.zeros(2, 3, d))
    with pytest.raises(InputShapeError, match="NaN or infinite"):
        mel_ae.decode(torch.full((1, d), float("nan")))
    with pytest.raises(InputShapeError, match=r"noise must have shape \(1, 75, 16\)"):
        mel_ae.decode(torch.zeros(1, d), noise=torch.zeros(1, 74, 16))
    with pytest.raises(ConfigError, match="steps"):
        mel_ae.decode(torch.zeros(1, d), steps=0)
    frame_only = Autoencoder(AutoencoderConfig.tiny("mel", cls_layers=0, denoiser_layers=0))
    with pytest.raises(ConfigError, match="no diffusion decoder"):
        frame_only.decode(torch.zeros(1, d))
    assert frame_only.encode(_noise(1.5, SAMPLE_RATE), sr=SAMPLE_RATE).shape == (2, d)  # z = mean of frames


def test_config_validation():
    with pytest.raises(ConfigError, match="frontend"):
        AutoencoderConfig(frontend="wavelet")
    with pytest.raises(ConfigError, match="128-d"):
        AutoencoderConfig(frontend="encodec", signal_dim=64)
    with pytest.raises(ConfigError, match="needs a CLS encoder"):
        AutoencoderConfig(cls_layers=0, denoiser_layers=2)
    with pytest.raises(ConfigError, match=r"unknown pecmae-autoencoder config fields \['bogus'\]"):
        AutoencoderConfig.from_dict({"frontend": "mel", "bogus": 1})
    with pytest.raises(ConfigError, match="size"):
        AutoencoderConfig.encodecmae("huge")
    assert (
        AutoencoderConfig.upstream(10).chunk_seconds == 10 and AutoencoderConfig.encodecmae("large").model_dim == 1024
    )


def test_save_load_roundtrip_and_missing_keys(mel_ae, tmp_path):
    mel_ae.save_pretrained(tmp_path / "m")
    loaded = Autoencoder.from_pretrained(tmp_path / "m")
    wav = _noise(1.2, SAMPLE_RATE, seed=4)
    assert torch.equal(loaded.encode(wav, sr=SAMPLE_RATE), mel_ae.encode(wav, sr=SAMPLE_RATE))
    from safetensors.torch import load_file, save_file

    state = load_file(str(tmp_path / "m" / "model.safetensors"))
    del state["denoiser.out_adapter.bias"], state["frame_encoder.positional_encoder.scale"]
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "m" / "model.safetensors"))
    (tmp_path / "m" / "checksums.json").unlink()  # a hand-made folder: the key check speaks, not the digest
    with pytest.raises(CheckpointError) as info, pytest.warns(UserWarning, match="without verifying"):
        Autoencoder.from_pretrained(tmp_path / "m", verify=False)
    message = str(info.value)
    assert "missing keys (2)" in message and "denoiser.out_adapter.bias" in message
    assert "frame_encoder.positional_encoder.scale" in message and "unexpected keys (1): extra.weight" in message


def test_join_chunks_crossfade():
    chunks = [np.ones(1000, dtype=np.float32), np.ones(1000, dtype=np.float32), np.ones(800, dtype=np.float32)]
    plain = join_chunks(chunks)
    assert plain.shape == (2800,) and np.array_equal(plain, np.ones(2800))
    faded = join_chunks(chunks, overlap=240)
    assert faded.shape == (2800 - 2 * 240,)
    assert np.allclose(faded, 1.0, atol=1e-6)  # linear fade-out + fade-in sum to 1: no dip, no click
    ramp = [np.linspace(0, 1, 500, dtype=np.float32), np.linspace(1, 2, 500, dtype=np.float32)]
    joined = join_chunks(ramp, overlap=100)
    assert np.abs(np.diff(joined)).max() < 0.02  # continuous across the seam
    assert join_chunks(chunks, overlap=5000).shape == (2800 - 2 * 400,)  # overlap capped at half the shortest chunk
    assert join_chunks([]).shape == (0,)
    z = torch.randn(2, 32)
    ae = _tiny("mel")
    assert ae.decode(z, steps=1, seed=0, crossfade_ms=10).shape == (2 * ae.chunk_samples - 240,)


def test_griffin_lim_converges(mel_ae):
    """The mel stand-in's vocoder: fast Griffin-Lim must beat plain Griffin-Lim (momentum form regression)."""
    from pecmae_hub.models.melspec import MelCodec

    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    wav = torch.tensor(sum(0.2 / k * np.sin(2 * np.pi * 220 * k * t) for k in range(1, 6)), dtype=torch.float32)[None]
    errors = {}
    for momentum in (0.0, 0.99):
        codec = MelCodec(griffin_lim_iters=32, momentum=momentum)
        feats = codec.encode(wav)
        mel = torch.exp(feats.transpose(1, 2) * codec.scale + codec.offset) - 1e-5
        target = torch.matmul(codec.inverse, mel.clamp_min(0)).clamp_min(0).sqrt()  # the magnitude GL aims at
        got = codec._stft(codec.decode(feats)).abs()[..., : target.shape[-1]]
        errors[momentum] = (torch.linalg.norm(got - target) / torch.linalg.norm(target)).item()  # spectral convergence
    assert errors[0.99] < 0.8 * errors[0.0] and errors[0.99] < 0.15


def test_mel_front_end_accepts_a_tail_shorter_than_half_an_fft_window():
    """A clip one hop past a chunk boundary leaves a 1-frame chunk; its STFT must still be defined."""
    import numpy as np

    from pecmae_hub.models.autoencoder import Autoencoder, AutoencoderConfig

    ae = Autoencoder(AutoencoderConfig.tiny())
    z = ae.encode(np.random.default_rng(0).normal(0, 0.1, ae.chunk_samples + 160).astype(np.float32), sr=24_000)
    assert z.shape == (2, ae.embedding_dim) and bool(torch.isfinite(z).all())


def test_decoded_chunks_are_exactly_chunk_samples_long():
    from pecmae_hub.models.autoencoder import Autoencoder, AutoencoderConfig

    ae = Autoencoder(AutoencoderConfig.tiny(chunk_seconds=1.5))  # 36 000 samples = 112.5 frames
    wav = ae.decode(torch.zeros(2, ae.embedding_dim), steps=2, seed=0)
    assert wav.shape == (2 * 36_000,)
