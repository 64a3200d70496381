"""Autoencoder training objective: crops, contrastive terms, label checks, resumable training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pecmae_hub.errors import ConfigError
from pecmae_hub.models.autoencoder import Autoencoder, AutoencoderConfig
from pecmae_hub.training.autoencoder import (
    AETrainConfig,
    autoencoder_losses,
    nt_xent,
    random_crops,
    supervised_contrastive,
    train_autoencoder,
)


def test_random_crops_are_two_distinct_chunks_of_the_indexed_clips():
    clips = torch.arange(6 * 100, dtype=torch.float32).reshape(6, 100)
    first, second, idx = random_crops(clips, 40, 16, torch.Generator().manual_seed(0))
    assert first.shape == second.shape == (16, 40) and idx.shape == (16,)
    for a, b, i in zip(first, second, idx):
        row = clips[i]
        for crop in (a, b):  # each crop is a contiguous slice of its own clip
            start = int(crop[0] - row[0])
            assert torch.equal(crop, row[start : start + 40])
        assert abs(int(a[0] - b[0])) >= 40  # no overlap: same clip, other notes


def test_supervised_contrastive_matches_the_formula_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    tau = 0.5
    # 4 views; view 0's only positive is view 2 (same class); its negatives are views 1 and 3 (orthogonal)
    expected = -math.log(math.exp(2.0) / (math.exp(2.0) + 2 * math.exp(0.0)))
    got = supervised_contrastive(a, b, torch.tensor([0, 1]), tau)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # with one label for everything, every other view is a positive: mean log-prob over 3 positives
    same = supervised_contrastive(a, b, torch.tensor([0, 0]), tau)
    log_den = math.log(math.exp(2.0) + 2.0)
    assert same.item() == pytest.approx(-((2.0 - log_den) + 2 * (0.0 - log_den)) / 3, rel=1e-6)


def test_supervised_contrastive_rewards_class_clusters_across_samples():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat(4)  # 16 samples, 4 classes
    centres = F.normalize(torch.randn(4, 16, generator=gen), dim=-1)
    clustered = centres[labels] + 0.05 * torch.randn(16, 16, generator=gen)
    shuffled = clustered[torch.randperm(16, generator=gen)]
    good = supervised_contrastive(clustered, clustered + 0.01, labels, 0.2)
    bad = supervised_contrastive(shuffled, shuffled + 0.01, labels, 0.2)
    assert good < 0.5 * bad
    # NT-Xent only pairs a view with its own twin, so it cannot tell the two apart
    assert nt_xent(clustered, clustered + 0.01, 0.2) < 2.0


def _tiny_ae() -> Autoencoder:
    return Autoencoder(AutoencoderConfig.tiny(chunk_seconds=0.5))


def test_losses_include_supcon_only_with_labels():
    ae = _tiny_ae()
    projector = torch.nn.Linear(ae.embedding_dim, 8)
    wav = 0.1 * torch.randn(4, ae.chunk_samples, generator=torch.Generator().manual_seed(1))
    cfg = AETrainConfig(label_weight=0.5)
    without = autoencoder_losses(ae, projector, wav, cfg, torch.Generator().manual_seed(0), wav.flip(0))
    assert set(without) == {"diffusion", "invariance", "total"}
    with_labels = autoencoder_losses(
        ae, projector, wav, cfg, torch.Generator().manual_seed(0), wav.flip(0), torch.tensor([0, 1, 0, 1])
    )
    assert set(with_labels) == {"diffusion", "invariance", "supcon", "total"}
    expected = with_labels["diffusion"] + with_labels["invariance"] + 0.5 * with_labels["supcon"]
    assert with_labels["total"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_label_weight_without_labels_is_a_config_error(tmp_path):
    clips = torch.zeros(4, 24_000)
    with pytest.raises(ConfigError, match="label_weight=1.0 needs one class id per clip"):
        train_autoencoder(_tiny_ae(), clips, AETrainConfig(steps=1, label_weight=1.0), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="got 3 labels for 4 clips"):
        train_autoencoder(
            _tiny_ae(),
            clips,
            AETrainConfig(steps=1, label_weight=1.0),
            tmp_path,
            progress=False,
            labels=torch.tensor([0, 1, 2]),
        )


def test_training_with_labels_logs_supcon_and_resumes(tmp_path):
    clips = 0.1 * torch.randn(8, 24_000, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1] * 4)
    cfg = AETrainConfig(steps=2, batch_size=4, label_weight=1.0, warmup_steps=1, checkpoint_every=1)
    train_autoencoder(_tiny_ae(), clips, cfg, tmp_path, progress=False, labels=labels)
    rows = (tmp_path / "train_log.csv").read_text().splitlines()
    assert rows[0].split(",") == ["step", "total", "diffusion", "invariance", "supcon", "lr", "seconds"]
    assert len(rows) == 3 and float(rows[1].split(",")[4]) > 0
    cfg4 = AETrainConfig(steps=4, batch_size=4, label_weight=1.0, warmup_steps=1, checkpoint_every=1)
    train_autoencoder(_tiny_ae(), clips, cfg4, tmp_path, progress=False, labels=labels)
    steps = [int(r.split(",")[0]) for r in (tmp_path / "train_log.csv").read_text().splitlines()[1:]]
    assert steps == [1, 2, 3, 4]  # continued from the checkpoint, not restarted
