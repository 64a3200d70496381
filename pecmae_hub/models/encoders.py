"""Frame encoder (EnCodecMAE v1 inference path), CLS encoder, denoiser and the v-diffusion sampler.

docs/architecture.md §5.2, §6.2–§6.5. The denoiser re-uses the CLS encoder's positional encoding (a quirk kept for
weight compatibility), so it receives that module at call time instead of owning one.
"""

from __future__ import annotations

import torch
from torch import nn

from pecmae_hub.models.transformer import SinusoidalPositionalEmbedding, TransformerEncoder


class FrameEncoder(nn.Module):
    """EnCodecMAE inference path: Linear(signal → D) + learnable-scale PE + ResiDual transformer."""

    def __init__(self, signal_dim: int, dim: int, heads: int, layers: int, ff_dim: int):
        super().__init__()
        self.feat_projector = nn.Linear(signal_dim, dim)
        self.positional_encoder = SinusoidalPositionalEmbedding(dim)
        self.visible_encoder = TransformerEncoder(dim, heads, layers, ff_dim)

    def forward(self, features: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, signal_dim) → (B, T, D) ``visible_embeddings``; ``padding_mask`` True on padded frames."""
        return self.visible_encoder(self.positional_encoder(self.feat_projector(features)), padding_mask)


class CLSEncoder(nn.Module):
    """[CLS ; PE(frames)] → ResiDual transformer → z = output at the CLS position, (B, D)."""

    def __init__(self, dim: int, heads: int, layers: int, ff_dim: int):
        super().__init__()
        self.cls_tokens = nn.Embedding(1, dim)
        self.pos_encoder = SinusoidalPositionalEmbedding(dim)
        self.encoder = TransformerEncoder(dim, heads, layers, ff_dim)

    def forward(self, frames: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        b = frames.shape[0]
        cls = self.cls_tokens.weight[None].expand(b, -1, -1)
        x = torch.cat([cls, self.pos_encoder(frames)], dim=1)
        if padding_mask is not None:
            padding_mask = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=frames.device), padding_mask], 1)
        # only the CLS output is needed: the last layer runs its queries/FFN on token 0 alone
        return self.encoder.forward_first(x, padding_mask)


class Denoiser(nn.Module):
    """v-prediction network: tokens [code ; time_emb(σ) ; PE(in_adapter(x_σ))] → out_adapter(frames)."""

    def __init__(self, signal_dim: int, dim: int, heads: int, layers: int, ff_dim: int):
        super().__init__()
        self.time_embedding = nn.Sequential(nn.Linear(1, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.in_adapter = nn.Linear(signal_dim, dim)
        self.out_adapter = nn.Linear(dim, signal_dim)
        self.denoiser = TransformerEncoder(dim, heads, layers, ff_dim)

    def forward(self, x_noisy, sigma, code, pos_encoder: nn.Module, padding_mask=None) -> torch.Tensor:
        """x_noisy (B, T, S), sigma (B,), code (B, D) → v̂ (B, T, S)."""
        b = x_noisy.shape[0]
        tau = self.time_embedding(sigma.reshape(b, 1, 1).to(x_noisy.dtype))
        tokens = torch.cat([code.reshape(b, 1, -1), tau, pos_encoder(self.in_adapter(x_noisy))], dim=1)
        if padding_mask is not None:
            padding_mask = torch.cat([torch.zeros(b, 2, dtype=torch.bool, device=x_noisy.device), padding_mask], 1)
        return self.out_adapter(self.denoiser(tokens, padding_mask)[:, 2:, :])
