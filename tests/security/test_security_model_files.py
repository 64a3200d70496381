"""Attack and fault cases on model files (issue 20): nothing unverifiable, non-finite or out-of-model is loaded.

D2 NaN/Inf weights, D3 folders without (complete) checksums, D4 autoencoder references that point
anywhere, D11 links in a save target, D16 malformed model JSON.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import LABELS, tiny_autoencoder, tiny_pecmae
from safetensors.torch import load_file, save_file

from pecmae_hub import errors
from pecmae_hub.app.models import ModelManager, ModelUnavailable
from pecmae_hub.cli import main
from pecmae_hub.errors import CheckpointError, ConfigError, ModelNotFoundError, PecmaeError
from pecmae_hub.models.autoencoder import Autoencoder
from pecmae_hub.models.ood import OODScorer
from pecmae_hub.pipeline import PECMAE
from pecmae_hub.storage.integrity import CHECKSUMS_NAME, write_checksums
from pecmae_hub.storage.pretrained import copy_model_folder

pytestmark = pytest.mark.usefixtures("one_thread")
TONE = (0.3 * np.sin(np.arange(36_000) / 7)).astype(np.float32)


def _edit_weights(path: Path, edit) -> None:
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path))


@pytest.fixture
def model_dir(tmp_path, make_tiny_model) -> Path:
    return make_tiny_model(seed=3, render=True, folder=tmp_path / "m")


# ---- D2 ----------------------------------------------------------------------------------------
def test_d2_nan_or_inf_weights_are_refused_at_load_naming_the_tensor(model_dir, tmp_path, capsys):
    good = PECMAE.from_pretrained(model_dir).classify(TONE, sr=24_000)
    assert np.isfinite(list(good.scores.values())).all()

    def nan_prototype(state):
        state["protos"][1, 0, 3] = float("nan")

    _edit_weights(model_dir / "model.safetensors", nan_prototype)
    write_checksums(model_dir)  # consistent checksums: a diverged training, or a publisher who lists them
    with pytest.raises(CheckpointError, match=r"tensor 'protos' in .*model.safetensors holds 1 NaN or infinite"):
        PECMAE.from_pretrained(model_dir)
    args = ["classify", "--model", str(model_dir), "--out", str(tmp_path / "p.csv"), "--no-progress"]
    sf_path = tmp_path / "clip.wav"
    import soundfile as sf

    sf.write(sf_path, TONE, 24_000)
    assert main([args[0], str(sf_path), *args[1:]]) == 1  # no row with a made-up label, exit status 1
    assert "'protos'" in capsys.readouterr().err and not (tmp_path / "p.csv").exists()
    with pytest.raises(ModelUnavailable, match="holds 1 NaN or infinite"):
        ModelManager(str(model_dir)).get()
    ae_dir = tmp_path / "ae"
    tiny_autoencoder().save_pretrained(ae_dir)
    _edit_weights(ae_dir / "model.safetensors", lambda s: s[next(iter(sorted(s)))].view(-1).__setitem__(0, np.inf))
    write_checksums(ae_dir, ["config.json", "model.safetensors"])
    with pytest.raises(CheckpointError, match=r"tensor '.+' in .* holds 1 NaN or infinite value"):
        Autoencoder.from_pretrained(ae_dir)


def test_d2_no_prediction_with_non_finite_scores_or_ood_score():
    model = tiny_pecmae()
    with torch.no_grad():
        model.head.linear.weight[0, 0] = float("nan")  # a model built in memory: no load-time check
    with pytest.raises(errors.NumericalError, match="not finite numbers.*no answer is given"):
        model.classify(TONE, sr=24_000)
    (failure,) = model.classify([TONE], sr=24_000)
    assert not failure.ok and failure.error == "NumericalError"
    model = tiny_pecmae()
    dim = model.head.embedding_dim
    model.ood = OODScorer(torch.zeros(len(LABELS), dim), 1e30 * torch.eye(dim), 1.0, labels=list(LABELS))
    with pytest.raises(errors.NumericalError):  # a finite scorer whose score overflows to inf: no in_domain verdict
        model.classify(TONE, sr=24_000)


# ---- D3 ----------------------------------------------------------------------------------------
def test_d3_a_folder_without_checksums_loads_only_with_verify_false(model_dir, tmp_path, capsys):
    (model_dir / CHECKSUMS_NAME).unlink()
    with pytest.raises(CheckpointError, match=r"has no checksums.json, so config.json cannot be verified.*=False"):
        PECMAE.from_pretrained(model_dir)
    with pytest.warns(UserWarning, match="without verifying its files"):
        assert PECMAE.from_pretrained(model_dir, verify=False).classify(TONE, sr=24_000).label in LABELS
    import soundfile as sf

    sf.write(tmp_path / "clip.wav", TONE, 24_000)
    args = ["classify", str(tmp_path / "clip.wav"), "--model", str(model_dir), "--no-progress"]
    assert main(args) == 1 and "--no-verify" in capsys.readouterr().err
    assert main([*args, "--no-verify"]) == 0


def test_d3_an_edited_file_missing_from_checksums_is_refused(model_dir):
    """The attack: weights edited (violin -> clarinet) and their entry dropped so that nothing is compared."""
    before = PECMAE.from_pretrained(model_dir).classify(TONE, sr=24_000)

    def swap_classes(state):  # logits of class c become those of class c - 1: another argmax
        for key in ("linear.weight", "linear.bias"):
            state[key] = state[key].roll(1, 0).contiguous()

    _edit_weights(model_dir / "model.safetensors", swap_classes)
    manifest = json.loads((model_dir / CHECKSUMS_NAME).read_text())
    del manifest["files"]["model.safetensors"]
    (model_dir / CHECKSUMS_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"model.safetensors in .* is not listed in .*checksums.json"):
        PECMAE.from_pretrained(model_dir)
    with pytest.warns(UserWarning):
        assert PECMAE.from_pretrained(model_dir, verify=False).classify(TONE, sr=24_000).label != before.label


def test_d3_folders_we_write_carry_complete_checksums(model_dir, tmp_path):
    """save_pretrained, render_prototypes into a saved model, and bundling an autoencoder all keep it verifiable."""
    model = PECMAE.from_pretrained(model_dir)
    model.render_prototypes(model_dir, steps=3, seed=5)  # new WAVs in a saved model: listed
    assert PECMAE.from_pretrained(model_dir).prototype_audio_path(0, steps=3, seed=5) is not None
    copied = copy_model_folder(model_dir / "autoencoder", tmp_path / "bundle" / "autoencoder")
    assert Autoencoder.from_pretrained(copied).fingerprint() == model.autoencoder.fingerprint()
    (model_dir / "autoencoder" / "model.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(CheckpointError, match="does not match the SHA-256"):  # never launders a damaged source
        copy_model_folder(model_dir / "autoencoder", tmp_path / "other")


# ---- D4 ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "reference",
    [
        {"repo_id": "{outside}"},
        {"repo_id": "~/ae"},
        {"name": "{outside}"},
        {"name": "~/ae"},
        {"name": "org/ae"},  # an existing relative folder, spelled like a repo id
        {"path": "{outside}"},
        {"path": "~/ae"},
        {"path": "../outside/ae"},
        {"path": "C:\\ae"},
    ],
)
def test_d4_an_autoencoder_reference_never_leaves_the_model(model_dir, tmp_path, monkeypatch, reference):
    outside = tmp_path / "outside" / "ae"
    tiny_autoencoder().save_pretrained(outside)  # a valid autoencoder elsewhere on the server
    monkeypatch.setenv("HOME", str(tmp_path / "outside"))
    monkeypatch.chdir(tmp_path)
    tiny_autoencoder().save_pretrained(tmp_path / "org" / "ae")
    config = json.loads((model_dir / "config.json").read_text())
    ref = {k: str(v).replace("{outside}", str(outside)) for k, v in reference.items()}
    config["autoencoder"] = {**{k: None for k in ("path", "repo_id", "name")}, **ref}
    (model_dir / "config.json").write_text(json.dumps(config))
    write_checksums(model_dir)
    with pytest.raises(ConfigError, match="autoencoder (repo_id|name|path) .* (is not|must be)"):
        PECMAE.from_pretrained(model_dir)


def test_d4_a_repo_id_is_never_read_from_a_local_folder(hub, model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny_autoencoder().save_pretrained(tmp_path / "org" / "ae")  # ./org/ae exists on this machine
    config = json.loads((model_dir / "config.json").read_text())
    config["autoencoder"] = {"repo_id": "org/ae", "path": None, "fingerprint": None}
    (model_dir / "config.json").write_text(json.dumps(config))
    write_checksums(model_dir)
    with pytest.raises(ModelNotFoundError, match="Hub repo 'org/ae' not found"):  # asked of the Hub, not the disk
        PECMAE.from_pretrained(model_dir)


# ---- D11 ---------------------------------------------------------------------------------------
def test_d11_save_pretrained_never_writes_through_links(model_dir, tmp_path):
    model = PECMAE.from_pretrained(model_dir)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "notes.md").write_text("keep me")
    for link in ("prototypes", "README.md", "nearest.json/x"):
        target = tmp_path / "target"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        first = link.split("/")[0]
        (target / first).symlink_to(outside / "notes.md" if first == "README.md" else outside)
        with pytest.raises(ConfigError, match=rf"refusing to write into .*{first} -> .*is a symbolic link"):
            model.save_pretrained(target)
    render_target = tmp_path / "render-target"
    render_target.mkdir()
    (render_target / "prototypes").symlink_to(outside)
    with pytest.raises(ConfigError, match="prototypes"):
        model.render_prototypes(render_target, steps=2)
    assert sorted(p.name for p in outside.iterdir()) == ["notes.md"]  # nothing written outside
    assert (outside / "notes.md").read_text() == "keep me"


# ---- D16 ---------------------------------------------------------------------------------------
MALFORMED = [
    ("config.json", "temperature", "x"),
    ("config.json", "embedding_dim", "x"),
    ("config.json", "version", float("inf")),
    ("autoencoder/config.json", "model_dim", []),
    ("pecmae.json", None, "just text"),
    ("pecmae.json", "dataset", [None]),
    ("metrics.json", None, ["not", "an", "object"]),
    ("nearest.json", "prototypes", "x"),
    ("prototypes/index.json", "steps", []),
    ("prototypes/index.json", "guidance", None),
    ("prototypes/index.json", "prototypes", [{"index": 0, "file": "index.json"}]),  # not audio
    ("ood.json", "labels", -1),
    ("ood.json", "thresholds", "x"),
]


@pytest.fixture(scope="module")
def full_model_dir(tmp_path_factory) -> Path:
    """A tiny model with every JSON file a model can hold (nearest audio and an OOD scorer included)."""
    from pecmae_hub.hub.nearest_audio import write_nearest_audio
    from pecmae_hub.training.nearest import nearest_training_chunks

    model = tiny_pecmae(seed=4)
    rng = np.random.default_rng(0)
    feats = [model.autoencoder.encode(0.1 * rng.standard_normal(48_000), sr=24_000).numpy() for _ in range(2)]
    model.nearest = nearest_training_chunks(model.head, feats, ["a.wav", "b.wav"], k=2)
    model.metrics = {"split": "test", "accuracy": 0.5}
    dim = model.head.embedding_dim
    model.ood = OODScorer(torch.zeros(len(LABELS), dim), torch.eye(dim), [9.0, 8.0], labels=list(LABELS))
    folder = model.save_pretrained(tmp_path_factory.mktemp("full") / "m", render=True, steps=2)
    write_nearest_audio(folder, model.nearest, lambda track: 0.2 * np.sin(np.arange(48_000) / 9), 1.0, sources={})
    write_checksums(folder)
    return folder


@pytest.mark.parametrize("filename, key, value", MALFORMED, ids=[f"{f}:{k}" for f, k, _ in MALFORMED])
def test_d16_malformed_model_json_is_a_typed_error_naming_the_file(full_model_dir, tmp_path, filename, key, value):
    folder = tmp_path / "m"
    shutil.copytree(full_model_dir, folder)
    data = json.loads((folder / filename).read_text())
    if key is None:
        data = value
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        data[key] = [{**value[0], "label": "violin", "k": 0}]
    else:
        data[key] = value
    (folder / filename).write_text(json.dumps(data))
    write_checksums(folder)  # consistent checksums: the file is as its publisher wrote it
    with pytest.raises(PecmaeError) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = PECMAE.from_pretrained(folder)
        pred = model.classify(TONE, sr=24_000)
        model.explain(pred)
        model.sonify(0)
        model.nearest_audio_path(0, 0)
        model.save_pretrained(tmp_path / "copy")
    assert isinstance(info.value, (CheckpointError, ConfigError))
    shown = Path(filename).name if filename != "prototypes/index.json" else "index.json"
    assert shown in str(info.value) or (key and key in str(info.value))
