"""``pecmae classify / sonify / push`` through the real argument parser."""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import LABELS

from pecmae_hub.batch.results import csv_columns, model_fingerprint
from pecmae_hub.cli import build_parser, main
from pecmae_hub.pipeline import PECMAE

SOME_FAILED = 3


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
    monkeypatch.setattr(
        PECMAE, "classify", lambda self, audio, *a, **k: calls.append(str(audio)) or real(self, audio, *a, **k)
    )
    return calls


def test_classify_csv_with_error_row_and_resume(music, tiny_model_dir, tmp_path, capsys, monkeypatch, audio_files):
    out = tmp_path / "preds.csv"
    args = [
        "classify",
        str(music),
        "--model",
        str(tiny_model_dir),
        "--out",
        str(out),
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert main(args) == SOME_FAILED  # c.wav is corrupt: documented status 3, its row holds the error
    rows = _csv(out)
    assert [r["path"] for r in rows] == [str(music / "a.wav"), str(music / "c.wav"), str(music / "sub" / "b.flac")]
    model = PECMAE.from_pretrained(tiny_model_dir)
    assert (
        list(rows[0])
        == csv_columns(list(LABELS), 3)
        == [
            "path",
            "model",
            "model_fingerprint",
            "precision",
            "label",
            "confidence",
            "in_domain",
            "ood_score",
            "duration",
            "n_chunks",
            "silent_chunks",
            "top1_prototype",
            "top1_contribution",
            "top2_prototype",
            "top2_contribution",
            "top3_prototype",
            "top3_contribution",
            "error",
        ]
        + [f"p_{c}" for c in LABELS]
    )
    good = rows[0]
    expected = model.classify(music / "a.wav")
    assert good["label"] == expected.label and good["error"] == "" and good["n_chunks"] == "3"
    assert good["model"] == model.name and good["model_fingerprint"] == model_fingerprint(model)
    assert float(good["confidence"]) == pytest.approx(expected.confidence, abs=1e-6)
    top = expected.top_prototypes[0]
    assert good["top1_prototype"] == f"{top['class']}:{top['k']}" and good["silent_chunks"] == "0"
    assert float(good["top1_contribution"]) == pytest.approx(top["contribution"], abs=1e-6)
    bad = rows[1]
    assert bad["label"] == "" and bad["error"].startswith("AudioError") and "c.wav" in bad["error"]
    assert bad["model_fingerprint"] == good["model_fingerprint"]
    err = capsys.readouterr().err
    assert "2 classified, 0 skipped" in err and "1 failed" in err and "c.wav" in err

    shutil.copy(audio_files["ogg"], music / "d.ogg")  # a new file, and the failed one is retried by default
    calls = _count_classify(monkeypatch)
    assert main(args) == SOME_FAILED
    assert calls == [str(music / "c.wav"), str(music / "d.ogg")]
    rows = _csv(out)
    assert len(rows) == 4 and len({r["path"] for r in rows}) == 4
    assert "1 classified, 2 skipped" in capsys.readouterr().err

    assert main([*args, "--keep-errors"]) == SOME_FAILED and len(calls) == 2  # nothing redone, c.wav still failed
    assert "nothing to do" in capsys.readouterr().err
    shutil.copy(audio_files["ogg"], music / "c.wav")  # fixed: the plain rerun retries it and all is well
    assert main(args) == 0 and calls[2:] == [str(music / "c.wav")]
    assert len(_csv(out)) == 4 and all(r["error"] == "" for r in _csv(out))


def test_classify_jsonl_retries_errors_unless_kept(music, tiny_model_dir, tmp_path, audio_files, monkeypatch):
    out = tmp_path / "preds.jsonl"
    args = [
        "classify",
        str(music / "a.wav"),
        str(music / "c.wav"),
        "--model",
        str(tiny_model_dir),
        "--out",
        str(out),
        "--quiet",
        "--top-k",
        "2",
    ]  # --quiet: the alias of --no-progress
    assert main(args) == SOME_FAILED
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["path"] for r in rows] == [str(music / "a.wav"), str(music / "c.wav")]
    assert rows[0]["error"] is None and len(rows[0]["top_prototypes"]) == 2 and len(rows[0]["similarities"]) == 3
    assert rows[0]["chunk_silent"] == [False, False, False]
    assert rows[0]["model_fingerprint"] == rows[1]["model_fingerprint"]
    assert rows[1]["error"].startswith("AudioError") and "label" not in rows[1]

    shutil.copy(audio_files["ogg"], music / "c.wav")  # the bad file gets fixed
    calls = _count_classify(monkeypatch)
    assert main([*args, "--keep-errors"]) == SOME_FAILED and calls == []  # its error row is kept
    assert main(args) == 0 and calls == [str(music / "c.wav")]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["path"] for r in rows] == [str(music / "a.wav"), str(music / "c.wav")]
    assert all(r["error"] is None for r in rows) and rows[1]["label"] in LABELS


