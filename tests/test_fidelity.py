"""Fast by default: the fidelity record is measured, written, checked on load, carried or dropped on save, and
decides what ``precision="auto"`` runs (tiny models with 64-d layers, so that int8 really quantises them)."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from conftest import LABELS, tiny_pecmae

from pecmae_hub.errors import CheckpointError
from pecmae_hub.fidelity import measure_fidelity, probe_signals, write_fidelity
from pecmae_hub.models.autoencoder import Autoencoder, AutoencoderConfig
from pecmae_hub.models.ood import OODScorer
from pecmae_hub.models.precision import cpu_int8_support
from pecmae_hub.pipeline import PECMAE

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not cpu_int8_support()[0], reason="auto runs int8 only on a CPU with int8 kernels"),
]
SR = 24_000


def _autoencoder(seed: int = 0) -> Autoencoder:
    torch.manual_seed(seed)
    cfg = AutoencoderConfig.tiny(
        model_dim=64,
        ff_dim=128,
        frame_heads=4,
        cls_heads=4,
        denoiser_heads=4,
        mel={"n_fft": 512, "griffin_lim_iters": 4},
    )
    return Autoencoder(cfg)


def _tones(n: int = 6, seconds: float = 2.5) -> list[tuple[str, np.ndarray]]:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        f = 110.0 * 2 ** (i / 2)
        wav = 0.25 * np.sin(2 * np.pi * f * t) * (
            1 + 0.5 * np.sin(2 * np.pi * (i + 1) * t)
        ) + 0.01 * rng.standard_normal(len(t))
        out.append((f"tone{i}", wav.astype(np.float32)))
    return out


def _model(seed: int = 0) -> PECMAE:
    """A tiny PECMAE with an OOD scorer whose threshold splits the tones from the noise probes."""
    model = tiny_pecmae(seed, autoencoder=_autoencoder(seed))
    z = torch.cat([model.autoencoder.encode(w, sr=SR) for _, w in _tones()])
    means = z.mean(0, keepdim=True).repeat(len(LABELS), 1)
    whitening = torch.eye(z.shape[1]) / z.std(0).clamp_min(1e-3)
    scorer = OODScorer(means, whitening, labels=list(LABELS))
    scores = [scorer.track_score(model.autoencoder.encode(w, sr=SR)) for _, w in _tones()]
    scorer.thresholds = float(np.max(scores)) * 1.5
    model.ood = scorer
    return model


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """(folder of a saved model with its record, the record)."""
    folder = tmp_path_factory.mktemp("fid") / "model"
    model = _model()
    model.save_pretrained(folder, render=True, steps=2)
    record = write_fidelity(model, folder, _tones())
    return folder, record


def test_the_record_measures_every_figure_and_is_listed(measured):
    folder, record = measured
    assert record["kind"] == "model" and record["held_out"] == {
        "source": "6 clips given",
        "clips": 6,
        "unreadable": 0,
        "max_seconds": 30.0,
        "ood_probes": "synthetic probes (noise, tones, sweeps, clicks)",
    }
    int8 = record["precisions"]["int8"]
    assert int8["passed"] and int8["failures"] == []
    assert 0.999 <= int8["encode"]["z_cosine_min"] < 1.0  # really quantised, and still the same z
    assert int8["encode"]["chunks"] == 6 * 3 + 8 * 2  # the tones (2.5 s) and the probes (1.5 s) in 1-s chunks
    assert int8["classification"]["agreement"] == 1.0 and int8["classification"]["clips"] == 6
    assert int8["ood"]["agreement"] == 1.0 and int8["ood"]["out_of_domain_probes"] == 8
    assert 0 < int8["ood"]["in_domain_reference"] < 14  # the threshold splits tones from probes: a real test
    son = int8["sonify"]
    assert son["items"] == 6 and 0 < son["latent_rel_l2_max"] <= 0.05 and son["log_mel_db_mean"] <= 0.5
    assert son["own_class"] >= son["own_class_reference"] - 6 / 24
    # a model in memory has no pre-renders: sonify decodes with the default sampler, so that is what is measured
    assert record["sonify_settings"] == {"steps": 14, "scheduler": {"name": "unipc"}, "seed": 0, "temperature": 1.0}
    listed = json.loads((folder / "checksums.json").read_text())["files"]
    assert "fidelity.json" in listed
    assert set(record["files"]) == {
        "config.json",
        "model.safetensors",
        "ood.json",
        "ood.safetensors",
        "autoencoder/config.json",
        "autoencoder/model.safetensors",
    }


def test_auto_runs_int8_with_a_passing_record_and_predictions_say_so(measured):
    folder, _ = measured
    model = PECMAE.from_pretrained(folder, device="cpu")
    assert model.precision == "int8" and "fidelity record passed" in model.precision_reason
    exact = PECMAE.from_pretrained(folder, device="cpu", precision="fp32")
    assert exact.precision == "fp32" and exact.precision_reason == "asked for"
    wav = _tones()[2][1]
    fast, ref = model.classify(wav, sr=SR), exact.classify(wav, sr=SR)
    assert (fast.precision, ref.precision) == ("int8", "fp32") and fast.label == ref.label
    assert fast.to_dict()["precision"] == "int8"


def test_without_a_record_auto_is_fp32_and_the_reason_is_logged_once(tmp_path, caplog):
    folder = tiny_pecmae(0, autoencoder=_autoencoder()).save_pretrained(tmp_path / "m")
    caplog.set_level(logging.INFO, logger="pecmae_hub.precision")
    first, second = PECMAE.from_pretrained(folder), PECMAE.from_pretrained(folder)
    assert first.precision == second.precision == "fp32"
    assert "no fidelity record" in first.precision_reason
    assert sum("no fidelity record" in r.getMessage() for r in caplog.records) == 1


def test_a_tampered_record_is_refused_like_any_file(measured, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(measured[0], folder)
    record = json.loads((folder / "fidelity.json").read_text())
    for entry in record["precisions"].values():  # int8, and bf16 where this CPU measured it
        entry["encode"]["z_cosine_min"] = 0.5  # what a forger would not write; the code checks
    (folder / "fidelity.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="fidelity.json in .* does not match the SHA-256"):
        PECMAE.from_pretrained(folder)
    with pytest.warns(UserWarning, match="without verifying"):
        unverified = PECMAE.from_pretrained(folder, verify=False)
    assert unverified.precision == "fp32" and "z_cosine_min 0.5" in unverified.precision_reason


def test_save_carries_the_record_only_while_it_names_the_files(measured, tmp_path, caplog):
    model = PECMAE.from_pretrained(measured[0])
    same = model.save_pretrained(tmp_path / "same")
    assert json.loads((same / "fidelity.json").read_text()) == measured[1]
    assert PECMAE.from_pretrained(same).precision == "int8"
    with torch.no_grad():
        model.head.protos.add_(0.01)  # a changed head: the record no longer speaks for it
    caplog.set_level(logging.INFO, logger="pecmae_hub.precision")
    changed = model.save_pretrained(tmp_path / "changed")
    assert not (changed / "fidelity.json").exists()
    assert any("not carried" in r.getMessage() and "model.safetensors" in r.getMessage() for r in caplog.records)
    assert PECMAE.from_pretrained(changed).precision == "fp32"
    remeasured = model.save_pretrained(tmp_path / "remeasured", fidelity=_tones(3))
    assert json.loads((remeasured / "fidelity.json").read_text())["held_out"]["clips"] == 3
    assert PECMAE.from_pretrained(remeasured).precision == "int8"


def test_a_stale_record_is_not_trusted(measured, tmp_path):
    from safetensors.torch import load_file, save_file

    from pecmae_hub.storage.integrity import update_checksums

    folder = tmp_path / "stale"
    shutil.copytree(measured[0], folder)
    state = load_file(str(folder / "model.safetensors"))  # other head weights, listed again: a valid folder
    state["protos"] = state["protos"] + 0.01
    save_file(state, str(folder / "model.safetensors"))
    update_checksums(folder, ["model.safetensors"])
    model = PECMAE.from_pretrained(folder)
    assert (
        model.precision == "fp32"
        and "stale" in model.precision_reason
        and "model.safetensors" in model.precision_reason
    )


def test_an_autoencoder_folder_has_its_own_record(tmp_path):
    ae = _autoencoder()
    folder = ae.save_pretrained(tmp_path / "ae")
    record = write_fidelity(ae, folder)
    assert record["kind"] == "autoencoder" and record["held_out"]["source"].startswith("synthetic probes")
    entry = record["precisions"]["int8"]
    assert entry["passed"] and "classification" not in entry and entry["sonify"]["items"] == 2
    loaded = Autoencoder.from_pretrained(folder)
    assert loaded.precision == "int8" and "passed" in loaded.precision_reason
    assert Autoencoder.from_pretrained(folder, precision="fp32").precision == "fp32"
    loaded.save_pretrained(folder)  # the same weights again: the record stays valid and listed
    assert (folder / "fidelity.json").is_file() and Autoencoder.from_pretrained(folder).precision == "int8"
    with torch.no_grad():
        loaded.frame_encoder.feat_projector.weight.mul_(1.01)
    loaded.save_pretrained(folder)  # other weights: the stale record is removed, the folder still loads
    assert not (folder / "fidelity.json").exists() and Autoencoder.from_pretrained(folder).precision == "fp32"


def test_records_add_up_and_refuse_fp32_as_a_mode(measured, tmp_path):
    from pecmae_hub.errors import ConfigError
    from pecmae_hub.fidelity import store_record

    folder = tmp_path / "m"
    shutil.copytree(measured[0], folder)
    model = PECMAE.from_pretrained(folder, precision="fp32")
    with pytest.raises(ConfigError, match="reference"):
        measure_fidelity(model, precisions=["fp32"])
    again = measure_fidelity(model, _tones(2), precisions=["int8"], max_items=2)
    again["precisions"] = {"bf16": {**again["precisions"]["int8"], "codec_dtype": "bfloat16"}}
    merged = store_record(again, folder)
    assert set(merged["precisions"]) >= {"int8", "bf16"}  # the int8 entry of the same files is kept


def test_probes_are_deterministic_and_in_range():
    a, b = probe_signals(1.5), probe_signals(1.5)
    assert [n for n, _ in a] == [n for n, _ in b] and len(a) == 8
    assert all(
        np.array_equal(x, y) and len(x) == 36_000 and np.max(np.abs(x)) <= 0.3 + 1e-6 for (_, x), (_, y) in zip(a, b)
    )
