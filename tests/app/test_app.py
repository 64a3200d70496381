"""The Gradio app over real HTTP: every endpoint through ``gradio_client`` against a tiny model.

The app is built and launched once per module (Gradio import ≈ 8 s); each test uses the running server.
The module's model is the conftest tiny model plus nearest-training-chunk audio (``nearest/``) cut from
synthetic tracks named like GM-Solos clips, so captions and players can be checked exactly.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import LABELS, tiny_pecmae

from pecmae_hub.app.plots import pct
from pecmae_hub.batch.results import csv_columns

pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")  # pandas deprecations inside Gradio
ROOT = Path(__file__).resolve().parents[2]
MAX_SECONDS = 5.0
ENDPOINTS = {"/classify", "/prototype_audio", "/sonify", "/model_info", "/load_model", "/report"}
TOP, NEAREST = 3, 2  # top prototypes shown, nearest chunks played per prototype
TRACKS = {
    "a.wav": "synth/violin/synth_violin_00007.wav",
    "b.wav": "synth/piano/synth_piano_00012.wav",
    "c.wav": "synth/flute/synth_flute_00003.wav",
}


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


def synth_track(track: str, sr: int = 24000) -> np.ndarray:
    """2 s of a tone whose pitch depends on the track id (the stand-in for a training clip)."""
    t = np.arange(2 * sr) / sr
    return (0.25 * np.sin(2 * np.pi * (220 + 7 * (sum(map(ord, track)) % 60)) * t)).astype("float32")


@pytest.fixture(scope="module")
def near_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with GM-Solos-like track ids in nearest.json and their chunks' audio in nearest/."""
    import json
    import shutil

    from pecmae_hub.hub.nearest_audio import write_nearest_audio
    from pecmae_hub.storage.integrity import write_checksums

    folder = tmp_path_factory.mktemp("near") / "tiny-near"
    shutil.copytree(tiny_model_dir, folder)
    table = json.loads((folder / "nearest.json").read_text())
    for proto in table["prototypes"]:
        for row in proto["nearest"]:
            row["track"] = TRACKS[row["track"]]
    (folder / "nearest.json").write_text(json.dumps(table, indent=1))
    write_nearest_audio(folder, table, synth_track, 1.0, sources={"synth": {"name": "Synth bank", "licence": "CC0"}})
    write_checksums(folder)
    return folder


@pytest.fixture(scope="module")
def app(near_model_dir, tmp_path_factory):
    examples = make_examples(tmp_path_factory.mktemp("examples"))
    demo, url = launch_app(near_model_dir, examples, prewarm=False, allowed_models="registry")
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


def test_every_endpoint_is_documented(client, app):
    api = client.view_api(return_format="dict", print_info=False)
    assert set(api["named_endpoints"]) >= ENDPOINTS
    classify = api["named_endpoints"]["/classify"]
    assert [p["component"] for p in classify["parameters"]] == ["Audio"]  # the model comes from the session
    assert [r["component"] for r in classify["returns"]] == (
        ["Label", "Markdown", "Html", "Html"]
        + (["Audio"] * (1 + NEAREST) + ["Markdown"]) * TOP
        + ["Json", "Html", "Html", "File"]
    )
    from test_docs import doc_tables

    tables = doc_tables()  # docs/app.md's endpoint table is this app's API
    assert tables.stale_blocks({"endpoints": tables.endpoints_table(app[0])}) == []
    for name, endpoint in api["named_endpoints"].items():  # every input and output has a name a client can read
        labels = [r["label"] for r in endpoint["returns"]] + [p["label"] for p in endpoint["parameters"]]
        assert all(label and not re.fullmatch(r"value_\d+", label) for label in labels), (name, labels)


def _panel_values(html: str, panel: int) -> list[float]:
    """The numbers printed at the end of the bars of the ``panel``-th class panel."""
    section = html.split('<section class="pe-panel">')[panel + 1].split("</section>")[0]
    return [float(v) for v in re.findall(r'<div class="pe-val">([+-][0-9.]+)</div>', section)]


