"""What a person at a terminal sees: the classify table (under a real pty), the summary line, a missing path as
a usage error, `pecmae --help` examples, and `pecmae app` / `python app.py` on a busy port."""

from __future__ import annotations

import os
import pty
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pecmae_hub.cli import main

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", COLUMNS="100")


def _run_in_pty(args: list[str], timeout: float = 120) -> tuple[int, str]:
    """Run ``python -m pecmae_hub ARGS`` with stdout on a pseudo-terminal (stderr too); returns (status, text)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pecmae_hub", *args], stdout=follower, stderr=follower, cwd=ROOT, env=ENV
    )
    os.close(follower)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return proc.wait(timeout=10), b"".join(chunks).decode("utf-8", "replace").replace("\r", "")


def test_classify_on_a_terminal_prints_a_table_and_counts_guesses():
    status, text = _run_in_pty(["classify", "examples/violin.wav", "examples/speech.wav", "--device", "cpu"])
    assert status == 0, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert "pecmae classify: loading model gm-solos…" in lines[0]  # said before the first decode's warm-up
    header = next(line for line in lines if line.startswith("path"))
    assert header.split() == ["path", "label", "confidence", "in", "domain"]
    violin = next(line for line in lines if line.startswith("examples/violin.wav"))
    speech = next(line for line in lines if line.startswith("examples/speech.wav"))
    assert violin.split()[1:] == ["violin", violin.split()[2], "%", "yes"] and float(violin.split()[2]) > 90
    assert speech.endswith("NO (a guess)")
    assert "{" not in text  # no JSON on a terminal
    assert all(len(line) <= 100 for line in lines[1:-1])  # fits the terminal's width
    assert lines[-1] == "pecmae classify: 2 classified, 0 failed; 1 out of domain: labels are guesses"


def test_a_pipe_or_out_dash_still_gets_jsonl(capsys):
    import json

    assert main(["classify", str(ROOT / "examples" / "speech.wav"), "--no-progress"]) == 0  # stdout: not a tty
    captured = capsys.readouterr()
    row = json.loads(captured.out)
    assert row["in_domain"] is False and 0.99 < row["ood_percentile"] <= 1.0
    assert "1 out of domain: labels are guesses" in captured.err and "loading" not in captured.err


def test_a_missing_path_is_a_usage_error_before_the_model_loads(tmp_path, capsys, monkeypatch):
    from pecmae_hub.pipeline import PECMAE

    monkeypatch.setattr(PECMAE, "from_pretrained", lambda *a, **k: pytest.fail("the model was loaded"))
    out = tmp_path / "p.csv"
    status = main(["classify", str(ROOT / "examples" / "violin.wav"), "no/such.wav", "--out", str(out)])
    assert status == 1 and not out.exists()
    assert "pecmae classify: error: no such file or folder: no/such.wav" in capsys.readouterr().err


def test_help_shows_what_to_try_first(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "try this" in text and "pecmae classify examples/" in text and "pecmae app" in text
    with pytest.raises(SystemExit):
        main(["classify", "--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "exit status:" in text and "a path that does not exist" in text


@pytest.fixture
def busy_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    "command", [["-m", "pecmae_hub", "app", "--port", "{port}"], ["app.py"]], ids=["pecmae-app", "app.py"]
)
def test_app_on_a_busy_port_says_so_in_one_line(busy_port, command):
    args = [a.format(port=busy_port) for a in command]
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**ENV, "GRADIO_SERVER_PORT": str(busy_port), "PECMAE_PREWARM": "0"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1 and "Traceback" not in proc.stderr and "terminate called" not in proc.stderr
    assert f"cannot serve on 127.0.0.1:{busy_port}" in lines[0] and "--port" in lines[0]
    assert "GRADIO_SERVER_PORT" in lines[0] and "loading model" not in proc.stderr  # checked before the model


def test_choose_port_takes_the_next_free_one_when_none_is_named(busy_port, monkeypatch):
    from pecmae_hub.app import ports
    from pecmae_hub.errors import ConfigError

    monkeypatch.setattr(ports, "DEFAULT_PORT", busy_port)
    port, note = ports.choose_port("127.0.0.1", None)
    assert port != busy_port and note == f"port {busy_port} is in use; serving on {port}"
    with pytest.raises(ConfigError, match="not a port number"):
        ports.choose_port("127.0.0.1", 70000)
    with pytest.raises(ConfigError, match="unknown host"):
        ports.choose_port("no-such-host.invalid", 8080)
