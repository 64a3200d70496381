"""PrototypeHead: distances, normalisation, effective prototypes, init order, save/load, nearest chunks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from pecmae_hub.configuration import AutoencoderRef
from pecmae_hub.errors import CheckpointError, ConfigError, DatasetError, InputShapeError
from pecmae_hub.models.head import PrototypeHead
from pecmae_hub.training.nearest import nearest_training_chunks, save_nearest

LABELS = ["violin", "piano", "flute"]


def make_head(summarizer="none", distance="l2", k=2, dim=8, mean=0.3, std=1.5, seed=0):
    torch.manual_seed(seed)
    return PrototypeHead(LABELS, dim, k, distance, summarizer, mean, std)


def test_linear_is_one_hot_class_map_and_names():
    head = make_head(k=3)
    w = head.linear.weight.detach()
    assert w.shape == (3, 9)
    for c in range(3):
        for p in range(9):
            assert w[c, p] == (1.0 if p // 3 == c else 0.0)
    assert head.prototype_class(4) == 1 and head.prototype_name(4) == ("piano", 1)
    assert head.prototype_name(8) == ("flute", 2)
    with pytest.raises(IndexError):
        head.prototype_class(9)


@pytest.mark.parametrize("distance", ["l2", "l1"])
@pytest.mark.parametrize("summarizer", ["none", "transformer"])
def test_forward_matches_direct_formula(distance, summarizer):
    head = make_head(summarizer, distance).eval()
    z = torch.randn(5, 8) * 2 + 1
    x = (z - 0.3) / (2 * 1.5)
    with torch.no_grad():
        p = head.protos[:, 0]
        if summarizer == "transformer":
            p = head.time_summarizer(head.protos)[:, 0]
        diff = x[:, None, :] - p[None]
        d = (diff**2).mean(-1) if distance == "l2" else diff.abs().mean(-1)
        ref = torch.exp(-d) @ head.linear.weight.T + head.linear.bias
        out, dist = head(z, return_distances=True)
    torch.testing.assert_close(dist, d, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(head(z[:, None, :]), out)  # (B, 1, D) layout
    torch.testing.assert_close(head.similarities(z), torch.exp(-d), atol=1e-5, rtol=1e-5)
    contrib = head.contributions(z)
    assert contrib.shape == (5, 3, 6)
    torch.testing.assert_close(contrib.sum(-1) + head.linear.bias, out, atol=1e-5, rtol=1e-5)


def test_l2_distance_is_zero_not_negative_at_a_prototype():
    head = make_head().eval()
    z = head.effective_prototypes()
    d = head.distances(z)
    assert (d >= 0).all() and torch.diagonal(d).max() < 1e-5


def test_bad_input_shapes_raise_input_shape_error():
    head = make_head()
    for bad in (torch.randn(4, 7), torch.randn(2, 3, 8), torch.randn(8)):
        with pytest.raises(InputShapeError, match=r"\(B, 8\)"):
            head(bad)


def test_normalisation_round_trip():
    head = make_head(mean=-0.7, std=0.25)
    z = torch.randn(4, 8)
    torch.testing.assert_close(head.normalize(z), (z + 0.7) / 0.5)
    torch.testing.assert_close(head.denormalize(head.normalize(z)), z)


def test_effective_prototypes_in_raw_space_without_summarizer():
    head = make_head(mean=0.3, std=1.5)
    eff = head.effective_prototypes()
    assert eff.shape == (6, 8)
    torch.testing.assert_close(eff, head.protos.detach()[:, 0] * 3.0 + 0.3)


def test_effective_prototypes_use_eval_summarizer_and_keep_the_mode():
    head = make_head("transformer").train()
    a, b = head.effective_prototypes(), head.effective_prototypes()
    assert head.training  # mode restored
    torch.testing.assert_close(a, b)  # no dropout
    with torch.no_grad():
        ref = head.time_summarizer.eval()(head.protos)[:, 0] * 3.0 + 0.3
    torch.testing.assert_close(a, ref, atol=1e-5, rtol=1e-5)


def test_train_mode_attention_dropout_matches_torch_layer():
    """One token: the attention weight of each prototype is dropped (0) or kept (1/0.9), as in torch."""
    head = make_head("transformer").train()
    layer = head.time_summarizer.layers[0]
    layer.dropout.p = layer.dropout1.p = layer.dropout2.p = 0.0
    attn = layer.self_attn
    x = head.protos.detach()[:, 0]

    def ref(scale):
        v = torch.nn.functional.linear(x, attn.in_proj_weight[16:], attn.in_proj_bias[16:]) * scale
        h = layer.norm1(x + attn.out_proj(v))
        return layer.norm2(h + layer.linear2(torch.relu(layer.linear1(h)))).detach()

    kept, dropped = ref(1 / 0.9), ref(0.0)
    torch.manual_seed(0)
    with torch.no_grad():
        ours = torch.stack([head._normalized_prototypes() for _ in range(300)])
        theirs = torch.stack([head.time_summarizer(head.protos)[:, 0] for _ in range(300)])
    for outs in (ours, theirs):
        is_kept = (outs - kept).abs().amax(-1) < 1e-4
        is_dropped = (outs - dropped).abs().amax(-1) < 1e-4
        assert (is_kept | is_dropped).all()
        assert 0.06 < is_dropped.float().mean() < 0.14


def test_summarizer_dropout_is_active_in_train_mode():
    head = make_head("transformer").train()
    z = torch.randn(3, 8)
    assert not torch.equal(head(z), head(z))


def clustered(n_per=40, dim=8, seed=0):
    """3 classes, each made of 2 tight sub-clusters far from everything else."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 10, (3, 2, dim))
    z = np.concatenate([means[c, j] + rng.normal(0, 0.05, (n_per, dim)) for c in range(3) for j in range(2)])
    y = np.repeat(np.arange(3), 2 * n_per)
    return z.astype(np.float32), y, means


