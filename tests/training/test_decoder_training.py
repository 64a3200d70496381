"""Decoder re-training keeps the encoder (and so z) bit-identical; vocoder training runs, resumes and learns."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pecmae_hub.errors import IncompleteRunError
from pecmae_hub.models.autoencoder import Autoencoder, AutoencoderConfig
from pecmae_hub.models.vocoder import MelVocoder, VocoderConfig
from pecmae_hub.training.decoder import DecoderTrainConfig, decoder_pairs, train_decoder
from pecmae_hub.training.vocoder import VocoderTrainConfig, train_vocoder


def _clips(n=6, seconds=2.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 24_000)) / 24_000
    freqs = rng.uniform(200, 800, size=n)
    return torch.from_numpy(np.stack([0.3 * np.sin(2 * np.pi * f * t) for f in freqs]).astype(np.float32))


def test_decoder_training_changes_only_the_denoiser(tmp_path, one_thread):
    torch.manual_seed(0)
    trained = Autoencoder(AutoencoderConfig.tiny("mel"))
    ae = Autoencoder(dataclasses.replace(trained.config, denoiser_type="adaln", denoiser_dim=48, denoiser_patch=2))
    ae.load_state_dict({k: v for k, v in trained.state_dict().items() if not k.startswith("denoiser.")}, strict=False)
    clips = _clips()
    z_before = ae.encode(clips[0].numpy(), sr=24_000)
    encoder_before = {k: v.clone() for k, v in ae.state_dict().items() if not k.startswith("denoiser.")}
    denoiser_before = {k: v.clone() for k, v in ae.state_dict().items() if k.startswith("denoiser.")}
    z, signal = decoder_pairs(ae, clips, chunk_hop=ae.chunk_samples // 2)
    assert z.shape == (6 * 3, ae.embedding_dim) and signal.shape == (18, ae.chunk_frames, 16)
    train_decoder(ae, z, signal, DecoderTrainConfig(steps=4, batch_size=4, warmup_steps=1), tmp_path, progress=False)
    after = ae.state_dict()
    assert all(torch.equal(after[k], v) for k, v in encoder_before.items())  # the CLS PE scale included
    assert any(not torch.equal(after[k], v) for k, v in denoiser_before.items())
    assert torch.equal(ae.encode(clips[0].numpy(), sr=24_000), z_before)
    # resumable: a second call with more steps continues from the checkpoint
    log = (tmp_path / "train_log.csv").read_text().splitlines()
    assert len(log) == 1 + 4
    train_decoder(ae, z, signal, DecoderTrainConfig(steps=6, batch_size=4, warmup_steps=1), tmp_path, progress=False)
    assert len((tmp_path / "train_log.csv").read_text().splitlines()) == 1 + 6


def test_vocoder_training_reduces_the_loss_and_resumes(tmp_path, one_thread):
    torch.manual_seed(0)
    ae = Autoencoder(AutoencoderConfig.tiny("mel"))
    voc = MelVocoder(VocoderConfig.tiny(n_mels=16, mel=dict(ae.config.mel)))
    cfg = VocoderTrainConfig(steps=30, batch_size=4, segment_frames=12, lr=2e-3, checkpoint_every=10)
    train_vocoder(voc, ae.codec, _clips(), cfg, tmp_path, progress=False, time_budget_s=0.0)
    rows = (tmp_path / "train_log.csv").read_text().splitlines()
    assert len(rows) == 1 + 10  # the time budget stops it at the first checkpoint
    train_vocoder(voc, ae.codec, _clips(), cfg, tmp_path, progress=False)
    rows = [r.split(",") for r in (tmp_path / "train_log.csv").read_text().splitlines()[1:]]
    assert [int(r[0]) for r in rows] == list(range(1, 31))
    mel = [float(r[1]) for r in rows]
    assert np.mean(mel[-5:]) < 0.9 * np.mean(mel[:5]), (mel[:5], mel[-5:])


def test_recipe_stages_vocoder_and_decoder_on_a_tiny_model(tmp_path, one_thread):
    """The recipe's vocoder and decoder stages, from a finished model (--from-model), end with an autoencoder
    whose encoder is bit-identical and which decodes through its new vocoder."""
    from pecmae_hub.recipes.gm_solos import RecipeConfig
    from pecmae_hub.recipes.gm_solos_sound import stage_decoder, stage_vocoder

    pytest.importorskip("auraloss")
    torch.manual_seed(0)
    ae = Autoencoder(AutoencoderConfig.tiny("mel"))
    work = tmp_path / "work"
    ae.save_pretrained(work / "autoencoder" / "model")
    data = tmp_path / "data"
    (data / "fluidr3").mkdir(parents=True)
    import soundfile as sf

    rows = ["path,label,label_id,bank,program,melody_source,seed,index,split"]
    for i, clip in enumerate(_clips(4, seconds=3.0)):
        sf.write(data / "fluidr3" / f"c{i}.wav", clip.numpy(), 24_000)
        rows.append(f"fluidr3/c{i}.wav,violin,7,fluidr3,41,scale:major,0,{i},train")
    (data / "metadata.csv").write_text("\n".join(rows) + "\n")
    cfg = RecipeConfig(
        work=str(work),
        data=str(data),
        vocoder_steps=3,
        vocoder_batch_size=2,
        vocoder=dict(dim=16, intermediate_dim=32, layers=1, n_fft=640),
        decoder_steps=3,
        decoder_batch_size=2,
        decoder=dict(denoiser_type="adaln", denoiser_dim=32, denoiser_layers=1, denoiser_patch=2),
        time_budget_s=None,
    )
    voc_dir, dec_dir = stage_vocoder(cfg), stage_decoder(cfg)
    decoder = Autoencoder.from_pretrained(dec_dir).attach_vocoder(MelVocoder.from_pretrained(voc_dir))
    assert decoder.fingerprint() == ae.fingerprint() and decoder.config.denoiser_type == "adaln"
    for key, value in ae.state_dict().items():
        if not key.startswith("denoiser."):
            assert torch.equal(decoder.state_dict()[key], value), key
    wav = decoder.decode(torch.randn(1, ae.embedding_dim), steps=2, seed=0)
    assert wav.shape == (ae.chunk_samples,) and np.max(np.abs(wav)) <= 1.0
    # a time budget that ends a stage early is reported as resumable
    budget = dataclasses.replace(cfg, work=str(tmp_path / "work2"), time_budget_s=0.0, vocoder_steps=8)
    ae.save_pretrained(tmp_path / "work2" / "autoencoder" / "model")
    with pytest.raises(IncompleteRunError, match="vocoder: stopped at step 2 of 8"):
        stage_vocoder(budget)
