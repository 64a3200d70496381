"""PECMAE pipeline: input kinds, Prediction content and JSON, sonification, errors, Hub loading over HTTP."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import LABELS, tiny_autoencoder, tiny_pecmae

from pecmae_hub.errors import AudioError, ConfigError, ModelNotFoundError
from pecmae_hub.hub.files import clear_cache
from pecmae_hub.pipeline import PECMAE, Prediction, explain


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return PECMAE.from_pretrained(tiny_model_dir, device="cpu")


def _same(a: Prediction, b: Prediction, tol: float = 1e-5) -> None:
    assert a.label == b.label and a.chunk_labels == b.chunk_labels
    for c in a.scores:
        assert a.scores[c] == pytest.approx(b.scores[c], abs=tol)
    np.testing.assert_allclose(a.similarities, b.similarities, atol=tol)


# ---- classify ------------------------------------------------------------------------------------
def test_prediction_content(model, audio_files):
    pred = model.classify(audio_files["wav"])
    n = math.ceil(2.5)  # 1 s chunks, trailing partial chunk kept
    assert pred.source == str(audio_files["wav"]) and pred.model == model.name
    assert pred.duration == pytest.approx(2.5, abs=1e-3)
    assert pred.chunk_starts == [0.0, 1.0, 2.0] and pred.chunk_ends == pytest.approx([1.0, 2.0, 2.5], abs=1e-3)
    assert len(pred.chunk_labels) == n and set(pred.chunk_labels) <= set(LABELS)
    assert list(pred.scores) == list(LABELS) and sum(pred.scores.values()) == pytest.approx(1.0, abs=1e-6)
    assert pred.label == max(pred.scores, key=pred.scores.get)
    # scores = softmax(mean chunk logits); logits = sum of contributions + bias
    logits = np.array([pred.logits[c] for c in LABELS])
    np.testing.assert_allclose(np.exp(logits) / np.exp(logits).sum(), list(pred.scores.values()), rtol=1e-5)
    bias = model.head.linear.bias.detach().numpy()
    contrib = np.array([pred.contributions[c] for c in LABELS])
    assert contrib.shape == (3, 6) and np.asarray(pred.similarities).shape == (n, 6)
    np.testing.assert_allclose(contrib.sum(1) + bias, logits, atol=1e-5)
    # top prototypes: the largest contributions to the predicted class, with their nearest samples
    top = pred.top_prototypes
    assert len(top) == 3
    values = [t["contribution"] for t in top]
    assert values == sorted(pred.contributions[pred.label], reverse=True)[:3]
    for t in top:
        assert (t["class"], t["k"]) == model.head.prototype_name(t["p"])
        assert len(t["nearest"]) == 2 and {"track", "chunk", "distance"} <= set(t["nearest"][0])
    assert explain(pred, top_k=5, label="flute")[0]["contribution"] == max(pred.contributions["flute"])


def test_every_input_kind_gives_the_same_prediction(model, audio_files):
    for kind in ("wav", "flac", "ogg"):
        path = audio_files[kind]
        by_path = model.classify(path)
        by_str = model.classify(str(path))
        by_bytes = model.classify(path.read_bytes())
        data, sr = sf.read(path, dtype="float32")
        by_numpy = model.classify(data, sr=sr)
        by_torch = model.classify(torch.from_numpy(data), sr=sr)
        for other in (by_str, by_bytes, by_numpy, by_torch):
            _same(by_path, other)
        assert by_bytes.source == "<bytes>" and by_numpy.source == "<array>"
    preds = model.classify([audio_files["wav"], str(audio_files["flac"])])
    assert isinstance(preds, list) and [p.source for p in preds] == [str(audio_files["wav"]), str(audio_files["flac"])]
    assert len(model.classify(audio_files["flac"]).chunk_starts) == 2


def test_list_call_tries_every_input_and_loses_nothing(model, audio_files, tmp_path):
    from pecmae_hub.prediction import ClassificationFailure

    inputs = [audio_files["wav"], tmp_path / "missing.wav", audio_files["corrupt"], b"not audio", audio_files["ogg"]]
    out = model.classify(inputs)
    assert len(out) == 5 and [item.ok for item in out] == [True, False, False, False, True]
    assert all(isinstance(item, ClassificationFailure) and item.error == "AudioError" for item in out[1:4])
    assert str(tmp_path / "missing.wav") in out[1].message and out[3].source == "<bytes>"
    _same(out[0], model.classify(audio_files["wav"]))
    _same(out[4], model.classify(audio_files["ogg"]))
    with pytest.raises(AudioError):  # a single input still raises its typed error
        model.classify(tmp_path / "missing.wav")


def test_prediction_json_round_trip(model, audio_files):
    pred = model.classify(audio_files["ogg"])
    data = json.loads(pred.to_json())
    assert data == pred.to_dict()
    assert Prediction.from_dict(data) == pred
    assert set(data) >= {
        "label",
        "scores",
        "chunk_labels",
        "chunk_starts",
        "chunk_ends",
        "similarities",
        "contributions",
        "top_prototypes",
    }


def test_audio_errors_name_the_input(model, audio_files, tmp_path):
    with pytest.raises(AudioError, match="d_corrupt.wav"):
        model.classify(audio_files["corrupt"])
    with pytest.raises(AudioError, match="missing.wav"):
        model.classify(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="sr="):
        model.classify(np.zeros(1000, dtype=np.float32))
    with pytest.raises(AudioError, match="<bytes>"):
        model.classify(b"garbage that is no audio file")


# ---- sonify --------------------------------------------------------------------------------------
def test_sonify_prerendered_vs_decoder(tiny_model_dir, monkeypatch):
    model = PECMAE.from_pretrained(tiny_model_dir, device="cpu")
    index = json.loads((tiny_model_dir / "prototypes" / "index.json").read_text())
    assert (index["steps"], index["guidance"], index["seed"]) == (2, 1.0, 0) and len(index["prototypes"]) == 6
    calls = []
    real_decode = model.autoencoder.decode_with_level
    monkeypatch.setattr(model.autoencoder, "decode_with_level", lambda *a, **k: calls.append(k) or real_decode(*a, **k))
    path = model.prototype_audio_path(("piano", 1), steps=2)
    assert path is not None and path.name == "p003_piano_1.wav"
    rendered = model.sonify(("piano", 1), steps=2, guidance=1.0, seed=0)
    assert calls == [] and rendered.dtype == np.float32 and rendered.shape == (24000,)
    assert np.array_equal(model.sonify("piano:1", steps=2), rendered) and np.array_equal(
        model.sonify(3, steps=2), rendered
    )
    decoded, _ = model._decode(3, 2, 1.0, 0)  # what the decoder gives for the same settings
    assert len(calls) == 1
    np.testing.assert_allclose(rendered, np.clip(decoded, -1, 1), atol=1.5 / 32767)
    other = model.sonify(3, steps=3)  # no pre-render for these settings: decoded
    assert len(calls) == 2 and model.prototype_audio_path(3, steps=3) is None
    assert other.shape == (24000,) and not np.allclose(other, rendered)
    again = model.sonify(3, steps=3)
    assert len(calls) == 2 and np.array_equal(again, other)  # cached in memory


def test_sonify_without_renders_is_deterministic():
    model = tiny_pecmae(seed=3)
    a, b = model.sonify(0, steps=2, seed=5), model.sonify(0, steps=2, seed=5)
    assert np.array_equal(a, b) and a.dtype == np.float32 and len(a) == 24000
    assert not np.allclose(a, model.sonify(0, steps=2, seed=6))


def test_prototype_index_errors(model):
    assert model.prototype_index("flute:0") == 4 and model.prototype_index("5") == 5
    with pytest.raises(ConfigError, match="unknown class 'cello'"):
        model.prototype_index(("cello", 0))
    with pytest.raises(ConfigError, match="0..1"):
        model.prototype_index("violin:7")
    with pytest.raises(ConfigError, match="out of range"):
        model.prototype_index(6)


# ---- mismatches ----------------------------------------------------------------------------------
def test_head_that_does_not_fit_its_autoencoder(tiny_model_dir):
    from pecmae_hub.models.autoencoder import Autoencoder, AutoencoderConfig

    small = Autoencoder(AutoencoderConfig.tiny(model_dim=16, frame_heads=2))
    with pytest.raises(ConfigError, match=r"expects 32-d embeddings but the autoencoder gives 16-d"):
        PECMAE.from_pretrained(tiny_model_dir, autoencoder=small)
    other = Autoencoder(AutoencoderConfig.tiny(chunk_seconds=2.0))  # same size, another model
    with pytest.raises(ConfigError, match="fingerprint") as info:
        PECMAE.from_pretrained(tiny_model_dir, autoencoder=other)
    spec = json.loads((tiny_model_dir / "config.json").read_text())["autoencoder"]
    assert spec["fingerprint"] in str(info.value)


def test_head_without_autoencoder_reference(tmp_path):
    tiny_pecmae().head.save_pretrained(tmp_path / "bare")
    with pytest.raises(ConfigError, match="does not name its autoencoder"):
        PECMAE.from_pretrained(tmp_path / "bare")
    assert PECMAE.from_pretrained(tmp_path / "bare", autoencoder=tiny_autoencoder()).labels == list(LABELS)


# ---- Hub over HTTP -------------------------------------------------------------------------------
def test_download_then_cache_with_server_stopped(hub, tiny_model_dir, audio_files, _isolated_hf_cache):
    hub.add_folder("org/tiny", tiny_model_dir)
    local = PECMAE.from_pretrained(tiny_model_dir).classify(audio_files["wav"])
    first = PECMAE.from_pretrained("org/tiny")
    _same(first.classify(audio_files["wav"]), local, tol=0)
    first.sonify(0, steps=2)  # downloads one pre-rendered WAV
    assert hub.count("GET", "/resolve/") >= 5
    blobs = {p.name for p in (_isolated_hf_cache / "models--org--tiny" / "blobs").iterdir()}
    weights = (tiny_model_dir / "model.safetensors").read_bytes()
    assert hashlib.sha256(weights).hexdigest() in blobs  # LFS file: cached under its sha256 (X-Linked-Etag)
    clear_cache()
    hub.requests.clear()
    second = PECMAE.from_pretrained("org/tiny")  # only asks which commit `main` is
    assert hub.requests == [("HEAD", "/org/tiny/resolve/main/config.json")]
    hub.stop()
    clear_cache()
    third = PECMAE.from_pretrained("org/tiny")
    _same(third.classify(audio_files["wav"]), local, tol=0)
    assert np.array_equal(third.sonify(0, steps=2), second.sonify(0, steps=2))


def test_revision_pinning(hub, make_tiny_model, audio_files):
    sha_a = hub.add_folder("org/pinned", make_tiny_model(seed=1), tag="v1")
    sha_b = hub.add_folder("org/pinned", make_tiny_model(seed=2))
    preds = {
        rev: PECMAE.from_pretrained("org/pinned", revision=rev).classify(audio_files["flac"])
        for rev in ("v1", sha_a, sha_b, "main", None)
    }
    _same(preds["v1"], preds[sha_a], tol=0)
    _same(preds["main"], preds[sha_b], tol=0)
    _same(preds[None], preds[sha_b], tol=0)
    assert preds[sha_a].scores != preds[sha_b].scores
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(preds[sha_a].similarities, preds[sha_b].similarities)


def test_missing_repo_revision_file(hub, tiny_model_dir):
    with pytest.raises(ModelNotFoundError, match="'org/absent' not found"):
        PECMAE.from_pretrained("org/absent")
    hub.add_folder("org/tiny", tiny_model_dir)
    with pytest.raises(ModelNotFoundError, match="revision 'no-such-branch' not found in Hub repo 'org/tiny'"):
        PECMAE.from_pretrained("org/tiny", revision="no-such-branch")
    hub.add_files("org/headless", {"config.json": (tiny_model_dir / "config.json").read_bytes()})
    with pytest.raises(ModelNotFoundError, match="'model.safetensors' not found in Hub repo 'org/headless'"):
        PECMAE.from_pretrained("org/headless")
    hub.add_files("org/no-ae", {p: (tiny_model_dir / p).read_bytes() for p in ("config.json", "model.safetensors")})
    with pytest.raises(ModelNotFoundError, match="'autoencoder/config.json' not found in Hub repo 'org/no-ae'"):
        PECMAE.from_pretrained("org/no-ae")


def _fill_cache(cache: Path, repo_id: str, folder: Path, sha: str = "ab" * 20) -> None:
    """Write the HF cache layout by hand: blobs/<hash>, snapshots/<sha>/<path> -> ../blobs, refs/main."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = root / "snapshots" / sha / path.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(sha)


