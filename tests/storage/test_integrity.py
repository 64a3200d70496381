"""Weights you can trust: checksums written on save, checked on load, Hub blobs checked against their digest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_autoencoder, tiny_pecmae

from pecmae_hub.errors import CheckpointError
from pecmae_hub.models.autoencoder import Autoencoder
from pecmae_hub.pipeline import PECMAE
from pecmae_hub.storage.integrity import CHECKSUMS_NAME, sha256_file


def _flip(path: Path, offset: int = -200, n: int = 64) -> None:
    data = bytearray(path.read_bytes())
    for i in range(n):
        data[offset + i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_save_pretrained_records_every_file_it_writes(tmp_path):
    folder = tiny_pecmae().save_pretrained(tmp_path / "m", render=True, steps=2)
    listed = json.loads((folder / CHECKSUMS_NAME).read_text())["files"]
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS_NAME}
    assert set(listed) == on_disk and "autoencoder/model.safetensors" in listed
    assert any(name.startswith("prototypes/") and name.endswith(".wav") for name in listed)
    assert listed["model.safetensors"]["sha256"] == sha256_file(folder / "model.safetensors")


def test_flipped_weight_bytes_are_refused_naming_the_file(tmp_path):
    folder = tiny_pecmae().save_pretrained(tmp_path / "m")
    PECMAE.from_pretrained(folder, device="cpu")  # intact: loads
    _flip(folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model.safetensors in .* does not match the SHA-256"):
        PECMAE.from_pretrained(folder, device="cpu")
    ae_dir = tmp_path / "ae"
    tiny_autoencoder().save_pretrained(ae_dir)
    _flip(ae_dir / "model.safetensors")
    with pytest.raises(CheckpointError, match="corrupted or was modified"):
        Autoencoder.from_pretrained(ae_dir)


def test_edited_config_and_prototype_audio_are_refused(tmp_path):
    folder = tiny_pecmae().save_pretrained(tmp_path / "m", render=True, steps=2)
    wav = sorted((folder / "prototypes").glob("*.wav"))[0]
    _flip(wav, offset=100, n=8)
    model = PECMAE.from_pretrained(folder, device="cpu")
    with pytest.raises(CheckpointError, match=wav.name):
        model.sonify(0, steps=2)
    config = json.loads((folder / "config.json").read_text())
    config["temperature"] = 5.0
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="config.json"):
        PECMAE.from_pretrained(folder, device="cpu")


def test_corrupted_hub_cache_blob_is_refused(hub, tmp_path, _isolated_hf_cache):
    tiny_autoencoder().save_pretrained(tmp_path / "ae")
    hub.add_folder("org/ae", tmp_path / "ae")
    Autoencoder.from_pretrained("org/ae")
    blob = next(p for p in _isolated_hf_cache.rglob("blobs/*") if len(p.name) == 64)
    _flip(blob)
    from pecmae_hub.storage.integrity import _digests

    _digests.clear()
    with pytest.raises(CheckpointError, match=r"does not match the Hub's digest.*force_download=True"):
        Autoencoder.from_pretrained("org/ae")
    assert Autoencoder.from_pretrained("org/ae", force_download=True).embedding_dim == 32


def test_repeated_loads_do_not_rehash(tmp_path, monkeypatch):
    folder = tiny_pecmae().save_pretrained(tmp_path / "m")
    PECMAE.from_pretrained(folder, device="cpu")
    import hashlib
    import types

    from pecmae_hub.storage import integrity

    calls = []
    counting = types.SimpleNamespace(
        sha256=lambda *a: calls.append("sha256") or hashlib.sha256(*a),
        sha1=lambda *a: calls.append("sha1") or hashlib.sha1(*a),
    )
    monkeypatch.setattr(integrity, "hashlib", counting)
    PECMAE.from_pretrained(folder, device="cpu")
    assert calls == []
    (folder / "model.safetensors").touch()  # a new mtime: verified again
    PECMAE.from_pretrained(folder, device="cpu")
    assert calls == ["sha256"]
