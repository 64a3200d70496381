"""Proof that extract, train and classify scale out on Accelerate: 2 CPU processes, and 2 "machines" on loopback.

Every multi-process run is compared with the same command in one process:
- features: bit for bit;
- classification rows: byte for byte (a fresh run), none missing, none duplicated;
- a trained head: every weight within 1e-5 of the one-process head with the same global batch. The
  sharded prototype loss makes the averaged gradient the one-process gradient exactly in real numbers;
  what is left is the order of floating-point sums (two half-batch sums averaged by the all-reduce
  instead of one sum), ~1e-7 per step, which Adam carries through the steps (measured: 4e-7 after 30);
- a rank killed mid-run: the others stop with an error naming it within a bounded time, and a rerun
  with another number of processes resumes and completes the file.
A dataset streamed from the local Hub server classifies as the same clips read from a folder.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scale_helpers import TwoMachines, launch_command, launch_env, run_launch, wait_for, worker_pid

from pecmae_hub.cli import main

LABELS = ("violin", "piano", "flute")
TRAIN, VAL = 8, 3  # 3.0-s clips of 1-s chunks: 24 training chunks, 3 batches of 8
TRAIN_ARGS = ["--total-steps", "30", "--eval-every", "10", "--batch-size", "8", "--protos-per-class", "2"]
TRAIN_ARGS += ["--seed", "1", "--no-progress", "--nearest-k", "1"]
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="loopback process groups of torchrun")


@pytest.fixture(scope="module")
def work(tmp_path_factory, make_tiny_model):
    """A tiny model, 11 labelled 3-s clips plus a corrupt one, and the train / val splits."""
    root = tmp_path_factory.mktemp("scale")
    shutil.copytree(make_tiny_model(seed=0), root / "model")
    clips = root / "clips"
    clips.mkdir()
    rng = np.random.default_rng(0)
    t = np.arange(3 * 24000) / 24000
    rows = []
    for i in range(TRAIN + VAL):
        label = LABELS[i % 3]
        wave = 0.3 * np.sin(2 * np.pi * (220 * (1 + i % 3) + 7 * i) * t) + 0.02 * rng.standard_normal(len(t))
        sf.write(clips / f"c{i:02d}.wav", wave.astype(np.float32), 24000)
        rows.append((label, f"c{i:02d}.wav"))
    (clips / "zz_broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio at all")
    (root / "train.tsv").write_text("".join(f"{a}\t{b}\n" for a, b in rows[:TRAIN]))
    (root / "val.tsv").write_text("".join(f"{a}\t{b}\n" for a, b in rows[TRAIN:]))
    return root


def _npy_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.npy"))}


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(folder / "model.safetensors")


def _check(result, code: int = 0) -> str:
    text = result.stdout + result.stderr if hasattr(result, "stdout") else result
    assert result.returncode == code, text[-4000:]
    return text


def test_accelerate_cpu_flag_with_several_processes_is_refused(work):
    """accelerate's --cpu launcher starts one process without torch.distributed: both copies would do all the work."""
    cmd = launch_command(["classify", "clips", "--model", "model", "--out", "x.csv"])
    cmd[cmd.index("--multi_gpu")] = "--cpu"
    result = subprocess.run(cmd, cwd=work, env=launch_env(), capture_output=True, text=True, timeout=180)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "--multi_gpu --num_processes N" in result.stderr and "every" in result.stderr
    assert not (work / "x.csv").exists()


GUARDED_WORK = """
import sys, time
from pecmae_hub.distributed import Guard, processes
from pecmae_hub.errors import ProcessGroupError
rank = processes().process_index
try:
    with Guard("work") as guard:
        for step in range(600):  # 60 s of work, unless the others stop us
            time.sleep(0.1)
            if rank == 1 and step == 5:
                raise OSError(28, "No space left on device")
            guard.tick()
        guard.finish()
except (ProcessGroupError, OSError) as exc:
    print(f"rank {rank} stopped after {step} steps: {type(exc).__name__}: {exc}", flush=True)
    sys.exit(1)
"""