def test_offline_from_prefilled_cache(hub, tiny_model_dir, audio_files, _isolated_hf_cache, monkeypatch):
    from huggingface_hub import constants

    _fill_cache(_isolated_hf_cache, "org/cached", tiny_model_dir)
    expected = PECMAE.from_pretrained(tiny_model_dir).classify(audio_files["wav"])
    model = PECMAE.from_pretrained("org/cached", local_files_only=True)
    _same(model.classify(audio_files["wav"]), expected, tol=0)
    assert model.nearest is not None and model.metrics["accuracy"] == 0.5
    assert model.prototype_audio_path(2, steps=2).is_file()
    clear_cache()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    _same(PECMAE.from_pretrained("org/cached").classify(audio_files["wav"]), expected, tol=0)
    with pytest.raises(ModelNotFoundError, match="'org/elsewhere'.*not in the local cache"):
        PECMAE.from_pretrained("org/elsewhere")
    assert hub.requests == []  # nothing went to the network


def test_autoencoder_repo_shared_by_heads(hub, audio_files):
    ae = tiny_autoencoder()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ae.save_pretrained(Path(tmp) / "ae")
        ae_sha = hub.add_folder("org/shared-ae", Path(tmp) / "ae")
        for seed in (1, 2):
            tiny_pecmae(seed, autoencoder=ae).save_pretrained(
                Path(tmp) / f"h{seed}", autoencoder_repo_id="org/shared-ae", autoencoder_revision=ae_sha
            )
            hub.add_folder(f"org/head-{seed}", Path(tmp) / f"h{seed}")
    one, two = PECMAE.from_pretrained("org/head-1"), PECMAE.from_pretrained("org/head-2")
    assert one.autoencoder is two.autoencoder
    assert hub.count("GET", "/org/shared-ae/resolve/") == 2  # config + weights, downloaded once
    assert one.classify(audio_files["ogg"]).scores != two.classify(audio_files["ogg"]).scores
    spec = json.loads(Path(one._files.get("config.json")).read_text())["autoencoder"]
    assert (spec["repo_id"], spec["revision"], spec["path"]) == ("org/shared-ae", ae_sha, None)