def test_kmeans_centers_are_label_major():
    z, y, means = clustered()
    head = make_head(mean=0.3, std=1.5)
    head.init_prototypes(z, y, "kmeans-centers", seed=0)
    raw = head.effective_prototypes().numpy()
    for c in range(3):
        rows = raw[c * 2 : c * 2 + 2]  # prototypes of class c are rows c*K .. c*K+K-1
        for m in means[c]:
            assert np.linalg.norm(rows - m, axis=1).min() < 0.1


def test_kmeans_is_seeded_and_samples_init_picks_training_samples():
    z, y, _ = clustered()
    a, b = make_head(), make_head()
    a.init_prototypes(z, y, "kmeans-centers", seed=3)
    b.init_prototypes(z, y, "kmeans-centers", seed=3)
    torch.testing.assert_close(a.protos, b.protos)
    head = make_head()
    head.init_prototypes(z, y, "kmeans-samples", seed=0)
    x = (z - 0.3) / 3.0
    protos = head.protos.detach()[:, 0].numpy()
    for p in range(6):
        gap = np.abs(x[y == p // 2] - protos[p]).max(1).min()
        assert gap < 1e-6


def test_random_init_is_seeded_and_too_few_samples_is_a_dataset_error():
    z, y, _ = clustered()
    a, b = make_head(), make_head(seed=1)
    a.init_prototypes(z, y, "random", seed=5)
    b.init_prototypes(z, y, "random", seed=5)
    torch.testing.assert_close(a.protos, b.protos)
    with pytest.raises(DatasetError, match="'flute' has 1 training chunks"):
        keep = np.flatnonzero(y != 2).tolist() + [len(y) - 1]
        make_head().init_prototypes(z[keep], y[keep], "kmeans-centers")
    with pytest.raises(ConfigError, match="init"):
        make_head().init_prototypes(z, y, "proto-file")


def test_save_load_round_trip_gives_identical_logits(tmp_path):
    head = make_head("transformer").eval()
    head.config.autoencoder = AutoencoderRef(repo_id="org/ae", revision="v1")
    head.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["labels"] == LABELS and cfg["protos_per_class"] == 2 and cfg["norm_std"] == 1.5
    assert cfg["summarizer"] == "transformer" and cfg["autoencoder"]["repo_id"] == "org/ae"
    keys = set(load_file(str(tmp_path / "model.safetensors")))
    assert "time_summarizer.layers.0.self_attn.in_proj_weight" in keys and "protos" in keys
    loaded = PrototypeHead.from_pretrained(tmp_path)
    assert not loaded.training
    z = torch.randn(7, 8)
    assert torch.equal(loaded(z), head(z))
    torch.testing.assert_close(loaded.effective_prototypes(), head.effective_prototypes())


def test_strict_loading_lists_missing_keys(tmp_path):
    make_head("transformer").save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    del state["time_summarizer.layers.0.linear1.bias"]
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "checksums.json").unlink()  # a hand-made folder: the key check speaks, not the digest
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): time_summarizer.layers.0.linear1.bias") as err:
        PrototypeHead.from_pretrained(tmp_path, verify=False)
    assert "extra.weight" in str(err.value)


def test_config_errors_teach():
    with pytest.raises(ConfigError, match="distance"):
        PrototypeHead(LABELS, 8, 2, distance="cosine")
    with pytest.raises(ConfigError, match="unique"):
        PrototypeHead(["a", "a"], 8, 2)
    with pytest.raises(ConfigError, match="norm_std"):
        PrototypeHead(LABELS, 8, 2, norm_std=0.0)


def test_nearest_training_chunks_match_brute_force(tmp_path):
    head = make_head().eval()
    rng = np.random.default_rng(0)
    feats = [rng.normal(0, 1, (n, 8)).astype(np.float32) for n in (3, 5, 2)]
    table = nearest_training_chunks(head, feats, ["a.npy", "b.npy", "c.npy"], k=4)
    flat = np.concatenate(feats)
    owner = ["a.npy"] * 3 + ["b.npy"] * 5 + ["c.npy"] * 2
    chunk = [0, 1, 2, 0, 1, 2, 3, 4, 0, 1]
    d = head.distances(torch.from_numpy(flat)).detach().numpy()
    for p, entry in enumerate(table["prototypes"]):
        order = np.argsort(d[:, p])[:4]
        assert [(r["track"], r["chunk"]) for r in entry["nearest"]] == [(owner[i], chunk[i]) for i in order]
        assert entry["label"] == LABELS[p // 2] and entry["k"] == p % 2
    save_nearest(table, tmp_path)
    assert PrototypeHead.load_nearest(tmp_path, verify=False) == json.loads(json.dumps(table))  # no checksums.json
    (tmp_path / "bare").mkdir()
    assert PrototypeHead.load_nearest(tmp_path / "bare") is None