def test_classify_explains_with_points_timeline_and_playable_neighbours(client, app, near_model_dir):
    from gradio_client import handle_file

    from pecmae_hub.pipeline import PECMAE

    clip = app[2] / "violin.wav"
    scores, summary, explanation, similarity, *rest = client.predict(handle_file(str(clip)), api_name="/classify")
    groups = [rest[i * (NEAREST + 2) : (i + 1) * (NEAREST + 2)] for i in range(TOP)]
    details, warning, bars, files = rest[TOP * (NEAREST + 2) :]
    model = PECMAE.from_pretrained(near_model_dir, device="cpu")
    expected = model.classify(str(clip))
    conf = {c["label"]: c["confidence"] for c in scores["confidences"]}
    assert scores["label"] == expected.label == details["label"]
    assert conf == pytest.approx(expected.scores, abs=1e-4) and sum(conf.values()) == pytest.approx(1.0, abs=1e-5)
    assert expected.label in summary and "2.5 s of audio in 3 chunks of 1 s" in summary
    # bars in points: each panel's bars add up to logit / temperature, whose softmax is the scores
    temperature = model.head.config.temperature
    points = {c: v / temperature for c, v in expected.logits.items()}
    ranked = sorted(points, key=points.get, reverse=True)
    for panel, label in enumerate(ranked[:2]):
        assert sum(_panel_values(explanation, panel)) == pytest.approx(points[label], abs=0.06 * 6)
        assert f"{points[label]:.1f} points in total" in explanation
    softmax = np.exp(np.array(list(points.values())) - max(points.values()))
    assert dict(zip(points, softmax / softmax.sum())) == pytest.approx(expected.scores, abs=1e-5)
    assert details["points"] == pytest.approx(points, abs=1e-3) and details["temperature"] == temperature
    assert 'class="pe-track"' in explanation and "grey" not in explanation and "#7f7f7f" not in explanation
    assert similarity.count("<tr>") == 1 + model.head.num_prototypes  # header + one row per prototype
    assert similarity.count("<td") == model.head.num_prototypes * 3  # one cell per chunk
    for rank, ((proto, *nears, caption), top) in enumerate(zip(groups, expected.top_prototypes), 1):
        # players come as updates: the WAV (downloaded by the client) and its plain-word label
        name = f"{top['class']} — prototype {top['k'] + 1} of 2"  # numbered from 1; no internal index
        assert proto["label"] == f"{name}, decoded by the model"
        assert caption.startswith(f"**{rank}. {name}** · ") and f"(p{top['p']})" not in caption
        wav, sr = read_wav(proto["value"])
        reference, _ = sf.read(
            near_model_dir / "prototypes" / f"p{top['p']:03d}_{top['class']}_{top['k']}.wav", dtype="float32"
        )
        np.testing.assert_array_equal(wav, reference)  # the pre-rendered file itself: loudness kept
        assert f"{top['contribution'] / temperature:+.1f} points" in caption
        for rank, (near, row) in enumerate(zip(nears, top["nearest"])):
            label = row["track"].split("/")[1]
            clip_no = int(row["track"][-9:-4])
            words = f"{label}, Synth bank, clip {clip_no}, {row['chunk']:.1f}–{row['chunk'] + 1:.1f} s"
            assert f"{rank + 1}. {words}" in caption and "d =" not in caption
            assert near["label"] == f"Closest training chunk {rank + 1}: {words}" and near["visible"]
            wav, sr = read_wav(near["value"])
            cut = synth_track(row["track"])[row["chunk"] * 24000 : (row["chunk"] + 1) * 24000]
            assert sr == 24000 and wav.shape == (24000,)
            np.testing.assert_allclose(wav, cut, atol=1.5 / 32768)  # the training chunk, 16-bit
    assert details["top_prototypes"][0]["nearest_audio"] == [True, True]
    assert details["segments"][0]["start"] == 0.0 and details["segments"][-1]["end"] == 2.5
    # the visible scores say what the headline says (one rounding), and the tiny model has no OOD scorer
    assert warning["visible"] is False and "pe-dim" not in bars
    for label, score in expected.scores.items():
        assert pct(score) in bars or label not in bars
    assert pct(expected.confidence) in summary and pct(expected.confidence) in bars
    # the result as files: exactly the row `pecmae classify --out x.csv` writes, and its JSONL row
    assert files["visible"] is True  # an update: shown once there is a result
    csv_file, json_file = sorted(files["value"], key=lambda f: not str(f).endswith(".csv"))
    with open(csv_file, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and list(rows[0]) == csv_columns(list(model.labels), TOP)
    assert rows[0]["path"] == "violin.wav" and rows[0]["label"] == expected.label
    assert float(rows[0]["confidence"]) == pytest.approx(expected.confidence, abs=1e-6)
    row = json.loads(Path(json_file).read_text())
    assert row["path"] == "violin.wav" and row["scores"] == pytest.approx(expected.scores, abs=1e-6)


def test_bad_inputs_are_refused_before_running_with_their_key_words(client, app, tmp_path, capfd):
    from gradio_client import handle_file

    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x00\x00\x00\x00WAVE" + os.urandom(2000))
    cases = {
        garbage: "Unreadable audio: cannot read 'garbage.wav' as audio",
        write_tone(tmp_path / "long.wav", MAX_SECONDS + 1.5, 440.0): "Audio too long: the clip is 6.5 s long and "
        "this app accepts up to 5 s",
        write_tone(tmp_path / "silent.wav", 1.0, 440.0, amp=0.0): "Silent audio: 'silent.wav' is silent",
        tmp_path / "empty.wav": "Empty file: 'empty.wav' is empty (0 bytes)",
    }
    (tmp_path / "empty.wav").write_bytes(b"")
    capfd.readouterr()
    for path, message in cases.items():
        with pytest.raises(Exception) as info:
            client.predict(handle_file(str(path)), api_name="/classify")
        assert message in str(info.value), str(info.value)
        assert "PECMAE_" not in str(info.value)  # no setting names in what a user reads
    assert "Traceback" not in capfd.readouterr().err  # expected user errors leave no traceback in the log
    scores = client.predict(handle_file(str(app[2] / "flute.wav")), api_name="/classify")[0]
    assert scores["label"] in LABELS


def test_headline_lists_segments_when_chunks_disagree_and_bars_skip_filler():
    from pecmae_hub.app.plots import class_colors, evidence_rows, explanation_html
    from pecmae_hub.app.texts import summary_text
    from pecmae_hub.prediction import Prediction

    labels = ["violin", "trumpet", "piano", "flute"]
    chunks = ["violin", "violin", "trumpet", "trumpet", "piano", "piano", "flute", "flute"]
    contributions = {c: [0.0] * 8 for c in labels}
    contributions["piano"][4:6] = [0.9, 0.8]
    contributions["piano"][0] = 1e-4  # near-zero filler: folded into "everything else"
    logits = {"violin": 1.0, "trumpet": 1.1, "piano": 1.8, "flute": 1.2}
    scores = dict(
        zip(labels, np.exp(np.array(list(logits.values())) / 0.1) / np.exp(np.array(list(logits.values())) / 0.1).sum())
    )
    pred = Prediction(
        source="mix",
        label="piano",
        scores=scores,
        logits=logits,
        chunk_labels=chunks,
        chunk_starts=[1.5 * i for i in range(8)],
        chunk_ends=[1.5 * (i + 1) for i in range(8)],
        similarities=[[0.5] * 8] * 8,
        contributions=contributions,
        top_prototypes=[],
        duration=12.0,
    )
    text = summary_text(pred, 1.5)
    assert text.startswith("### Mixed: the chunks disagree")
    assert "**violin** 0–3 s · **trumpet** 3–6 s · **piano** 6–9 s · **flute** 9–12 s" in text
    assert "Only 2 of 8 chunks say **piano**" in text
    rows = evidence_rows(pred, "piano", 0.1, labels, 2)
    assert [r["name"] for r in rows] == ["piano 1/2", "piano 2/2", "6 other prototypes + baseline"]
    assert sum(r["points"] for r in rows) == pytest.approx(18.0)
    assert "Piano leads flute by 6.0 points, so it is about 403 times as likely" in explanation_html(pred, labels, 0.1)
    assert len(set(class_colors(labels).values())) == 4
    agree = Prediction(**{**pred.__dict__, "chunk_labels": ["piano"] * 7 + ["flute"]})
    assert summary_text(agree, 1.5).startswith("### piano — ") and "7 of 8 chunks" in summary_text(agree, 1.5)


def test_prototype_audio_is_the_prerendered_wav(client, tiny_model_dir):
    path, caption = client.predict("piano:1", api_name="/prototype_audio")
    wav, sr = read_wav(path)
    reference, _ = sf.read(tiny_model_dir / "prototypes" / "p003_piano_1.wav", dtype="float32")
    assert sr == 24000 and wav.shape == (24000,)
    np.testing.assert_array_equal(wav, reference)
    assert caption.startswith("**piano — prototype 2 of 2** — pre-rendered with") and "(p3)" not in caption
    assert read_wav(client.predict("3", api_name="/prototype_audio")[0])[0].tolist() == wav.tolist()  # by index
    with pytest.raises(Exception, match="Unknown prototype: unknown class 'cello'"):
        client.predict("cello:0", api_name="/prototype_audio")


def test_sonify_decodes_with_the_given_settings(client, tiny_model_dir):
    from pecmae_hub.pipeline import PECMAE

    path, caption = client.predict("violin:0", 3, 1.5, 7, api_name="/sonify")
    wav, sr = read_wav(path)
    assert sr == 24000 and wav.shape == (24000,)
    assert "unipc sampler, 3 steps, guidance 1.5, seed 7" in caption  # the app's sampler: UniPC by default
    model = PECMAE.from_pretrained(tiny_model_dir, device="cpu")
    expected = model.sonify("violin:0", steps=3, guidance=1.5, seed=7, scheduler="unipc")
    np.testing.assert_allclose(wav, np.clip(expected, -1, 1), atol=1.5 / 32768)  # 16-bit WAV
    path, caption = client.predict("violin:0", 3, 1.5, 7, "upstream", api_name="/sonify")
    exact = model.sonify("violin:0", steps=3, guidance=1.5, seed=7, scheduler="upstream")
    np.testing.assert_allclose(read_wav(path)[0], np.clip(exact, -1, 1), atol=1.5 / 32768)
    assert "upstream sampler" in caption
    with pytest.raises(Exception, match="the sampler must be one of unipc, upstream"):
        client.predict("violin:0", 3, 1.0, 0, "euler", api_name="/sonify")
    with pytest.raises(Exception, match="Bad settings: use 1–200 steps of diffusion"):
        client.predict("violin:0", 0, 1.0, 0, api_name="/sonify")
    with pytest.raises(Exception, match="Bad settings: the seed must be a whole number, 0 or more"):
        client.predict("violin:0", 3, 1.0, -1, api_name="/sonify")


def test_sonify_progress_follows_the_diffusion_steps(app):
    """The handler passes gr.Progress on to the sampler: one update per step, as (step, total)."""
    calls = []

    def progress(value, desc=None, total=None, unit="steps"):
        calls.append(value)

    path, _caption = app[0].pecmae.sonify("piano:0", 4, 1.0, 11, "unipc", None, progress=progress)
    assert calls == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)] and Path(path).is_file()
    assert "piano — prototype 1 of 2** — decoded now with unipc sampler, 4 steps" in _caption


