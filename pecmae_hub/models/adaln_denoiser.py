"""A diffusion decoder conditioned through adaptive layer norm (adaLN-Zero), for the log-mel family.

The upstream denoiser (:class:`~pecmae_hub.models.encoders.Denoiser`) sees z as one token among the frames
and shares one feed-forward module between all its layers; at the embedded model's size (128-d, 3 layers)
it renders smeared, unpitched mel frames. This one follows DiT (Peebles & Xie, "Scalable Diffusion Models
with Transformers", arXiv 2212.09748): every block's layer norms are shifted, scaled and gated by an
embedding of (z, diffusion time), so the condition reaches every layer, and each block has its own
feed-forward module. The modulation is zero-initialised, so each block starts as the identity.

``patch`` frames are folded into one token (fewer tokens, same receptive field), and the call signature is
the upstream denoiser's, so :class:`~pecmae_hub.models.autoencoder.Autoencoder` samples either the same way.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_features(sigma: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features (B, dim) of the diffusion angle σ ∈ [0, 1] (scaled to 0..1000 as in DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=sigma.device, dtype=torch.float32) / half)
    args = sigma.float().reshape(-1, 1) * 1000.0 * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sinusoidal_table(length: int, dim: int, device=None) -> torch.Tensor:
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    omega = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2], table[:, 1::2] = torch.sin(position * omega), torch.cos(position * omega)
    return table


class AdaLNBlock(nn.Module):
    """Pre-norm transformer block whose norms are modulated (shift, scale) and outputs gated by the condition.

    The modulation is computed once for all blocks (``modulation``, (B, 6, dim)); each block adds its own
    learned offsets (adaLN-single, PixArt-α, arXiv 2310.00426), which keeps the parameter count small.
    """

    def __init__(self, dim: int, heads: int, ff_dim: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ff = nn.Sequential(nn.Linear(dim, ff_dim), nn.GELU(approximate="tanh"), nn.Linear(ff_dim, dim))
        self.modulation_offset = nn.Parameter(torch.zeros(6, dim))

    def forward(self, x: torch.Tensor, modulation: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = (modulation + self.modulation_offset).chunk(6, dim=1)
        b, t, d = x.shape
        h = self.norm1(x) * (1 + scale1) + shift1
        q, k, v = self.qkv(h).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + gate1 * self.proj(attn.transpose(1, 2).reshape(b, t, d))
        return x + gate2 * self.ff(self.norm2(x) * (1 + scale2) + shift2)


class AdaLNDenoiser(nn.Module):
    """v-prediction network: x_σ (B, T, S), σ (B,), z (B, code_dim) → v̂ (B, T, S)."""

    def __init__(self, signal_dim: int, code_dim: int, dim: int, heads: int, layers: int, ff_dim: int, patch: int = 1):
        super().__init__()
        self.signal_dim, self.dim, self.patch = signal_dim, dim, patch
        self.in_adapter = nn.Linear(signal_dim * patch, dim)
        self.code_embedding = nn.Sequential(nn.Linear(code_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.modulation = nn.Linear(dim, 6 * dim)
        self.blocks = nn.ModuleList(AdaLNBlock(dim, heads, ff_dim) for _ in range(layers))
        self.final_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Linear(dim, 2 * dim)
        self.out_adapter = nn.Linear(dim, signal_dim * patch)
        for layer in (self.modulation, self.final_modulation, self.out_adapter):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self._tables: dict = {}

    def _positions(self, length: int, device) -> torch.Tensor:
        key = (length, str(device))
        if key not in self._tables:
            with torch.inference_mode(False), torch.no_grad():
                self._tables[key] = sinusoidal_table(length, self.dim, device)
        return self._tables[key]

    def forward(self, x_noisy, sigma, code, pos_encoder: nn.Module | None = None, padding_mask=None) -> torch.Tensor:
        """Same signature as the upstream denoiser (``pos_encoder`` is not needed here and ignored);
        ``padding_mask`` (B, T) is True on padded frames."""
        b, t, s = x_noisy.shape
        pad = (-t) % self.patch
        x = F.pad(x_noisy, (0, 0, 0, pad)) if pad else x_noisy
        tokens = x.reshape(b, (t + pad) // self.patch, s * self.patch)
        h = self.in_adapter(tokens) + self._positions(tokens.shape[1], x.device).to(tokens.dtype)
        cond = self.code_embedding(code.reshape(b, -1).to(h.dtype)) + self.time_embedding(
            timestep_features(sigma.reshape(b), self.dim).to(h.dtype)
        )
        mask = None
        if padding_mask is not None:
            padded = F.pad(padding_mask, (0, pad), value=True).reshape(b, -1, self.patch).all(-1)
            mask = ~padded[:, None, None, :]
        modulation = self.modulation(F.silu(cond)).reshape(b, 6, self.dim)
        for block in self.blocks:
            h = block(h, modulation, mask)
        shift, scale = self.final_modulation(F.silu(cond))[:, None].chunk(2, dim=-1)
        out = self.out_adapter(self.final_norm(h) * (1 + scale) + shift)
        return out.reshape(b, t + pad, s)[:, :t]
