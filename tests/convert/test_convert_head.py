"""convert_head: upstream PrototypeNet Lightning checkpoint -> PrototypeHead with the same logits."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from torch import nn

from pecmae_hub.cli.convert import add_head_arguments, convert_head_from_args
from pecmae_hub.convert.head import convert_head
from pecmae_hub.data.split_files import parse_labels
from pecmae_hub.errors import CheckpointError, ConfigError
from pecmae_hub.models.head import PrototypeHead

C, K, D = 3, 4, 16
LABELS = ["blu", "cla", "cou"]


def fresh_summarizer():
    layer = nn.TransformerEncoderLayer(d_model=D, nhead=1, dim_feedforward=2048, dropout=0.1, batch_first=True)
    return nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)


def upstream_state(summarizer=True, prefix="", discriminator=False, seed=0):
    torch.manual_seed(seed)
    state = {"protos": torch.randn(C * K, 1, D), "linear.weight": torch.randn(C, C * K), "linear.bias": torch.randn(C)}
    if summarizer:
        state.update({f"time_summarizer.{k}": v for k, v in fresh_summarizer().state_dict().items()})
    if discriminator:
        state.update({"discriminator.fc.weight": torch.randn(1, D), "discriminator.fc.bias": torch.randn(1)})
    return {prefix + k: v for k, v in state.items()}


def save_lightning(path, state):
    torch.save({"state_dict": state, "epoch": 4665, "global_step": 102652, "pytorch-lightning_version": "2.1.0"}, path)
    return path


def reference_logits(state, z, mean, std):
    """Independent upstream computation: normalise, summarise, mean squared distance, exp, linear."""
    x = (z - mean) / (2 * std)
    protos = state["protos"]
    if "time_summarizer.layers.0.linear1.weight" in state:
        summ = fresh_summarizer().eval()
        summ.load_state_dict(
            {k[len("time_summarizer.") :]: v for k, v in state.items() if k.startswith("time_summarizer.")}
        )
        with torch.no_grad():
            protos = summ(protos)
    p = protos[:, 0, :]
    d = ((x[:, None, :] - p[None, :, :]) ** 2).mean(-1)
    return torch.exp(-d) @ state["linear.weight"].T + state["linear.bias"]


@pytest.mark.parametrize("prefix,discriminator", [("", False), ("model.", True)])
def test_converted_head_gives_upstream_logits(tmp_path, prefix, discriminator):
    state = upstream_state(prefix=prefix, discriminator=discriminator)
    ckpt = save_lightning(tmp_path / "epoch=4665-step=102652.ckpt", state)
    head = convert_head(ckpt, LABELS, 0.12, 0.8, tmp_path / "head")
    assert head.protos_per_class == K and head.config.summarizer == "transformer"
    plain = {k[len(prefix) :]: v for k, v in state.items() if not k[len(prefix) :].startswith("discriminator.")}
    z = torch.randn(9, D) * 1.6 + 0.12
    with torch.no_grad():
        torch.testing.assert_close(head(z), reference_logits(plain, z, 0.12, 0.8), atol=1e-5, rtol=1e-5)
    loaded = PrototypeHead.from_pretrained(tmp_path / "head")
    with torch.no_grad():
        torch.testing.assert_close(loaded(z), head(z))
    cfg = json.loads((tmp_path / "head" / "config.json").read_text())
    assert cfg["labels"] == LABELS and cfg["norm_mean"] == 0.12 and cfg["norm_std"] == 0.8


def test_checkpoint_without_summarizer_and_labels_from_file(tmp_path):
    state = upstream_state(summarizer=False)
    ckpt = save_lightning(tmp_path / "x.ckpt", state)
    (tmp_path / "labels.txt").write_text("blu\ncla\ncou\n")
    head = convert_head(ckpt, parse_labels(tmp_path / "labels.txt"), 0.0, 0.5, None)
    assert head.config.summarizer == "none" and head.labels == LABELS
    z = torch.randn(4, D)
    with torch.no_grad():
        torch.testing.assert_close(head(z), reference_logits(state, z, 0.0, 0.5), atol=1e-5, rtol=1e-5)
    assert convert_head(ckpt, parse_labels("blu,cla,cou"), 0.0, 0.5, None).labels == LABELS
    with pytest.raises(ConfigError, match="list of class names"):  # text is parsed by the caller (the CLI)
        convert_head(ckpt, "blu,cla,cou", 0.0, 0.5, None)


def test_inconsistent_arguments_raise_config_error(tmp_path):
    ckpt = save_lightning(tmp_path / "x.ckpt", upstream_state())
    with pytest.raises(ConfigError, match="3 classes but 2 labels"):
        convert_head(ckpt, ["a", "b"], 0.0, 0.5, None)
    with pytest.raises(ConfigError, match="K=4"):
        convert_head(ckpt, LABELS, 0.0, 0.5, None, protos_per_class=5)
    with pytest.raises(ConfigError, match="'transformer'"):
        convert_head(ckpt, LABELS, 0.0, 0.5, None, summarizer="none")


def test_unexpected_keys_and_foreign_files_raise_checkpoint_error(tmp_path):
    state = upstream_state()
    state["time_summarizer.norm.weight"] = torch.ones(D)
    with pytest.raises(CheckpointError, match="unsupported time summariser"):
        convert_head(save_lightning(tmp_path / "a.ckpt", state), LABELS, 0.0, 0.5, None)
    state = upstream_state()
    state["linear2.weight"] = torch.ones(2)
    with pytest.raises(CheckpointError, match="unexpected keys.*linear2.weight"):
        convert_head(save_lightning(tmp_path / "b.ckpt", state), LABELS, 0.0, 0.5, None)
    torch.save({"state_dict": {"encoder.weight": torch.ones(2)}}, tmp_path / "c.ckpt")
    with pytest.raises(CheckpointError, match="no 'protos'"):
        convert_head(tmp_path / "c.ckpt", LABELS, 0.0, 0.5, None)


def test_pickled_objects_are_refused_with_a_recipe(tmp_path):
    ckpt = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": upstream_state(), "hyper_parameters": argparse.Namespace(lr=1e-3)}, ckpt)
    with pytest.raises(CheckpointError, match=r"weights_only=True.*refuses.*re-save just the state dict"):
        convert_head(ckpt, LABELS, 0.0, 0.5, None)
    (tmp_path / "garbage.ckpt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        convert_head(tmp_path / "garbage.ckpt", LABELS, 0.0, 0.5, None)


def test_cli_helper(tmp_path, capsys):
    ckpt = save_lightning(tmp_path / "x.ckpt", upstream_state())
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    add_head_arguments(parser)
    args = parser.parse_args(
        [
            "--head",
            str(ckpt),
            "--labels",
            "blu,cla,cou",
            "--norm-mean",
            "0.1",
            "--norm-std",
            "0.7",
            "--out",
            str(tmp_path / "out"),
            "--autoencoder-repo",
            "org/ae",
        ]
    )
    head = convert_head_from_args(args)
    assert "3 classes x 4 prototypes" in capsys.readouterr().out
    assert PrototypeHead.from_pretrained(tmp_path / "out").config.autoencoder.repo_id == "org/ae"
    assert head.config.norm_mean == 0.1
    args = parser.parse_args(["--head", str(ckpt), "--labels", "blu,cla,cou", "--out", str(tmp_path / "o2")])
    with pytest.raises(ConfigError, match="--norm-mean"):
        convert_head_from_args(args)
