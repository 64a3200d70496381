"""``pecmae classify / sonify / push`` through the real argument parser."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from conftest import LABELS
from pecmae_hub.cli import main
from pecmae_hub.pipeline import PECMAE


@pytest.fixture
def music(tmp_path, audio_files):
    folder = tmp_path / "music"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(audio_files["wav"], folder / "a.wav")
    shutil.copy(audio_files["flac"], folder / "sub" / "b.flac")
    shutil.copy(audio_files["corrupt"], folder / "c.wav")
    (folder / "notes.txt").write_text("not audio, not listed")
    return folder


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _count_classify(monkeypatch):
    calls = []
    real = PECMAE.classify
    monkeypatch.setattr(PECMAE, "classify", lambda self, audio, *a, **k: calls.append(str(audio)) or real(self, audio, *a, **k))
    return calls


def test_classify_csv_with_error_row_and_resume(music, tiny_model_dir, tmp_path, capsys, monkeypatch, audio_files):
    out = tmp_path / "preds.csv"
    args = ["classify", str(music), "--model", str(tiny_model_dir), "--out", str(out), "--no-progress", "--device", "cpu"]
    assert main(args) == 0
    rows = _csv(out)
    assert [r["path"] for r in rows] == [str(music / "a.wav"), str(music / "c.wav"), str(music / "sub" / "b.flac")]
    assert list(rows[0]) == ["path", "label", "confidence", "duration", "n_chunks", "top_prototypes", "error"] + [
        f"p_{c}" for c in LABELS]
    good = rows[0]
    expected = PECMAE.from_pretrained(tiny_model_dir).classify(music / "a.wav")
    assert good["label"] == expected.label and good["error"] == "" and good["n_chunks"] == "3"
    assert float(good["confidence"]) == pytest.approx(expected.confidence, abs=1e-6)
    assert good["top_prototypes"].startswith(f"{expected.top_prototypes[0]['class']}:")
    bad = rows[1]
    assert bad["label"] == "" and bad["error"].startswith("AudioError") and "c.wav" in bad["error"]
    err = capsys.readouterr().err
    assert "2 classified, 0 skipped" in err and "1 failed" in err and "c.wav" in err

    shutil.copy(audio_files["ogg"], music / "d.ogg")  # a new file: only it is classified
    calls = _count_classify(monkeypatch)
    assert main(args) == 0
    assert calls == [str(music / "d.ogg")]
    rows = _csv(out)
    assert len(rows) == 4 and len({r["path"] for r in rows}) == 4
    assert "1 classified, 3 skipped" in capsys.readouterr().err

    assert main(args) == 0 and calls == [str(music / "d.ogg")]  # nothing left: the model is not even loaded
    assert "nothing to do" in capsys.readouterr().err


def test_classify_jsonl_and_retry_errors(music, tiny_model_dir, tmp_path, audio_files, monkeypatch):
    out = tmp_path / "preds.jsonl"
    args = ["classify", str(music / "a.wav"), str(music / "c.wav"), "--model", str(tiny_model_dir), "--out", str(out),
            "--no-progress", "--top-k", "2"]
    assert main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["path"] for r in rows] == [str(music / "a.wav"), str(music / "c.wav")]
    assert rows[0]["error"] is None and len(rows[0]["top_prototypes"]) == 2 and len(rows[0]["similarities"]) == 3
    assert rows[1]["error"].startswith("AudioError") and "label" not in rows[1]

    shutil.copy(audio_files["ogg"], music / "c.wav")  # the bad file gets fixed
    calls = _count_classify(monkeypatch)
    assert main(args) == 0 and calls == []  # present in the output: skipped, even with an error
    assert main(args + ["--retry-errors"]) == 0 and calls == [str(music / "c.wav")]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["path"] for r in rows] == [str(music / "a.wav"), str(music / "c.wav")]
    assert all(r["error"] is None for r in rows) and rows[1]["label"] in LABELS


def test_one_file_is_one_input_whatever_its_spelling(music, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(music)
    out = tmp_path / "p.csv"
    common = ["--model", str(tiny_model_dir), "--out", str(out), "--no-progress", "--device", "cpu"]
    calls = _count_classify(monkeypatch)
    assert main(["classify", "a.wav", "./a.wav", str(music / "a.wav"), *common]) == 0
    assert calls == ["a.wav"] and [r["path"] for r in _csv(out)] == ["a.wav"]
    assert main(["classify", str(music), *common]) == 0  # a.wav is done, under another spelling
    assert calls == ["a.wav", str(music / "c.wav"), str(music / "sub" / "b.flac")]


def test_classify_all_failed_and_bad_arguments(music, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "p.csv"
    assert main(["classify", str(music / "c.wav"), "--model", str(tiny_model_dir), "--out", str(out), "--no-progress"]) == 1
    assert "0 classified" in capsys.readouterr().err
    assert main(["classify", str(music), "--model", str(tiny_model_dir), "--out", str(tmp_path / "p.txt")]) == 1
    assert ".csv or .jsonl" in capsys.readouterr().err
    assert main(["classify", str(music), "--model", "no-such-model", "--out", str(tmp_path / "q.csv")]) == 1
    assert "gm-solos" in capsys.readouterr().err


def test_sonify_cli(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "proto.wav"
    base = ["sonify", "--model", str(tiny_model_dir), "--out", str(out)]
    assert main(base + ["--prototype", "piano:1", "--steps", "2"]) == 0
    assert "pre-rendered" in capsys.readouterr().out
    wav, sr = sf.read(out, dtype="float32")
    expected, _ = sf.read(tiny_model_dir / "prototypes" / "p003_piano_1.wav", dtype="float32")
    assert sr == 24000 and np.array_equal(wav, expected)
    assert main(base + ["--prototype", "4", "--steps", "3", "--seed", "1"]) == 0
    assert "decoded" in capsys.readouterr().out and sf.info(out).frames == 24000
    assert main(base + ["--prototype", "cello:0"]) == 1
    assert "unknown class 'cello'" in capsys.readouterr().err


def test_push_cli_then_classify_from_the_hub(hub, tiny_model_dir, tmp_path, capsys, audio_files):
    args = ["push", str(tiny_model_dir), "org/from-cli", "--branch", "dev", "--token", "t0k", "--private",
            "--commit-message", "first upload"]
    assert main(args) == 0
    repo = hub.repos["org/from-cli"]
    assert repo.private and "dev" in repo.branches and "prototypes/p005_flute_1.wav" in repo.commits[repo.branches["dev"]]
    assert "org/from-cli/tree/dev" in capsys.readouterr().out
    out = tmp_path / "hub.jsonl"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_TOKEN", "t0k")
        assert main(["classify", str(audio_files["wav"]), "--model", "org/from-cli", "--revision", "dev",
                     "--out", str(out), "--no-progress"]) == 0
    row = json.loads(out.read_text())
    assert row["label"] == PECMAE.from_pretrained(tiny_model_dir).classify(audio_files["wav"]).label
    assert main(["push", str(tmp_path / "nowhere"), "org/x"]) == 1