def test_silent_chunks_flag_and_older_prediction_dicts(model):
    rng = np.random.default_rng(3)
    music = (0.2 * rng.standard_normal(24000)).astype(np.float32)
    pred = model.classify(np.concatenate([music, np.zeros(24000, np.float32)]), sr=24000)
    assert pred.chunk_silent == [False, True] and pred.audible == [True, False] and pred.chunk_labels[1] is None
    old = {k: v for k, v in pred.to_dict().items() if k != "chunk_silent"}  # written before the flag existed
    assert Prediction.from_dict(old).audible == [True, True]
    with pytest.raises(AudioError, match="is silent"):
        model.classify(np.zeros(48000, np.float32), sr=24000)


def test_render_settings_are_checked_before_decoding():
    from pecmae_hub.prototype_audio import check_render_settings

    assert check_render_settings(40, 1, 0) == (40, 1.0, 0)
    assert check_render_settings(2.0, 1.5, np.int64(3)) == (2, 1.5, 3)
    for steps, guidance, seed, message in (
        (0, 1.0, 0, "steps"),
        (1001, 1.0, 0, "1..1000"),
        (True, 1.0, 0, "steps"),
        ("40", 1.0, 0, "steps"),
        (40, float("inf"), 0, "guidance"),
        (40, 1.0, -1, "seed"),
        (40, 1.0, 0.5, "seed"),
    ):
        with pytest.raises(ConfigError, match=message):
            check_render_settings(steps, guidance, seed)


def test_sonify_defaults_play_the_prerenders_and_the_scheduler_is_part_of_the_render_key(tiny_model_dir):
    model = PECMAE.from_pretrained(tiny_model_dir, device="cpu")
    index = model.render_settings
    assert index["scheduler"] == {"name": "upstream"}
    # no settings given: those of the pre-renders, so the stored WAV plays at once
    assert model.render_settings_for() == (index["steps"], {"name": "upstream"})
    assert model.prototype_audio_path(0, index["steps"], 1.0, 0, "upstream") is not None
    assert model.prototype_audio_path(0, index["steps"], 1.0, 0, "unipc") is None  # another sampler: decode
    assert model.render_settings_for(scheduler="unipc") == (14, "unipc")
    fast = model.sonify(0, scheduler="unipc", steps=4)
    exact = model.sonify(0, scheduler="upstream", steps=4)
    assert fast.shape == exact.shape and not np.array_equal(fast, exact)
    with pytest.raises(ConfigError, match=r"unknown scheduler .*choose one of upstream, ddim, dpmsolver\+\+, unipc"):
        model.sonify(0, scheduler="euler-ancestral-magic")