def test_model_info_shows_card_labels_metrics_and_config(client):
    card, overview, config = client.predict(api_name="/model_info")
    assert not card.startswith("---") and "PECMAE prototype classifier" in card
    assert config["labels"] == list(LABELS) and config["num_prototypes"] == 6
    assert config["head"]["autoencoder"]["folder"] == "autoencoder"  # 'path' renamed for gradio_client
    assert "| accuracy | 0.5000 |" in overview and "`violin`" in overview
    assert "Nearest training chunks with audio:** 12" in overview and config["chunk_seconds"] == 1.0


def test_the_intro_says_what_the_model_knows(app):
    intro = app[0].pecmae.intro(None)
    assert "**3 classes**: violin, piano, flute" in intro and "Trained on tiny-set" in intro
    assert "**1 s chunks**" in intro and "6 prototypes (2 per class)" in intro and "**Limits:**" in intro


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
    status, _card, overview, config, proto = client.predict("gtzan", api_name="/load_model")
    assert "Loaded" in status and config["source"].startswith("pecmae-hub/gtzan-pecmae-5@")
    assert f"[pecmae-hub/gtzan-pecmae-5 on the Hugging Face Hub]({hub.url}/pecmae-hub/gtzan-pecmae-5)" in overview
    assert "**3 classes**" in status and "**Limits:**" in status  # the new model's intro
    assert hub.count("GET", "/api/models/pecmae-hub/gtzan-pecmae-5/tree/") == 1  # its audio listed once, fetched
    assert proto["value"] == "violin:0" and len(proto["choices"]) == 6  # the prototype selector's update
    direct = tiny_pecmae(seed=3).classify(str(app[2] / "piano.wav"))
    scores = client.predict(handle_file(str(app[2] / "piano.wav")), api_name="/classify")[0]
    conf = {c["label"]: c["confidence"] for c in scores["confidences"]}
    assert conf == pytest.approx(direct.scores, abs=1e-4)  # this session now classifies with the Hub model
    with pytest.raises(Exception, match="Model unavailable: model 'no/such/model' is not offered") as info:
        client.predict("no/such/model", api_name="/load_model")  # refused before it is queued
    assert "PECMAE_" not in str(info.value)
    with pytest.raises(Exception, match="No model: the model name is empty"):
        client.predict("  ", api_name="/load_model")


