"""``pecmae train``: fit a :class:`PrototypeHead` on extracted features (docs/architecture.md §8.3-§8.5, §9).

Loss: alpha·L_p + (1 - alpha)·CE(logits / temperature, y). L_p in ``class`` mode takes, for each
prototype, the minimum distance over the batch samples of its class (prototypes whose class is
absent are dropped); in ``all`` mode the minimum over every sample. Adam (weight decay 1e-4) with
OneCycleLR, fp16 AMP on CUDA only, device placement and data parallelism via Hugging Face Accelerate.
Under ``accelerate launch`` the batch size is the global batch: every process draws the same batches and
computes a slice of each, and the loss is that of the whole batch (:func:`sharded_losses`): N processes
train the head that one process trains, up to the order of floating-point sums. Model selection: best validation
track accuracy (ties: lower validation class loss), evaluated every ``eval_every`` steps and at the end.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from pecmae_hub.configuration import AutoencoderRef
from pecmae_hub.data.split_files import write_labels
from pecmae_hub.errors import ConfigError, DatasetError, InputShapeError
from pecmae_hub.models.head import PrototypeHead
from pecmae_hub.storage.integrity import write_checksums
from pecmae_hub.training.evaluation import chunk_logits, classification_metrics, mean_by_track
from pecmae_hub.training.features import FeatureSet, compute_norm_stats
from pecmae_hub.training.nearest import nearest_training_chunks, save_nearest
from pecmae_hub.training.ood import DEFAULT_QUANTILE, calibrate_ood

log = logging.getLogger(__name__)

_PAPER = dict(
    alpha=0.75,
    temperature=0.1,
    batch_size=256,
    max_lr=1e-3,
    total_steps=150_000,
    summarizer="transformer",
    distance="l2",
    proto_loss_samples="class",
    init="kmeans-centers",
)
PRESETS = {"gtzan": dict(_PAPER, protos_per_class=5), "medley-solos-db": dict(_PAPER, protos_per_class=20)}


@dataclass
class TrainConfig:
    """Training hyper-parameters (defaults: the paper's GTZAN run, docs/architecture.md §8.1)."""

    protos_per_class: int = 5
    alpha: float = 0.75
    temperature: float = 0.1
    batch_size: int = 256
    max_lr: float = 1e-3
    weight_decay: float = 1e-4
    total_steps: int = 150_000
    eval_every: int = 1000
    log_every: int = 100
    summarizer: str = "transformer"
    distance: str = "l2"
    proto_loss_samples: str = "class"
    init: str = "kmeans-centers"
    seed: int = 42
    device: str = "auto"
    mixed_precision: bool = True  # fp16 AMP; only ever used on CUDA
    nearest_k: int = 5
    threads: int = 0  # CPU intra-op threads while training; 0 leaves torch's setting (see train_head)
    ood_quantile: float | None = DEFAULT_QUANTILE  # OOD threshold keeps this fraction of val tracks; None: no scorer
    preset: str | None = None
    autoencoder: AutoencoderRef | None = None

    @classmethod
    def from_preset(cls, name: str | None, **overrides) -> TrainConfig:
        """The preset's values (``gtzan``, ``medley-solos-db``) with ``overrides`` (None values ignored) on top."""
        if name is not None and name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        values = dict(PRESETS.get(name, {}), preset=name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def validate(self) -> None:
        if self.proto_loss_samples not in ("class", "all"):
            raise ConfigError(f"proto_loss_samples must be 'class' or 'all', got {self.proto_loss_samples!r}")
        if not 0.0 <= self.alpha <= 1.0 or self.temperature <= 0:
            raise ConfigError(f"need 0 <= alpha <= 1 and temperature > 0, got {self.alpha}, {self.temperature}")
        if self.total_steps < 1 or self.batch_size < 1 or self.eval_every < 1 or self.log_every < 1:
            raise ConfigError("total_steps, batch_size, eval_every and log_every must be >= 1")
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0 (0: torch's setting), got {self.threads}")


def prototype_loss(d: torch.Tensor, y: torch.Tensor, protos_per_class: int, mode: str = "class") -> torch.Tensor:
    """L_p from distances d (B, P) and labels y (B,): mean over prototypes of the minimum distance
    over the batch samples of the prototype's class (``class``) or over all samples (``all``)."""
    if mode == "all":
        return d.min(0).values.mean()
    proto_class = torch.arange(d.shape[1], device=d.device) // protos_per_class
    same = y[:, None] == proto_class[None, :]
    mins = d.masked_fill(~same, float("inf")).min(0).values
    kept = torch.isfinite(mins)  # every batch holds some class, so at least one prototype is kept
    return torch.where(kept, mins, 0.0).sum() / kept.sum()  # no host sync (unlike boolean indexing)


def head_loss(logits, d, y, protos_per_class: int, alpha: float, temperature: float, mode: str = "class"):
    """(total, L_p, L_c) with total = alpha·L_p + (1 - alpha)·CE(logits / temperature, y)."""
    lp = prototype_loss(d.float(), y, protos_per_class, mode)
    lc = F.cross_entropy(logits.float() / temperature, y)
    return alpha * lp + (1.0 - alpha) * lc, lp, lc


def _plain_step_ok(accelerator, optimizer) -> bool:
    """True when Accelerate's wrappers would only forward the calls: one process, no AMP scaler, no
    gradient accumulation. Then the step calls autograd and the optimizer directly (same maths)."""
    from accelerate.utils import DistributedType

    return (
        accelerator.distributed_type == DistributedType.NO
        and accelerator.num_processes == 1
        and getattr(accelerator, "scaler", None) is None
        and not accelerator.native_amp
        and accelerator.gradient_accumulation_steps == 1
        and hasattr(optimizer, "optimizer")
    )


def batch_slice(x: torch.Tensor, y: torch.Tensor, accelerator) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's contiguous slice of the global batch (sizes differ by at most one)."""
    n, rank = accelerator.num_processes, accelerator.process_index
    return torch.tensor_split(x, n)[rank], torch.tensor_split(y, n)[rank]


def sharded_losses(logits, d, y_all, cfg: TrainConfig, accelerator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The loss of the global batch ``y_all`` (B,) when this process holds the rows ``logits``, ``d`` of its slice.

    L_p takes, per prototype, the minimum distance over the *whole* batch, which no process sees alone:
    the slices of ``d`` are gathered (no gradient) to find each minimum and the process that holds it.
    Each process's term keeps the minima it holds and its share of the cross-entropy sum, scaled so that
    Accelerate's average of the N gradients is exactly the one-process gradient of the batch. Returns
    ``(term to differentiate, global L_p, this process's part of the global L_c: their mean is L_c)``.
    """
    n, rank, total = accelerator.num_processes, accelerator.process_index, len(y_all)
    sizes = [len(part) for part in torch.tensor_split(torch.arange(total), n)]
    start = sum(sizes[:rank])
    with torch.no_grad():
        padded = accelerator.gather(accelerator.pad_across_processes(d.detach().float(), dim=0))
        width = padded.shape[0] // n
        d_all = torch.cat([padded[r * width : r * width + sizes[r]] for r in range(n)])
        masked = d_all
        if cfg.proto_loss_samples != "all":
            proto_class = torch.arange(d.shape[1], device=d.device) // cfg.protos_per_class
            masked = d_all.masked_fill(y_all[:, None] != proto_class[None, :], float("inf"))
        mins, where = masked.min(0)
        kept = torch.isfinite(mins)
        mine = kept & (where >= start) & (where < start + sizes[rank])
        lp = torch.where(kept, mins, 0.0).sum() / kept.sum()
    picked = d.float().gather(0, (where - start).clamp(0, max(sizes[rank] - 1, 0))[None, :])[0] if len(d) else None
    lp_term = n * torch.where(mine, picked, 0.0).sum() / kept.sum() if picked is not None else d.float().sum() * 0
    ce_part = F.cross_entropy(logits.float() / cfg.temperature, y_all[start : start + sizes[rank]], reduction="sum")
    ce_part = ce_part * n / total
    return cfg.alpha * lp_term + (1.0 - cfg.alpha) * ce_part, lp, ce_part.detach()


def train_step(model, optimizer, scheduler, accelerator, x, y, cfg: TrainConfig):
    """One optimisation step (forward, loss, backward, Adam, OneCycle); returns detached (loss, L_p, L_c).

    ``x``, ``y`` are the global batch. With several processes each one computes its slice
    (:func:`batch_slice`) and the loss is arranged so that the averaged gradient is the one-process
    gradient of the whole batch (:func:`sharded_losses`); the returned values are then this process's
    parts, whose mean over the processes is the batch's loss.
    """
    plain = _plain_step_ok(accelerator, optimizer)
    sharded = accelerator.num_processes > 1
    xs = batch_slice(x, y, accelerator)[0] if sharded else x
    if plain:
        logits, d = model(xs, return_distances=True)
    else:
        with accelerator.autocast():
            logits, d = model(xs, return_distances=True)
    if sharded:
        loss, lp, lc = sharded_losses(logits, d, y, cfg, accelerator)
        shown = cfg.alpha * lp + (1.0 - cfg.alpha) * lc
    else:
        loss, lp, lc = head_loss(logits, d, y, cfg.protos_per_class, cfg.alpha, cfg.temperature, cfg.proto_loss_samples)
        shown = loss
    optimizer.zero_grad(set_to_none=True)
    if plain:
        loss.backward()
        optimizer.optimizer.step()
        scheduler.step()
        return loss.detach(), lp.detach(), lc.detach()
    accelerator.backward(loss)
    optimizer.step()
    # the scheduler is stepped here, not prepared: Accelerate would step it once per process
    if not accelerator.optimizer_step_was_skipped:
        scheduler.step()
    return shown.detach(), lp.detach(), lc.detach()


def make_optimizer(head: PrototypeHead, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam (coupled L2 weight decay, as upstream); the fused kernel when available (~10x faster step on CPU)."""
    try:
        return torch.optim.Adam(head.parameters(), lr=cfg.max_lr, weight_decay=cfg.weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(head.parameters(), lr=cfg.max_lr, weight_decay=cfg.weight_decay)


class _Chunks(torch.utils.data.Dataset):
    """Training chunks; ``__getitems__`` fetches a whole batch by one tensor index (no per-sample collate)."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    def __getitems__(self, idx):
        idx = torch.as_tensor(idx)
        return self.x[idx], self.y[idx]


def _identity(batch):
    return batch


def make_accelerator(cfg: TrainConfig):
    """An ``accelerate.Accelerator`` for ``cfg.device`` with fp16 AMP only on CUDA."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from pecmae_hub.distributed import processes

    processes()  # the process group, set up once with the device choice of every pecmae command
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(
            f"device must be auto, cpu or cuda, got {cfg.device!r} (use CUDA_VISIBLE_DEVICES to pick a GPU)"
        )
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA GPU is available")
    cuda = cfg.device != "cpu" and torch.cuda.is_available()
    kwargs = dict(cpu=not cuda, mixed_precision="fp16" if cuda and cfg.mixed_precision else "no")
    try:
        return Accelerator(**kwargs)
    except ValueError:  # a previous Accelerator in this process fixed other settings
        if AcceleratorState().num_processes > 1:
            raise
        AcceleratorState._reset_state()
        return Accelerator(**kwargs)


class _Validator:
    def __init__(self, fs: FeatureSet, cfg: TrainConfig):
        x, y, t = fs.chunks()
        self.x, self.y, self.t, self.n = torch.from_numpy(x), torch.from_numpy(y), t, len(fs)
        self.labels, self.cfg = fs.labels, cfg

    def __call__(self, head: PrototypeHead) -> tuple[float, float]:
        logits = chunk_logits(head, self.x)
        loss = F.cross_entropy(logits / self.cfg.temperature, self.y).item()
        pred = mean_by_track(logits, self.t, self.n).argmax(1)
        return float((pred == np.asarray(self.labels)).mean()), loss


def train_head(
    train_set: FeatureSet,
    val_set: FeatureSet | None,
    test_set: FeatureSet | None = None,
    config: TrainConfig | None = None,
    out_dir=None,
    progress: bool = True,
):
    """Train a head on in-memory feature sets; returns ``(head, metrics)`` (head on CPU, eval mode).

    With ``out_dir`` writes the Hub-ready folder: config.json + model.safetensors, metrics.json,
    labels.txt, nearest.json and training_log.csv. ``val_set`` None selects the final weights.

    ``config.threads`` > 0 sets torch's intra-op threads for the run (restored afterwards). A CPU step is
    ~50 small parallel ops (1-2 ms GEMMs on the P prototypes): on an idle 2-core machine two threads
    were ~10 % faster than one, on a loaded one, where the second thread is often descheduled, up to 8x
    slower (bench/train_head.py --threads 1 vs 2).
    """
    cfg = config or TrainConfig()
    cfg.validate()
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _train_head(train_set, val_set, test_set, cfg, out_dir, progress)
    except RuntimeError as exc:
        from pecmae_hub.distributed import lost_contact

        raise lost_contact("train", exc) from exc
    finally:
        torch.set_num_threads(threads)


def _train_head(train_set, val_set, test_set, cfg: TrainConfig, out_dir, progress):
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    names = train_set.label_names
    val_set = val_set.with_label_names(names) if val_set is not None else None
    test_set = test_set.with_label_names(names) if test_set is not None else None
    t0 = time.time()
    accelerator = make_accelerator(cfg)
    set_seed(cfg.seed)
    x, y, _ = train_set.chunks()
    mu, sd = compute_norm_stats(x)
    head = PrototypeHead(
        names,
        x.shape[1],
        cfg.protos_per_class,
        cfg.distance,
        cfg.summarizer,
        mu,
        sd,
        AutoencoderRef.from_dict(cfg.autoencoder),
        temperature=cfg.temperature,
    )
    head.init_prototypes(x, y, cfg.init, seed=cfg.seed)
    for fs in (val_set, test_set):
        if fs is not None and fs.embedding_dim != head.embedding_dim:
            raise InputShapeError(
                f"validation/test features have D={fs.embedding_dim}, training features D={head.embedding_dim}"
            )

    loader = torch.utils.data.DataLoader(
        _Chunks(x, y),
        batch_size=cfg.batch_size,
        shuffle=True,
        collate_fn=_identity,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    optimizer = make_optimizer(head, cfg)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.max_lr, total_steps=cfg.total_steps)
    if accelerator.num_processes > 1:  # every process draws the same global batches and computes its slice
        model, optimizer = accelerator.prepare(head, optimizer)
    else:
        model, optimizer, loader = accelerator.prepare(head, optimizer, loader)
    validate = _Validator(val_set, cfg) if val_set is not None else None

    log_rows, best, best_state, best_step = [], None, None, cfg.total_steps
    sums, n_sum, val_acc = torch.zeros(3, device=accelerator.device), 0, float("nan")
    bar = tqdm(
        total=cfg.total_steps, disable=not progress or not accelerator.is_main_process, desc="train", unit="step"
    )
    batches = iter(loader)
    model.train()
    t_loop = time.time()
    for step in range(1, cfg.total_steps + 1):
        try:
            xb, yb = next(batches)
        except StopIteration:
            batches = iter(loader)
            xb, yb = next(batches)
        xb, yb = xb.to(accelerator.device), yb.to(accelerator.device)
        sums += torch.stack(train_step(model, optimizer, scheduler, accelerator, xb, yb, cfg)).float()  # no sync
        n_sum += 1
        evaluated = validate is not None and (step % cfg.eval_every == 0 or step == cfg.total_steps)
        if evaluated:
            unwrapped = accelerator.unwrap_model(model)
            val_acc, val_loss = validate(unwrapped)
            if best is None or (val_acc, -val_loss) > best:
                best, best_step = (val_acc, -val_loss), step
                best_state = {k: v.detach().cpu().clone() for k, v in unwrapped.state_dict().items()}
        if evaluated or step % cfg.log_every == 0 or step == cfg.total_steps:
            loss, lp, lc = accelerator.reduce(sums / n_sum, "mean").tolist()  # every process's share of the batch
            log_rows.append(
                {
                    "step": step,
                    "lr": scheduler.get_last_lr()[0],
                    "loss": loss,
                    "proto_loss": lp,
                    "class_loss": lc,
                    "val_accuracy": val_acc if evaluated else "",
                    "val_class_loss": val_loss if evaluated else "",
                    "elapsed_s": round(time.time() - t0, 3),
                }
            )
            sums, n_sum = torch.zeros_like(sums), 0
            bar.set_postfix(loss=f"{loss:.4f}", val_acc=f"{val_acc:.3f}")
        bar.update(1)
    bar.close()
    loop_seconds = time.time() - t_loop

    head = accelerator.unwrap_model(model, keep_fp32_wrapper=False).cpu().float()
    if best_state is not None:
        head.load_state_dict(best_state)
    head.eval()
    metrics = _final_metrics(head, train_set, val_set, test_set, cfg, best_step, time.time() - t0)
    ood = None
    if cfg.ood_quantile:
        try:  # statistics from the training chunks, thresholds from the validation tracks
            ood = calibrate_ood(head, train_set, val_set, quantile=cfg.ood_quantile)
            metrics["ood"] = {"thresholds": ood.thresholds, **ood.calibration}
        except DatasetError as exc:  # e.g. a class missing from a cross-fitting fold of a tiny set
            log.warning("no out-of-domain scorer: %s", exc)
    metrics["loop_seconds"] = round(loop_seconds, 3)  # the optimisation loop alone (with validation)
    if out_dir is not None and accelerator.is_main_process:
        _write_outputs(head, train_set, metrics, log_rows, cfg, Path(out_dir), ood)
    return head, metrics


def _final_metrics(head, train_set, val_set, test_set, cfg, best_step, wall) -> dict:
    def scores(fs):
        if fs is None:
            return None
        x, _, t = fs.chunks()
        pred = mean_by_track(chunk_logits(head, x), t, len(fs)).argmax(1)
        m = classification_metrics(fs.labels, pred, head.labels)
        return {
            "accuracy": m["accuracy"],
            "macro_f1": m["macro_f1"],
            "n_tracks": len(fs),
            "n_chunks": fs.n_chunks,
            "missing_tracks": len(fs.missing),
            "per_class": m["per_class"],
        }

    return {
        "preset": cfg.preset,
        "seed": cfg.seed,
        "labels": head.labels,
        "steps": cfg.total_steps,
        "best_step": best_step,
        "selection": "best validation track accuracy" if val_set is not None else "final weights",
        "train": {"n_tracks": len(train_set), "n_chunks": train_set.n_chunks, "missing_tracks": len(train_set.missing)},
        "val": scores(val_set),
        "test": scores(test_set),
        "norm_mean": head.config.norm_mean,
        "norm_std": head.config.norm_std,
        "config": dataclasses.asdict(cfg),
        "wall_seconds": round(wall, 2),
    }


def _write_outputs(head, train_set, metrics, log_rows, cfg, out: Path, ood=None) -> None:
    head.save_pretrained(out)
    if ood is not None:
        ood.save(out)  # ood.safetensors + ood.json next to the head
    write_labels(out / "labels.txt", head.labels)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=str) + "\n")
    save_nearest(nearest_training_chunks(head, train_set.features, train_set.track_ids, cfg.nearest_k), out)
    with (out / "training_log.csv").open("w", newline="") as fh:
        fields = ["step", "lr", "loss", "proto_loss", "class_loss", "val_accuracy", "val_class_loss", "elapsed_s"]
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(log_rows)
    write_checksums(out)  # every file of the head folder, so that it loads verified
