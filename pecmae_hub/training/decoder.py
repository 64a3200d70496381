"""Re-training the diffusion decoder of an autoencoder with its encoder frozen.

z, and so every head, out-of-domain scorer and accuracy figure built on it, stays bit-identical: only the
denoiser's parameters are optimised (the positional encoding it borrows from the CLS encoder stays frozen),
and z is computed once, under ``torch.inference_mode``, from the frozen encoder. The objective is the
upstream v-diffusion loss of docs/architecture.md §6.4 with z dropped to zero for ``p_uncond`` of the
samples, which is what classifier-free guidance at sampling time needs.

Training pairs are (z of a chunk, the front-end signal of that chunk), from chunks taken every
``chunk_hop`` samples along each clip, so the decoder sees many note positions per clip.

Resumable: ``<out>/checkpoint.pt`` (read with ``weights_only=True``).
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

from pecmae_hub.errors import ConfigError
from pecmae_hub.models.autoencoder import Autoencoder
from pecmae_hub.sampling.v_diffusion import v_diffusion_targets
from pecmae_hub.storage.atomic import atomic_write_text
from pecmae_hub.training.resumable import load_checkpoint, save_checkpoint, train_log


@dataclass
class DecoderTrainConfig:
    steps: int = 4000
    batch_size: int = 32
    lr: float = 4e-4
    weight_decay: float = 0.01
    warmup_steps: int = 200
    p_uncond: float = 0.1
    checkpoint_every: int = 250
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or not 0 <= self.p_uncond < 1:
            raise ConfigError("decoder training needs steps >= 1, batch_size >= 1 and 0 <= p_uncond < 1")


def decoder_parameters(ae: Autoencoder) -> list[torch.nn.Parameter]:
    """The parameters decoder training may change: the denoiser's own, nothing the encoder uses."""
    if ae.denoiser is None:
        raise ConfigError("this autoencoder has no diffusion decoder to train")
    return list(ae.denoiser.parameters())


@torch.no_grad()
def decoder_pairs(
    ae: Autoencoder, clips: torch.Tensor, chunk_hop: int, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """(z (N·k, D), front-end signal (N·k, T, S) as float16) of every chunk starting at a multiple of
    ``chunk_hop`` samples in each clip (N, L); the encoder runs in inference mode."""
    length = ae.chunk_samples
    if clips.shape[1] < length:
        raise ConfigError(f"clips of {clips.shape[1]} samples are shorter than one chunk ({length})")
    starts = range(0, clips.shape[1] - length + 1, max(1, int(chunk_hop)))
    zs, signals = [], []
    with torch.inference_mode():
        for start in starts:
            for i in range(0, clips.shape[0], batch_size):
                signal = ae.codec.encode(clips[i : i + batch_size, start : start + length].to(ae.device))
                zs.append(ae.cls_encoder(ae.frame_encoder(signal)).float().cpu())  # type: ignore[misc]
                signals.append(signal.half().cpu())
    return torch.cat(zs), torch.cat(signals)


def train_decoder(
    ae: Autoencoder,
    z: torch.Tensor,
    signal: torch.Tensor,
    cfg: DecoderTrainConfig,
    out_dir: str | Path,
    progress: bool = True,
    time_budget_s: float | None = None,
    on_step: Callable[[int], None] | None = None,
) -> Autoencoder:
    """Train ``ae.denoiser`` to generate ``signal`` (N, T, S) from ``z`` (N, D); everything else is frozen."""
    from tqdm.auto import tqdm

    if len(z) != len(signal):
        raise ConfigError(f"{len(z)} codes for {len(signal)} signals")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    for p in ae.parameters():
        p.requires_grad_(False)
    params = decoder_parameters(ae)
    for p in params:
        p.requires_grad_(True)
    ae.eval()
    assert ae.denoiser is not None
    ae.denoiser.train()
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            min(1.0, (s + 1) / cfg.warmup_steps)
            * (0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.steps))) * 0.95 + 0.05)
        ),
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    step = 0
    ckpt_path = out / "checkpoint.pt"
    parts = {"denoiser": ae.denoiser, "optimizer": optimizer, "schedule": schedule}
    step = load_checkpoint(ckpt_path, parts, gen)
    started = time.time()
    bar = tqdm(total=cfg.steps, initial=step, desc="decoder", disable=not progress)
    with train_log(out / "train_log.csv", ["step", "diffusion", "lr", "seconds"]) as (log, writer):
        while step < cfg.steps:
            idx = torch.randint(0, len(z), (cfg.batch_size,), generator=gen)
            target = signal[idx].float().to(ae.device)
            code = z[idx].to(ae.device)
            sigma = torch.rand(cfg.batch_size, generator=gen).to(ae.device)
            noise = torch.randn(target.shape, generator=gen).to(ae.device)
            keep = (torch.rand(cfg.batch_size, 1, generator=gen) >= cfg.p_uncond).to(code.dtype).to(ae.device)
            x_noisy, v = v_diffusion_targets(target, noise, sigma)
            loss = F.mse_loss(ae.predict_v(x_noisy, sigma, code * keep), v)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            if on_step is not None:
                on_step(step)
            bar.update(1)
            value = float(loss.detach())
            bar.set_postfix(diff=f"{value:.4f}")
            writer.writerow([step, f"{value:.5f}", f"{schedule.get_last_lr()[0]:.3g}", f"{time.time() - started:.1f}"])
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                log.flush()
                save_checkpoint(ckpt_path, parts, gen, step)
                if time_budget_s is not None and time.time() - started > time_budget_s:
                    break
    bar.close()
    ae.eval()
    for p in ae.parameters():
        p.requires_grad_(True)
    atomic_write_text(out / "train_config.json", json.dumps(dataclasses.asdict(cfg), indent=2))
    return ae
