"""The one-process side of ``pecmae_hub.distributed`` and ``pecmae_hub.batch.shards`` (no launcher needed).

The several-process behaviour is proven with real ``accelerate launch`` groups in ``test_scale.py``.
"""

from __future__ import annotations

import csv
import shutil

import pytest
from conftest import tiny_pecmae

from pecmae_hub import distributed
from pecmae_hub.batch.lock import OutputLock
from pecmae_hub.batch.results import OutputBusyError, ResultsFile, model_fingerprint
from pecmae_hub.batch.shards import ShardedResults, open_results, shard_file, shard_folder
from pecmae_hub.cli import main
from pecmae_hub.errors import ConfigError


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch):
    for var in ("WORLD_SIZE", "LOCAL_RANK", "RANK", "MASTER_ADDR", "ACCELERATE_USE_CPU", "PMI_SIZE"):
        monkeypatch.delenv(var, raising=False)
    distributed.reset()
    yield
    distributed.reset()


def test_accelerate_cpu_launcher_with_several_processes_is_refused(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")  # what `accelerate launch --cpu --num_processes 2` sets
    with pytest.raises(ConfigError, match=r"--multi_gpu --num_processes N"):
        distributed.processes()
    monkeypatch.delenv("MASTER_ADDR")  # `accelerate launch --cpu` with one process: fine
    assert distributed.processes().num_processes == 1


def test_check_seconds_is_checked(monkeypatch):
    monkeypatch.setenv(distributed.CHECK_SECONDS_ENV, "soon")
    with pytest.raises(ConfigError, match="PECMAE_CHECK_SECONDS must be a number"):
        distributed.check_seconds()
    monkeypatch.setenv(distributed.CHECK_SECONDS_ENV, "0")
    with pytest.raises(ConfigError, match="must be positive"):
        distributed.check_seconds()
    monkeypatch.setenv(distributed.CHECK_SECONDS_ENV, "2.5")
    assert distributed.check_seconds() == 2.5


def test_one_process_guard_passes_values_and_errors_through():
    assert distributed.rank_label() == "rank 0 of 1" and not distributed.distributed()
    assert distributed.shard([3, 1, 2]) == [3, 1, 2]
    with distributed.Guard("test") as guard:
        assert guard.exchange("x") == ["x"] and guard.finish(7) == [7]
        guard.tick()
    with pytest.raises(KeyError), distributed.Guard("test"):
        raise KeyError("kept as it is")


def _clips(tmp_path, audio_files, n=4):
    folder = tmp_path / "clips"
    folder.mkdir()
    for i in range(n):
        shutil.copy(audio_files["flac"], folder / f"c{i}.flac")
    return folder


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_shard(out, rank, model, paths, top_k=3):
    shard_folder(out).mkdir(exist_ok=True)
    with ResultsFile(shard_file(out, rank)) as part:
        part.begin(model.name, model_fingerprint(model), model.labels, top_k)
        for p in paths:
            part.write(p, model.classify(p, top_k=top_k))


def test_one_process_rerun_merges_leftover_shards_and_does_only_the_rest(
    tmp_path, audio_files, tiny_model_dir, capsys, one_thread
):
    from pecmae_hub.pipeline import PECMAE

    clips = _clips(tmp_path, audio_files)
    out = tmp_path / "preds.csv"
    model = PECMAE.from_pretrained(tiny_model_dir, device="cpu")
    paths = [str(clips / f"c{i}.flac") for i in range(4)]
    _write_shard(out, 0, model, paths[:1])  # an interrupted run of 3 processes left these
    _write_shard(out, 2, model, paths[2:3])
    assert isinstance(open_results(str(out)), ShardedResults)
    args = ["classify", str(clips), "--model", str(tiny_model_dir), "--out", str(out), "--no-progress"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "merged 1 row(s) left by an interrupted run (rank-00000.csv)" in err
    assert "merged 1 row(s) left by an interrupted run (rank-00002.csv)" in err
    assert "2 classified, 2 skipped" in err
    assert sorted(r["path"] for r in _rows(out)) == paths
    assert not shard_folder(out).exists()
    assert not isinstance(open_results(str(out)), ShardedResults)  # nothing left: the plain file again


def test_leftover_shard_of_another_model_is_refused(tmp_path, audio_files, tiny_model_dir, one_thread):
    clips = _clips(tmp_path, audio_files, n=2)
    out = tmp_path / "preds.csv"
    _write_shard(out, 1, tiny_pecmae(seed=5), [str(clips / "c0.flac")])
    args = ["classify", str(clips), "--model", str(tiny_model_dir), "--out", str(out), "--no-progress"]
    assert main(args) == 1  # the merged rows are another model's: one file must not mix models
    assert shard_file(out, 1).is_file()  # nothing lost
    from pecmae_hub.pipeline import PECMAE

    model = PECMAE.from_pretrained(tiny_model_dir, device="cpu")
    with pytest.raises(ConfigError, match="one file must not mix models"), ShardedResults(out) as results:
        results.pending([str(clips / "c0.flac")])
        results.begin(model.name, model_fingerprint(model), model.labels, 3)


def test_leftover_shard_still_written_by_a_live_process_makes_the_run_fail(tmp_path, audio_files, tiny_model_dir):
    clips = _clips(tmp_path, audio_files, n=1)
    out = tmp_path / "preds.csv"
    shard_folder(out).mkdir()
    shard_file(out, 1).write_text("")
    with (
        OutputLock(shard_file(out, 1)),
        pytest.raises(OutputBusyError, match="being written by another"),
        ShardedResults(out),
    ):
        pass
    args = ["classify", str(clips), "--model", str(tiny_model_dir), "--out", str(out), "--no-progress"]
    with OutputLock(shard_file(out, 1)):
        assert main(args) == 1
    assert not out.exists() or not _rows(out)


def test_torn_last_row_of_a_leftover_shard_is_repaired_and_its_input_redone(
    tmp_path, audio_files, tiny_model_dir, capsys, one_thread
):
    from pecmae_hub.pipeline import PECMAE

    clips = _clips(tmp_path, audio_files, n=3)
    out = tmp_path / "preds.csv"
    model = PECMAE.from_pretrained(tiny_model_dir, device="cpu")
    paths = [str(clips / f"c{i}.flac") for i in range(3)]
    _write_shard(out, 1, model, paths[:2])
    shard = shard_file(out, 1)
    text = shard.read_text()
    shard.write_text(text[: text.rindex(paths[1]) + len(paths[1]) + 5])  # the process died inside its last row
    args = ["classify", str(clips), "--model", str(tiny_model_dir), "--out", str(out), "--no-progress"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "merged 1 row(s) left by an interrupted run (rank-00001.csv)" in err and "2 classified, 1 skipped" in err
    rows = _rows(out)
    assert sorted(r["path"] for r in rows) == paths and all(r["label"] for r in rows)


def test_scale_doc_states_the_check_in_interval_of_the_code():
    from pathlib import Path

    text = " ".join((Path(__file__).resolve().parents[1] / "docs" / "scale.md").read_text().split())
    default = f"{distributed.DEFAULT_CHECK_SECONDS:g}"
    assert f"every `{distributed.CHECK_SECONDS_ENV}` seconds (default {default})" in text
