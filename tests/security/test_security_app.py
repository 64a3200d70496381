"""Attack and fault cases on the web app over real HTTP (issue 20).

D4 an autoencoder reference to a server path (and no server path shown), D5 uploads that are never
deleted (bare ``/gradio_api/upload`` calls included), D6 a slow load blocking another user's load,
D15 a clip too short to classify, D16 malformed model JSON shown as raw text, D17 a seed of 2**70,
D19 settings that are not numbers. The app is built once for the module (Gradio import: seconds).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from silent_hub import SilentHub, hub_endpoint

from pecmae_hub.storage.integrity import write_checksums

pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")
FILE_TTL = 2.0  # seconds an upload lives in this module's app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def model_dirs(tiny_model_dir, tmp_path_factory) -> Path:
    """Operator-allowed model folders: a good one, one whose autoencoder points at a server path, and one with a
    malformed pecmae.json."""
    root = tmp_path_factory.mktemp("served")
    shutil.copytree(tiny_model_dir, root / "good")
    outside = tmp_path_factory.mktemp("private") / "secret-ae"
    shutil.copytree(tiny_model_dir / "autoencoder", outside)
    for name, edit in (
        ("evil", lambda d: d["autoencoder"].update(path=None, repo_id=str(outside))),
        ("tilde", lambda d: d["autoencoder"].update(path=None, name="~/secret-ae")),
    ):
        shutil.copytree(tiny_model_dir, root / name)
        config = json.loads((root / name / "config.json").read_text())
        edit(config)
        (root / name / "config.json").write_text(json.dumps(config))
        write_checksums(root / name)
    shutil.copytree(tiny_model_dir, root / "broken")
    (root / "broken" / "pecmae.json").write_text(json.dumps("just a string"))
    write_checksums(root / "broken")
    return root


@pytest.fixture(scope="module")
def app(model_dirs, tmp_path_factory):
    from pecmae_hub.app.ui import build_app

    os.environ["PECMAE_FILE_TTL"] = str(FILE_TTL)  # as an operator sets it (build_app(file_ttl=...) works too)
    try:
        demo = build_app(
            str(model_dirs / "good"),
            prewarm=False,
            examples_dir=tmp_path_factory.mktemp("no-examples"),
            allowed_models="org/*",
            model_dirs=str(model_dirs),
        )
    finally:
        del os.environ["PECMAE_FILE_TTL"]
    port = _free_port()
    demo.launch(prevent_thread_lock=True, server_port=port, quiet=True)
    yield demo, f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture
def client(app):
    from gradio_client import Client

    return Client(app[1], verbose=False)


def _error(client, *args, api_name: str) -> str:
    with pytest.raises(Exception) as info:
        client.predict(*args, api_name=api_name)
    return str(info.value)


# ---- D5 ----------------------------------------------------------------------------------------
def test_d5_uploads_are_deleted_after_their_lifetime_and_the_folder_stops_growing(app):
    import httpx

    def upload(i: int) -> Path:
        files = {"files": (f"clip-{i}.wav", os.urandom(50_000), "audio/wav")}
        response = httpx.post(app[1] + "gradio_api/upload", files=files, timeout=10)  # a bare upload call
        response.raise_for_status()
        return Path(response.json()[0])

    assert app[0].delete_cache == (1, 2)  # every second, files older than FILE_TTL are deleted
    rounds: list[list[Path]] = []
    for round_ in range(5):  # a client that keeps uploading, without ever classifying
        rounds.append([upload(10 * round_ + i) for i in range(3)])
        time.sleep(FILE_TTL / 2)
    alive = [sum(p.exists() for p in batch) for batch in rounds]
    assert alive[0] == 0 and alive[-1] > 0, alive  # the first uploads went while the last ones arrived
    deadline = time.monotonic() + 2 * FILE_TTL + 2
    while any(p.exists() for batch in rounds for p in batch) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert not any(p.exists() for batch in rounds for p in batch), "uploads were never deleted"
    assert list(rounds[0][0].parent.parent.rglob("clip-*.wav")) == []  # the upload folder holds none of them


def test_d5_result_files_of_the_app_expire_too(tmp_path):
    from pecmae_hub.app.checks import prune_files

    old, new = tmp_path / "a" / "old.wav", tmp_path / "new.wav"
    old.parent.mkdir()
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    os.utime(old, (time.time() - 100, time.time() - 100))
    assert prune_files(tmp_path, 50) == 1 and not old.exists() and new.exists()


# ---- D6 ----------------------------------------------------------------------------------------
def test_d6_a_slow_load_does_not_block_another_users_load(app, monkeypatch):
    from gradio_client import Client

    slow_hub = SilentHub(answer_probe=True)  # answers the probe, then never sends a file
    try:
        with hub_endpoint(monkeypatch, slow_hub.url):
            slow = Client(app[1], verbose=False).submit("org/slow", api_name="/load_model")
            time.sleep(1.0)
            assert not slow.done()
            start = time.monotonic()
            other = Client(app[1], verbose=False).submit("good", api_name="/load_model")
            status = other.result(timeout=10)[0]  # the old global lock made this wait behind the slow load
            assert "Loaded" in status and time.monotonic() - start < 5 and not slow.done()
            with pytest.raises(Exception, match="did not answer within"):
                slow.result(timeout=20)
    finally:
        slow_hub.close()


# ---- D4, D16 -----------------------------------------------------------------------------------
def test_d4_a_reference_to_a_server_path_is_refused_and_never_shown(client, model_dirs):
    for name, field in (("evil", "repo_id"), ("tilde", "name")):
        message = _error(client, name, api_name="/load_model")
        assert f"autoencoder {field}" in message and "Model unavailable" in message
        assert "private" not in message and str(model_dirs) not in message and "/tmp" not in message, message


def test_d4_the_model_configuration_shows_no_server_path(client, model_dirs):
    from pecmae_hub.app.texts import client_safe

    assert client_safe({"description": f"made in {model_dirs}/work/x"})["description"] == "made in …/x"
    client.predict("good", api_name="/load_model")
    config = client.predict(api_name="/model_info")[2]
    assert str(model_dirs) not in json.dumps(config)


def test_d16_malformed_model_json_is_a_clear_message_not_raw_text(client):
    message = _error(client, "broken", api_name="/load_model")
    assert "pecmae.json of" in message and "is malformed: the file must hold a JSON object" in message
    assert "AttributeError" not in message and "has no attribute" not in message


# ---- D15, D17 ----------------------------------------------------------------------------------
def test_d15_a_clip_too_short_is_refused_by_the_validator(client, tmp_path):
    from gradio_client import handle_file

    sf.write(tmp_path / "blip.wav", 0.3 * np.ones(800, np.float32), 8000)  # 0.1 s
    message = _error(client, handle_file(str(tmp_path / "blip.wav")), api_name="/classify")
    assert "Audio too short: the clip is 100 ms long; at least 0.25 s is needed" in message


def test_d17_a_huge_seed_is_refused_with_its_range(client):
    message = _error(client, "violin:0", 2, 1.0, 2**70, "unipc", api_name="/sonify")
    assert "Bad settings: the seed must be a whole number, 0 or more (at most 9223372036854775807)" in message
    assert "ufunc" not in message and "isfinite" not in message


# ---- D19 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "variable, value, message",
    [
        ("PECMAE_MAX_SECONDS", "ten", "$PECMAE_MAX_SECONDS must be a number, got 'ten'"),
        ("PECMAE_MAX_SECONDS", "-5", "$PECMAE_MAX_SECONDS must be a positive number"),
        ("PECMAE_FILE_TTL", "inf", "$PECMAE_FILE_TTL must be a positive number"),
        ("GRADIO_SERVER_PORT", "http", "$GRADIO_SERVER_PORT must be a port number (1-65535), got 'http'"),
        ("GRADIO_SERVER_PORT", "70000", "$GRADIO_SERVER_PORT must be a port number (1-65535), got '70000'"),
    ],
)
def test_d19_settings_that_are_not_numbers_are_one_line_errors(monkeypatch, capsys, variable, value, message):
    from pecmae_hub.cli import main

    monkeypatch.setenv(variable, value)
    assert main(["app"]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
