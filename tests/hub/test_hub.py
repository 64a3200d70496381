"""Registry, model files, model cards and push_to_hub against the local Hub server."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import LABELS, tiny_pecmae

from pecmae_hub.errors import ModelNotFoundError
from pecmae_hub.hub import registry as hubmod
from pecmae_hub.hub.files import ModelFiles
from pecmae_hub.hub.registry import DEFAULT_MODEL, ORG_ENV, known_names, resolve_model
from pecmae_hub.pipeline import PECMAE


def test_registry_short_names_and_org_variable(monkeypatch):
    assert known_names() == ["gm-solos", "gtzan", "medley-solos-db"]
    assert resolve_model("gtzan") == ("hub", "pecmae-hub/gtzan-pecmae-5", None)
    assert resolve_model("medley-solos-db", "v2") == ("hub", "pecmae-hub/medley-solos-db-pecmae-20", "v2")
    monkeypatch.setenv(ORG_ENV, "my-lab")
    assert resolve_model("gtzan")[1] == "my-lab/gtzan-pecmae-5"
    assert resolve_model("someone/model") == ("hub", "someone/model", None)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ModelNotFoundError) as info:
        PECMAE.from_pretrained("gtzann")
    for name in ("gtzan", "medley-solos-db", "gm-solos", "gtzann"):
        assert name in str(info.value)


def test_registry_name_missing_on_the_hub(hub, monkeypatch):
    monkeypatch.setenv(ORG_ENV, "test-org")
    with pytest.raises(
        ModelNotFoundError, match=r"'test-org/gtzan-pecmae-5' not found.*registry model 'gtzan'"
    ) as info:
        PECMAE.from_pretrained("gtzan")
    assert ORG_ENV in str(info.value)


def test_registry_name_downloads_from_the_org(hub, tiny_model_dir, monkeypatch, audio_files):
    monkeypatch.setenv(ORG_ENV, "test-org")
    hub.add_folder("test-org/gtzan-pecmae-5", tiny_model_dir)
    model = PECMAE.from_pretrained("gtzan")
    assert model.labels == list(LABELS) and model._files.repo_id == "test-org/gtzan-pecmae-5"
    assert model.classify(audio_files["ogg"]).label in LABELS


def test_embedded_model_missing_then_found(tiny_model_dir, tmp_path, monkeypatch, audio_files):
    wheel, source = tmp_path / "pkg" / "checkpoints" / "gm-solos", tmp_path / "src" / "checkpoints" / "gm-solos"
    monkeypatch.setattr(hubmod, "embedded_candidates", lambda name=DEFAULT_MODEL: [wheel, source])
    with pytest.raises(ModelNotFoundError, match="embedded model 'gm-solos' is not installed") as info:
        PECMAE.from_pretrained("gm-solos")
    assert str(wheel) in str(info.value) and str(source) in str(info.value)
    shutil.copytree(tiny_model_dir, source)
    model = PECMAE.from_pretrained()  # the default model needs no network
    assert model._files.folder == source and model.name == "tiny-0"
    shutil.copytree(tiny_model_dir, wheel)
    assert PECMAE.from_pretrained("gm-solos")._files.folder == wheel  # the wheel location wins


def test_model_files_pin_the_commit(hub, tiny_model_dir):
    sha = hub.add_folder("org/tiny", tiny_model_dir)
    files = ModelFiles(repo_id="org/tiny")
    assert files.commit is None
    files.get("config.json")
    assert files.commit == sha and files.describe() == f"org/tiny@{sha}"
    hub.add_files("org/tiny", {"config.json": b"{}"})  # main moves on; the pinned files do not
    assert json.loads(files.get("config.json").read_text())["labels"] == list(LABELS)
    assert files.get("absent.json", required=False) is None
    before = len(hub.requests)
    assert files.get("absent.json", required=False) is None  # known absent at this commit: no request
    assert len(hub.requests) == before
    assert files.child("autoencoder").get("config.json").parent.name == "autoencoder"


def test_model_card(make_tiny_model):
    from huggingface_hub import ModelCard

    folder = make_tiny_model(seed=4, metrics={"split": "fold 1 test", "accuracy": 0.75, "macro_f1": 0.7})
    card = ModelCard.load(folder / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "pecmae-hub" and data["pipeline_tag"] == "audio-classification"
    assert data["license"] == "mit" and "datasets" not in data  # "tiny-set" is no Hub dataset id
    assert {"pecmae", "prototype-learning", "audio"} <= set(data["tags"])
    results = data["model-index"][0]["results"][0]
    assert results["dataset"]["split"] == "fold 1 test"
    assert {m["type"]: m["value"] for m in results["metrics"]} == {"accuracy": 0.75, "f1": 0.7}
    text = card.text
    for needle in (
        "PECMAE",
        "fold 1 test",
        "violin, piano, flute",
        "PECMAE.from_pretrained",
        "prototypes/",
        "pecmae sonify",
        "pecmae classify",
    ):
        assert needle in text


def test_model_card_base_model_is_the_autoencoder_repo(tmp_path):
    model = tiny_pecmae(seed=5)
    model.save_pretrained(tmp_path / "m", autoencoder_repo_id="org/ae", autoencoder_revision="v1")
    front = (tmp_path / "m" / "README.md").read_text().split("---")[1]
    assert "base_model: org/ae" in front and "model-index" not in front
    assert not (tmp_path / "m" / "autoencoder").exists()
    spec = json.loads((tmp_path / "m" / "config.json").read_text())["autoencoder"]
    assert (spec["repo_id"], spec["revision"], spec["path"]) == ("org/ae", "v1", None)


def test_push_to_hub_round_trip(hub, audio_files):
    model = tiny_pecmae(seed=6)
    model.metrics = {"accuracy": 0.9}
    sha = model.push_to_hub("org/pushed", steps=2)
    repo = hub.repos["org/pushed"]
    assert repo.branches["main"] == sha and not repo.private
    files = set(repo.commits[sha])
    assert {
        "README.md",
        "config.json",
        "model.safetensors",
        "pecmae.json",
        "metrics.json",
        "prototypes/index.json",
        "prototypes/p000_violin_0.wav",
        "autoencoder/config.json",
        "autoencoder/model.safetensors",
    } <= files
    assert "library_name: pecmae-hub" in repo.commits[sha]["README.md"].decode()
    loaded = PECMAE.from_pretrained("org/pushed")
    for key in ("wav", "flac", "ogg"):
        a, b = model.classify(audio_files[key]), loaded.classify(audio_files[key])
        assert a.scores == b.scores and a.similarities == b.similarities and a.top_prototypes == b.top_prototypes
    assert loaded.prototype_audio_path("flute:1", steps=2) is not None
    np.testing.assert_allclose(
        loaded.sonify("flute:1", steps=2), np.clip(model.sonify("flute:1", steps=2), -1, 1), atol=1.5 / 32767
    )


def test_push_private_branch_with_token(hub, monkeypatch, audio_files):
    model = tiny_pecmae(seed=7)
    sha = model.push_to_hub("org/private", private=True, revision="dev", token="secret", render=False)
    repo = hub.repos["org/private"]
    assert repo.private and repo.branches["dev"] == sha and repo.branches["main"] != sha
    with pytest.raises(ModelNotFoundError, match="'org/private' not found"):
        PECMAE.from_pretrained("org/private", revision="dev")
    monkeypatch.setenv("HF_TOKEN", "secret")
    loaded = PECMAE.from_pretrained("org/private", revision="dev")
    assert loaded.classify(audio_files["ogg"]).scores == model.classify(audio_files["ogg"]).scores
    assert loaded.prototype_audio_path(0) is None  # render=False: decoded on demand


def test_save_in_place_with_training_metrics(make_tiny_model, tmp_path):
    """The packaging flow: load a trained folder, render into it, save it in place."""
    folder = make_tiny_model(
        seed=8,
        folder=tmp_path / "pkg",
        metrics={
            "seed": 0,
            "steps": 10,
            "best_step": 4,
            "val": {"accuracy": 0.5, "n_tracks": 4},
            "test": {"accuracy": 0.8, "macro_f1": 0.75, "n_tracks": 9, "per_class": {}},
        },
    )
    model = PECMAE.from_pretrained(folder)
    assert model.render_settings is None
    model.render_prototypes(folder, steps=2, seed=1)
    model.name, model.info["dataset"] = "gm-solos", "gm-solos"
    model.save_pretrained(folder)
    reloaded = PECMAE.from_pretrained(folder)
    assert reloaded.name == "gm-solos" and reloaded.render_settings["seed"] == 1
    assert reloaded.prototype_audio_path(0, steps=2, seed=1).parent == folder / "prototypes"
    front = (folder / "README.md").read_text().split("---")[1]
    assert "split: test" in front and "value: 0.8" in front and "value: 0.75" in front and "n_tracks" not in front
    assert "seed 1" in (folder / "README.md").read_text()
