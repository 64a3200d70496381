"""Level-safe audio: ITU-R BS.1770 loudness normalisation with a true-peak ceiling.

Every waveform the package synthesises (``Autoencoder.decode``, ``PECMAE.sonify``, the prototype renders)
goes through :func:`normalize_loudness`, so that prototypes play at one loudness, side by side with real
audio, and never beyond full scale. Loudness is measured with ``pyloudnorm`` (BS.1770-4 K-weighting and
gating); the true peak is the peak of the signal upsampled 4× (BS.1770-4 Annex 2), so the ceiling holds
after any digital-to-analogue reconstruction too. When reaching the target would push the true peak above
the ceiling, the gain is lowered to the ceiling instead (nothing is clipped or compressed): such audio
ends up quieter than the target, and :func:`normalize_loudness` says by how much.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pecmae_hub.audio import SAMPLE_RATE
from pecmae_hub.errors import ConfigError

#: default loudness of synthesised audio (LUFS): the level of broadcast-style speech and music previews,
#: with room for the ceiling below
TARGET_LUFS = -20.0
#: default true-peak ceiling (dBFS)
TRUE_PEAK_DBFS = -1.0
#: pyloudnorm's gating block: shorter audio is measured by its mean square, K-weighted the same way
BLOCK_SECONDS = 0.4


@dataclass(frozen=True)
class LevelChange:
    """What :func:`normalize_loudness` did: the gain applied and the levels before and after."""

    gain_db: float
    loudness_before: float  # LUFS (-inf for digital silence)
    loudness_after: float
    true_peak_after: float  # dBFS
    peak_limited: bool  # the true-peak ceiling, not the loudness target, set the gain

    def to_dict(self) -> dict:
        return {
            "gain_db": round(self.gain_db, 3),
            "loudness_before_lufs": _finite_or_none(self.loudness_before),
            "loudness_lufs": _finite_or_none(self.loudness_after),
            "true_peak_dbfs": _finite_or_none(self.true_peak_after),
            "peak_limited": self.peak_limited,
        }


def _finite_or_none(value: float) -> float | None:
    return round(float(value), 3) if np.isfinite(value) else None


def integrated_loudness(wav: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """BS.1770 integrated loudness (LUFS) of a mono float waveform; ``-inf`` for silence."""
    import pyloudnorm

    wav = np.asarray(wav, dtype=np.float64).reshape(-1)
    if not np.any(wav):
        return float("-inf")
    block = min(BLOCK_SECONDS, len(wav) / sr)
    if block <= 0:
        return float("-inf")
    with np.errstate(divide="ignore"):
        return float(pyloudnorm.Meter(sr, block_size=block).integrated_loudness(wav))


def true_peak_dbfs(wav: np.ndarray, oversample: int = 4) -> float:
    """Peak level (dBFS) of ``wav`` upsampled ``oversample`` times (inter-sample peaks included)."""
    from scipy.signal import resample_poly

    wav = np.asarray(wav, dtype=np.float64).reshape(-1)
    if wav.size == 0:
        return float("-inf")
    peak = float(np.max(np.abs(resample_poly(wav, oversample, 1)))) if wav.size > 1 else float(abs(wav[0]))
    peak = max(peak, float(np.max(np.abs(wav))))
    with np.errstate(divide="ignore"):
        return float(20.0 * np.log10(peak)) if peak > 0 else float("-inf")


def normalize_loudness(
    wav: np.ndarray,
    sr: int = SAMPLE_RATE,
    target_lufs: float = TARGET_LUFS,
    true_peak_ceiling: float = TRUE_PEAK_DBFS,
) -> tuple[np.ndarray, LevelChange]:
    """``wav`` scaled to ``target_lufs`` (or less, so that its true peak stays at or under
    ``true_peak_ceiling`` dBFS), as float32, and the :class:`LevelChange` that did it.

    Digital silence is returned unchanged (gain 0 dB). The result never exceeds ±1 whatever the target.
    """
    for name, value in (("target_lufs", target_lufs), ("true_peak_ceiling", true_peak_ceiling)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not np.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if true_peak_ceiling > 0:
        raise ConfigError(f"true_peak_ceiling must be at most 0 dBFS, got {true_peak_ceiling}")
    wav = np.nan_to_num(np.asarray(wav, dtype=np.float64).reshape(-1), nan=0.0, posinf=0.0, neginf=0.0)
    before = integrated_loudness(wav, sr)
    peak = true_peak_dbfs(wav)
    if not np.isfinite(before) or not np.isfinite(peak):
        return wav.astype(np.float32), LevelChange(0.0, before, before, peak, False)
    gain = target_lufs - before
    limited = peak + gain > true_peak_ceiling
    if limited:
        gain = true_peak_ceiling - peak
    out = wav * 10.0 ** (gain / 20.0)
    # the true peak bounds every sample, so this only guards float rounding at the ceiling
    out = np.clip(out, -1.0, 1.0).astype(np.float32)
    return out, LevelChange(float(gain), before, before + gain, peak + gain, bool(limited))


def limit_peak(wav: np.ndarray, ceiling: float = 1.0) -> np.ndarray:
    """``wav`` scaled down (never up) so that no sample exceeds ``ceiling`` in magnitude; float32."""
    wav = np.asarray(wav, dtype=np.float32)
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    return wav * np.float32(ceiling / peak) if peak > ceiling else wav
