"""The embedded model's recipe end to end on a tiny configuration, so it cannot rot."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pecmae_hub.data.gm_solos.render import LABELS
from pecmae_hub.recipes import gm_solos as recipe

TINY_AE = dict(
    model_dim=32,
    frame_layers=1,
    frame_heads=2,
    ff_dim=64,
    cls_layers=1,
    cls_heads=2,
    denoiser_layers=1,
    denoiser_heads=2,
    chunk_seconds=1.5,
)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("recipe")
    cfg = recipe.RecipeConfig(
        work=str(work),
        n_per_class=3,
        n_test_per_class=1,
        val_from=2,
        ae_steps=3,
        ae_batch_size=4,
        head_steps=20,
        protos_per_class=1,
        sonify_steps=2,
        out=str(work / "final"),
        autoencoder=TINY_AE,
        vocoder_steps=2,
        vocoder_batch_size=2,
        vocoder=dict(dim=16, intermediate_dim=32, layers=1, n_fft=640),
        decoder_steps=2,
        decoder_batch_size=2,
        decoder=dict(denoiser_type="adaln", denoiser_dim=32, denoiser_layers=1, denoiser_heads=2, denoiser_patch=2),
    )
    recipe.run_recipe(cfg)
    return cfg


def test_every_stage_leaves_its_artefacts(finished_run):
    work = recipe.Path(finished_run.work)
    rows = recipe._metadata_rows(finished_run)
    assert len(rows) == 8 * 3 * 3 + 8 * 1  # three training banks x 3 clips, the test bank x 1
    splits = recipe._split_rows(finished_run)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [8 * 3 * 2, 8 * 3 * 1, 8]
    assert (work / "autoencoder" / "model" / "model.safetensors").is_file()
    assert (work / "vocoder" / "model" / "model.safetensors").is_file()
    assert (work / "decoder" / "model" / "model.safetensors").is_file()
    assert len(list((work / "features").rglob("*.npy"))) == len(rows)
    metrics = json.loads((work / "head" / "metrics.json").read_text())
    assert metrics  # written by the head stage
    summary = json.loads((work / "evaluation" / "summary.json").read_text())
    assert set(summary) == {"val", "test"}
    assert 0.0 <= summary["test"]["prototype"]["accuracy"] <= 1.0


def test_packaged_model_loads_and_classifies(finished_run):
    from pecmae_hub import PECMAE

    out = recipe.Path(finished_run.out)
    assert len(list((out / "prototypes").glob("*.wav"))) == len(LABELS)  # K = 1 per class
    card = (out / "README.md").read_text()
    assert "pipeline_tag: audio-classification" in card
    model = PECMAE.from_pretrained(out)
    assert model.labels == list(LABELS)
    # the package stage ships the re-trained decoder and the neural vocoder, and renders through them
    assert model.autoencoder.config.denoiser_type == "adaln" and model.autoencoder.vocoder is not None
    index = json.loads((out / "prototypes" / "index.json").read_text())
    assert index["vocoder"] == "vocos" and all("gain_db" in e for e in index["prototypes"])
    pred = model.classify(np.random.default_rng(0).normal(0, 0.1, 24_000 * 4).astype(np.float32), sr=24_000)
    assert pred.label in LABELS
    assert len(pred.chunk_labels) == 3  # 4 s in 1.5 s chunks: 1.5 + 1.5 + 1.0
    assert abs(sum(pred.scores.values()) - 1.0) < 1e-5


def test_autoencoder_stage_resumes_without_retraining(finished_run):
    import os

    model_file = recipe.Path(finished_run.work) / "autoencoder" / "model" / "model.safetensors"
    before = os.stat(model_file).st_mtime_ns
    recipe.run_recipe(finished_run, ["autoencoder", "head"])
    assert os.stat(model_file).st_mtime_ns == before


def test_time_budget_stop_is_a_typed_error_and_exit_code_3(monkeypatch, tmp_path, capsys):
    from pecmae_hub.cli import main
    from pecmae_hub.cli import recipe as recipe_cli
    from pecmae_hub.errors import IncompleteRunError

    def stop(cfg, stages):
        raise IncompleteRunError("autoencoder: stopped at step 5 of 10 (time budget); run again to continue")

    monkeypatch.setattr(recipe_cli, "run_recipe", stop)
    assert main(["recipe", "gm-solos", "--work", str(tmp_path)]) == 3
    assert "run again to continue" in capsys.readouterr().err
