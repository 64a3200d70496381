"""pecmae extract: layout, equality with Autoencoder.encode, failures, resume; extract -> train -> evaluate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from pecmae_hub import cli
from pecmae_hub.errors import ConfigError, DatasetError
from pecmae_hub.models.autoencoder import Autoencoder, AutoencoderConfig
from pecmae_hub.training.extract import extract_features, extract_jobs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ae():
    torch.manual_seed(0)
    return Autoencoder(AutoencoderConfig.tiny())  # 1 s chunks, D = 32


def tone(seconds, sr=24000, freq=440.0):
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def audio_dir(tmp_path):
    root = tmp_path / "audio"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    sf.write(root / "a" / "sine.wav", tone(2.5), 24000)  # 2 full chunks + a partial one
    noise = np.random.default_rng(0).normal(0, 0.1, 44100).astype(np.float32)
    sf.write(root / "a" / "noise.FLAC", noise, 44100, format="FLAC")  # upper-case extension, resampled
    sf.write(root / "b" / "short.ogg", tone(0.4, freq=220.0), 24000, format="OGG")  # only a partial chunk
    (root / "b" / "broken.wav").write_bytes(b"RIFF\x00\x00not really a wav file")
    (root / "b" / "notes.txt").write_text("not audio")
    return root


def test_features_match_encode_and_failures_are_reported(ae, audio_dir, tmp_path):
    out = tmp_path / "feats"
    s = extract_features(audio_dir, out, ae, batch_size=2, progress=False)
    assert (s.total, s.written, s.failed, s.skipped) == (4, 3, 1, 0)
    assert s.chunks == 3 + 1 + 1
    for rel, n in (("a/sine.npy", 3), ("a/noise.npy", 1), ("b/short.npy", 1)):
        z = np.load(out / rel)
        assert z.shape == (n, 32) and z.dtype == np.float32
        src = next((audio_dir / rel).parent.glob((audio_dir / rel).stem + ".*"))
        np.testing.assert_allclose(z, ae.encode(src).numpy(), atol=1e-5, rtol=1e-5)
    failures = (out / "failures.tsv").read_text().splitlines()
    assert failures[0] == "path\terror" and len(failures) == 2 and "broken.wav" in failures[1]
    manifest = json.loads((out / "extract_manifest.json").read_text())
    assert manifest["embedding_dim"] == 32 and manifest["chunk_seconds"] == 1.0
    assert manifest["counts"]["tracks"] == 4 and manifest["counts"]["failed"] == 1
    assert manifest["autoencoder"]["fingerprint"] == ae.fingerprint()


def test_interrupted_run_resumes_with_the_remaining_files(ae, audio_dir, tmp_path):
    out = tmp_path / "feats"
    done = []

    def stop_after_first(rel):
        done.append(rel)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract_features(audio_dir, out, ae, batch_size=1, progress=False, on_track_done=stop_after_first)
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npy"))
    assert written == [done[0].rsplit(".", 1)[0] + ".npy"]
    assert not list(out.rglob(".*.tmp*"))  # no temporary file of an atomic write is left
    again = []
    s = extract_features(audio_dir, out, ae, progress=False, on_track_done=again.append)
    assert (s.skipped, s.written, s.failed) == (1, 2, 1)
    assert done[0] not in again and len(again) == 2
    s = extract_features(audio_dir, out, ae, progress=False)
    assert (s.skipped, s.written, s.failed) == (3, 0, 1)  # the broken file is retried, the rest skipped


def test_other_autoencoder_in_the_same_folder_is_refused(ae, audio_dir, tmp_path):
    extract_features(audio_dir / "a", tmp_path / "f", ae, progress=False)
    other = Autoencoder(AutoencoderConfig.tiny(model_dim=16, ff_dim=32))
    with pytest.raises(ConfigError, match="another autoencoder"):
        extract_features(audio_dir / "a", tmp_path / "f", other, progress=False)


def test_list_file_and_sequence_inputs(audio_dir, tmp_path):
    lst = audio_dir / "list.txt"
    lst.write_text(
        "a/sine.wav\n# comment\n\nb/short.ogg\n" + str(tmp_path / "elsewhere" / "x.wav") + "\nb/../a/sine.wav\n"
    )  # the same file again, spelled differently: listed once
    jobs = extract_jobs(lst)
    assert [rel for _, rel in jobs] == ["a/sine.wav", "b/short.ogg", "elsewhere/x.wav"]
    assert [rel for _, rel in extract_jobs([audio_dir / "a" / "sine.wav"])] == ["a/sine.wav"]
    (audio_dir / "a" / "sine.flac").write_bytes(b"")
    with pytest.raises(DatasetError, match="would both be written to a/sine.npy"):
        extract_jobs(audio_dir)
    with pytest.raises(DatasetError, match="input not found"):
        extract_jobs(tmp_path / "nope")


def test_atomic_writes_keep_the_old_file_when_interrupted(tmp_path):
    from pecmae_hub.storage.atomic import atomic_path, atomic_save_npy, atomic_write_text

    target = tmp_path / "sub" / "x.npy"
    atomic_save_npy(target, np.arange(3))
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt
    assert np.load(target).tolist() == [0, 1, 2] and [p.name for p in target.parent.iterdir()] == ["x.npy"]
    atomic_save_npy(tmp_path / "y.data", np.zeros(2))  # exactly that name: np.save appends no .npy
    assert np.load(tmp_path / "y.data").shape == (2,)
    atomic_write_text(tmp_path / "t.tsv", "a\tb\n")
    assert (tmp_path / "t.tsv").read_bytes() == b"a\tb\n"


def test_extract_train_evaluate_end_to_end(ae, tmp_path, capsys):
    """Tiny run of the three CLI stages on generated sine (low / high) clips."""
    ae.save_pretrained(tmp_path / "ae")
    audio, rng = tmp_path / "audio", np.random.default_rng(1)
    splits = {"train": [], "val": [], "test": []}
    for cls, base in (("low", 150.0), ("high", 2500.0)):
        (audio / cls).mkdir(parents=True)
        for i in range(10):
            wav = tone(2.0, freq=base * (1 + 0.1 * rng.random())) + rng.normal(0, 0.01, 48000).astype(np.float32)
            sf.write(audio / cls / f"{cls}{i}.wav", wav, 24000)
            splits["train" if i < 6 else "val" if i < 8 else "test"].append(f"{cls}\t{cls}/{cls}{i}.wav")
    for name, rows in splits.items():
        (tmp_path / f"{name}.tsv").write_text("\n".join(rows) + "\n")
    feats = tmp_path / "feats"
    assert cli.main(["extract", str(audio), str(feats), "--autoencoder", str(tmp_path / "ae"), "--quiet"]) == 0
    assert len(list(feats.rglob("*.npy"))) == 20
    assert (
        cli.main(
            [
                "train",
                "--features",
                str(feats),
                "--split-train",
                str(tmp_path / "train.tsv"),
                "--split-val",
                str(tmp_path / "val.tsv"),
                "--split-test",
                str(tmp_path / "test.tsv"),
                "--out",
                str(tmp_path / "head"),
                "--protos-per-class",
                "2",
                "--total-steps",
                "150",
                "--batch-size",
                "16",
                "--eval-every",
                "50",
                "--quiet",
            ]
        )
        == 0
    )
    cfg = json.loads((tmp_path / "head" / "config.json").read_text())
    assert cfg["labels"] == ["low", "high"] and cfg["autoencoder"]["path"] == "autoencoder"
    # a local autoencoder is bundled into the head folder, which is then a complete model
    from pecmae_hub import PECMAE

    model = PECMAE.from_pretrained(tmp_path / "head", device="cpu")
    assert model.autoencoder.fingerprint() == cfg["autoencoder"]["fingerprint"]
    assert model.classify(audio / "low" / "low0.wav").label in ("low", "high")
    assert (
        cli.main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "head"),
                "--features",
                str(feats),
                "--split",
                str(tmp_path / "test.tsv"),
                "--train-split",
                str(tmp_path / "train.tsv"),
                "--mlp-steps",
                "100",
                "--out",
                str(tmp_path / "eval"),
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert result["n_tracks"] == 4 and result["prototype"]["accuracy"] >= 0.75
    assert "retention" in capsys.readouterr().out
