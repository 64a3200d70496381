"""Diffusion sampling apart from the models: the continuous angle schedule and the v-diffusion sampler."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def angle_schedule(steps: int) -> torch.Tensor:
    """σ_i = linspace(1, 0, steps + 1) (inclusive), the upstream sampling grid."""
    return torch.linspace(1.0, 0.0, steps + 1)


def v_diffusion_targets(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor):
    """Training pair for the angle parametrisation: returns (x_σ, v) with α = cos(σπ/2), β = sin(σπ/2)."""
    shape = (-1,) + (1,) * (x0.dim() - 1)
    alpha, beta = torch.cos(sigma * math.pi / 2).reshape(shape), torch.sin(sigma * math.pi / 2).reshape(shape)
    return alpha * x0 + beta * noise, alpha * noise - beta * x0


@torch.no_grad()
def sample_v_diffusion(
    predict_v: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    code: torch.Tensor,
    noise: torch.Tensor,
    steps: int = 40,
    guidance: float = 1.0,
    progress: Callable[[int, int], None] | None = None,
    x0_range: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Deterministic DDIM-style sampler of docs/architecture.md §6.5 with classifier-free guidance.

    ``predict_v(x, sigma, code)`` returns v̂; the unconditional branch uses a zero code and is batched
    with the conditional one. ``v = v_c + w·(v_c − v_u)``. Returns x after the last step (= x̂0).
    ``x0_range`` (low, high): each step's x̂0 is clipped to the values the signal can take (see
    :func:`clip_v`); None (upstream) leaves it free.
    """
    sigmas = angle_schedule(steps).to(noise.device)
    alphas, betas = torch.cos(sigmas * math.pi / 2), torch.sin(sigmas * math.pi / 2)
    x = noise
    b = x.shape[0]
    for i in range(steps):
        sigma = sigmas[i].expand(b)
        if guidance > 0:
            v_both = predict_v(torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([code, torch.zeros_like(code)]))
            v_c, v_u = v_both[:b], v_both[b:]
            v = v_c + guidance * (v_c - v_u)
        else:
            v = predict_v(x, sigma, code)
        if x0_range is not None:
            v = clip_v(v, x, sigmas[i], x0_range)
        x0_hat = alphas[i] * x - betas[i] * v
        eps_hat = betas[i] * x + alphas[i] * v
        x = alphas[i + 1] * x0_hat + betas[i + 1] * eps_hat
        if progress is not None:
            progress(i + 1, steps)
    return x


def clip_v(v: torch.Tensor, x: torch.Tensor, sigma, x0_range: tuple[float, float]) -> torch.Tensor:
    """v̂ changed so that the x̂0 it implies (α·x − β·v) lies in ``x0_range``: v' = (α·x − clip(x̂0)) / β.

    The signal of a mel model has hard bounds (the log floor, and the level of a full-scale signal); a
    prediction outside them is an error of the network, and carrying it through the remaining steps turns
    into loud clicks and hiss. Clipping x̂0 at every step is DDIM's ``clip_sample`` written for v so that any
    sampler (ours or a diffusers scheduler) can use it. At σ = 0 (β = 0) v does not change x̂0 and is kept.
    """
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.dim() - 1)))
    alpha, beta = torch.cos(sigma * math.pi / 2), torch.sin(sigma * math.pi / 2)
    x0 = alpha * x - beta * v
    clipped = x0.clamp(*x0_range)
    return torch.where(beta > 1e-6, (alpha * x - clipped) / beta.clamp_min(1e-6), v)
