"""GM-Solos generator: class table, determinism, levels, metadata, resume and errors (fast banks only)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

pytest.importorskip("soundfile")  # before fluidsynth, as gm_solos does (same libsndfile for sf3 decoding)
pytest.importorskip("fluidsynth")
pytest.importorskip("music21")

from pecmae_hub.data.gm_solos import render as gm_solos
from pecmae_hub.data.gm_solos.melodies import compose, corpus_melody, scale_melody
from pecmae_hub.errors import DatasetError

FAST_BANKS = ("csound", "timgm6mb")  # small banks that load in ~0.1 s (FluidR3 ~0.3 s, MuseScore ~2 s)


def _have(bank):
    try:
        gm_solos.bank_path(bank)
        return True
    except DatasetError:
        return False


needs_banks = pytest.mark.skipif(not all(_have(b) for b in FAST_BANKS), reason="csound/timgm6mb sound fonts missing")


def _rms_db(x):
    return 20 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-12)


def test_class_table_matches_medley_solos_db_and_general_midi():
    assert gm_solos.LABELS == (
        "clarinet",
        "distorted electric guitar",
        "female singer",
        "flute",
        "piano",
        "tenor saxophone",
        "trumpet",
        "violin",
    )
    assert gm_solos.PROGRAMS == {
        "clarinet": (72,),
        "distorted electric guitar": (31,),
        "female singer": (53, 54),
        "flute": (74,),
        "piano": (1,),
        "tenor saxophone": (67,),
        "trumpet": (57,),
        "violin": (41,),
    }
    assert gm_solos.label_slug("distorted electric guitar") == "distorted_electric_guitar"
    assert gm_solos.TRAIN_BANKS == ("fluidr3", "musescore", "csound") and gm_solos.TEST_BANKS == ("timgm6mb",)
    assert gm_solos.default_split("timgm6mb") == "test" and gm_solos.default_split("fluidr3") == "train"
    assert gm_solos.clip_relpath("csound", "female singer", 7) == "csound/female_singer/csound_female_singer_00007.wav"


def test_melodies_stay_in_each_instruments_range():
    for inst in gm_solos.INSTRUMENTS:
        for seed in range(4):
            rng = np.random.default_rng([seed, 1])
            program, notes, _, info = compose(rng, inst, 4.0)
            assert program in inst.programs
            pitches = [n.pitch for n in notes]
            assert pitches and min(pitches) >= inst.low and max(pitches) <= inst.high, (inst.label, info)
            assert all(n.length >= 0 and n.start >= 0 and 1 <= n.velocity <= 127 for n in notes)
    notes, source = scale_melody(np.random.default_rng(0), 60, 72, 8)
    assert source.startswith("scale:") and notes[-1][0] + notes[-1][1] >= 8
    notes, source = corpus_melody(np.random.default_rng(3), 44, 75, 8)
    assert source.startswith("corpus:") and all(44 <= p <= 75 for _, _, p in notes)


@needs_banks
def test_presets_exist_in_fast_banks():
    for bank in FAST_BANKS:
        assert all(gm_solos.bank_presets(bank).values()), bank


@needs_banks
def test_render_is_deterministic_and_index_dependent():
    a = gm_solos.render_clip("csound", "flute", 0, seed=0)
    gm_solos.render_clip("csound", "violin", 5, seed=0)  # another clip in between must not leak state
    b = gm_solos.render_clip("csound", "flute", 0, seed=0)
    assert a.dtype == np.float32 and a.shape == (72000,)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, gm_solos.render_clip("csound", "flute", 1, seed=0))
    assert not np.array_equal(a, gm_solos.render_clip("csound", "flute", 0, seed=1))
    assert not np.array_equal(a, gm_solos.render_clip("timgm6mb", "flute", 0, seed=0))


@needs_banks
@pytest.mark.parametrize("bank", FAST_BANKS)
def test_every_class_renders_audible_3s_clips(bank):
    for label in gm_solos.LABELS:
        x = gm_solos.render_clip(bank, label, 2, seed=0)
        assert x.shape == (72000,) and np.isfinite(x).all()
        assert -30 < _rms_db(x) < -10, (bank, label, _rms_db(x))
        assert np.abs(x).max() <= 0.95 + 1e-6


@needs_banks
def test_generate_dataset_metadata_and_resume(tmp_path, monkeypatch):
    meta = gm_solos.generate_dataset(tmp_path, ["csound"], n_per_class=1, seed=0, progress=False)
    with open(meta, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == gm_solos.METADATA_COLUMNS
    assert [r["label"] for r in rows] == list(gm_solos.LABELS)
    assert [int(r["label_id"]) for r in rows] == list(range(8))
    assert {r["bank"] for r in rows} == {"csound"} and {r["split"] for r in rows} == {"train"}
    assert rows[2]["program"] in ("53", "54") and rows[0]["program"] == "72"
    assert all(r["melody_source"].split(":")[0] in ("scale", "corpus") for r in rows)
    import soundfile as sf

    wav, sr = sf.read(tmp_path / rows[4]["path"])
    assert sr == 24000 and wav.shape == (72000,)
    first = (tmp_path / rows[0]["path"]).stat().st_mtime_ns

    def boom(*args, **kwargs):
        raise AssertionError("existing clip was rendered again")

    monkeypatch.setattr(gm_solos, "_render", boom)  # resume: nothing may be rendered
    gm_solos.generate_dataset(tmp_path, "csound", n_per_class=1, seed=0, split_name="val", progress=False)
    rows = list(gm_solos.read_metadata(meta).values())
    assert len(rows) == 8 and {r["split"] for r in rows} == {"val"}
    assert (tmp_path / rows[0]["path"]).stat().st_mtime_ns == first


def test_missing_or_unknown_bank_is_a_dataset_error(tmp_path, monkeypatch):
    monkeypatch.setitem(gm_solos.BANKS, "csound", str(tmp_path / "nope.sf2"))
    with pytest.raises(DatasetError, match="csound-soundfont"):
        gm_solos.bank_path("csound")
    with pytest.raises(DatasetError, match="csound-soundfont"):
        gm_solos.generate_dataset(tmp_path / "out", ["csound"], n_per_class=1, progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(DatasetError, match="unknown sound bank"):
        gm_solos.render_clip("sgm", "flute", 0)
    with pytest.raises(DatasetError, match="unknown GM-Solos label"):
        gm_solos.render_clip("timgm6mb", "oboe", 0)


@needs_banks
def test_cli_data_gm_solos(tmp_path, capsys):
    from pecmae_hub.cli import build_parser, main

    argv = ["data", "gm-solos", "x", "--all-banks", "--n-per-class", "3"]
    args = build_parser(argv).parse_args(argv)
    assert args.all_banks and args.n_per_class == 3 and args.seed == 0
    assert main(["data", "gm-solos", str(tmp_path), "--bank", "timgm6mb", "--n-per-class", "1", "--no-progress"]) == 0
    rows = gm_solos.read_metadata(tmp_path / "metadata.csv")
    assert len(rows) == 8 and {r["split"] for r in rows.values()} == {"test"}
    assert main(["data", "gm-solos", str(tmp_path), "--n-per-class", "1"]) == 1  # neither --bank nor --all-banks
