"""Inputs a new user or an attacker would try: each gets a clear typed error or a correct result.

One test per row of the bad-input table, through the library (``PECMAE.classify`` / ``sonify``), the
command line (``pecmae classify / sonify``) and, where it applies, the app's API (``gradio_client``).
The kill tests SIGKILL a real ``pecmae classify`` process mid-batch and run two at once on one --out.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import LABELS

from pecmae_hub.audio import collect_audio_files
from pecmae_hub.batch.lock import lock_path
from pecmae_hub.batch.results import ResultsFile, model_fingerprint
from pecmae_hub.cli import main
from pecmae_hub.errors import AudioError, ConfigError, ModelNotFoundError
from pecmae_hub.pipeline import PECMAE

pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")
ROOT = Path(__file__).resolve().parent.parent
SR = 24_000
SOME_FAILED = 3


def tone(seconds: float, freq: float = 440.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write(path: Path, wav: np.ndarray, subtype: str = "PCM_16") -> Path:
    sf.write(path, wav, SR, subtype=subtype)
    return path


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return PECMAE.from_pretrained(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    return {
        "good": write(folder / "good.wav", tone(2.0)),
        "silence": write(folder / "silence.wav", np.zeros(10 * SR, np.float32)),
        "near_silence": write(folder / "near.wav", (3e-5 * rng.standard_normal(3 * SR)).astype(np.float32), "FLOAT"),
        "int16_scale": write(folder / "scaled.wav", tone(1.0) * 32767, "FLOAT"),
        "corrupt": folder.joinpath("corrupt.wav"),
    }


@pytest.fixture(scope="module", autouse=True)
def _corrupt(clips):
    clips["corrupt"].write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio")


def cli(*args: str) -> int:
    return main([*args])


def rows_of(out: Path) -> list[dict]:
    """Rows of a results file; fails unless every line parses and has the header's length."""
    text = out.read_text()
    assert text.endswith("\n")
    if out.suffix == ".csv":
        rows = list(csv.reader(io.StringIO(text)))
        assert all(len(r) == len(rows[0]) for r in rows) and rows[0][0] == "path"
        assert sum(r == rows[0] for r in rows) == 1, "repeated header"
        return [dict(zip(rows[0], r)) for r in rows[1:]]
    return [json.loads(line) for line in text.splitlines()]


# ---- no fabricated answers --------------------------------------------------------------------------
def test_digital_silence_and_near_silence_are_errors(model, clips, tmp_path, capsys):
    for source in (clips["silence"], clips["near_silence"], np.zeros(10 * SR, np.float32)):
        with pytest.raises(AudioError, match=r"is silent .*nothing to classify"):
            model.classify(source, sr=SR)
    out = tmp_path / "p.csv"
    assert (
        cli(
            "classify",
            str(clips["silence"]),
            str(clips["near_silence"]),
            str(clips["good"]),
            "--model",
            str(model.files.folder),
            "--out",
            str(out),
            "--no-progress",
        )
        == SOME_FAILED
    )
    rows = rows_of(out)
    assert [r["error"].split(":")[0] for r in rows] == ["AudioError", "AudioError", ""]
    assert "is silent" in rows[0]["error"] and "is silent" in rows[1]["error"] and rows[2]["label"] in LABELS