def test_queue_limits_and_offline_launch_settings(app, monkeypatch):
    from pecmae_hub.app.ui import launch_options

    limits = {fn.api_name: fn.concurrency_limit for fn in app[0].fns.values() if fn.api_name}
    assert limits["classify"] == 2 and limits["sonify"] == 1 and limits["load_model"] is None  # see ModelManager
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
    env = dict(
        os.environ,
        PECMAE_MODEL=str(tiny_model_dir),
        GRADIO_SERVER_PORT=str(port),
        HF_HUB_OFFLINE="1",
        PECMAE_PREWARM="0",
        PECMAE_EXAMPLES_DIR=str(tmp_path),
    )
    proc = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline, page = time.monotonic() + 90, None  # generous: the machine may be busy
        while time.monotonic() < deadline and proc.poll() is None and page is None:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read().decode()
            except OSError:
                time.sleep(0.5)
        assert page is not None, proc.stdout.read() if proc.poll() is not None else "app.py did not answer in 90 s"
        assert "PECMAE Hub" in page
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _prediction(**kw):
    from pecmae_hub.prediction import Prediction

    base = dict(
        source="x",
        label="violin",
        scores={"violin": 0.9, "piano": 0.1},
        logits={"violin": 1.0, "piano": 0.0},
        chunk_labels=["violin"],
        chunk_starts=[0.0],
        chunk_ends=[1.5],
        similarities=[[0.5, 0.4]],
        contributions={"violin": [0.5, 0.0], "piano": [0.0, 0.4]},
        top_prototypes=[],
        duration=1.5,
    )
    return Prediction(**{**base, **kw})


