"""Transformer blocks against naive oracles: sinusoidal PE, interleaved-head attention, ResiDual, shared FFN."""

from __future__ import annotations

import math

import pytest
import torch
from upstream_layout import ref_encoder, ref_mha, ref_pe, rel_err, transformer_keys

from pecmae_hub.models.transformer import (
    MultiHeadAttention,
    ResiDualLayer,
    SinusoidalPositionalEmbedding,
    TransformerEncoder,
)


def _encoder_with_upstream_weights(dim, heads, layers, ff, seed=0):
    """Our encoder loaded from an upstream-layout state dict (per-layer FFN copies folded by hand)."""
    sd = {}
    transformer_keys(sd, "", dim, heads, layers, ff, torch.Generator().manual_seed(seed))
    ours = {k: v for k, v in sd.items() if ".ff_layer." not in k}
    for key in ("ff_layer.0.weight", "ff_layer.0.bias", "ff_layer.2.weight", "ff_layer.2.bias"):
        ours[key] = sd[f"encoder_layers.0.{key}"]
    enc = TransformerEncoder(dim, heads, layers, ff)
    enc.load_state_dict(ours, strict=True)
    return enc.eval(), sd


def test_pe_formula_positions_and_scale():
    pe = SinusoidalPositionalEmbedding(10)
    assert rel_err(pe.table(7), ref_pe(7, 10)) < 1e-6
    assert torch.equal(pe.table(7)[0, 0::2], torch.zeros(5)) and torch.equal(pe.table(7)[0, 1::2], torch.ones(5))
    # pe[t, 2k] = sin(t · 10000^(−2k/D)): spot values
    assert math.isclose(pe.table(7)[3, 4].item(), math.sin(3 * 10000 ** (-4 / 10)), rel_tol=1e-6)
    assert math.isclose(pe.table(7)[5, 7].item(), math.cos(5 * 10000 ** (-6 / 10)), rel_tol=1e-6)
    with torch.no_grad():
        pe.scale.fill_(0.25)
    x = torch.randn(2, 7, 10)
    assert torch.allclose(pe(x), x + 0.25 * ref_pe(7, 10).float(), atol=1e-6)
    assert SinusoidalPositionalEmbedding(9).table(4).shape == (4, 9)  # odd D


def test_pe_cache_is_safe_for_training_after_inference():
    pe = SinusoidalPositionalEmbedding(8)
    with torch.inference_mode():
        pe(torch.randn(1, 5, 8))
    out = pe(torch.randn(1, 5, 8, requires_grad=True))  # the cached table must not be an inference tensor
    out.sum().backward()
    assert pe.scale.grad is not None and math.isclose(pe.scale.grad.item(), ref_pe(5, 8).sum().item(), rel_tol=1e-5)
    assert pe.table(5, dtype=torch.float64).dtype == torch.float64 and pe.table(6).shape == (6, 8)


@pytest.mark.parametrize("dim,heads", [(32, 4), (40, 12)])  # 40 // 12 = 3: projections 36 wide (EnCodecMAE-large quirk)
def test_attention_interleaved_heads_and_mask(dim, heads):
    torch.manual_seed(0)
    mha = MultiHeadAttention(dim, heads).eval()
    inner = (dim // heads) * heads
    assert mha.wq.weight.shape == (inner, dim) and mha.wo.weight.shape == (dim, inner)
    sd = {f"{n}.weight": getattr(mha, n).weight.detach() for n in ("wq", "wk", "wv", "wo")}
    x = torch.randn(3, 9, dim)
    mask = torch.zeros(3, 9, dtype=torch.bool)
    mask[1, 6:] = True
    mask[2, 1:] = True
    with torch.inference_mode():
        assert rel_err(mha(x, mask), ref_mha(x, sd, "", heads, mask)) < 1e-5
        assert rel_err(mha(x), ref_mha(x, sd, "", heads)) < 1e-5
    # the spec's permutation to the standard contiguous layout (c = h·d_h + d) gives the same numbers;
    # a contiguous-head implementation without it gives different ones although every shape matches
    d_h = dim // heads
    perm = torch.tensor([(c % d_h) * heads + c // d_h for c in range(inner)])
    permuted = {
        "wq.weight": sd["wq.weight"][perm],
        "wk.weight": sd["wk.weight"][perm],
        "wv.weight": sd["wv.weight"][perm],
        "wo.weight": sd["wo.weight"][:, perm],
    }
    ref = ref_mha(x, sd, "", heads, mask)
    assert rel_err(_contiguous_mha(x, permuted, heads, mask), ref) < 1e-9
    assert rel_err(_contiguous_mha(x, sd, heads, mask), ref) > 1e-3


def _contiguous_mha(x, sd, heads, mask):
    x = x.double()
    q, k, v = (x @ sd[f"{n}.weight"].double().T for n in ("wq", "wk", "wv"))
    d_h = x.shape[-1] // heads
    out = torch.zeros_like(q)
    for h in range(heads):
        sl = slice(h * d_h, (h + 1) * d_h)
        scores = q[..., sl] @ k[..., sl].transpose(1, 2) * d_h**-0.5 + mask[:, None, :].double() * -1e9
        out[..., sl] = torch.softmax(scores, -1) @ v[..., sl]
    return out @ sd["wo.weight"].double().T


def test_residual_layer_and_encoder_match_oracle():
    enc, sd = _encoder_with_upstream_weights(32, 4, 3, 64)
    x = torch.randn(2, 11, 32)
    mask = torch.zeros(2, 11, dtype=torch.bool)
    mask[0, 8:] = True
    with torch.inference_mode():
        out = enc(x, mask)
        first = enc.forward_first(x, mask)
    ref = ref_encoder(x, sd, "", 4, mask)
    assert rel_err(out[~mask], ref[~mask]) < 1e-5
    assert rel_err(first, out[:, 0]) < 1e-6
    # one ResiDual layer by hand: a' = LN2(LN1(a+u) + f), b' = b + u + f
    layer = enc.encoder_layers[0]
    a, b = torch.randn(1, 5, 32), torch.randn(1, 5, 32)
    with torch.inference_mode():
        a2, b2 = layer(a, b, enc.ff_layer)
        u = layer.att_layer(a)
        a1 = layer.norm1(a + u)
        f = enc.ff_layer(a1)
    assert torch.allclose(a2, layer.norm2(a1 + f), atol=1e-6) and torch.allclose(b2, b + u + f, atol=1e-6)


def test_ffn_is_stored_once_and_shared():
    enc = TransformerEncoder(16, 2, 4, 32)
    keys = list(enc.state_dict())
    assert [k for k in keys if "ff_layer" in k] == [
        "ff_layer.0.weight",
        "ff_layer.0.bias",
        "ff_layer.2.weight",
        "ff_layer.2.bias",
    ]
    assert not any(k.startswith("encoder_layers.") and "ff_layer" in k for k in keys)
    assert isinstance(enc.encoder_layers[0], ResiDualLayer)


def test_training_gradients_flow_through_first_token_path():
    torch.manual_seed(1)
    enc = TransformerEncoder(16, 2, 2, 32).train()
    x = torch.randn(2, 6, 16, requires_grad=True)
    enc.forward_first(x).pow(2).sum().backward()
    assert x.grad is not None and enc.ff_layer[0].weight.grad is not None
    assert enc.encoder_layers[0].att_layer.wq.weight.grad.abs().sum() > 0
    x2 = x.detach().clone().requires_grad_(True)
    enc.zero_grad()
    enc(x2)[:, 0].pow(2).sum().backward()
    assert torch.allclose(x.grad, x2.grad, atol=1e-5)
