"""Training the autoencoder from scratch (used for the embedded model; upstream models are converted).

Objective (docs/architecture.md §6.4, with the padded-frame fix of §12.8): v-diffusion MSE of the denoiser that
regenerates the front-end signal conditioned on z, with z dropped to zero for 10 % of samples
(classifier-free guidance). Optionally, a self-supervised view-invariance term (NT-Xent between the z of
two randomly equalised/gain-changed chunks of the same clip, through a projector that is not part of
the saved model) makes z ignore the recording chain; no labels are used. When clip labels are given and
``label_weight`` > 0, a supervised contrastive term (SupCon: every chunk of the same class in the batch is
a positive, whatever bank it came from) teaches z what the instruments of several sample sets share.

Runs through Hugging Face Accelerate (CPU, one GPU, or multi-GPU with ``accelerate launch``); resumes
from ``<out>/checkpoint.pt`` (read with ``weights_only=True``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pecmae_hub.errors import ConfigError
from pecmae_hub.models.autoencoder import Autoencoder
from pecmae_hub.sampling.v_diffusion import v_diffusion_targets
from pecmae_hub.storage.atomic import atomic_write_text
from pecmae_hub.training.resumable import load_checkpoint, save_checkpoint, train_log


@dataclass
class AETrainConfig:
    steps: int = 4000
    batch_size: int = 32
    lr: float = 4e-4
    weight_decay: float = 0.05
    warmup_steps: int = 200
    p_uncond: float = 0.1
    invariance_weight: float = 1.0  # 0 = the pure upstream objective
    label_weight: float = 0.0  # SupCon weight; needs labels (0 = no labels used)
    temperature: float = 0.2
    eq_db: float = 9.0  # max |gain| of the random smooth EQ curve
    gain_db: float = 6.0
    checkpoint_every: int = 250
    seed: int = 0

    @property
    def contrastive(self) -> bool:
        """Whether a second view and the (unsaved) projector are needed."""
        return self.invariance_weight > 0 or self.label_weight > 0


def random_equalise(wav: torch.Tensor, eq_db: float, gain_db: float, gen: torch.Generator) -> torch.Tensor:
    """Apply a random smooth EQ (a few cosine bumps over log-frequency) and a random gain to each row."""
    b, n = wav.shape
    spec = torch.fft.rfft(wav, dim=-1)
    freqs = torch.linspace(0.0, 1.0, spec.shape[-1])
    logf = torch.log2(1.0 + 255.0 * freqs) / 8.0  # ~log-frequency axis in [0, 1]
    basis = torch.stack([torch.cos(math.pi * k * logf) for k in range(1, 5)])  # (4, F)
    coef = (torch.rand(b, 4, generator=gen) * 2 - 1) * (eq_db / 2)
    curve_db = coef @ basis + (torch.rand(b, 1, generator=gen) * 2 - 1) * gain_db
    return torch.fft.irfft(spec * (10.0 ** (curve_db / 20.0)), n=n, dim=-1)


def random_crops(clips: torch.Tensor, length: int, batch_size: int, gen: torch.Generator):
    """Two crops of ``length`` samples from each of ``batch_size`` random clips: (first, second, clip index).

    The crops are as far apart as the clip allows (the second starts where the first ends when the clip
    holds two chunks), so the pair shares the instrument and recording, not the notes.
    """
    idx = torch.randint(0, clips.shape[0], (batch_size,), generator=gen)
    if clips.shape[1] <= length:
        return clips[idx], clips[idx], idx
    room = clips.shape[1] - length
    first = (
        torch.randint(0, max(1, room - length + 1), (batch_size,), generator=gen)
        if room >= length
        else torch.zeros(batch_size, dtype=torch.long)
    )
    second = torch.clamp(first + length, max=room)
    swap = torch.rand(batch_size, generator=gen) < 0.5
    a, b = torch.where(swap, second, first), torch.where(swap, first, second)

    def crop(offs: torch.Tensor) -> torch.Tensor:
        return torch.stack([clips[i, o : o + length] for i, o in zip(idx.tolist(), offs.tolist())])

    return crop(a), crop(b), idx


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR loss between two batches of paired views."""
    z = F.normalize(torch.cat([a, b]), dim=-1)
    sim = z @ z.T / temperature
    n = a.shape[0]
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(sim.device)
    return F.cross_entropy(sim, target)


def supervised_contrastive(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """SupCon (Khosla et al. 2020, L_out): each of the 2B views is pulled towards every other view of its class."""
    z = F.normalize(torch.cat([a, b]), dim=-1)
    y = torch.cat([labels, labels])
    self_mask = torch.eye(len(y), dtype=torch.bool, device=z.device)
    logits = (z @ z.T / temperature).masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (y[:, None] == y[None, :]) & ~self_mask
    return -(log_prob.masked_fill(~positives, 0.0).sum(1) / positives.sum(1).clamp(min=1)).mean()


class _Projector(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 128))

    def forward(self, z):
        return self.net(z)