def test_out_of_domain_warning_is_a_callout_with_a_readable_scale():
    from pecmae_hub.app.plots import explanation_html, scores_html
    from pecmae_hub.app.texts import ood_callout, summary_text

    clear = _prediction(ood_score=3.2, in_domain=False, ood_percentile=1.0)
    edge = _prediction(ood_score=1.7, in_domain=False, ood_percentile=0.9983)
    known = _prediction(ood_score=0.9, in_domain=True, ood_percentile=0.62)
    loud = ood_callout(clear, 1.58, 8)
    assert 'class="pe-ood pe-ood-clear"' in loud and 'role="alert"' in loud and "⚠" in loud
    assert "does not sound like anything this model was trained on" in loud
    assert "further from the training audio than any of the model&#x27;s training clips" in loud
    assert "score 3.20; the model trusts up to 1.58" in loud and "a guess, not a recognition" in loud
    soft = ood_callout(edge, 1.58, 8)  # within 1.25 x the threshold: worded as a borderline case
    assert "pe-ood-borderline" in soft and "at the edge of what this model knows" in soft
    assert "than 99.8 % of the model" in soft and "check it by ear" in soft
    assert ood_callout(known, 1.58, 8) == "" and ood_callout(_prediction(), None, 8) == ""
    assert ood_callout(_prediction(ood_score=2.0, in_domain=False), 1.5, 8).count("score 2.00") == 1  # no reference
    # flagged: the headline is a best guess, the scores and bars are faded
    assert summary_text(clear).startswith("### Best guess: violin — 90.0 %") and "Not a recognition" in summary_text(
        clear
    )
    assert "Best guess" not in summary_text(known) and "Not a recognition" not in summary_text(known)
    assert "pe-dim" in scores_html(clear, ["violin", "piano"], dim=True) and "a guess" in scores_html(
        clear, [], dim=True
    )
    assert 'class="pe-why pe-dim"' in explanation_html(clear, ["violin", "piano"], 0.1, 1.5, dim=True)
    assert "pe-dim" not in explanation_html(known, ["violin", "piano"], 0.1, 1.5)


