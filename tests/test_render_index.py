"""Pre-rendered prototype audio is keyed on the prototypes, the decoder and the settings (never stale), and
its index records the vocoder and the loudness normalisation of every render."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from pecmae_hub.loudness import integrated_loudness
from pecmae_hub.pipeline import PECMAE


@pytest.fixture
def model_dir(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    return folder


def _index(folder):
    return json.loads((folder / "prototypes" / "index.json").read_text())


def test_index_records_vocoder_keys_and_gain(model_dir):
    index = _index(model_dir)
    assert index["version"] == 2 and index["vocoder"] == "griffin-lim" and index["loudness_lufs"] == -20.0
    assert index["decoder_fingerprint"] and index["autoencoder_fingerprint"]
    keys = set()
    for entry in index["prototypes"]:
        assert isinstance(entry["gain_db"], float) and entry["true_peak_dbfs"] <= -1.0 + 1e-3
        import soundfile as sf

        wav, sr = sf.read(model_dir / "prototypes" / entry["file"], dtype="float32")
        assert np.max(np.abs(wav)) < 1.0
        assert abs(integrated_loudness(wav, sr) - entry["loudness_lufs"]) < 0.1  # 16-bit rounding only
        keys.add(entry["key"])
    assert len(keys) == len(index["prototypes"])  # one key per prototype


def test_a_changed_head_never_plays_or_copies_the_old_renders(model_dir, tmp_path, monkeypatch):
    model = PECMAE.from_pretrained(model_dir)
    assert model.prototype_audio_path(0, steps=2) is not None
    with torch.no_grad():
        model.head.protos[0].add_(0.5)  # prototype 0 moves; the others stay
    assert model.prototype_audio_path(0, steps=2) is None
    assert model.prototype_audio_path(1, steps=2) is not None
    calls = []
    real = model.autoencoder.decode_with_level
    monkeypatch.setattr(model.autoencoder, "decode_with_level", lambda *a, **k: calls.append(1) or real(*a, **k))
    model.sonify(0, steps=2)
    assert calls == [1]  # decoded from the new prototype, not read from the old file
    out = model.save_pretrained(tmp_path / "resaved")
    files = {e["index"]: e["file"] for e in _index(out)["prototypes"]}
    assert 0 not in files and set(files) == set(range(1, model.head.num_prototypes))
    assert not (out / "prototypes" / "p000_violin_0.wav").exists()
    again = PECMAE.from_pretrained(out)
    assert again.prototype_audio_path(0, steps=2) is None and again.prototype_audio_path(1, steps=2) is not None


def test_a_retrained_decoder_invalidates_every_render(model_dir, tmp_path):
    model = PECMAE.from_pretrained(model_dir)
    with torch.no_grad():
        next(model.autoencoder.denoiser.parameters()).add_(1e-3)
    assert model.autoencoder.fingerprint() == PECMAE.from_pretrained(model_dir).autoencoder.fingerprint()
    assert all(model.prototype_audio_path(p, steps=2) is None for p in range(model.head.num_prototypes))
    out = model.save_pretrained(tmp_path / "resaved")
    assert not (out / "prototypes" / "index.json").exists()


def test_format_1_index_is_trusted_only_for_the_prototypes_it_shipped_with(model_dir, tmp_path):
    index = _index(model_dir)
    legacy = {k: index[k] for k in ("sample_rate", "steps", "guidance", "seed", "scheduler")}
    legacy.update(
        version=1,
        autoencoder_fingerprint=PECMAE.from_pretrained(model_dir).autoencoder.legacy_fingerprint(),
        prototypes=[{k: e[k] for k in ("index", "label", "k", "file")} for e in index["prototypes"]],
    )
    (model_dir / "prototypes" / "index.json").write_text(json.dumps(legacy))
    from pecmae_hub.storage.integrity import write_checksums

    write_checksums(model_dir)
    model = PECMAE.from_pretrained(model_dir)
    # format 1 had no loudness normalisation and Griffin-Lim only: these settings name those renders
    assert model.prototype_audio_path(2, steps=2, loudness=None) is not None
    with torch.no_grad():
        model.head.protos[2].add_(0.5)
    assert model.prototype_audio_path(2, steps=2, loudness=None) is None


def test_docs_list_exactly_the_index_fields(model_dir):
    """docs/hub.md's row for prototypes/index.json names every field the code writes, and no other."""
    import re
    from pathlib import Path

    row = next(
        line
        for line in (Path(__file__).parent.parent / "docs" / "hub.md").read_text().splitlines()
        if line.startswith("| `prototypes/index.json`")
    )
    settings_part, entries_part = row.split("prototypes: [", 1)
    documented_top = set(re.findall(r"`(\w+)`", settings_part)) | {"version", "prototypes"}
    documented_entry = set(re.findall(r'"(\w+)"', entries_part.split("]", 1)[0]))
    index = _index(model_dir)
    assert set(index) == documented_top
    assert set().union(*(set(e) for e in index["prototypes"])) == documented_entry


def test_temperature_is_a_render_setting(model_dir):
    """The starting-noise scale changes the audio, is part of the render key, and is checked."""
    from pecmae_hub.errors import ConfigError

    model = PECMAE.from_pretrained(model_dir)
    assert model.default_temperature() == 1.0 and _index(model_dir)["temperature"] == 1.0
    assert model.prototype_audio_path(0, steps=2) is not None
    assert model.prototype_audio_path(0, steps=2, temperature=0.5) is None
    cold = model.sonify(0, steps=2, temperature=0.5)
    assert not np.allclose(cold, model.sonify(0, steps=2)) and np.max(np.abs(cold)) <= 1.0
    for bad in (0, -1.0, 3.0, "warm"):
        with pytest.raises(ConfigError, match="temperature must be"):
            model.sonify(0, steps=2, temperature=bad)
