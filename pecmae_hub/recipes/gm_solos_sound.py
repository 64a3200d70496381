"""The embedded model's sound stages: the neural vocoder, and the diffusion decoder re-trained with the
encoder frozen (``pecmae recipe gm-solos --stage vocoder --stage decoder``), plus ``--from-model``, which
starts the recipe from a finished model so that these stages can be run on the shipped one.

Both stages are resumable (a checkpoint every 250 steps), print their projected time after the first
steps, and stop with :class:`IncompleteRunError` when ``time_budget_s`` is spent.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import torch

from pecmae_hub.errors import DatasetError, IncompleteRunError
from pecmae_hub.models.autoencoder import Autoencoder
from pecmae_hub.recipes.gm_solos import RecipeConfig, load_clips, trained_autoencoder_dir


def stage_vocoder(cfg: RecipeConfig) -> Path:
    """Train (or resume) the neural vocoder on the training clips, with the autoencoder's mel front end."""
    from pecmae_hub.models.vocoder import MelVocoder, VocoderConfig
    from pecmae_hub.training.vocoder import VocoderTrainConfig, train_vocoder

    out = Path(cfg.work) / "vocoder"
    final = out / "model"
    if (final / "model.safetensors").exists():
        return final
    ae = Autoencoder.from_pretrained(trained_autoencoder_dir(cfg))
    config = VocoderConfig(n_mels=ae.config.signal_dim, mel=dict(ae.config.mel), **cfg.vocoder)
    clips, _ = load_clips(cfg, "train", int(3.0 * 24_000))
    train_cfg = VocoderTrainConfig(
        steps=cfg.vocoder_steps,
        batch_size=cfg.vocoder_batch_size,
        seed=cfg.seed,
        checkpoint_every=max(1, min(250, cfg.vocoder_steps // 4)),
    )
    train_vocoder(
        MelVocoder(config),
        ae.codec,
        clips,
        train_cfg,
        out,
        time_budget_s=cfg.time_budget_s,
        on_step=_projection("vocoder", out, cfg.vocoder_steps),
    )
    vocoder = MelVocoder(config)
    _finish_or_raise("vocoder", out, cfg.vocoder_steps, lambda state: vocoder.load_state_dict(state["vocoder"]))
    vocoder.save_pretrained(final)
    return final


def stage_decoder(cfg: RecipeConfig) -> Path:
    """Re-train the diffusion decoder (``cfg.decoder`` architecture) with the encoder frozen: z, the head and
    every accuracy figure stay bit-identical."""
    from pecmae_hub.training.decoder import DecoderTrainConfig, decoder_pairs, train_decoder

    out = Path(cfg.work) / "decoder"
    final = out / "model"
    if (final / "model.safetensors").exists():
        return final
    trained = Autoencoder.from_pretrained(trained_autoencoder_dir(cfg))
    ae = Autoencoder(dataclasses.replace(trained.config, **cfg.decoder))
    encoder_state = {k: v for k, v in trained.state_dict().items() if not k.startswith(("denoiser.", "vocoder."))}
    ae.load_state_dict(encoder_state, strict=False)  # the new denoiser starts fresh
    clips, _ = load_clips(cfg, "train", int(3.0 * 24_000))
    z, signal = decoder_pairs(ae, clips, chunk_hop=ae.chunk_samples // 6)
    train_cfg = DecoderTrainConfig(
        steps=cfg.decoder_steps,
        batch_size=cfg.decoder_batch_size,
        seed=cfg.seed,
        warmup_steps=max(1, min(200, cfg.decoder_steps // 10)),
        checkpoint_every=max(1, min(250, cfg.decoder_steps // 4)),
    )
    train_decoder(
        ae,
        z,
        signal,
        train_cfg,
        out,
        time_budget_s=cfg.time_budget_s,
        on_step=_projection("decoder", out, cfg.decoder_steps),
    )
    _finish_or_raise("decoder", out, cfg.decoder_steps, lambda state: ae.denoiser.load_state_dict(state["denoiser"]))
    ae.attach_vocoder(None).save_pretrained(final)
    return final


def _projection(stage: str, out: Path, steps: int):
    """A per-step callback printing, after the first steps, the rate and the projected time left."""
    from pecmae_hub.recipes.timing import Projection

    done = 0
    if (out / "checkpoint.pt").exists():
        done = int(torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)["step"])
    return Projection(stage, steps - done, unit="step", min_items=20, min_seconds=30.0)


def _finish_or_raise(stage: str, out: Path, steps: int, load) -> None:
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    if int(state["step"]) < steps:
        raise IncompleteRunError(
            f"{stage}: stopped at step {state['step']} of {steps} (time budget); run again to continue"
        )
    load(state)


def start_from_model(cfg: RecipeConfig) -> None:
    """Seed the work folder with a finished model's autoencoder and head (once), so that the later stages
    (vocoder, decoder, package) work on it; its ``evaluation.json`` stands in for the evaluate stage."""
    source = Path(cfg.from_model)  # type: ignore[arg-type]
    work = Path(cfg.work)
    if not (source / "config.json").is_file() or not (source / "autoencoder" / "config.json").is_file():
        raise DatasetError(f"--from-model {source}: not a model folder with its autoencoder (autoencoder/ inside)")
    if not (work / "head" / "model.safetensors").exists():
        head = work / "head"
        head.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "model.safetensors", "labels.txt", "nearest.json", "metrics.json"):
            if (source / name).is_file():
                shutil.copy(source / name, head / name)
        for name in ("ood.json", "ood.safetensors", "training_log.csv", "pecmae.json"):
            if (source / name).is_file():
                shutil.copy(source / name, head / name)
        if (source / "nearest").is_dir():
            shutil.copytree(source / "nearest", head / "nearest", dirs_exist_ok=True)
    if not (trained_autoencoder_dir(cfg) / "model.safetensors").exists():
        Autoencoder.from_pretrained(source / "autoencoder").save_pretrained(trained_autoencoder_dir(cfg))
    summary = work / "evaluation" / "summary.json"
    if not summary.exists() and (source / "evaluation.json").is_file():
        summary.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / "evaluation.json", summary)