@pytest.mark.slow
def test_an_error_on_one_rank_stops_every_rank_naming_it(tmp_path):
    script = tmp_path / "work.py"
    script.write_text(GUARDED_WORK)
    cmd = launch_command([])
    at = cmd.index("pecmae_hub.cli")
    cmd[at - 1 : at + 1] = [str(script)]
    result = subprocess.run(cmd, cwd=tmp_path, env=launch_env(), capture_output=True, text=True, timeout=180)
    out = result.stdout + result.stderr
    assert result.returncode == 1
    assert "rank 1 stopped after 5 steps: OSError: [Errno 28] No space left on device" in out, out[-3000:]
    line = re.search(r"rank 0 stopped after (\d+) steps: ProcessGroupError: (.*)", out)
    assert line, out[-3000:]
    assert "work: rank 1 of 2 failed: OSError: [Errno 28] No space left on device" in line.group(2)
    assert int(line.group(1)) <= 5 + 30  # within one check-in (1 s = 10 steps) and start-up skew, not 600


@pytest.mark.slow
def test_extract_is_bitwise_identical_on_two_processes_and_two_machines(work, one_thread):
    args = ["extract", "clips", "{out}", "--autoencoder", "model/autoencoder", "--no-progress"]
    cwd = os.getcwd()
    os.chdir(work)
    try:
        assert main([a.format(out="f1") for a in args]) == 0
    finally:
        os.chdir(cwd)
    text = _check(run_launch([a.format(out="f2") for a in args], work))
    assert text.count("11 encoded") == 1  # the main process reports for both
    machines = TwoMachines([a.format(out="f3") for a in args], work)
    assert machines.wait() == [0, 0], machines.output(0)[-3000:] + machines.output(1)[-3000:]
    one = _npy_bytes(work / "f1")
    assert len(one) == TRAIN + VAL
    for other in ("f2", "f3"):
        assert _npy_bytes(work / other) == one  # same files, same bytes
        failures = (work / other / "failures.tsv").read_text().splitlines()
        assert len(failures) == 2 and "zz_broken.wav" in failures[1]  # the corrupt file, from whichever rank
        counts = json.loads((work / other / "extract_manifest.json").read_text())["counts"]
        assert counts == {"tracks": 12, "failed": 1, "written_last_run": 11, "skipped_last_run": 0}


@pytest.mark.slow
def test_classify_rows_are_identical_and_complete_on_two_processes_and_two_machines(work):
    args = ["classify", "clips", "--model", "model", "--out", "{out}", "--no-progress", "--device", "cpu"]
    cwd = os.getcwd()
    os.chdir(work)
    try:
        assert main([a.format(out="one.csv") for a in args]) == 3  # the corrupt file has an error row
    finally:
        os.chdir(cwd)
    # every process exits 3 (some inputs failed); the launcher turns any non-zero exit into 1 and lists them
    text = _check(run_launch([a.format(out="two.csv") for a in args], work), 1)
    assert text.count("pecmae classify: 11 classified") == 1  # rank 0 reports, once
    assert "exitcode  : 3" in text  # the launcher may stop the other process once the first has exited
    machines = TwoMachines([a.format(out="machines.csv") for a in args], work)
    assert machines.wait() == [1, 1], machines.output(0)[-3000:]
    assert "exitcode  : 3" in machines.output(0) + machines.output(1)
    one = (work / "one.csv").read_bytes()
    for name in ("two.csv", "machines.csv"):
        assert (work / name).read_bytes() == one  # same rows, same order (input order), same numbers
        assert not (work / f".{name}.shards").exists() and not (work / f".{name}.lock").exists()
    rows = _csv_rows(work / "two.csv")
    assert sorted(r["path"] for r in rows) == sorted(f"clips/{p.name}" for p in (work / "clips").iterdir())
    assert [r["path"] for r in rows if r["error"]] == ["clips/zz_broken.wav"]

    # --out - (the default): the main process prints every process's rows, each once
    streamed = run_launch([a for a in args if a not in ("--out", "{out}")], work)
    lines = [json.loads(line) for line in streamed.stdout.splitlines() if line.startswith("{")]
    assert sorted(r["path"] for r in lines) == sorted(r["path"] for r in rows)
    by_path = {r["path"]: r for r in rows}
    for line in lines:
        if not line["error"]:
            assert line["label"] == by_path[line["path"]]["label"]
            assert {c: f"{v:.6f}" for c, v in line["scores"].items()} == {
                c[2:]: v for c, v in by_path[line["path"]].items() if c.startswith("p_")
            }


