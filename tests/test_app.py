"""The Gradio app over real HTTP: every endpoint through ``gradio_client`` against a tiny model.

The app is built and launched once per module (Gradio import ≈ 8 s); each test uses the running server.
"""
from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import LABELS, tiny_pecmae  # noqa: F401  (LABELS: the tiny model's classes)

pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")  # pandas deprecations inside Gradio
ROOT = Path(__file__).resolve().parent.parent
MAX_SECONDS = 5.0
ENDPOINTS = {"/classify", "/prototype_audio", "/sonify", "/model_info", "/load_model"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_tone(path: Path, seconds: float, freq: float, sr: int = 24000, amp: float = 0.3) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (amp * np.sin(2 * np.pi * freq * t)).astype("float32"), sr)
    return path


def make_examples(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for label, freq in zip(LABELS, (440.0, 262.0, 880.0)):
        write_tone(folder / f"{label}.wav", 2.5, freq)
    return folder


def launch_app(model_dir: Path, examples: Path, **kwargs):
    """Build and launch the app in-process; returns (demo, url)."""
    from pecmae_hub.app.ui import build_app

    demo = build_app(str(model_dir), max_seconds=MAX_SECONDS, examples_dir=examples, **kwargs)
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_port=port, quiet=True)
    return demo, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def app(tiny_model_dir, tmp_path_factory):
    examples = make_examples(tmp_path_factory.mktemp("examples"))
    demo, url = launch_app(tiny_model_dir, examples, prewarm=False, allowed_models="registry")
    yield demo, url, examples
    demo.close()


@pytest.fixture(scope="module")
def client(app):
    from gradio_client import Client

    return Client(app[1], verbose=False)


def read_wav(path) -> tuple[np.ndarray, int]:
    data = Path(path).read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE", f"{path} is not a RIFF/WAVE file"
    return sf.read(io.BytesIO(data), dtype="float32")


def test_every_endpoint_is_documented(client):
    api = client.view_api(return_format="dict", print_info=False)
    assert ENDPOINTS <= set(api["named_endpoints"])
    classify = api["named_endpoints"]["/classify"]
    assert [p["component"] for p in classify["parameters"]] == ["Audio"]  # the model comes from the session