def test_captions_place_the_similarity_among_the_training_chunks():
    from pecmae_hub.app.texts import prototype_caption

    item = {"class": "violin", "k": 1, "p": 22, "contribution": 0.32, "similarity": 0.84}
    plain = prototype_caption(1, item, 0.1, [], per_class=3)
    assert plain.startswith("**1. violin — prototype 2 of 3** · +3.2 points") and "p22" not in plain
    assert "similarity 0.84 (1 = identical)" in plain
    placed = prototype_caption(2, {**item, "similarity_percentile": 0.004}, 0.1, [], per_class=3)
    assert "closer to it than 0.4 % of the violin training chunks (similarity 0.84)" in placed


def test_new_input_clears_every_result_and_a_report_is_kept_locally(app, client, tmp_path):
    from gradio_client import handle_file

    handlers = app[0].pecmae
    cleared = handlers.clear_results()
    assert len(cleared) == 4 + TOP * (NEAREST + 2) + 4
    assert cleared[0] is None and "press **Classify**" in cleared[1] and cleared[2] == cleared[3] == ""
    players = [c for c in cleared[4 : 4 + TOP * (NEAREST + 2)] if not isinstance(c, str)]
    assert len(players) == TOP * (NEAREST + 1) and all(c.visible is False and c.value is None for c in players)
    assert cleared[-4] is None and cleared[-3].visible is False and cleared[-2] == ""
    assert cleared[-1].visible is False and cleared[-1].value is None
    clip = app[2] / "piano.wav"
    result = client.predict(handle_file(str(clip)), api_name="/classify")
    details = result[4 + TOP * (NEAREST + 2)]
    with pytest.raises(Exception, match="Choose what the clip really is"):
        client.predict(handle_file(str(clip)), details, None, "", api_name="/report")
    handlers.reports = type(handlers.reports)(tmp_path / "reports")
    status = client.predict(handle_file(str(clip)), details, "flute", "  it is a flute\n", api_name="/report")
    assert "saved on this server" in status and f"{details['label']} → flute" in status
    with open(handlers.reports.csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["correct label"] == "flute" and rows[0]["note"] == "it is a flute"
    assert rows[0]["predicted"] == details["label"] and rows[0]["model"] == details["model"]
    copied = [p for p in (tmp_path / "reports").rglob("*.wav")]
    assert len(copied) == 1 and copied[0].read_bytes() == clip.read_bytes()  # the clip, for the operator


def test_one_model_means_no_selector_and_the_steps_follow_the_sampler(app):
    from pecmae_hub.app.prototypes_tab import steps_for

    demo = app[0]
    single = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "model-single"]
    selector = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "model-select")
    assert len(selector.choices) > 1 and not single  # this module's app offers the registry models too
    steps = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "sonify-steps")
    sampler = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "sonify-scheduler")
    assert sampler.value == "unipc" and steps.value == 14  # the default sampler at its own steps
    assert steps_for("upstream")["value"] == 40 and steps_for("dpmsolver++")["value"] == 25


