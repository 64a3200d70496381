"""The mel vocoder: shapes, save/load round trip, attaching it to an autoencoder, choosing it by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pecmae_hub.errors import CheckpointError, ConfigError, InputShapeError
from pecmae_hub.models.autoencoder import Autoencoder, AutoencoderConfig
from pecmae_hub.models.vocoder import MelVocoder, VocoderConfig


def _tiny_vocoder(seed=0, **kw) -> MelVocoder:
    torch.manual_seed(seed)
    return MelVocoder(VocoderConfig.tiny(**kw))


def _tiny_ae(seed=0) -> Autoencoder:
    torch.manual_seed(seed)
    return Autoencoder(AutoencoderConfig.tiny("mel"))


def test_output_length_and_frame_alignment():
    voc = _tiny_vocoder()
    with torch.inference_mode():
        wav = voc(torch.randn(2, 75, 16))
    assert wav.shape == (2, 75 * 320) and wav.dtype == torch.float32 and torch.isfinite(wav).all()
    with pytest.raises(InputShapeError, match=r"\(batch, frames, 16\)"):
        voc(torch.randn(2, 75, 17))


def test_save_load_round_trip_is_exact(tmp_path):
    voc = _tiny_vocoder(seed=3)
    voc.save_pretrained(tmp_path / "voc")
    config = json.loads((tmp_path / "voc" / "config.json").read_text())
    assert config["model_type"] == "pecmae-mel-vocoder" and config["n_mels"] == 16 and config["n_fft"] == 640
    assert (tmp_path / "voc" / "checksums.json").is_file()
    loaded = MelVocoder.from_pretrained(tmp_path / "voc")
    x = torch.randn(1, 20, 16)
    with torch.inference_mode():
        assert torch.equal(voc(x), loaded(x))
    # weights of another size are refused with the key named
    other = _tiny_vocoder(dim=24)
    other.save_pretrained(tmp_path / "other")
    (tmp_path / "voc" / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    from pecmae_hub.storage.integrity import write_checksums

    write_checksums(tmp_path / "voc")
    with pytest.raises(CheckpointError, match="shape mismatches"):
        MelVocoder.from_pretrained(tmp_path / "voc")


def test_config_validation():
    with pytest.raises(ConfigError, match="hop_length must be 320"):
        VocoderConfig(hop_length=256)
    with pytest.raises(ConfigError, match="kernel_size must be odd"):
        VocoderConfig(kernel_size=4)
    with pytest.raises(ConfigError, match="unknown pecmae-mel-vocoder config fields"):
        VocoderConfig.from_dict({**VocoderConfig.tiny().to_dict(), "upsample": 2})


def test_attached_vocoder_is_saved_with_the_autoencoder_and_is_the_default(tmp_path):
    ae = _tiny_ae()
    voc = _tiny_vocoder(mel=dict(ae.config.mel))
    ae.attach_vocoder(voc)
    assert ae.config.vocoder["model_type"] == "pecmae-mel-vocoder"
    ae.save_pretrained(tmp_path / "ae")
    loaded = Autoencoder.from_pretrained(tmp_path / "ae")
    assert loaded.vocoder is not None and loaded.fingerprint() == ae.fingerprint()
    z = torch.randn(1, ae.embedding_dim)
    default = loaded.decode(z, steps=2, seed=0, loudness=None)
    assert np.array_equal(default, loaded.decode(z, steps=2, seed=0, loudness=None, vocoder="vocos"))
    gl = loaded.decode(z, steps=2, seed=0, loudness=None, vocoder="griffin-lim")
    assert gl.shape == default.shape and not np.allclose(gl, default)
    with pytest.raises(ConfigError, match="unknown vocoder 'hifigan'"):
        loaded.decode(z, steps=2, seed=0, vocoder="hifigan")


def test_griffin_lim_stays_selectable_and_unchanged():
    """Griffin-Lim by name is exactly the mel codec's Griffin-Lim (the vocoder of every earlier release)."""
    ae = _tiny_ae().attach_vocoder(_tiny_vocoder())
    latents = ae.decode_latents(torch.randn(2, ae.embedding_dim), steps=2, seed=1)
    with torch.inference_mode():
        reference = ae.codec.decode(latents)[:, : ae.chunk_samples].numpy()
    assert np.array_equal(ae.synthesize(latents, "griffin-lim"), reference)
    assert np.array_equal(_tiny_ae().synthesize(latents, None), reference)  # no neural vocoder: Griffin-Lim


def test_vocoder_must_match_the_mel_features():
    ae = _tiny_ae()
    with pytest.raises(ConfigError, match="train a vocoder for this model"):
        ae.attach_vocoder(_tiny_vocoder(n_mels=32))
    with pytest.raises(ConfigError, match="train a vocoder for this model"):
        ae.attach_vocoder(_tiny_vocoder(mel={**ae.config.mel, "fmax": 8000.0}))
    encodec = Autoencoder(AutoencoderConfig.tiny("encodec"))
    with pytest.raises(ConfigError, match="'mel' front end"):
        encodec.attach_vocoder(_tiny_vocoder())
    with pytest.raises(ConfigError, match="EnCodec's own decoder"):
        encodec.decode(torch.zeros(1, encodec.embedding_dim), steps=1, vocoder="griffin-lim")
    with pytest.raises(ConfigError, match="has no neural vocoder"):
        ae.decode(torch.zeros(1, ae.embedding_dim), steps=1, vocoder="vocos")


def test_the_decoder_is_not_part_of_the_fingerprint():
    """z depends on the encoder only: a re-trained or re-shaped decoder keeps the fingerprint; the old
    (whole-architecture) fingerprint is still recognised."""
    import dataclasses

    ae = _tiny_ae()
    bigger = Autoencoder(
        dataclasses.replace(ae.config, denoiser_type="adaln", denoiser_dim=48, denoiser_layers=2, denoiser_patch=2)
    )
    bigger.attach_vocoder(_tiny_vocoder())
    assert bigger.fingerprint() == ae.fingerprint() and bigger.decoder_fingerprint() != ae.decoder_fingerprint()
    assert ae.matches_fingerprint(ae.legacy_fingerprint()) and not ae.matches_fingerprint("0123456789abcdef")
    other_encoder = Autoencoder(AutoencoderConfig.tiny("mel", frame_layers=3))
    assert other_encoder.fingerprint() != ae.fingerprint()
