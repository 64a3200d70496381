"""Transformer blocks shared by the frame encoder (EnCodecMAE v1), the CLS encoder and the denoiser.

Upstream facts reproduced here (docs/architecture.md §4):
- attention heads use the *interleaved* channel layout c = d·H + h, with bias-free q/k/v/o;
- every layer is a ResiDual layer carrying two streams (a: post-norm, b: pre-norm sum) and the
  encoder output is ``a + final_norm(b)``;
- one feed-forward module is shared by all layers of an encoder. We store it once, at encoder level
  (``<encoder>.ff_layer.*``); the converter checks that the upstream per-layer copies are identical.

Speed notes (numerics unchanged to ~1e-6 relative): the interleaved heads are gathered into a
contiguous (B, H, T, d_h) tensor so that ``scaled_dot_product_attention`` takes its fused
flash kernel on CPU (a strided last axis silently falls back to the slow "math" path); the PE table
is cached per (length, device, dtype); :meth:`TransformerEncoder.forward_first` computes only the
first token's output in the last layer (all the CLS encoder needs).
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn


class SinusoidalPositionalEmbedding(nn.Module):
    """x + scale · pe, pe[t, 2k] = sin(t·ω_k), pe[t, 2k+1] = cos(t·ω_k), ω_k = 10000^(−2k/D).

    Positions start at 0 for the first token of the tensor it is applied to; ``scale`` is learnable.
    """

    _CACHE_SIZE = 8

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.scale = nn.Parameter(torch.tensor(1.0))
        self._tables: dict = {}

    def table(self, length: int, device=None, dtype=torch.float32) -> torch.Tensor:
        """The (length, dim) table; cached (it is a constant). Do not modify the returned tensor in place."""
        key = (int(length), torch.device(device) if device is not None else torch.device("cpu"), dtype)
        pe = self._tables.get(key)
        if pe is None:
            # built outside inference mode so the cached tensor can later join an autograd graph
            with torch.inference_mode(False), torch.no_grad():
                pe = self._build(length, device).to(dtype)
            if len(self._tables) >= self._CACHE_SIZE:
                self._tables.pop(next(iter(self._tables)))
            self._tables[key] = pe
        return pe

    def _build(self, length: int, device) -> torch.Tensor:
        position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
        omega = torch.exp(
            torch.arange(0, self.dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / self.dim)
        )
        pe = torch.zeros(length, self.dim, device=device, dtype=torch.float32)
        pe[:, 0::2] = torch.sin(position * omega)
        pe[:, 1::2] = torch.cos(position * omega[: self.dim // 2])
        return pe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.table(x.shape[1], x.device, x.dtype)


class MultiHeadAttention(nn.Module):
    """Self-attention with upstream's interleaved heads: channel c of a projection is head c mod H.

    ``head_dim = dim // heads`` so for EnCodecMAE-large (1024 / 12) the projections are 1020 wide.
    Masked keys are excluded exactly as upstream's additive −1e9.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        inner = self.head_dim * heads
        self.wq = nn.Linear(dim, inner, bias=False)
        self.wk = nn.Linear(dim, inner, bias=False)
        self.wv = nn.Linear(dim, inner, bias=False)
        self.wo = nn.Linear(inner, dim, bias=False)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        # view the channel axis as (head_dim, heads): channel d·H + h -> head h, index d; then make the
        # head axis contiguous (B, H, T, d_h) so that SDPA can use its fused kernel
        return t.view(b, n, self.head_dim, self.heads).permute(0, 3, 1, 2).contiguous()

    def attend(
        self, query: torch.Tensor, context: torch.Tensor, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attention of the ``query`` tokens (B, Tq, D) over all ``context`` tokens (B, T, D)."""
        b, n, _ = query.shape
        q, k, v = self._split(self.wq(query)), self._split(self.wk(context)), self._split(self.wv(context))
        attn_mask = None
        if key_padding_mask is not None:
            attn_mask = ~key_padding_mask[:, None, None, :].to(torch.bool)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        # merge back to the interleaved layout: output channel d·H + h
        out = out.permute(0, 2, 3, 1).reshape(b, n, self.head_dim * self.heads)
        return self.wo(out)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.attend(x, x, key_padding_mask)


def _feed_forward(ff: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``ff(x)``; without autograd the ReLU runs in place on the (tokens × ff_dim) hidden tensor."""
    if torch.is_grad_enabled() or not (isinstance(ff, nn.Sequential) and len(ff) == 3 and isinstance(ff[1], nn.ReLU)):
        return ff(x)
    hidden = ff[0](x)
    hidden.relu_()
    return ff[2](hidden)


class ResiDualLayer(nn.Module):
    """One ResiDual layer; the feed-forward module is passed in (shared across layers)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.att_layer = MultiHeadAttention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, a, b, ff: nn.Module, key_padding_mask=None):
        u = self.att_layer(a, key_padding_mask)
        return self._finish(a, b, u, ff)

    def forward_first(self, a, b, ff: nn.Module, key_padding_mask=None):
        """The same layer, but only the first token's (a, b) are computed (queries = token 0 only)."""
        u = self.att_layer.attend(a[:, :1], a, key_padding_mask)
        return self._finish(a[:, :1], b[:, :1], u, ff)

    def _finish(self, a, b, u, ff):
        a = self.norm1(a + u)
        b = b + u
        f = _feed_forward(ff, a)
        a = self.norm2(a + f)
        b = b + f
        return a, b


class TransformerEncoder(nn.Module):
    """Stack of ResiDual layers with one shared FFN (Linear → ReLU → Linear); output a + final_norm(b)."""

    def __init__(self, dim: int, heads: int, layers: int, ff_dim: int = 4096):
        super().__init__()
        self.encoder_layers = nn.ModuleList(ResiDualLayer(dim, heads) for _ in range(layers))
        self.ff_layer = nn.Sequential(nn.Linear(dim, ff_dim), nn.ReLU(), nn.Linear(ff_dim, dim))
        self.final_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        a = b = x
        for layer in self.encoder_layers:
            a, b = layer(a, b, self.ff_layer, key_padding_mask)
        return a + self.final_norm(b)

    def forward_first(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``forward(x, mask)[:, 0]`` without computing the other tokens of the last layer: (B, D)."""
        if not len(self.encoder_layers):
            return x[:, 0]
        a = b = x
        for layer in self.encoder_layers[:-1]:
            a, b = layer(a, b, self.ff_layer, key_padding_mask)
        last = cast(ResiDualLayer, self.encoder_layers[-1])
        a, b = last.forward_first(a, b, self.ff_layer, key_padding_mask)
        return (a + self.final_norm(b))[:, 0]
