"""Training: loss values by hand, normalisation stats, synthetic clusters, outputs, presets, CLI errors."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from pecmae_hub import cli
from pecmae_hub.errors import ConfigError, DatasetError, InputShapeError
from pecmae_hub.models.head import PrototypeHead
from pecmae_hub.training.features import FeatureSet, compute_norm_stats
from pecmae_hub.training.head import TrainConfig, head_loss, prototype_loss, train_head

pytestmark = pytest.mark.usefixtures("one_thread")

LABELS = ["rock", "blues", "jazz", "pop"]  # deliberately not alphabetical
D = 32


def synthetic(n_tracks, seed, chunks=4, spread=1.0, centers_seed=0):
    """Well-separated Gaussian clusters (one per class) in D=32, raw scale/offset like real z."""
    centers = np.random.default_rng(centers_seed).normal(0, 3, (len(LABELS), D))
    rng = np.random.default_rng(seed)
    labels = [i % len(LABELS) for i in range(n_tracks)]
    feats = [((centers[c] + rng.normal(0, spread, (chunks, D))) * 0.2 + 0.05).astype(np.float32) for c in labels]
    return FeatureSet(feats, labels, [f"{LABELS[c]}/t{seed}_{i}.npy" for i, c in enumerate(labels)], LABELS)


def test_prototype_loss_class_mode_by_hand():
    d = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.5, 5.0, 0.1, 6.0], [7.0, 0.2, 8.0, 9.0]])
    y = torch.tensor([0, 0, 1])  # K=2: protos 0,1 -> class 0; 2,3 -> class 1
    # class 0 protos: min over rows 0,1 -> 0.5, 2.0; class 1 protos: row 2 -> 8.0, 9.0
    assert prototype_loss(d, y, 2, "class").item() == pytest.approx((0.5 + 2.0 + 8.0 + 9.0) / 4)
    # class 1 absent from the batch: its prototypes are dropped
    assert prototype_loss(d, torch.tensor([0, 0, 0]), 2, "class").item() == pytest.approx((0.5 + 0.2) / 2)
    assert prototype_loss(d, y, 2, "all").item() == pytest.approx((0.5 + 0.2 + 0.1 + 4.0) / 4)


def test_total_loss_with_temperature_by_hand():
    logits = torch.tensor([[1.0, 0.0], [0.2, 0.4]])
    d = torch.tensor([[0.3, 0.9], [0.6, 0.1]])
    y = torch.tensor([0, 1])
    total, lp, lc = head_loss(logits, d, y, 1, alpha=0.75, temperature=0.1, mode="class")
    ce0 = -math.log(math.exp(10) / (math.exp(10) + 1))
    ce1 = -math.log(math.exp(4) / (math.exp(2) + math.exp(4)))
    assert lc.item() == pytest.approx((ce0 + ce1) / 2, rel=1e-5)
    assert lp.item() == pytest.approx((0.3 + 0.1) / 2)
    assert total.item() == pytest.approx(0.75 * lp.item() + 0.25 * lc.item(), rel=1e-6)


def test_norm_stats_are_mean_of_per_chunk_mean_and_population_std():
    x = np.array([[1.0, 3.0], [0.0, 4.0]])
    mean, std = compute_norm_stats(x)
    assert mean == pytest.approx((2.0 + 2.0) / 2) and std == pytest.approx((1.0 + 2.0) / 2)


def test_presets_and_overrides():
    g = TrainConfig.from_preset("gtzan")
    assert (g.protos_per_class, g.alpha, g.temperature) == (5, 0.75, 0.1)
    assert (g.batch_size, g.max_lr, g.total_steps) == (256, 1e-3, 150_000)
    assert (g.summarizer, g.distance, g.proto_loss_samples, g.init) == ("transformer", "l2", "class", "kmeans-centers")
    m = TrainConfig.from_preset("medley-solos-db", protos_per_class=None, alpha=0.5)
    assert m.protos_per_class == 20 and m.alpha == 0.5 and m.preset == "medley-solos-db"
    assert TrainConfig.from_preset("gtzan", protos_per_class=3).protos_per_class == 3
    with pytest.raises(ConfigError, match="unknown preset"):
        TrainConfig.from_preset("nsynth")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("head")
    cfg = TrainConfig(protos_per_class=2, batch_size=64, total_steps=300, eval_every=100, log_every=50, seed=7)
    head, metrics = train_head(synthetic(80, 1), synthetic(24, 2), synthetic(24, 3), cfg, out, progress=False)
    return head, metrics, out, cfg


def test_head_learns_separated_clusters(trained):
    head, metrics, _, _ = trained
    assert metrics["val"]["accuracy"] >= 0.95 and metrics["test"]["accuracy"] >= 0.95
    assert metrics["labels"] == LABELS and head.labels == LABELS
    x = np.concatenate(synthetic(80, 1).features)
    mean, std = compute_norm_stats(x)
    assert head.config.norm_mean == pytest.approx(mean) and head.config.norm_std == pytest.approx(std)
    # prototypes end up near their own class: each one is classified as its class
    with torch.no_grad():
        pred = head(head.effective_prototypes()).argmax(1)
    assert (pred == torch.arange(8) // 2).float().mean() >= 0.75


def test_output_folder_is_hub_ready(trained):
    head, _metrics, out, _ = trained
    for name in ("config.json", "model.safetensors", "metrics.json", "labels.txt", "nearest.json", "training_log.csv"):
        assert (out / name).is_file(), name
    assert (out / "labels.txt").read_text().split("\n")[:4] == LABELS
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["seed"] == 7 and saved["steps"] == 300 and saved["labels"] == LABELS
    assert {"accuracy", "macro_f1"} <= set(saved["val"]) and saved["test"]["n_tracks"] == 24
    loaded = PrototypeHead.from_pretrained(out)
    z = torch.randn(5, D) * 0.6
    with torch.no_grad():
        torch.testing.assert_close(loaded(z), head(z))
    nearest = PrototypeHead.load_nearest(out)
    assert len(nearest["prototypes"]) == 8 and len(nearest["prototypes"][0]["nearest"]) == 5
    first = nearest["prototypes"][0]["nearest"][0]
    assert first["track"].startswith("rock/") and isinstance(first["chunk"], int)
    rows = list(csv.DictReader((out / "training_log.csv").open()))
    assert [int(r["step"]) for r in rows] == [50, 100, 150, 200, 250, 300]
    assert rows[1]["val_accuracy"] != "" and rows[0]["val_accuracy"] == ""
    assert float(rows[0]["lr"]) < 1e-3  # OneCycle warm-up from max_lr/25


def test_training_is_deterministic_with_a_seed():
    cfg = TrainConfig(protos_per_class=2, batch_size=16, total_steps=30, eval_every=10, seed=3)
    a, _ = train_head(synthetic(20, 1), synthetic(8, 2), None, cfg, None, progress=False)
    b, _ = train_head(synthetic(20, 1), synthetic(8, 2), None, cfg, None, progress=False)
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), k


def test_all_mode_l1_random_init_without_summarizer_trains():
    cfg = TrainConfig(
        protos_per_class=1,
        batch_size=32,
        total_steps=150,
        eval_every=50,
        seed=0,
        summarizer="none",
        distance="l1",
        proto_loss_samples="all",
        init="random",
        max_lr=1e-2,
    )
    _head, metrics = train_head(synthetic(40, 1), synthetic(12, 2), None, cfg, None, progress=False)
    assert metrics["val"]["accuracy"] >= 0.9 and metrics["test"] is None


def test_dimension_mismatch_is_an_input_shape_error():
    val = synthetic(8, 2)
    val = FeatureSet([f[:, :16] for f in val.features], val.labels, val.track_ids, LABELS)
    with pytest.raises(InputShapeError, match="D=16"):
        train_head(synthetic(40, 1), val, None, TrainConfig(protos_per_class=1, total_steps=1), None, progress=False)


def write_split(root, name, fs, extra=()):
    rows = [f"{fs.label_names[y]}\t{t}" for y, t in zip(fs.labels, fs.track_ids)] + list(extra)
    (root / name).write_text("\r\n".join(rows) + "\r\n")  # upstream GTZAN TSVs are CRLF
    for f, t in zip(fs.features, fs.track_ids):
        (root / t).parent.mkdir(parents=True, exist_ok=True)
        np.save(root / t, f[:, None, :])  # paper-era (n, 1, D) layout


def test_cli_train_with_label_file_and_missing_tracks(tmp_path, capsys):
    write_split(tmp_path, "train.tsv", synthetic(40, 1), extra=["jazz\tjazz/gone.wav"])
    write_split(tmp_path, "val.tsv", synthetic(12, 2))
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n")
    rc = cli.main(
        [
            "train",
            "--features",
            str(tmp_path),
            "--split-train",
            str(tmp_path / "train.tsv"),
            "--split-val",
            str(tmp_path / "val.tsv"),
            "--out",
            str(tmp_path / "out"),
            "--preset",
            "gtzan",
            "--protos-per-class",
            "1",
            "--total-steps",
            "60",
            "--batch-size",
            "32",
            "--eval-every",
            "30",
            "--quiet",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "skipped 1 missing feature files (first: jazz/gone.wav)" in out
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["preset"] == "gtzan" and metrics["config"]["protos_per_class"] == 1
    assert metrics["labels"] == LABELS and metrics["train"]["missing_tracks"] == 1


def test_cli_unknown_label_names_the_label(tmp_path, capsys):
    write_split(tmp_path, "train.tsv", synthetic(8, 1), extra=["polka\tpolka/x.npy"])
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n")
    rc = cli.main(
        [
            "train",
            "--features",
            str(tmp_path),
            "--split-train",
            str(tmp_path / "train.tsv"),
            "--out",
            str(tmp_path / "out"),
            "--total-steps",
            "1",
            "--quiet",
        ]
    )
    assert rc == 1 and "'polka'" in capsys.readouterr().err
    with pytest.raises(DatasetError, match="polka"):
        from pecmae_hub.training.features import load_features

        load_features(tmp_path, tmp_path / "train.tsv", LABELS)


def test_cli_train_with_dataset_spec(tmp_path):
    audio, feats = tmp_path / "audio", tmp_path / "feats"
    fs = synthetic(40, 1)
    for f, t in zip(fs.features, fs.track_ids):
        (audio / t).with_suffix(".wav").parent.mkdir(parents=True, exist_ok=True)
        (audio / t).with_suffix(".wav").write_bytes(b"")  # folder_splits only lists the files
        (feats / t).parent.mkdir(parents=True, exist_ok=True)
        np.save(feats / t, f)
    rc = cli.main(
        [
            "train",
            "--features",
            str(feats),
            "--dataset-spec",
            f"folders:{audio}",
            "--out",
            str(tmp_path / "o"),
            "--protos-per-class",
            "1",
            "--total-steps",
            "20",
            "--batch-size",
            "16",
            "--quiet",
        ]
    )
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert rc == 0 and metrics["labels"] == sorted(LABELS)  # folder kind: sorted class folders
    assert metrics["train"]["n_tracks"] + metrics["val"]["n_tracks"] + metrics["test"]["n_tracks"] == 40
