"""Training the mel vocoder (:class:`~pecmae_hub.models.vocoder.MelVocoder`) on real audio.

Each step crops random segments from the training clips, applies a random gain, computes their log-mel
features with the autoencoder's own :class:`~pecmae_hub.models.melspec.MelCodec` (so the vocoder learns the
exact features the diffusion decoder generates), and regresses the audio. Losses, after Vocos
(arXiv 2306.00814): L1 between the log-mel of the output and of the target (weight ``mel_weight``), a
multi-resolution STFT loss (``auraloss``; spectral convergence + log magnitude); after APNet
(arXiv 2305.07952), group-delay and instantaneous-frequency losses on the predicted phase (``phase_weight``),
which teach the head coherent phase where magnitude losses alone leave it free; and, from
``adversarial_from`` on, hinge GAN losses with feature matching against multi-period and multi-resolution
discriminators (:mod:`pecmae_hub.training.discriminators`).

Resumable: ``<out>/checkpoint.pt`` (read with ``weights_only=True``) holds the vocoder, the
discriminators, both optimisers and the random state; ``time_budget_s`` stops after a checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from pecmae_hub.audio import HOP_LENGTH
from pecmae_hub.errors import ConfigError
from pecmae_hub.models.melspec import MelCodec
from pecmae_hub.models.vocoder import MelVocoder
from pecmae_hub.storage.atomic import atomic_write_text
from pecmae_hub.training.resumable import load_checkpoint, save_checkpoint, train_log


@dataclass
class VocoderTrainConfig:
    steps: int = 6000
    batch_size: int = 16
    segment_frames: int = 48  # 0.64 s per segment
    lr: float = 5e-4
    betas: tuple[float, float] = (0.8, 0.9)
    mel_weight: float = 45.0
    stft_weight: float = 1.0
    phase_weight: float = 1.0  # group delay + instantaneous frequency (APNet); 0: magnitudes only
    adversarial_from: int | None = None  # step at which the GAN terms start (None: never)
    feature_matching_weight: float = 2.0
    disc_width: int = 16
    gain_db: float = 6.0
    checkpoint_every: int = 250
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.segment_frames < 4:
            raise ConfigError("vocoder training needs steps >= 1, batch_size >= 1 and segment_frames >= 4")


def random_segments(clips: torch.Tensor, samples: int, batch_size: int, gain_db: float, gen: torch.Generator):
    """``batch_size`` random crops of ``samples`` from random clips (N, L), each at a random gain (±``gain_db``)."""
    idx = torch.randint(0, clips.shape[0], (batch_size,), generator=gen)
    room = max(1, clips.shape[1] - samples + 1)
    starts = torch.randint(0, room, (batch_size,), generator=gen)
    wav = torch.stack([clips[i, s : s + samples] for i, s in zip(idx.tolist(), starts.tolist())])
    gain = 10.0 ** ((torch.rand(batch_size, 1, generator=gen) * 2 - 1) * gain_db / 20.0)
    return (wav * gain).clamp(-1.0, 1.0)


def anti_wrap(x: torch.Tensor) -> torch.Tensor:
    """|x| folded into [0, π]: the distance between two phases whatever their 2π wrapping."""
    return torch.abs(x - 2 * math.pi * torch.round(x / (2 * math.pi)))


def phase_losses(predicted: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Phase-derivative losses of APNet (Ai & Ling, arXiv 2305.07952): group delay (phase difference across
    frequency) and instantaneous angular frequency (across time) of the predicted spectrum against the
    target's, weighted by the target's magnitude so that the harmonics, not the noise floor, set them."""
    phase_p, phase_t = torch.angle(predicted), torch.angle(target)
    weight = target.abs().detach()
    weight = weight / weight.mean(dim=(1, 2), keepdim=True).clamp_min(1e-8)

    def weighted(diff: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return (anti_wrap(diff) * w).mean()

    group_delay = weighted(
        torch.diff(phase_p, dim=1) - torch.diff(phase_t, dim=1), torch.minimum(weight[:, 1:], weight[:, :-1])
    )
    inst_freq = weighted(
        torch.diff(phase_p, dim=2) - torch.diff(phase_t, dim=2), torch.minimum(weight[..., 1:], weight[..., :-1])
    )
    return {"group_delay": group_delay, "inst_freq": inst_freq}


def reconstruction_losses(
    vocoder: MelVocoder, codec: MelCodec, wav: torch.Tensor, stft_loss, cfg: VocoderTrainConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The generated audio of one batch of segments and its reconstruction losses."""
    with torch.no_grad():
        features = codec.encode(wav)
        target_spec = vocoder.stft(wav)
    spec = vocoder.spectrum(features)
    fake = vocoder.istft(spec)[:, : wav.shape[1]]
    mel = F.l1_loss(codec.encode(fake), features) * codec.scale  # in natural-log units
    losses = {"mel": mel, "stft": stft_loss(fake.unsqueeze(1), wav.unsqueeze(1))}
    if cfg.phase_weight > 0:
        losses.update(phase_losses(spec, target_spec))
    return fake, losses


def train_vocoder(
    vocoder: MelVocoder,
    codec: MelCodec,
    clips: torch.Tensor,
    cfg: VocoderTrainConfig,
    out_dir: str | Path,
    progress: bool = True,
    time_budget_s: float | None = None,
    on_step: Callable[[int], None] | None = None,
) -> MelVocoder:
    """Train ``vocoder`` on 24 kHz clips (N, L) whose features ``codec`` computes; resumable from ``out_dir``."""
    import auraloss
    from tqdm.auto import tqdm

    from pecmae_hub.training.discriminators import (
        VocoderDiscriminators,
        discriminator_loss,
        feature_matching_loss,
        generator_loss,
    )

    samples = cfg.segment_frames * HOP_LENGTH
    if clips.shape[1] < samples:
        raise ConfigError(f"clips of {clips.shape[1]} samples are shorter than one segment ({samples})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    codec = codec.eval()
    vocoder.train()
    discriminators = VocoderDiscriminators(width=cfg.disc_width)
    stft_loss = auraloss.freq.MultiResolutionSTFTLoss(
        fft_sizes=[256, 512, 1024, 2048], hop_sizes=[64, 128, 256, 512], win_lengths=[256, 512, 1024, 2048]
    )
    opt_g = torch.optim.AdamW(vocoder.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.AdamW(discriminators.parameters(), lr=cfg.lr, betas=cfg.betas)

    def lr_at(step: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * min(1.0, step / cfg.steps))) * 0.95 + 0.05

    sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, lr_at)
    sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, lr_at)
    gen = torch.Generator().manual_seed(cfg.seed)
    step = 0
    ckpt_path = out / "checkpoint.pt"
    generator_parts = {"vocoder": vocoder, "opt_g": opt_g, "sched_g": sched_g}
    # the discriminators' parts are saved once the adversarial phase has begun
    adversary_parts = {"discriminators": discriminators, "opt_d": opt_d, "sched_d": sched_d}
    step = load_checkpoint(ckpt_path, generator_parts | adversary_parts, gen)
    started = time.time()
    bar = tqdm(total=cfg.steps, initial=step, desc="vocoder", disable=not progress)
    columns = ["step", "mel", "stft", "group_delay", "inst_freq", "gen", "fm", "disc", "seconds"]
    with train_log(out / "train_log.csv", columns) as (log, writer):
        while step < cfg.steps:
            wav = random_segments(clips, samples, cfg.batch_size, cfg.gain_db, gen)
            fake, losses = reconstruction_losses(vocoder, codec, wav, stft_loss, cfg)
            adversarial = cfg.adversarial_from is not None and step >= cfg.adversarial_from
            if adversarial:
                real_logits, _ = discriminators(wav)
                fake_logits, _ = discriminators(fake.detach())
                loss_d = discriminator_loss(real_logits, fake_logits)
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                sched_d.step()
                losses["disc"] = loss_d.detach()
                real_logits, real_maps = discriminators(wav)
                fake_logits, fake_maps = discriminators(fake)
                losses["gen"] = generator_loss(fake_logits)
                losses["fm"] = feature_matching_loss(real_maps, fake_maps)
            total = cfg.mel_weight * losses["mel"] + cfg.stft_weight * losses["stft"]
            if cfg.phase_weight > 0:
                total = total + cfg.phase_weight * (losses["group_delay"] + losses["inst_freq"])
            if adversarial:
                total = total + losses["gen"] + cfg.feature_matching_weight * losses["fm"]
            opt_g.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(vocoder.parameters(), 10.0)
            opt_g.step()
            sched_g.step()
            step += 1
            if on_step is not None:
                on_step(step)
            values = {k: float(v.detach()) for k, v in losses.items()}
            bar.update(1)
            bar.set_postfix(mel=f"{values['mel']:.3f}", stft=f"{values['stft']:.3f}")
            writer.writerow(
                [step]
                + [
                    f"{values.get(k, 0.0):.5f}"
                    for k in ("mel", "stft", "group_delay", "inst_freq", "gen", "fm", "disc")
                ]
                + [f"{time.time() - started:.1f}"]
            )
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                log.flush()
                save_checkpoint(ckpt_path, generator_parts | (adversary_parts if adversarial else {}), gen, step)
                if time_budget_s is not None and time.time() - started > time_budget_s:
                    break
    bar.close()
    vocoder.eval()
    atomic_write_text(out / "train_config.json", json.dumps(dataclasses.asdict(cfg), indent=2))
    return vocoder