@pytest.mark.slow
def test_trained_head_matches_one_process_within_tolerance(work, one_thread):
    if not (work / "f1").is_dir():  # features of the one-process extraction (the test above writes them)
        cwd = os.getcwd()
        os.chdir(work)
        try:
            main(["extract", "clips", "f1", "--autoencoder", "model/autoencoder", "--no-progress"])
        finally:
            os.chdir(cwd)
    args = ["train", "--features", "f1", "--split-train", "train.tsv", "--split-val", "val.tsv", *TRAIN_ARGS]
    cwd = os.getcwd()
    os.chdir(work)
    try:
        assert main([*args, "--out", "h1"]) == 0
    finally:
        os.chdir(cwd)
    _check(run_launch([*args, "--out", "h2"], work))
    machines = TwoMachines([*args, "--out", "h3"], work)
    assert machines.wait() == [0, 0], machines.output(0)[-3000:]
    one = _weights(work / "h1")
    for other in ("h2", "h3"):
        weights = _weights(work / other)
        assert weights.keys() == one.keys()
        worst = max(float(np.abs(weights[k] - one[k]).max()) for k in one)
        assert worst <= 1e-5, f"{other}: weights differ by {worst}"
        metrics = json.loads((work / other / "metrics.json").read_text())
        assert metrics["best_step"] == json.loads((work / "h1" / "metrics.json").read_text())["best_step"]


@pytest.mark.slow
@pytest.mark.parametrize("machines", [1, 2])
def test_killed_rank_stops_the_others_and_a_rerun_with_one_process_resumes(work, tmp_path, machines):
    """Rank 1 is frozen once it has written a few rows of its 150 and killed there; the other rank must stop
    and say so, naming rank 1; a one-process rerun merges both shard files and classifies only what is missing."""
    run = tmp_path / "run"
    (run / "clips").mkdir(parents=True)
    shutil.copytree(work / "model", run / "model")
    wave = sf.read(work / "clips" / "c00.wav", dtype="float32")[0][:12000]  # 0.5 s: above the 0.25 s minimum
    inputs = []
    for i in range(300):
        sf.write(run / "clips" / f"s{i:03d}.wav", wave * (0.5 + i / 600), 24000)
        inputs.append(f"clips/s{i:03d}.wav")
    args = ["classify", "clips", "--model", "model", "--out", "preds.csv", "--no-progress", "--device", "cpu"]
    shard_1 = run / ".preds.csv.shards" / "rank-00001.csv"
    if machines == 2:
        group = TwoMachines(args, run)
        launcher, survivor = group.procs[1].pid, group.procs[0]
    else:
        log = open(run / "launch.log", "w")  # noqa: SIM115 - closed below
        survivor = subprocess.Popen(launch_command(args), cwd=run, env=launch_env(), stdout=log, stderr=log)
        launcher = survivor.pid
    try:
        rank_1 = worker_pid(launcher, rank=1)
        wait_for(lambda: shard_1.is_file() and shard_1.read_text().count("\n") >= 4, 180, "rank 1's first rows")
        os.kill(rank_1, signal.SIGSTOP)
        written_by_1 = shard_1.read_text().count("\n") - 1
        assert written_by_1 < 150  # mid-run: its share is not done
        os.kill(rank_1, signal.SIGKILL)
        killed = time.monotonic()
        code = survivor.wait(timeout=120)
        stopped_in = time.monotonic() - killed
    finally:
        if machines == 2:
            group.kill()
        else:
            if survivor.poll() is None:
                survivor.kill()
            log.close()
    output = group.output(0) if machines == 2 else (run / "launch.log").read_text()
    assert code != 0
    assert stopped_in < 60, f"the other rank took {stopped_in:.0f} s to stop"
    if machines == 2:  # on another machine: our check-in names the rank that vanished
        assert "pecmae classify (rank 0 of 2): error: classify: lost contact with rank 1 of 2" in output, output[-3000:]
    else:  # on one machine: the launcher stops rank 0 (which says why) and names rank 1 as the root cause
        assert "rank      : 1 (local_rank: 1)" in output and "SIGKILL" in output, output[-3000:]
        assert "rank 0 of 2" in output, output[-3000:]
    assert not (run / "preds.csv").exists() or len(_csv_rows(run / "preds.csv")) == 0

    err = io.StringIO()
    cwd, stderr = os.getcwd(), sys.stderr
    os.chdir(run)
    sys.stderr = err
    try:
        assert main(args) == 0  # one process this time
    finally:
        os.chdir(cwd)
        sys.stderr = stderr
    text = err.getvalue()
    merged = [int(n) for n in re.findall(r"merged (\d+) row\(s\) left by an interrupted run", text)]
    assert len(merged) == 2 and merged[1] == written_by_1, text
    classified = int(re.search(r"(\d+) classified, (\d+) skipped", text).group(1))
    assert classified == 300 - sum(merged) and classified > 0, text
    rows = _csv_rows(run / "preds.csv")
    assert sorted(r["path"] for r in rows) == inputs  # complete, none twice
    assert not any(r["error"] for r in rows)
    assert not (run / ".preds.csv.shards").exists()


