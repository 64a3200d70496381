"""Evaluation: track-level aggregation, label names, baselines and retention, report files, feature loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pecmae_hub import cli
from pecmae_hub.errors import DatasetError, InputShapeError
from pecmae_hub.models.head import PrototypeHead
from pecmae_hub.training.evaluation import classification_metrics, evaluate_head, format_report, track_logits
from pecmae_hub.training.features import FeatureSet, load_features, resolve_labels

pytestmark = pytest.mark.usefixtures("one_thread")

LABELS = ["trance", "salsa", "bop"]  # not alphabetical: per-class rows must keep this order
D = 16


def centers():
    return np.random.default_rng(0).normal(0, 2, (3, D)).astype(np.float32)


def synthetic(n_tracks, seed, chunks=3):
    rng = np.random.default_rng(seed)
    labels = [i % 3 for i in range(n_tracks)]
    feats = [(centers()[c] + rng.normal(0, 0.5, (chunks, D))).astype(np.float32) for c in labels]
    return FeatureSet(feats, labels, [f"{LABELS[c]}/{seed}_{i}.wav" for i, c in enumerate(labels)], LABELS)


def oracle_head():
    """A head whose single prototype per class is the class center (summariser none)."""
    head = PrototypeHead(LABELS, D, 1, "l2", "none", 0.0, 0.5).eval()
    with torch.no_grad():
        head.protos.copy_(torch.from_numpy(centers())[:, None, :])
        head.linear.bias.zero_()
    return head


def test_track_prediction_is_argmax_of_mean_chunk_logits():
    head = PrototypeHead(["a", "b"], 2, 1, "l2", "none", 0.0, 0.5).eval()
    with torch.no_grad():
        head.protos.copy_(torch.tensor([[[0.0, 0.0]], [[10.0, 0.0]]]))
        head.linear.bias.zero_()
    # two chunks weakly "b", one chunk strongly "a": majority vote says b, mean of logits says a
    chunks = np.array([[0.0, 0.0], [5.2, 0.0], [5.2, 0.0]], dtype=np.float32)
    fs = FeatureSet([chunks], [0], ["t"], ["a", "b"])
    chunk_pred = head(torch.from_numpy(chunks)).argmax(1).tolist()
    assert chunk_pred == [0, 1, 1]
    assert track_logits(head, fs).argmax(1).tolist() == [0]


def test_per_class_metrics_keep_label_order():
    m = classification_metrics([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0], LABELS)
    assert list(m["per_class"]) == LABELS
    assert m["per_class"]["trance"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert m["per_class"]["salsa"]["precision"] == 0.5 and m["per_class"]["salsa"]["recall"] == 1.0
    assert m["per_class"]["bop"]["recall"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    f1s = [0.5, 2 / 3, 0.8]
    assert m["macro_f1"] == pytest.approx(sum(f1s) / 3)


def test_evaluate_head_with_baselines_writes_report(tmp_path):
    result = evaluate_head(oracle_head(), synthetic(15, 2), synthetic(30, 1), tmp_path, mlp_steps=200)
    assert result["prototype"]["accuracy"] == 1.0
    assert result["linear_probe"]["accuracy"] >= 0.9 and result["mlp"]["accuracy"] >= 0.9
    assert result["retention"]["linear_probe"] == pytest.approx(1.0 / result["linear_probe"]["accuracy"])
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    assert saved["labels"] == LABELS and len(saved["predictions"]) == 15
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = format_report(result)
    assert "trance" in report and "retention" in report and "linear probe" in report


def test_test_set_in_another_label_order_is_remapped():
    fs = synthetic(9, 4)
    reordered = FeatureSet(fs.features, [[1, 2, 0][y] for y in fs.labels], fs.track_ids, ["bop", "trance", "salsa"])
    assert evaluate_head(oracle_head(), reordered)["prototype"]["accuracy"] == 1.0
    with pytest.raises(DatasetError, match="'polka'"):
        evaluate_head(oracle_head(), FeatureSet(fs.features[:1], [0], ["x"], ["polka"]))


def test_dimension_mismatch_is_input_shape_error():
    fs = synthetic(3, 5)
    with pytest.raises(InputShapeError, match=r"\(B, 16\)"):
        evaluate_head(oracle_head(), FeatureSet([f[:, :8] for f in fs.features], fs.labels, fs.track_ids, LABELS))


def write_features(root, fs, name):
    lines = []
    for f, y, t in zip(fs.features, fs.labels, fs.track_ids):
        path = (root / t).with_suffix(".npy")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, f)
        lines.append(f"{LABELS[y]}\t{t}")
    (root / name).write_text("\n".join(lines) + "\n")


def test_load_features_reports_missing_and_checks_labels(tmp_path):
    write_features(tmp_path, synthetic(6, 1), "split.tsv")
    with open(tmp_path / "split.tsv", "a") as fh:
        fh.write("bop\tbop/never.wav\n\n")
    fs = load_features(tmp_path, tmp_path / "split.tsv", LABELS)
    assert len(fs) == 6 and fs.missing == ["bop/never.wav"] and fs.embedding_dim == D
    assert resolve_labels(None, tmp_path, [("b", "x"), ("a", "y"), ("b", "z")]) == ["b", "a"]
    (tmp_path / "labels.txt").write_text("bop\nsalsa\ntrance\n")
    assert load_features(tmp_path, tmp_path / "split.tsv").label_names == ["bop", "salsa", "trance"]
    with pytest.raises(DatasetError, match=r"labels \['bop'\] that are not in the label list"):
        load_features(tmp_path, tmp_path / "split.tsv", ["trance", "salsa"])
    (tmp_path / "bad.tsv").write_text("trance only-one-column\n")
    with pytest.raises(DatasetError, match="bad.tsv:1"):
        load_features(tmp_path, tmp_path / "bad.tsv", LABELS)


def test_cli_evaluate(tmp_path, capsys):
    oracle_head().save_pretrained(tmp_path / "model")
    write_features(tmp_path / "f", synthetic(9, 2), "test.tsv")
    write_features(tmp_path / "f", synthetic(12, 1), "train.tsv")
    rc = cli.main(
        [
            "evaluate",
            "--model",
            str(tmp_path / "model"),
            "--features",
            str(tmp_path / "f"),
            "--split",
            str(tmp_path / "f" / "test.tsv"),
            "--train-split",
            str(tmp_path / "f" / "train.tsv"),
            "--mlp-steps",
            "100",
            "--out",
            str(tmp_path / "eval"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "track accuracy 1.0000" in out and "retention" in out
    assert (tmp_path / "eval" / "evaluation.json").is_file() and (tmp_path / "eval" / "confusion_matrix.png").is_file()