def test_selector_lists_only_extra_models_that_load(hub, make_tiny_model, tmp_path, monkeypatch):
    from pecmae_hub.app.access import ModelPolicy
    from pecmae_hub.app.models import ModelManager

    hub.add_folder("test-org/tiny-extra", make_tiny_model(seed=4, folder=tmp_path / "extra"))
    policy = ModelPolicy.from_env("gm-solos", allowed="gtzan,test-org/tiny-extra,test-org/missing")
    manager = ModelManager("gm-solos", device="cpu", policy=policy)
    values = [value for _, value in manager.choices()]
    assert values[0] == policy.startup_alias and "test-org/tiny-extra" in values
    assert "gtzan" not in values and "test-org/missing" not in values  # not published: not offered


def test_links_and_share_buttons_depend_on_where_the_app_runs(monkeypatch):
    from pecmae_hub.app.classify_tab import share_buttons
    from pecmae_hub.app.texts import CITATION, PAPER_URL, UPSTREAM_CODE_URL, code_links

    monkeypatch.delenv("SPACE_ID", raising=False)
    local = code_links()
    assert PAPER_URL in local and UPSTREAM_CODE_URL in local and "huggingface.co/spaces" not in local
    assert share_buttons() == []  # Gradio's Share only works on Spaces
    monkeypatch.setenv("SPACE_ID", "org/pecmae-hub")
    assert "[this app's code](https://huggingface.co/spaces/org/pecmae-hub/tree/main)" in code_links()
    assert share_buttons() == ["share"]
    assert CITATION.startswith("@inproceedings{") and "2402.09318" in CITATION and "Rocamora" in CITATION


def test_prototypes_tab_says_what_the_decoder_reproduces(app):
    """The shipped model's note (also in its card) reaches the Prototypes tab; a model without one shows none."""
    from pecmae_hub import PECMAE
    from pecmae_hub.app.texts import prototypes_note
    from pecmae_hub.hub.registry import embedded_model_dir

    shipped = PECMAE.from_pretrained("gm-solos")
    note = prototypes_note(shipped)
    assert note.startswith("**What you hear.**") and "does not reproduce the notes" in note
    card = (embedded_model_dir("gm-solos") / "README.md").read_text()
    assert shipped.info["sonification_note"] in card
    assert app[0].pecmae.prototypes_note(None) == ""  # the tiny test model states none


def test_the_embedded_model_plays_its_prerendered_prototypes_without_decoding():
    """Every shipped render matches its key at the index's settings (temperature, vocoder and level included),
    so the app serves the file instead of a blank player; the caption names those settings."""
    from pecmae_hub import PECMAE
    from pecmae_hub.app.files import prerendered, render_settings_of
    from pecmae_hub.app.texts import render_words
    from pecmae_hub.render_index import index_settings

    shipped = PECMAE.from_pretrained("gm-solos")
    paths = [prerendered(shipped, p) for p in range(shipped.head.num_prototypes)]
    assert all(path is not None and path.endswith(".wav") for path in paths), paths
    words = render_words(index_settings(render_settings_of(shipped)))
    assert words == "unipc sampler, 14 steps, guidance 1, seed 0, noise temperature 0.4, vocos vocoder, -20 LUFS"


def test_the_model_tab_says_the_precision_in_force_and_why(app):
    """``precision="auto"`` is the app's default too: the tiny test model has no fidelity record, so it runs at
    fp32, and the Model tab (overview and configuration) says so and why."""
    _card, overview, config = app[0].pecmae.model_info(None)
    assert "**Precision:** `fp32` (auto: the model has no fidelity record (fidelity.json)" in overview
    assert config["precision"] == "fp32" and "pecmae fidelity" in config["precision_reason"]