def _parquet_dataset(clips: list[Path]) -> dict[str, bytes]:
    """A Hub dataset repo in the standard layout: two parquet shards with id / audio / label columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    features = {"id": {"dtype": "string", "_type": "Value"}, "audio": {"_type": "Audio"}}
    files = {"README.md": b"---\nlicense: mit\n---\n# clips\n"}
    half = (len(clips) + 1) // 2
    for n, part in enumerate((clips[:half], clips[half:])):
        table = pa.table(
            {
                "id": [p.stem for p in part],
                "audio": pa.array(
                    [{"bytes": p.read_bytes(), "path": p.name} for p in part],
                    pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
                ),
            }
        ).replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
        buf = io.BytesIO()
        pq.write_table(table, buf)
        files[f"data/test-{n:05d}-of-00002.parquet"] = buf.getvalue()
    return files


@pytest.mark.slow
def test_streamed_hub_dataset_classifies_as_the_folder_does(work, hub, tmp_path, one_thread):
    pytest.importorskip("datasets")
    clips = sorted((work / "clips").glob("c*.wav"))
    hub.add_files("acme/clips", _parquet_dataset(clips), repo_type="dataset")
    folder_args = ["classify", *map(str, clips), "--model", str(work / "model"), "--no-progress", "--device", "cpu"]
    assert main([*folder_args, "--out", str(tmp_path / "folder.csv")]) == 0
    ds_args = ["classify", "hf://datasets/acme/clips", "--model", str(work / "model"), "--no-progress"]
    assert main([*ds_args, "--out", str(tmp_path / "stream.csv")]) == 0
    by_file = {Path(r["path"]).stem: r for r in _csv_rows(tmp_path / "folder.csv")}
    streamed = _csv_rows(tmp_path / "stream.csv")
    assert [r["path"] for r in streamed] == [p.stem for p in clips]  # the id column, in dataset order
    for row in streamed:
        assert {k: v for k, v in row.items() if k != "path"} == {
            k: v for k, v in by_file[row["path"]].items() if k != "path"
        }
    # streamed: the parquet shards were read in byte ranges over HTTP, and nothing went to the Hugging Face cache
    assert {path for path, _ in hub.ranges} == {"data/test-00000-of-00002.parquet", "data/test-00001-of-00002.parquet"}
    assert not [p for v in ("HF_HUB_CACHE", "HF_HOME") for p in Path(os.environ[v]).rglob("*.parquet")]

    # two processes: split_dataset_by_node gives each one parquet shard; one file, the same rows
    result = run_launch([*ds_args, "--out", str(tmp_path / "stream2.csv")], tmp_path)
    _check(result)
    assert (tmp_path / "stream2.csv").read_bytes() == (tmp_path / "stream.csv").read_bytes()

    # the library call and extract take the same source
    from datasets import load_dataset

    from pecmae_hub.pipeline import PECMAE

    model = PECMAE.from_pretrained(work / "model", device="cpu")
    results = dict(model.classify_dataset(load_dataset("acme/clips", split="test", streaming=True)))
    assert {k: p.label for k, p in results.items()} == {k: r["label"] for k, r in by_file.items()}
    encoder = ["--autoencoder", str(work / "model" / "autoencoder"), "--no-progress"]
    assert main(["extract", "hf://datasets/acme/clips", str(tmp_path / "fs"), *encoder]) == 0
    assert main(["extract", str(work / "clips"), str(tmp_path / "ff"), *encoder]) == 0
    assert _npy_bytes(tmp_path / "fs") == _npy_bytes(tmp_path / "ff")  # OUT/<row id>.npy = OUT/<file stem>.npy