def test_silent_chunks_are_left_out_and_marked(model):
    music = tone(2.0, 523.0) + 0.01 * np.random.default_rng(1).standard_normal(2 * SR).astype(np.float32)
    pred = model.classify(
        np.concatenate([music, np.zeros(SR, np.float32), music[:SR], np.zeros(SR // 2, np.float32)]), sr=SR
    )
    assert pred.chunk_silent == [False, False, True, False, True]
    assert pred.chunk_labels[2] is None and pred.chunk_labels[4] is None and None not in pred.chunk_labels[:2]
    alone = model.classify(np.concatenate([music, music[:SR]]), sr=SR)  # the same audible chunks, no silence
    assert pred.label == alone.label
    for c in LABELS:
        assert pred.scores[c] == pytest.approx(alone.scores[c], abs=1e-5)
    assert pred.top_prototypes[0]["similarity"] == pytest.approx(alone.top_prototypes[0]["similarity"], abs=1e-5)


def test_float_samples_on_the_int16_scale(model, clips, tmp_path):
    with pytest.raises(AudioError, match="divide int16 samples by 32768"):
        model.classify(tone(1.0) * 32767, sr=SR)
    with pytest.raises(AudioError, match="divide int16 samples by 32768"):
        model.classify(clips["int16_scale"])
    pcm = (tone(1.0) * 32767).astype(np.int16)  # the int16 array itself is scaled for us
    assert model.classify(pcm, sr=SR).label == model.classify(pcm / 32768.0, sr=SR).label
    out = tmp_path / "p.jsonl"
    assert (
        cli(
            "classify",
            str(clips["int16_scale"]),
            "--model",
            str(model.files.folder),
            "--out",
            str(out),
            "--no-progress",
        )
        == SOME_FAILED
    )
    assert "divide int16 samples by 32768" in rows_of(out)[0]["error"]


def test_sample_rate_and_dtype_checks(model):
    x = tone(1.0)
    for sr, message in (
        ("24000", "not a string"),
        (7, "expected 1000..768000"),
        (True, "invalid sample rate"),
        (44100.5, "whole number"),
        (float("nan"), "whole number"),
        (10**9, "expected 1000"),
    ):
        with pytest.raises(AudioError, match=message):
            model.classify(x, sr=sr)
    start = time.monotonic()
    with pytest.raises(AudioError, match="invalid sample rate 7"):
        model.classify(tone(3.0), sr=7)  # once taken as 10,285 s of audio
    with pytest.raises(AudioError, match="longer than the limit of 1 s"):
        model.classify(tone(2.0), sr=SR, max_seconds=1)
    with pytest.raises(AudioError, match="longer than the limit"):
        model.classify(np.zeros(2 * 3600 * 1000, np.int8), sr=1000)  # 2 h at 1 kHz: refused before converting
    assert time.monotonic() - start < 2.0
    reference = model.classify(x, sr=SR)
    accepted = [
        torch.from_numpy(x).to(torch.bfloat16),
        torch.from_numpy(x).half(),
        x.astype(np.float16),
        (x.astype(np.float64) * 2**31).astype(np.int32),
        torch.from_numpy((x * 32767).astype(np.int16)),
    ]
    for data in accepted:
        pred = model.classify(data, sr=SR)
        assert pred.label == reference.label
        assert pred.scores[pred.label] == pytest.approx(reference.scores[pred.label], abs=0.02)
    refused = (
        (x > 0, "dtype bool"),
        (x.astype(np.complex64), "complex"),
        (torch.from_numpy(x).to(torch.complex64), "complex"),
        (np.array(["a"] * 100), "real samples"),
    )
    for data, message in refused:
        with pytest.raises(AudioError, match=message):
            model.classify(data, sr=SR)


def test_max_seconds_in_the_cli(model, clips, tmp_path):
    out = tmp_path / "p.csv"
    assert (
        cli(
            "classify",
            str(clips["good"]),
            "--model",
            str(model.files.folder),
            "--out",
            str(out),
            "--no-progress",
            "--max-seconds",
            "1",
        )
        == SOME_FAILED
    )
    assert "longer than the limit of 1 s" in rows_of(out)[0]["error"]


# ---- batch output that never lies or breaks -------------------------------------------------------
def test_torn_last_rows_and_glued_lines_are_repaired(model, clips, tmp_path, capsys):
    music = tmp_path / "music"
    music.mkdir()
    paths = [str(write(music / f"t{i}.wav", tone(0.6, 200.0 + 90 * i))) for i in range(4)]
    for suffix, torn in ((".csv", f"{paths[3]},tiny-0,abc"), (".jsonl", '{"path": "' + paths[3] + '", "mod')):
        out = tmp_path / f"p{suffix}"
        args = ["classify", *paths[:3], "--model", str(model.files.folder), "--out", str(out), "--no-progress"]
        assert cli(*args) == 0
        with open(out, "a") as f:
            f.write(torn)  # what a crash in the middle of a row leaves
        assert cli(*args[:4], paths[3], *args[4:]) == 0
        assert [r["path"] for r in rows_of(out)] == paths
        assert "last row was cut short" in capsys.readouterr().err
    out = tmp_path / "p.jsonl"  # an invalid line in the middle (an older version glued rows): dropped, redone
    lines = out.read_text().splitlines(keepends=True)
    out.write_text(lines[0] + lines[1][:30] + lines[2] + lines[3])
    assert cli("classify", *paths, "--model", str(model.files.folder), "--out", str(out), "--no-progress") == 0
    assert sorted(r["path"] for r in rows_of(out)) == sorted(paths)


def test_another_model_with_the_same_labels_is_refused(model, make_tiny_model, clips, tmp_path, capsys):
    out = tmp_path / "p.csv"
    assert (
        cli("classify", str(clips["good"]), "--model", str(model.files.folder), "--out", str(out), "--no-progress") == 0
    )
    row = rows_of(out)[0]
    assert (row["model"], row["model_fingerprint"]) == (model.name, model_fingerprint(model))
    other = PECMAE.from_pretrained(make_tiny_model(seed=9))
    assert other.labels == model.labels and model_fingerprint(other) != model_fingerprint(model)
    before = out.read_bytes()
    assert cli("classify", str(clips["near_silence"]), "--model", str(other.files.folder), "--out", str(out)) == 1
    assert "not of this model" in capsys.readouterr().err and out.read_bytes() == before
    with ResultsFile(out) as results, pytest.raises(ConfigError, match="one file must not mix models"):
        results.begin(other.name, model_fingerprint(other), other.labels, 3)  # the library refuses it the same way


def test_fixed_file_is_retried_and_failures_give_status_3(model, clips, tmp_path, capsys):
    music = tmp_path / "music"
    music.mkdir()
    for i in range(20):
        shutil.copy(clips["good"], music / f"ok{i:02d}.wav")
    for i in range(3):
        shutil.copy(clips["corrupt"], music / f"bad{i}.wav")
    out = tmp_path / "p.csv"
    args = ["classify", str(music), "--model", str(model.files.folder), "--out", str(out), "--no-progress"]
    assert cli(*args) == SOME_FAILED  # 3 of 23 failed
    assert "20 classified, 0 skipped (already in" in capsys.readouterr().err
    failures = [r for r in model.classify([f.path for f in collect_audio_files(music)]) if not r.ok]
    assert len(failures) == 3 and {f.error for f in failures} == {"AudioError"}  # the API: one failure per input
    shutil.copy(clips["good"], music / "bad1.wav")  # one gets fixed: the plain rerun retries the failed ones
    assert cli(*args) == SOME_FAILED
    assert "1 classified, 20 skipped" in capsys.readouterr().err
    rows = rows_of(out)
    assert len(rows) == 23 and sum(bool(r["error"]) for r in rows) == 2


def test_one_file_under_four_spellings_is_one_input(model, clips, tmp_path, monkeypatch):
    folder = clips["good"].parent
    monkeypatch.chdir(folder)
    (tmp_path / "link.wav").symlink_to(clips["good"])
    spellings = ["good.wav", "./good.wav", str(clips["good"]), str(tmp_path / "link.wav")]
    assert len(collect_audio_files(spellings)) == 1
    out = tmp_path / "p.csv"
    assert cli("classify", *spellings, "--model", str(model.files.folder), "--out", str(out), "--no-progress") == 0
    assert [r["path"] for r in rows_of(out)] == ["good.wav"]


# ---- the kill tests: a real process, SIGKILL mid-batch, two runs at once ----------------------------
SLOW_RUN = """
import sys, time
from pecmae_hub.pipeline import PECMAE
real = PECMAE.classify
PECMAE.classify = lambda self, *a, **k: (time.sleep(float(sys.argv[1])), real(self, *a, **k))[1]
from pecmae_hub.cli import main
sys.exit(main(sys.argv[2:]))
"""


def slow_classify(delay: float, *args: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-c", SLOW_RUN, str(delay), "classify", *args, "--no-progress"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_rows(out: Path, n: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out.exists() and out.read_text().count("\n") >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"{out} did not get {n} lines in {timeout} s")


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("batch")
    return [str(write(folder / f"b{i:02d}.wav", tone(0.5, 150.0 + 70 * i))) for i in range(8)]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_sigkill_mid_batch_then_rerun(model, batch, tmp_path, capsys, suffix):
    out = tmp_path / f"p{suffix}"
    common = ["--model", str(model.files.folder), "--out", str(out)]
    proc = slow_classify(0.2, *batch, *common)
    wait_for_rows(out, 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert out.read_text().count("\n") - (suffix == ".csv") < len(batch)  # killed half-way
    with open(out, "a") as f:  # and the row it was writing, torn
        f.write(f"{batch[-1]},tiny-0,12" if suffix == ".csv" else '{"path": "' + batch[-1] + '", "model": "ti')
    assert cli("classify", *batch, *common, "--no-progress") == 0  # the dead run's lock is gone with it
    assert "last row was cut short" in capsys.readouterr().err
    rows = rows_of(out)
    assert sorted(r["path"] for r in rows) == sorted(batch) and all(not r["error"] for r in rows)


def test_two_runs_on_one_out_the_second_fails_fast(model, batch, tmp_path, capsys):
    out = tmp_path / "p.csv"
    common = ["--model", str(model.files.folder), "--out", str(out)]
    first = slow_classify(0.3, *batch, *common)
    wait_for_rows(out, 2, first)
    start = time.monotonic()
    assert cli("classify", *batch, *common, "--no-progress") == 1
    assert time.monotonic() - start < 5.0
    err = capsys.readouterr().err
    assert "is being written by another `pecmae classify`" in err and f"process {first.pid}" in err
    assert first.wait(timeout=60) == 0
    assert sorted(r["path"] for r in rows_of(out)) == sorted(batch) and not lock_path(out).exists()


# ---- typed errors before any work -------------------------------------------------------------------
def test_cli_checks_before_work(model, clips, tmp_path, capsys, monkeypatch):
    folder = str(model.files.folder)
    decodes = []
    monkeypatch.setattr(type(model.autoencoder), "decode", lambda *a, **k: decodes.append(1) / 0)
    (tmp_path / "dir.csv").mkdir()
    cases = [
        (["classify", str(clips["good"]), "--model", "", "--out", str(tmp_path / "a.csv")], "model name is empty"),
        (
            ["classify", str(clips["good"]), "--model", folder, "--out", str(tmp_path / "no" / "a.csv")],
            "does not exist: create it first",
        ),
        (["classify", str(clips["good"]), "--model", folder, "--out", str(tmp_path / "dir.csv")], "is a folder"),
        (["sonify", "--model", folder, "--prototype", "4", "--out", str(tmp_path / "p.m4a")], "cannot write audio"),
        (["sonify", "--model", folder, "--prototype", "4", "--out", str(tmp_path / "no" / "p.wav")], "does not exist"),
        (
            ["sonify", "--model", folder, "--prototype", "4", "--steps", "1000000", "--out", str(tmp_path / "p.wav")],
            "steps must be in 1..1000",
        ),
        (["sonify", "--model", "", "--prototype", "4", "--out", str(tmp_path / "p.wav")], "model name is empty"),
    ]
    if not torch.cuda.is_available():
        cases.append(
            (
                [
                    "classify",
                    str(clips["good"]),
                    "--model",
                    folder,
                    "--device",
                    "cuda",
                    "--out",
                    str(tmp_path / "a.csv"),
                ],
                "use --device cpu",
            )
        )
    for args, message in cases:
        assert cli(*args) == 1, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (args, err)
    assert decodes == [] and list(tmp_path.glob("*.csv*")) == [tmp_path / "dir.csv"] and not list(tmp_path.glob("p.*"))
    with pytest.raises(ModelNotFoundError, match="model name is empty"):
        PECMAE.from_pretrained("")
    for steps in (0, 1_000_000, 2.5, "40"):
        with pytest.raises(ConfigError, match="steps must"):
            model.sonify(4, steps=steps)
    with pytest.raises(ConfigError, match="guidance"):
        model.sonify(4, steps=2, guidance=float("nan"))
    assert decodes == []


def test_sonify_writes_mp3(model, tmp_path, capsys):
    out = tmp_path / "p.mp3"
    assert (
        cli("sonify", "--model", str(model.files.folder), "--prototype", "violin:0", "--steps", "2", "--out", str(out))
        == 0
    )
    assert sf.info(out).format == "MP3" and sf.info(out).samplerate == SR


# ---- the app: model loading allow-list, uploads ------------------------------------------------------
@pytest.fixture(scope="module")
def app(tiny_model_dir, tmp_path_factory):
    import socket

    from pecmae_hub.app.ui import build_app

    root = tmp_path_factory.mktemp("served")
    shutil.copytree(tiny_model_dir, root / "models" / "good")
    (root / "models" / "broken").mkdir()
    (root / "models" / "broken" / "config.json").write_text("{ not json")
    shutil.copytree(tiny_model_dir, root / "secret" / "model")
    demo = build_app(
        str(tiny_model_dir),
        max_seconds=5.0,
        examples_dir=root / "no-examples",
        prewarm=False,
        model_dirs=str(root / "models"),
        max_upload_mb=1,
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(prevent_thread_lock=True, server_port=port, quiet=True)
    yield demo, f"http://127.0.0.1:{port}/", root
    demo.close()


def client_of(app):
    from gradio_client import Client

    return Client(app[1], verbose=False)  # a fresh session each time


def app_error(client, *args, api_name: str) -> str:
    with pytest.raises(Exception) as info:
        client.predict(*args, api_name=api_name)
    return str(info.value)


def test_app_loads_only_allowed_models_and_hides_server_paths(app, tiny_model_dir):
    root = app[2]
    client = client_of(app)
    refused = [
        str(root / "secret" / "model"),
        str(root / "secret" / "nothing"),
        "/etc",
        "../../etc/passwd",
        "models/../secret/model",
        "good/../../secret/model",
        "gtzan",
        "some-org/some-model",
        "~root",
    ]
    texts = set()
    for name in refused:
        text = app_error(client, name, api_name="/load_model")
        assert f"{name!r} is not offered by this server" in text, text
        texts.add(text.replace(repr(name), "NAME"))
        assert str(root) not in text.replace(repr(name), "")
    assert len(texts) == 1  # the same words whether the path exists or not
    assert "model name is empty" in app_error(client, "", api_name="/load_model")
    text = app_error(client, "broken", api_name="/load_model")
    assert "'broken' cannot be loaded" in text and str(root) not in text and "/tmp" not in text
    for name in ("good", str(root / "models" / "good"), Path(tiny_model_dir).name):
        status, *_ = client.predict(name, api_name="/load_model")
        assert "Loaded" in status, name
    config = client.predict(api_name="/model_info")[2]
    assert config["source"] == f"folder {Path(tiny_model_dir).name}"  # not the server path


def test_app_refuses_and_deletes_bad_uploads(app, tmp_path):
    import httpx
    from gradio_client import handle_file

    client = client_of(app)
    upload_root = app[0].pecmae.upload_root
    tag = uuid.uuid4().hex[:8]
    silent = write(tmp_path / f"silent-{tag}.wav", np.zeros(3 * SR, np.float32))
    near = write(tmp_path / f"near-{tag}.wav", (3e-5 * np.random.default_rng(2).standard_normal(3 * SR)), "FLOAT")
    scaled = write(tmp_path / f"scaled-{tag}.wav", tone(1.0) * 32767, "FLOAT")
    for path, message in ((silent, "is silent"), (near, "is silent"), (scaled, "divide int16 samples by 32768")):
        text = app_error(client, handle_file(str(path)), api_name="/classify")
        assert message in text and str(tmp_path) not in text, text
        assert not list(upload_root.rglob(path.name)), f"refused upload {path.name} was kept"
    big = f"big-{tag}.wav"
    response = httpx.post(f"{app[1]}gradio_api/upload", files={"files": (big, os.urandom(1_200_000))}, timeout=30)
    assert response.status_code == 413 and "maximum allowed size" in response.text
    assert not list(upload_root.rglob(big))
    assert client.predict(handle_file(str(write(tmp_path / "ok.wav", tone(2.0)))), api_name="/classify")[0]["label"]


def test_app_sonify_steps_are_bounded(app):
    text = app_error(client_of(app), "violin:0", 1_000_000, 1.0, 0, api_name="/sonify")
    assert "greater than maximum value 200" in text or "1–200 steps" in text, text