def autoencoder_losses(
    ae: Autoencoder,
    projector: nn.Module | None,
    wav: torch.Tensor,
    cfg: AETrainConfig,
    gen: torch.Generator,
    wav2: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Losses of one batch of equal-length chunks (B, L); ``wav2`` holds other chunks of the same clips
    (the positive views of the invariance term; default: ``wav`` itself, differently equalised) and
    ``labels`` their classes (for the supervised contrastive term)."""
    view1 = random_equalise(wav, cfg.eq_db, cfg.gain_db, gen)
    with torch.no_grad():
        target = ae.codec.encode(view1)
    z1 = ae.cls_encoder(ae.frame_encoder(target))
    b = wav.shape[0]
    sigma = torch.rand(b, generator=gen).to(wav.device)
    noise = torch.randn(target.shape, generator=gen).to(wav.device)
    x_noisy, v = v_diffusion_targets(target, noise, sigma)
    keep = (torch.rand(b, 1, generator=gen) >= cfg.p_uncond).to(z1.dtype).to(wav.device)
    v_hat = ae.predict_v(x_noisy, sigma, z1 * keep)
    losses = {"diffusion": F.mse_loss(v_hat, v)}
    if projector is not None and cfg.contrastive:
        view2 = random_equalise(wav if wav2 is None else wav2, cfg.eq_db, cfg.gain_db, gen)
        with torch.no_grad():
            feats2 = ae.codec.encode(view2)
        z2 = ae.cls_encoder(ae.frame_encoder(feats2))
        p1, p2 = projector(z1), projector(z2)
        losses["invariance"] = nt_xent(p1, p2, cfg.temperature)
        if labels is not None and cfg.label_weight > 0:
            losses["supcon"] = supervised_contrastive(p1, p2, labels, cfg.temperature)
    losses["total"] = (
        losses["diffusion"]
        + cfg.invariance_weight * losses.get("invariance", 0.0)
        + cfg.label_weight * losses.get("supcon", 0.0)
    )
    return losses


def train_autoencoder(
    ae: Autoencoder,
    clips: torch.Tensor,
    cfg: AETrainConfig,
    out_dir: str | Path,
    progress: bool = True,
    time_budget_s: float | None = None,
    labels: torch.Tensor | None = None,
) -> Autoencoder:
    """Train ``ae`` on equal-length 24 kHz clips (N, L ≥ chunk_samples), cropped at random; resumable.

    ``labels`` (N,) class ids are needed only when ``cfg.label_weight`` > 0.

    ``time_budget_s`` stops early (after a checkpoint) when the wall-clock budget is spent; calling again
    continues from there.
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from pecmae_hub.distributed import distributed

    if distributed():  # its crops and contrastive terms are drawn per batch, not split over processes
        raise ConfigError("autoencoder training runs in one process: start it without accelerate launch")
    if cfg.label_weight > 0 and (labels is None or len(labels) != len(clips)):
        raise ConfigError(
            f"label_weight={cfg.label_weight} needs one class id per clip "
            f"(got {None if labels is None else len(labels)} labels for {len(clips)} clips)"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    accelerator = Accelerator(mixed_precision="fp16" if torch.cuda.is_available() else "no")
    ae.train()
    projector = _Projector(ae.embedding_dim) if cfg.contrastive else None
    params = [p for n, p in ae.named_parameters() if not n.startswith("codec.")]
    if projector is not None:
        params += list(projector.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            min(1.0, (s + 1) / cfg.warmup_steps) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.steps))) * 0.95 + 0.05
        ),
    )
    ckpt_path = out / "checkpoint.pt"
    gen = torch.Generator().manual_seed(cfg.seed)
    parts = {"model": ae, "optimizer": optimizer, "schedule": schedule, "projector": projector}
    step = load_checkpoint(ckpt_path, parts, gen)
    model, _, optimizer = (
        accelerator.prepare(ae, projector, optimizer)
        if projector is not None
        else (*accelerator.prepare(ae, optimizer)[:1], None, accelerator.prepare(optimizer))
    )
    started = time.time()
    bar = tqdm(total=cfg.steps, initial=step, desc="autoencoder", disable=not progress)
    columns = ["step", "total", "diffusion", "invariance", "supcon", "lr", "seconds"]
    with train_log(out / "train_log.csv", columns) as (log, writer):
        while step < cfg.steps:
            batch, batch2, idx = random_crops(clips, ae.chunk_samples, cfg.batch_size, gen)
            batch_labels = labels[idx].to(accelerator.device) if labels is not None else None
            losses = autoencoder_losses(
                ae, projector, batch.to(accelerator.device), cfg, gen, batch2.to(accelerator.device), batch_labels
            )
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(losses["total"])
            accelerator.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            bar.update(1)
            values = {k: float(v.detach()) for k, v in losses.items()}
            bar.set_postfix(
                diff=f"{values['diffusion']:.3f}",
                inv=f"{values.get('invariance', 0.0):.3f}",
                sup=f"{values.get('supcon', 0.0):.3f}",
            )
            writer.writerow(
                [
                    step,
                    f"{values['total']:.5f}",
                    f"{values['diffusion']:.5f}",
                    f"{values.get('invariance', 0.0):.5f}",
                    f"{values.get('supcon', 0.0):.5f}",
                    f"{schedule.get_last_lr()[0]:.3g}",
                    f"{time.time() - started:.1f}",
                ]
            )
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                log.flush()
                unwrapped = {"model": accelerator.unwrap_model(model), "optimizer": optimizer}
                save_checkpoint(ckpt_path, parts | unwrapped, gen, step)
                if time_budget_s is not None and time.time() - started > time_budget_s:
                    break
    bar.close()
    ae.eval()
    atomic_write_text(out / "train_config.json", json.dumps(dataclasses.asdict(cfg), indent=2))
    return ae