def test_out_dash_or_none_streams_jsonl_to_stdout(music, tiny_model_dir, capsys):
    for out in (["--out", "-"], []):
        status = main(
            [
                "classify",
                str(music / "a.wav"),
                str(music / "c.wav"),
                "--model",
                str(tiny_model_dir),
                "--no-progress",
                *out,
            ]
        )
        captured = capsys.readouterr()
        rows = [json.loads(line) for line in captured.out.splitlines()]
        assert status == SOME_FAILED and [r["path"] for r in rows] == [str(music / "a.wav"), str(music / "c.wav")]
        assert rows[0]["label"] in LABELS and rows[1]["error"].startswith("AudioError")
        assert "1 classified, 1 failed" in captured.err


def test_one_file_is_one_input_whatever_its_spelling(music, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(music)
    out = tmp_path / "p.csv"
    common = ["--model", str(tiny_model_dir), "--out", str(out), "--no-progress", "--device", "cpu"]
    calls = _count_classify(monkeypatch)
    assert main(["classify", "a.wav", "./a.wav", str(music / "a.wav"), "sub/../a.wav", *common]) == 0
    assert calls == ["a.wav"] and [r["path"] for r in _csv(out)] == ["a.wav"]
    assert main(["classify", str(music), *common]) == SOME_FAILED  # a.wav is done, under another spelling
    assert calls == ["a.wav", str(music / "c.wav"), str(music / "sub" / "b.flac")]


def test_another_model_or_layout_is_refused(music, tiny_model_dir, make_tiny_model, tmp_path, capsys):
    out = tmp_path / "p.csv"
    base = ["classify", str(music / "a.wav"), str(music / "sub"), "--out", str(out), "--no-progress"]
    assert main(base[:2] + base[3:] + ["--model", str(tiny_model_dir)]) == 0
    before = out.read_bytes()
    other = make_tiny_model(seed=5)  # same labels, other weights
    assert main([*base, "--model", str(other)]) == 1
    assert "not of this model" in capsys.readouterr().err and out.read_bytes() == before
    assert main([*base, "--model", str(tiny_model_dir), "--top-k", "2"]) == 1
    assert "--top-k 3" in capsys.readouterr().err and out.read_bytes() == before


def test_classify_all_failed_and_bad_arguments(music, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "p.csv"
    assert (
        main(["classify", str(music / "c.wav"), "--model", str(tiny_model_dir), "--out", str(out), "--no-progress"])
        == SOME_FAILED
    )
    assert "0 classified" in capsys.readouterr().err
    assert main(["classify", str(music), "--model", str(tiny_model_dir), "--out", str(tmp_path / "p.txt")]) == 1
    assert ".csv or .jsonl" in capsys.readouterr().err
    assert main(["classify", str(music), "--model", "no-such-model", "--out", str(tmp_path / "q.csv")]) == 1
    assert "gm-solos" in capsys.readouterr().err and not (tmp_path / "q.csv").exists()
    assert main(["classify", str(music), "--model", str(tiny_model_dir), "--top-k", "-1"]) == 1
    assert "--top-k" in capsys.readouterr().err


def test_every_option_has_help():
    for command in ("classify", "sonify", "push"):
        parser = build_parser([command])
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
        for action in sub._actions:
            assert action.help, f"pecmae {command} {action.option_strings or action.dest} has no help"
        flags = {s for a in sub._actions for s in a.option_strings}
        assert command == "push" or "--quiet" not in flags or "--no-progress" in flags


def test_sonify_cli(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "proto.wav"
    base = ["sonify", "--model", str(tiny_model_dir), "--out", str(out)]
    assert main([*base, "--prototype", "piano:1", "--steps", "2"]) == 0
    assert "pre-rendered" in capsys.readouterr().out
    wav, sr = sf.read(out, dtype="float32")
    expected, _ = sf.read(tiny_model_dir / "prototypes" / "p003_piano_1.wav", dtype="float32")
    assert sr == 24000 and np.array_equal(wav, expected)
    assert main([*base, "--prototype", "4", "--steps", "3", "--seed", "1"]) == 0
    assert "decoded" in capsys.readouterr().out and sf.info(out).frames == 24000
    assert main([*base, "--prototype", "cello:0"]) == 1
    assert "unknown class 'cello'" in capsys.readouterr().err
    mp3 = tmp_path / "proto.mp3"
    assert main(["sonify", "--model", str(tiny_model_dir), "--out", str(mp3), "--prototype", "0", "--steps", "2"]) == 0
    assert sf.info(mp3).format == "MP3" and not list(tmp_path.glob(".*.tmp*"))


def test_push_cli_then_classify_from_the_hub(hub, tiny_model_dir, tmp_path, capsys, audio_files):
    args = [
        "push",
        str(tiny_model_dir),
        "org/from-cli",
        "--branch",
        "dev",
        "--token",
        "t0k",
        "--private",
        "--commit-message",
        "first upload",
    ]
    assert main(args) == 0
    repo = hub.repos["org/from-cli"]
    assert repo.private and "dev" in repo.branches
    assert "prototypes/p005_flute_1.wav" in repo.commits[repo.branches["dev"]]
    assert "org/from-cli/tree/dev" in capsys.readouterr().out
    out = tmp_path / "hub.jsonl"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_TOKEN", "t0k")
        assert (
            main(
                [
                    "classify",
                    str(audio_files["wav"]),
                    "--model",
                    "org/from-cli",
                    "--revision",
                    "dev",
                    "--out",
                    str(out),
                    "--no-progress",
                ]
            )
            == 0
        )
    row = json.loads(out.read_text())
    assert row["label"] == PECMAE.from_pretrained(tiny_model_dir).classify(audio_files["wav"]).label
    assert main(["push", str(tmp_path / "nowhere"), "org/x"]) == 1
    assert main(["push", str(tiny_model_dir), "org/y", "--steps", "0"]) == 1
    assert "steps must be in 1..1000" in capsys.readouterr().err and "org/y" not in hub.repos


def test_csv_flags_input_unlike_the_training_data(tmp_path):
    from pecmae_hub.cli import main

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "out.csv"
    assert (
        main(
            [
                "classify",
                str(root / "examples" / "violin.wav"),
                str(root / "examples" / "speech.wav"),
                "--model",
                "gm-solos",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    rows = {Path(r["path"]).name: r for r in _csv(out)}
    assert rows["violin.wav"]["in_domain"] == "true" and rows["violin.wav"]["label"] == "violin"
    assert rows["speech.wav"]["in_domain"] == "false"
    assert float(rows["speech.wav"]["ood_score"]) > float(rows["violin.wav"]["ood_score"])