def test_classify_scores_plot_and_prototypes(client, app, tiny_model_dir):
    from gradio_client import handle_file
    from pecmae_hub.pipeline import PECMAE

    clip = app[2] / "violin.wav"
    scores, plot, summary, *rest = client.predict(handle_file(str(clip)), api_name="/classify")
    audios, captions, details = rest[:3], rest[3:6], rest[6]
    assert scores["label"] in LABELS
    conf = {c["label"]: c["confidence"] for c in scores["confidences"]}
    assert set(conf) == set(LABELS) and sum(conf.values()) == pytest.approx(1.0, abs=1e-5)
    expected = PECMAE.from_pretrained(tiny_model_dir, device="cpu").classify(str(clip))
    assert scores["label"] == expected.label == details["label"]
    for label in LABELS:
        assert conf[label] == pytest.approx(expected.scores[label], abs=1e-4)
    assert plot["type"] == "matplotlib"
    png = base64.b64decode(plot["plot"].split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert expected.label in summary and "2.5 s" in summary
    assert [c["end"] for c in details["chunks"]] == pytest.approx([1.0, 2.0, 2.5])
    for audio, caption, top in zip(audios, captions, expected.top_prototypes):
        wav, sr = read_wav(audio)
        assert sr == 24000 and wav.shape == (24000,)  # one 1 s chunk of the tiny autoencoder
        assert f"(p{top['p']})" in caption and "Nearest training chunks" in caption
        reference, _ = sf.read(tiny_model_dir / "prototypes" / f"p{top['p']:03d}_{top['class']}_{top['k']}.wav",
                               dtype="float32")
        np.testing.assert_array_equal(wav, reference)  # the file itself: loudness kept


def test_bad_inputs_give_readable_errors_and_the_app_keeps_serving(client, app, tmp_path):
    from gradio_client import handle_file

    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x00\x00\x00\x00WAVE" + os.urandom(2000))
    cases = {
        garbage: "Cannot read 'garbage.wav' as audio",
        write_tone(tmp_path / "long.wav", MAX_SECONDS + 1.5, 440.0): "accepts up to 5 s",
        write_tone(tmp_path / "silent.wav", 1.0, 440.0, amp=0.0): "'silent.wav' is silent",
        tmp_path / "empty.wav": "is empty (0 bytes)",
    }
    (tmp_path / "empty.wav").write_bytes(b"")
    for path, message in cases.items():
        with pytest.raises(Exception) as info:
            client.predict(handle_file(str(path)), api_name="/classify")
        assert message in str(info.value), str(info.value)
    scores = client.predict(handle_file(str(app[2] / "flute.wav")), api_name="/classify")[0]
    assert scores["label"] in LABELS


def test_prototype_audio_is_the_prerendered_wav(client, tiny_model_dir):
    path, caption = client.predict("piano:1", api_name="/prototype_audio")
    wav, sr = read_wav(path)
    reference, _ = sf.read(tiny_model_dir / "prototypes" / "p003_piano_1.wav", dtype="float32")
    assert sr == 24000 and wav.shape == (24000,)
    np.testing.assert_array_equal(wav, reference)
    assert "piano · prototype #1" in caption and "(p3)" in caption
    assert read_wav(client.predict("3", api_name="/prototype_audio")[0])[0].tolist() == wav.tolist()  # by index
    with pytest.raises(Exception, match="unknown class 'cello'"):
        client.predict("cello:0", api_name="/prototype_audio")


def test_sonify_decodes_with_the_given_settings(client, tiny_model_dir):
    from pecmae_hub.pipeline import PECMAE

    path, caption = client.predict("violin:0", 3, 1.5, 7, api_name="/sonify")
    wav, sr = read_wav(path)
    assert sr == 24000 and wav.shape == (24000,)
    assert "3 steps, guidance 1.5, seed 7" in caption
    expected = PECMAE.from_pretrained(tiny_model_dir, device="cpu").sonify("violin:0", steps=3, guidance=1.5, seed=7)
    np.testing.assert_allclose(wav, np.clip(expected, -1, 1), atol=1.5 / 32768)  # 16-bit WAV
    with pytest.raises(Exception, match="less than minimum value 1"):
        client.predict("violin:0", 0, 1.0, 0, api_name="/sonify")


def test_model_info_shows_card_labels_metrics_and_config(client):
    card, overview, config = client.predict(api_name="/model_info")
    assert not card.startswith("---") and "PECMAE prototype classifier" in card
    assert config["labels"] == list(LABELS) and config["num_prototypes"] == 6
    assert config["head"]["autoencoder"]["folder"] == "autoencoder"  # 'path' renamed for gradio_client
    assert "| accuracy | 0.5000 |" in overview and "`violin`" in overview


def test_load_model_offline_message_then_from_the_local_hub(app, hub, make_tiny_model, tmp_path):
    from gradio_client import Client, handle_file

    import pecmae_hub.app.models

    client = Client(app[1], verbose=False)  # its own session: switching models does not touch the others
    hub.stop()
    pecmae_hub.app.models._probe_cache.clear()
    with pytest.raises(Exception) as info:
        client.predict("gtzan", api_name="/load_model")
    assert "not in the local Hugging Face cache" in str(info.value) and "unreachable" in str(info.value)
    hub.start()
    pecmae_hub.app.models._probe_cache.clear()
    hub.add_folder("pecmae-hub/gtzan-pecmae-5", make_tiny_model(seed=3, folder=tmp_path / "gtzan"))
    status, card, overview, config, proto = client.predict("gtzan", api_name="/load_model")
    assert "Loaded" in status and config["source"].startswith("pecmae-hub/gtzan-pecmae-5@")
    assert proto["value"] == "violin:0" and len(proto["choices"]) == 6  # the prototype selector's update
    direct = tiny_pecmae(seed=3).classify(str(app[2] / "piano.wav"))
    scores = client.predict(handle_file(str(app[2] / "piano.wav")), api_name="/classify")[0]
    conf = {c["label"]: c["confidence"] for c in scores["confidences"]}
    assert conf == pytest.approx(direct.scores, abs=1e-4)  # this session now classifies with the Hub model
    with pytest.raises(Exception, match="'no/such/model' is not offered by this server"):
        client.predict("no/such/model", api_name="/load_model")


def test_queue_limits_and_offline_launch_settings(app, monkeypatch):
    from pecmae_hub.app.ui import launch_options

    limits = {fn.api_name: fn.concurrency_limit for fn in app[0].fns.values() if fn.api_name}
    assert limits["classify"] == 2 and limits["sonify"] == 1 and limits["load_model"] == 1
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    options = launch_options()
    assert options["server_name"] == "127.0.0.1" and options["server_port"] == 7999 and options["share"] is False


def test_examples_are_prewarmed_per_model(app):
    handlers = app[0].pecmae
    handlers.prewarm(sorted(app[2].glob("*.wav")))
    assert sum(1 for name, _ in handlers._cache if name == str(handlers.manager.default)) >= len(LABELS)


def test_app_py_starts_offline(tiny_model_dir, tmp_path):
    """``python app.py`` serves the page with HF_HUB_OFFLINE=1 and the model from PECMAE_MODEL."""
    port = free_port()
    env = dict(os.environ, PECMAE_MODEL=str(tiny_model_dir), GRADIO_SERVER_PORT=str(port), HF_HUB_OFFLINE="1",
               PECMAE_PREWARM="0", PECMAE_EXAMPLES_DIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline, page = time.monotonic() + 45, None
        while time.monotonic() < deadline and proc.poll() is None and page is None:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read().decode()
            except OSError:
                time.sleep(0.5)
        assert page is not None, proc.stdout.read() if proc.poll() is not None else "app.py did not answer in 45 s"
        assert "PECMAE Hub" in page
    finally:
        proc.terminate()
        proc.wait(timeout=10)
