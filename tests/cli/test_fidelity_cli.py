"""The command line shows the precision it ran at, and writes fidelity records (``pecmae fidelity``, ``push``)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pecmae_hub.cli import main
from pecmae_hub.models.precision import cpu_int8_support
from pecmae_hub.pipeline import PECMAE

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_fidelity import _autoencoder, _model, _tones

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not cpu_int8_support()[0], reason="auto runs int8 only on a CPU with int8 kernels"),
]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("held-out")
    for name, wav in _tones(4):
        sf.write(folder / f"{name}.wav", wav, 24_000)
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, clips) -> Path:
    """A saved tiny model (pre-rendered at 2 steps) whose record ``pecmae fidelity`` measured."""
    folder = _model().save_pretrained(tmp_path_factory.mktemp("cli") / "m", render=True, steps=2)
    assert main(["fidelity", str(folder), "--held-out", str(clips), "--max-items", "3", "--no-progress"]) == 0
    return folder


def test_fidelity_command_writes_the_record_and_says_what_auto_runs(model_dir, clips, capsys):
    record = json.loads((model_dir / "fidelity.json").read_text())
    assert record["held_out"]["clips"] == 4 and record["precisions"]["int8"]["sonify"]["items"] == 3
    assert "fidelity.json" in json.loads((model_dir / "checksums.json").read_text())["files"]
    assert main(["fidelity", str(model_dir), "--precisions", "int8", "--max-items", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "8 held-out clips (synthetic probes" in out and "int8: passes" in out
    assert "precision auto runs it at int8 on this CPU: the fidelity record passed" in out
    assert main(["fidelity", str(model_dir), "--precisions", "fp16"]) == 1  # a mode this device cannot run
    assert "fp16' needs a CUDA device" in capsys.readouterr().err
    before = (model_dir / "fidelity.json").read_bytes()
    missing = str(model_dir / "no-such-clips")
    assert main(["fidelity", str(model_dir), "--held-out", str(clips), missing, "--no-progress"]) == 1
    assert f"held-out audio not found: {missing}" in capsys.readouterr().err  # a typo is not a smaller set
    assert (model_dir / "fidelity.json").read_bytes() == before  # the record in place is kept


def test_classify_prints_and_records_the_precision(model_dir, clips, tmp_path, capsys):
    wav = str(clips / "tone1.wav")
    fast, exact = tmp_path / "fast.csv", tmp_path / "exact.csv"
    assert main(["classify", wav, "--model", str(model_dir), "--out", str(fast), "--no-progress"]) == 0
    assert "precision int8 (auto: the model's fidelity record vouches for it)" in capsys.readouterr().err
    args = ["classify", wav, "--model", str(model_dir), "--out", str(exact), "--no-progress", "--precision", "fp32"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "pecmae classify: precision fp32\n" in err and "auto" not in err
    rows = [next(csv.DictReader(path.open())) for path in (fast, exact)]
    assert [r["precision"] for r in rows] == ["int8", "fp32"] and rows[0]["label"] == rows[1]["label"]
    jsonl = tmp_path / "fast.jsonl"
    assert main(["classify", wav, "--model", str(model_dir), "--out", str(jsonl), "--no-progress"]) == 0
    assert json.loads(jsonl.read_text())["precision"] == "int8"


def test_an_old_results_file_is_refused_with_the_reason(model_dir, clips, tmp_path, capsys):
    out = tmp_path / "old.csv"
    assert main(["classify", str(clips / "tone1.wav"), "--model", str(model_dir), "--out", str(out)]) == 0
    rows = list(csv.reader(out.open()))
    with out.open("w", newline="") as fh:  # the layout of an earlier version: no precision column
        csv.writer(fh).writerows([[c for i, c in enumerate(r) if i != rows[0].index("precision")] for r in rows])
    assert main(["classify", str(clips / "tone2.wav"), "--model", str(model_dir), "--out", str(out)]) == 1
    assert "written by an earlier pecmae-hub, without the precision column" in capsys.readouterr().err


def test_sonify_names_the_precision_of_what_it_wrote(model_dir, tmp_path, capsys):
    out = tmp_path / "p.wav"
    assert main(["sonify", "--model", str(model_dir), "--prototype", "0", "--out", str(out)]) == 0
    assert "pre-rendered (upstream, 2 steps, griffin-lim vocoder, fp32)" in capsys.readouterr().out
    assert main(["sonify", "--model", str(model_dir), "--prototype", "0", "--out", str(out), "--seed", "3"]) == 0
    captured = capsys.readouterr()
    assert "decoded (upstream, 2 steps, griffin-lim vocoder, int8)" in captured.out
    assert "pecmae sonify: precision int8 (auto:" in captured.err


def test_exact_prerenders_play_at_int8_and_int8_renders_only_at_int8(model_dir, tmp_path):
    import shutil

    fast = PECMAE.from_pretrained(model_dir)
    assert fast.precision == "int8" and fast.render_settings["precision"] == "fp32"
    path = fast.prototype_audio_path(1, steps=2)
    assert path is not None  # the exact render stands for every precision
    assert np.array_equal(fast.sonify(1), sf.read(path, dtype="float32")[0])
    folder = tmp_path / "int8-renders"
    shutil.copytree(model_dir, folder)
    index = PECMAE.from_pretrained(folder).render_prototypes(folder, steps=2, precision=None)  # at int8
    assert index["precision"] == "int8"
    assert PECMAE.from_pretrained(folder, precision="fp32").prototype_audio_path(1, steps=2) is None
    again = PECMAE.from_pretrained(folder)
    assert again.precision == "int8" and again.prototype_audio_path(1, steps=2) is not None


def test_push_measures_a_record_when_the_folder_has_none(hub, tmp_path, capsys):
    folder = _model(seed=2).save_pretrained(tmp_path / "m")
    assert main(["push", str(folder), "org/fast", "--no-render", "--token", "t0k"]) == 0
    repo = hub.repos["org/fast"]
    assert "fidelity.json" in repo.commits[repo.branches["main"]]
    loaded = PECMAE.from_pretrained("org/fast", token="t0k")
    assert loaded.precision == "int8" and "probes" not in loaded.precision_reason
    assert json.loads(Path(loaded.files.get("fidelity.json")).read_text())["held_out"]["source"].startswith(
        "synthetic probes"
    )
    assert main(["push", str(folder), "org/plain", "--no-render", "--no-fidelity", "--token", "t0k"]) == 0
    assert "fidelity.json" not in hub.repos["org/plain"].commits[hub.repos["org/plain"].branches["main"]]


def test_autoencoder_folders_get_a_record_too(tmp_path, capsys):
    from pecmae_hub.models.autoencoder import Autoencoder

    folder = _autoencoder().save_pretrained(tmp_path / "ae")
    assert main(["fidelity", str(folder), "--precisions", "int8", "--no-progress"]) == 0
    assert "precision auto runs it at int8" in capsys.readouterr().out
    assert Autoencoder.from_pretrained(folder).precision == "int8"


def test_the_precision_line_is_one_short_clause():
    """The command line says the mode and, for auto, why in a few words (the full reason is in the log)."""
    from types import SimpleNamespace

    from pecmae_hub.cli.classify import precision_words

    reason = (
        "the fidelity record passed (z cosine >= 0.99992, ...); not int8 (the fidelity record's int8 measurement "
        "misses its bounds: sonify.latent_rel_l2_max 0.0541887 (bound <= 0.05)); bf16 autocast, bf16 codec"
    )
    words = precision_words(SimpleNamespace(precision="bf16", precision_reason=reason))
    assert words == "precision bf16 (auto: the model's fidelity record vouches for it; int8 refused by it)"
    asked = SimpleNamespace(precision="int8", precision_reason="asked for")
    assert precision_words(asked) == "precision int8"
    none = SimpleNamespace(precision="fp32", precision_reason="the model has no fidelity record (fidelity.json)")
    assert precision_words(none) == "precision fp32 (auto: the model has no fidelity record (fidelity.json))"
