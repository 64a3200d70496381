"""Sonification samplers: our exact v-diffusion sampler (``"upstream"``) or a diffusers scheduler.

The diffusion decoder predicts v for x_s = cos(sπ/2)·x0 + sin(sπ/2)·ε, s ∈ [0, 1] being its time input.
That is diffusers' ``prediction_type="v_prediction"`` with ᾱ = cos²(sπ/2), so the schedulers offered here
(``"ddim"``, ``"dpmsolver++"`` = DPM-Solver++ 2M, ``"unipc"`` = UniPC order 2) are built with

- ``trained_betas`` giving ᾱ_t = cos²((t+1)/1000 · π/2), clamped at :data:`ALPHA_BAR_MIN` (ᾱ = 0 at t = 999
  would make σ infinite), and ``timestep_spacing="trailing"``: N steps then follow our grid linspace(1, 0, N+1)
  (exactly when N divides 1000; other counts round to integer timesteps);
- the model's angle taken from the scheduler's own sigmas, s = (2/π)·atan(σ_i) (not t/1000: off by one);
- a last step that reaches σ = 0 (``final_sigmas_type="zero"``, ``lower_order_final=True``; DDIM returns
  its x̂0 on the last step, which is its step to ᾱ = 1);
- classifier-free guidance applied to v before each step exactly as :func:`sample_v_diffusion` does.

diffusers is imported only when one of its schedulers is used (importing it takes seconds). Schedulers keep
state between steps, so :func:`sample` always runs a fresh instance. ``bench/sonify.py`` measures speed and
fidelity of each against the exact sampler.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pecmae_hub.errors import ConfigError
from pecmae_hub.sampling.v_diffusion import clip_v, sample_v_diffusion

UPSTREAM = "upstream"
#: scheduler name → diffusers class name ("upstream" is our own sampler)
DIFFUSERS_CLASSES = {
    "ddim": "DDIMScheduler",
    "dpmsolver++": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
}
SCHEDULERS = (UPSTREAM, *DIFFUSERS_CLASSES)
NUM_TRAIN_TIMESTEPS = 1000
#: ᾱ at t = 999 (s = 1); the smallest clamp whose betas survive diffusers' float32 cast is ~1.5e-13
ALPHA_BAR_MIN = 1e-12
#: suggested sonification default and, per sampler, the fewest steps at least as faithful as the exact
#: 40-step sampler on gm-solos (bench/sonify.py: log-mel distance to a 200-step exact render no larger,
#: re-classification no lower); DDIM on our grid is the exact sampler itself
DEFAULT_SCHEDULER = "unipc"
RECOMMENDED_STEPS = {UPSTREAM: 40, "ddim": 40, "dpmsolver++": 25, "unipc": 14}
CONFIG_NAME = "scheduler_config.json"  # diffusers' own file name (``save_config``)
SAMPLER_NAME = "sampler.json"  # {"name": ...}: which sampler, "upstream" included

SchedulerSpec = Any  # a name, a dict from scheduler_to_dict, or a diffusers scheduler instance


def angle_betas(num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, alpha_bar_min: float = ALPHA_BAR_MIN) -> list[float]:
    """β_t such that ᾱ_t = ∏(1 − β) = max(cos²((t+1)/T · π/2), ``alpha_bar_min``), t = 0..T−1."""
    t = np.arange(num_train_timesteps, dtype=np.float64)
    alpha_bar = np.maximum(np.cos((t + 1) / num_train_timesteps * math.pi / 2) ** 2, alpha_bar_min)
    previous = np.concatenate([[1.0], alpha_bar[:-1]])
    return (1.0 - alpha_bar / previous).tolist()


def default_options(name: str) -> dict[str, Any]:
    """The constructor options of scheduler ``name`` for our parameterisation (see the module docstring)."""
    name = check_name(name)
    if name == UPSTREAM:
        return {}
    common = dict(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS,
        trained_betas=angle_betas(),
        prediction_type="v_prediction",
        timestep_spacing="trailing",
        steps_offset=0,
    )
    if name == "ddim":
        return {**common, "clip_sample": False, "set_alpha_to_one": True, "thresholding": False}
    multistep = dict(
        solver_order=2, lower_order_final=True, final_sigmas_type="zero", thresholding=False, use_karras_sigmas=False
    )
    if name == "dpmsolver++":
        return {
            **common,
            **multistep,
            "algorithm_type": "dpmsolver++",
            "solver_type": "midpoint",
            "euler_at_final": False,
        }
    return {**common, **multistep, "solver_type": "bh2", "predict_x0": True}


def recommended_steps(name: str) -> int:
    """Steps to use with sampler ``name`` when none are given (:data:`RECOMMENDED_STEPS`)."""
    return RECOMMENDED_STEPS[check_name(name)]


def check_name(name: str) -> str:
    """``name`` normalised (case, spaces), or :class:`ConfigError` listing the choices."""
    key = str(name).strip().lower() if isinstance(name, str) else None
    if key not in SCHEDULERS:
        raise ConfigError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    return key


def check_steps(steps, scheduler: SchedulerSpec = UPSTREAM) -> int:
    """``steps`` as an int, or :class:`ConfigError`: 1..1000 (the diffusers schedulers' training grid; the same
    bound for the exact sampler, whose output stops changing long before)."""
    integral = isinstance(steps, (int, np.integer)) or (isinstance(steps, float) and steps.is_integer())
    if isinstance(steps, bool) or not integral:
        raise ConfigError(f"steps must be an integer, got {steps!r}")
    steps = int(steps)
    high = (
        NUM_TRAIN_TIMESTEPS
        if _is_upstream(scheduler)
        else int(getattr(getattr(scheduler, "config", None), "num_train_timesteps", NUM_TRAIN_TIMESTEPS))
    )
    if not 1 <= steps <= high:
        raise ConfigError(
            f"steps must be in 1..{high}, got {steps} (the default sampler needs "
            f"{RECOMMENDED_STEPS[DEFAULT_SCHEDULER]}; more than ~200 rarely changes the sound)"
        )
    return steps


def _is_upstream(spec: SchedulerSpec) -> bool:
    if isinstance(spec, dict):
        spec = spec.get("name")
    return isinstance(spec, str) and check_name(spec) == UPSTREAM


def _diffusers_class(name: str):
    import diffusers  # lazy: seconds to import, needed only here

    return getattr(diffusers, DIFFUSERS_CLASSES[name])


def _name_of(scheduler) -> str:
    for name, cls_name in DIFFUSERS_CLASSES.items():
        if type(scheduler).__name__ == cls_name:
            return name
    raise ConfigError(
        f"unsupported scheduler class {type(scheduler).__name__}; use one of "
        f"{', '.join(DIFFUSERS_CLASSES.values())} (names {', '.join(SCHEDULERS)})"
    )


def make_scheduler(name: str, steps: int | None = None, **options):
    """A fresh diffusers scheduler ``name`` configured for our decoder; ``options`` override the defaults.

    With ``steps`` its timesteps are set. ``"upstream"`` is not a diffusers scheduler: pass that name to
    :func:`sample` directly. Raises :class:`ConfigError` for unknown names, options or step counts.
    """
    name = check_name(name)
    if name == UPSTREAM:
        raise ConfigError("'upstream' is pecmae's exact sampler, not a diffusers scheduler; pass the name to sample()")
    try:
        scheduler = _diffusers_class(name)(**{**default_options(name), **options})
    except (TypeError, ValueError, NotImplementedError) as exc:
        raise ConfigError(f"invalid options {sorted(options)} for scheduler {name!r}: {exc}") from None
    if steps is not None:
        _set_steps(scheduler, check_steps(steps, scheduler))
    return scheduler


def _fresh(spec: SchedulerSpec):
    """'upstream' or a new diffusers scheduler instance for ``spec`` (never the caller's instance)."""
    if isinstance(spec, str):
        return UPSTREAM if check_name(spec) == UPSTREAM else make_scheduler(spec)
    if isinstance(spec, dict):
        return scheduler_from_dict(spec)
    if hasattr(spec, "config") and hasattr(spec, "step"):
        _name_of(spec)
        return type(spec).from_config(spec.config)
    raise ConfigError(
        f"scheduler must be a name ({', '.join(SCHEDULERS)}), a dict or a diffusers scheduler, got {spec!r}"
    )


def _set_steps(scheduler, steps: int, device: torch.device | str | None = None) -> None:
    scheduler.set_timesteps(steps, device=device)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(0)


def model_angles(scheduler) -> torch.Tensor:
    """The decoder's time input s_i = (2/π)·atan(σ_i) for each step of a scheduler whose timesteps are set.

    σ_i comes from the scheduler's own ``sigmas`` when it has one per step (+ the final one), else from
    ᾱ at its timesteps (DDIM): σ = √((1 − ᾱ)/ᾱ).
    """
    timesteps = scheduler.timesteps.cpu()
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None and len(sigmas) == len(timesteps) + 1:
        sigma = torch.as_tensor(sigmas[: len(timesteps)]).cpu().double()
    else:
        alpha_bar = scheduler.alphas_cumprod.cpu().double()[timesteps.long()]
        sigma = ((1 - alpha_bar) / alpha_bar).sqrt()
    return (torch.atan(sigma) * (2 / math.pi)).float()


def _guided_v(predict_v, x, s, code, guidance: float) -> torch.Tensor:
    """v̂ with classifier-free guidance v = v_c + w·(v_c − v_u), batched as in :func:`sample_v_diffusion`."""
    if guidance > 0:
        b = x.shape[0]
        v_both = predict_v(torch.cat([x, x]), torch.cat([s, s]), torch.cat([code, torch.zeros_like(code)]))
        v_c, v_u = v_both[:b], v_both[b:]
        return v_c + guidance * (v_c - v_u)
    return predict_v(x, s, code)


@torch.no_grad()
def sample(
    predict_v: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    code: torch.Tensor,
    noise: torch.Tensor,
    scheduler: SchedulerSpec = UPSTREAM,
    steps: int = 40,
    guidance: float = 1.0,
    progress: Callable[[int, int], None] | None = None,
    x0_range: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Generate x̂0 from ``noise`` conditioned on ``code`` with the sampler ``scheduler``.

    ``scheduler`` is a name from :data:`SCHEDULERS`, a dict from :func:`scheduler_to_dict`, or a diffusers
    scheduler (copied: every call runs a fresh instance). ``"upstream"`` is :func:`sample_v_diffusion`
    itself (bit-identical). ``predict_v(x, s, code)`` as there; ``guidance`` w as there (0 skips the
    unconditional branch); ``progress(i, n)`` is called after each of the n steps; ``x0_range`` clips every
    step's x̂0 (:func:`~pecmae_hub.sampling.v_diffusion.clip_v`).
    """
    steps = check_steps(steps, scheduler)
    sched = _fresh(scheduler)
    if isinstance(sched, str):
        return sample_v_diffusion(predict_v, code, noise, steps, guidance, progress, x0_range)
    steps = check_steps(steps, sched)
    _set_steps(sched, steps, noise.device)
    angles = model_angles(sched).to(noise.device)
    n = len(sched.timesteps)
    x = noise * sched.init_noise_sigma
    for i, t in enumerate(sched.timesteps):
        v = _guided_v(predict_v, sched.scale_model_input(x, t), angles[i].expand(x.shape[0]), code, guidance)
        if x0_range is not None:
            v = clip_v(v, x, angles[i], x0_range)
        out = sched.step(v, t, x)
        last_x0 = getattr(out, "pred_original_sample", None) if i == n - 1 else None
        x = out.prev_sample if last_x0 is None else last_x0  # DDIM: its x̂0 is the step to ᾱ = 1 (σ = 0)
        if progress is not None:
            progress(i + 1, n)
    return x.to(noise.dtype)


# ---- naming, saving and loading ----------------------------------------------------------------
def _plain(value):
    """JSON-comparable form of a config value (tuples/arrays → lists)."""
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else list(o)))


def scheduler_to_dict(scheduler: SchedulerSpec) -> dict[str, Any]:
    """``{"name": ..., **options that differ from our defaults}``: a compact, JSON-able name for a render
    index (``{"name": "unipc"}`` for the default UniPC). :func:`scheduler_from_dict` rebuilds it."""
    if isinstance(scheduler, dict) and set(scheduler) == {"name"}:
        scheduler = scheduler["name"]  # no diffusers import needed to compare plain names
    if isinstance(scheduler, dict):
        scheduler = scheduler_from_dict(scheduler)
    if isinstance(scheduler, str):
        return {"name": check_name(scheduler)}
    name = _name_of(scheduler)
    defaults = {k: _plain(v) for k, v in default_options(name).items()}
    reference = make_scheduler(name).config
    out: dict[str, Any] = {"name": name}
    for key, value in scheduler.config.items():
        if key.startswith("_"):
            continue
        value = _plain(value)
        if value != defaults.get(key, _plain(reference.get(key))):
            out[key] = value
    return out


def scheduler_from_dict(data: dict[str, Any]):
    """Inverse of :func:`scheduler_to_dict`: ``"upstream"`` or a fresh diffusers scheduler."""
    if not isinstance(data, dict) or "name" not in data:
        raise ConfigError(f"a scheduler dict needs a 'name' ({', '.join(SCHEDULERS)}), got {data!r}")
    name, options = check_name(data["name"]), {k: v for k, v in data.items() if k != "name"}
    if name == UPSTREAM:
        if options:
            raise ConfigError(f"the upstream sampler takes no options, got {sorted(options)}")
        return UPSTREAM
    return make_scheduler(name, **options)


def save_scheduler(scheduler: SchedulerSpec, folder: str | os.PathLike) -> Path:
    """Write ``sampler.json`` (``{"name": ...}``) into ``folder`` and, for a diffusers scheduler, its
    ``scheduler_config.json`` (diffusers ``save_config``). Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec = scheduler_from_dict(scheduler) if isinstance(scheduler, dict) else scheduler
    if isinstance(spec, str) and check_name(spec) == UPSTREAM:
        (folder / CONFIG_NAME).unlink(missing_ok=True)  # a stale diffusers config would contradict it
        name = UPSTREAM
    else:
        spec = make_scheduler(spec) if isinstance(spec, str) else spec
        name = _name_of(spec)
        spec.save_config(folder)
    (folder / SAMPLER_NAME).write_text(json.dumps({"name": name, "version": 1}, indent=1) + "\n")
    return folder


def load_scheduler(folder: str | os.PathLike):
    """Read what :func:`save_scheduler` wrote: ``"upstream"`` or a diffusers scheduler loaded with
    ``from_pretrained`` (a folder holding only a ``scheduler_config.json`` of a supported class works too)."""
    folder = Path(folder)
    name = None
    if (folder / SAMPLER_NAME).is_file():
        name = check_name(json.loads((folder / SAMPLER_NAME).read_text()).get("name"))
        if name == UPSTREAM:
            return UPSTREAM
    if not (folder / CONFIG_NAME).is_file():
        raise ConfigError(f"{folder} has neither {SAMPLER_NAME} nor {CONFIG_NAME}")
    class_name = json.loads((folder / CONFIG_NAME).read_text()).get("_class_name")
    by_class = {v: k for k, v in DIFFUSERS_CLASSES.items()}
    if class_name not in by_class or (name is not None and by_class[class_name] != name):
        raise ConfigError(
            f"{folder / CONFIG_NAME} holds {class_name!r}, expected "
            f"{DIFFUSERS_CLASSES.get(name or '', ' or '.join(DIFFUSERS_CLASSES.values()))}"
        )
    return _diffusers_class(by_class[class_name]).from_pretrained(folder)
