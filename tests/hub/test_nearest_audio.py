"""Nearest-training-chunk audio (``nearest/``): writing, plain-word names, reading through the model's files
(confined to the model), one-request prefetch from the Hub, and ``PECMAE.sonify(progress=...)``."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from pecmae_hub.hub.nearest_audio import (
    GM_SOLOS_SOURCES,
    describe_chunk,
    nearest_audio_path,
    prefetch_audio,
    read_index,
    redistribution_allowed,
    track_facts,
    write_nearest_audio,
)
from pecmae_hub.storage.integrity import write_checksums

SR = 24_000


def fake_track(track: str) -> np.ndarray:
    """2 s of a tone whose pitch depends on the track name (deterministic)."""
    t = np.arange(2 * SR) / SR
    return (0.2 * np.sin(2 * np.pi * (200 + 10 * (sum(map(ord, track)) % 50)) * t)).astype(np.float32)


@pytest.fixture
def model_with_audio(tiny_model_dir, tmp_path):
    """The tiny model, copied, with ``nearest/`` written from :func:`fake_track` (1 s chunks)."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    table = json.loads((folder / "nearest.json").read_text())
    index = write_nearest_audio(folder, table, fake_track, 1.0, per_prototype=2, licence="test audio")
    write_checksums(folder)
    return folder, table, index


def test_plain_words_for_gm_solos_and_other_layouts():
    facts = track_facts("csound/violin/csound_violin_00059.wav", 1, 1.5, GM_SOLOS_SOURCES)
    assert facts == {"label": "violin", "source": "Csound bank", "clip": 59, "start": 1.5, "end": 3.0}
    assert describe_chunk(facts) == "violin, Csound bank, clip 59, 1.5–3.0 s"
    assert describe_chunk(track_facts("blues/blues.00012.wav", 2, 3.0)) == "blues, clip 12, 6.0–9.0 s"
    assert describe_chunk(track_facts("a.wav", 0, 1.0)) == "clip a, 0.0–1.0 s"
    assert redistribution_allowed("gm-solos") and not redistribution_allowed("gtzan")
    assert not redistribution_allowed("something-else")


def test_write_then_read_through_the_model(model_with_audio):
    from pecmae_hub.pipeline import PECMAE

    folder, table, index = model_with_audio
    n_protos = len(table["prototypes"])
    assert len(index["entries"]) == 2 * n_protos and index["licence"] == "test audio"
    model = PECMAE.from_pretrained(folder, device="cpu")
    for proto in table["prototypes"][:2]:
        for rank, row in enumerate(proto["nearest"][:2]):
            path = model.nearest_audio_path(proto["index"], rank)
            wav, sr = sf.read(path, dtype="float32")
            expected = fake_track(row["track"])[row["chunk"] * SR : (row["chunk"] + 1) * SR]
            assert sr == SR and wav.shape == (SR,)
            np.testing.assert_allclose(wav, expected, atol=1.5 / 32768)  # 16-bit PCM
    assert model.nearest_audio_path(0, 5) is None  # only two ranks ship
    assert model.nearest_audio_index["entries"][0]["file"] == "p000_r0.wav"


def test_missing_tracks_degrade_to_text_and_paths_stay_inside(model_with_audio, tmp_path):
    from pecmae_hub.errors import CheckpointError
    from pecmae_hub.hub.files import ModelFiles

    folder, table, _ = model_with_audio
    index = write_nearest_audio(tmp_path / "partial", table, lambda t: None if t == "a.wav" else fake_track(t), 1.0)
    assert index["entries"] and all(e["track"] != "a.wav" for e in index["entries"])
    files = ModelFiles(folder=folder)
    evil = {"entries": [{"prototype": 0, "rank": 0, "file": "../../etc/passwd"}]}
    with pytest.raises(CheckpointError, match="not a path inside the model"):
        nearest_audio_path(files, evil, 0, 0)
    assert read_index(ModelFiles(folder=tmp_path)) is None  # a model without nearest/


def test_prefetch_fetches_all_audio_in_one_call(hub, model_with_audio):
    from pecmae_hub.hub.files import ModelFiles

    folder, _, _ = model_with_audio
    hub.add_folder("org/near", folder)
    files = ModelFiles(repo_id="org/near")
    files.get("config.json")  # pins the commit
    listings = hub.count("GET", "/api/models/org/near")
    assert prefetch_audio(files)
    assert hub.count("GET", "/api/models/org/near") == listings + 1  # one listing, then the files
    hub.stop()  # everything is cached now: reading needs no Hub
    offline = ModelFiles(repo_id="org/near", revision=files.commit, local_files_only=True)
    index = read_index(offline)
    for entry in index["entries"]:
        assert nearest_audio_path(offline, index, entry["prototype"], entry["rank"]).is_file()
    for wav in folder.glob("prototypes/*.wav"):
        assert offline.get(f"prototypes/{wav.name}").is_file()
    assert not prefetch_audio(ModelFiles(folder=folder))  # folders need no prefetch


def test_sonify_reports_every_diffusion_step(tiny_model_dir, one_thread):
    from pecmae_hub.pipeline import PECMAE

    model = PECMAE.from_pretrained(tiny_model_dir, device="cpu")
    calls = []
    wav = model.sonify("violin:1", steps=3, guidance=1.0, seed=5, progress=lambda i, n: calls.append((i, n)))
    assert calls == [(1, 3), (2, 3), (3, 3)] and wav.shape == (SR,)
    calls.clear()
    model.sonify("violin:1", steps=2, guidance=1.0, seed=0, progress=lambda i, n: calls.append((i, n)))
    assert calls == []  # the pre-rendered file: no steps to report


def test_resaving_the_embedded_model_keeps_its_nearest_chunk_audio(tmp_path):
    from pecmae_hub.pipeline import PECMAE

    model = PECMAE.from_pretrained("gm-solos", device="cpu")
    model.save_pretrained(tmp_path / "copy")
    again = PECMAE.from_pretrained(tmp_path / "copy", device="cpu")
    path = again.nearest_audio_path(("violin", 0))
    assert path is not None and path.is_file()
    assert path.read_bytes() == model.nearest_audio_path(("violin", 0)).read_bytes()
