"""Level-safe audio: BS.1770 loudness normalisation under a true-peak ceiling, and decoded audio within ±1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pecmae_hub.errors import ConfigError
from pecmae_hub.loudness import integrated_loudness, limit_peak, normalize_loudness, true_peak_dbfs

SR = 24_000


def _tone(freq=440.0, seconds=1.5, amp=0.1):
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("amp", [0.001, 0.05, 0.9, 7.3])
def test_normalised_to_target_within_a_tenth_of_a_lu(amp):
    wav, change = normalize_loudness(_tone(amp=amp), SR, target_lufs=-20.0)
    assert abs(integrated_loudness(wav, SR) - (-20.0)) < 0.1
    assert abs(change.loudness_after - (-20.0)) < 1e-6 and not change.peak_limited
    assert np.max(np.abs(wav)) <= 1.0 and wav.dtype == np.float32


def test_true_peak_ceiling_lowers_the_gain_instead_of_clipping():
    clicks = np.zeros(int(1.5 * SR), np.float32)
    clicks[:: SR // 4] = 1.0  # very peaky: -20 LUFS would need a peak far above full scale
    wav, change = normalize_loudness(clicks, SR, target_lufs=-14.0, true_peak_ceiling=-1.0)
    assert change.peak_limited and change.loudness_after < -14.0
    assert true_peak_dbfs(wav) <= -1.0 + 0.05 and np.max(np.abs(wav)) < 1.0
    record = change.to_dict()
    assert record["peak_limited"] is True and record["gain_db"] == pytest.approx(change.gain_db, abs=1e-3)


def test_true_peak_sees_inter_sample_peaks():
    # a sine at fs/4 sampled at its 45-degree points: samples at 0.707 of the true peak
    n = np.arange(4800)
    wav = np.sin(np.pi / 2 * n + np.pi / 4).astype(np.float32)
    assert np.max(np.abs(wav)) == pytest.approx(np.sqrt(0.5), 1e-4)
    assert true_peak_dbfs(wav) == pytest.approx(0.0, abs=0.2)


def test_silence_and_bad_targets():
    silent = np.zeros(SR, np.float32)
    wav, change = normalize_loudness(silent, SR)
    assert np.array_equal(wav, silent) and change.gain_db == 0.0 and change.to_dict()["loudness_lufs"] is None
    with pytest.raises(ConfigError, match="true_peak_ceiling must be at most 0 dBFS"):
        normalize_loudness(_tone(), SR, true_peak_ceiling=3.0)
    with pytest.raises(ConfigError, match="target_lufs must be a finite number"):
        normalize_loudness(_tone(), SR, target_lufs=float("nan"))
    assert np.array_equal(limit_peak(_tone(amp=0.5)), _tone(amp=0.5))
    assert np.max(np.abs(limit_peak(_tone(amp=7.3)))) == pytest.approx(1.0, 1e-6)


@pytest.mark.parametrize("frontend", ["mel", "encodec"])
def test_decoded_audio_is_level_safe_for_every_model(frontend):
    """Random weights decode to wildly scaled audio; decode() still returns -20 LUFS under -1 dBTP (and
    within ±1 with loudness=None), for the mel family and the upstream-style EnCodec path alike."""
    from pecmae_hub.models.autoencoder import Autoencoder, AutoencoderConfig

    torch.manual_seed(0)
    ae = Autoencoder(AutoencoderConfig.tiny(frontend))
    z = 30.0 * torch.randn(2, ae.embedding_dim)  # far outside the training range: loud, clipped raw output
    raw = ae.synthesize(ae.decode_latents(z, steps=2, seed=0))
    wav = ae.decode(z, steps=2, seed=0)
    assert np.max(np.abs(wav)) <= 1.0 and true_peak_dbfs(wav) <= -1.0 + 0.05
    level = integrated_loudness(wav, SR)
    assert abs(level - (-20.0)) < 0.2 or true_peak_dbfs(wav) > -1.1, (level, float(np.abs(raw).max()))
    unnormalised = ae.decode(z, steps=2, seed=0, loudness=None)
    assert np.max(np.abs(unnormalised)) <= 1.0
    if np.max(np.abs(raw)) <= 1.0:  # nothing to limit: the decoder's own samples
        assert np.array_equal(unnormalised, np.concatenate(list(raw)))
