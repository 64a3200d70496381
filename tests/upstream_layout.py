"""Test support: upstream state dicts built from the spec's key tables, and independent reference oracles.

Nothing here imports pecmae_hub. The state dicts use the **upstream** names and shapes
(docs/architecture.md §3 EnCodec, §5.3 EnCodecMAE v1, §6 TransformerAEDiffusion); the oracles are deliberately
naive re-statements of the spec formulas (per-head loops, additive −1e9 masks, explicit padding),
used to check our optimised modules after conversion.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# EnCodec 24 kHz (docs/architecture.md §3): (index, kind, args)
ENCODER_TABLE = [
    (0, "conv", (1, 32, 7, 1)),
    (1, "res", 32),
    (2, "elu", None),
    (3, "conv", (32, 64, 4, 2)),
    (4, "res", 64),
    (5, "elu", None),
    (6, "conv", (64, 128, 8, 4)),
    (7, "res", 128),
    (8, "elu", None),
    (9, "conv", (128, 256, 10, 5)),
    (10, "res", 256),
    (11, "elu", None),
    (12, "conv", (256, 512, 16, 8)),
    (13, "lstm", 512),
    (14, "elu", None),
    (15, "conv", (512, 128, 7, 1)),
]
DECODER_TABLE = [
    (0, "conv", (128, 512, 7, 1)),
    (1, "lstm", 512),
    (2, "elu", None),
    (3, "convtr", (512, 256, 16, 8)),
    (4, "res", 256),
    (5, "elu", None),
    (6, "convtr", (256, 128, 10, 5)),
    (7, "res", 128),
    (8, "elu", None),
    (9, "convtr", (128, 64, 8, 4)),
    (10, "res", 64),
    (11, "elu", None),
    (12, "convtr", (64, 32, 4, 2)),
    (13, "res", 32),
    (14, "elu", None),
    (15, "conv", (32, 1, 7, 1)),
]


_LAYOUT_ONLY = [False]
REF_DTYPE = [torch.float64]  # the oracles compute in float64 (a test may switch to float32)


class LayoutOnly:
    """Within this context the state-dict builders return zeros (fast; for key/shape checks at real sizes)."""

    def __enter__(self):
        _LAYOUT_ONLY[0] = True

    def __exit__(self, *exc):
        _LAYOUT_ONLY[0] = False


def _rand(gen, *shape, scale=1.0):
    if _LAYOUT_ONLY[0]:
        return torch.zeros(*shape)
    return torch.randn(*shape, generator=gen) * scale


def _conv_keys(sd, prefix, cin, cout, k, gen, transposed=False):
    name = "convtr.convtr" if transposed else "conv.conv"
    g_rows = cin if transposed else cout
    sd[f"{prefix}.{name}.weight_g"] = _rand(gen, g_rows, 1, 1).abs() + 0.5
    shape = (cin, cout, k) if transposed else (cout, cin, k)
    sd[f"{prefix}.{name}.weight_v"] = _rand(gen, *shape)
    sd[f"{prefix}.{name}.bias"] = _rand(gen, cout, scale=0.05)


def _seanet_keys(sd, prefix, table, gen):
    for index, kind, arg in table:
        p = f"{prefix}.model.{index}"
        if kind == "conv":
            cin, cout, k, _ = arg
            _conv_keys(sd, p, cin, cout, k, gen)
        elif kind == "convtr":
            cin, cout, k, _ = arg
            _conv_keys(sd, p, cin, cout, k, gen, transposed=True)
        elif kind == "res":
            _conv_keys(sd, f"{p}.block.1", arg, arg // 2, 3, gen)
            _conv_keys(sd, f"{p}.block.3", arg // 2, arg, 1, gen)
            _conv_keys(sd, f"{p}.shortcut", arg, arg, 1, gen)
        elif kind == "lstm":
            s = 1 / math.sqrt(arg)
            for layer in (0, 1):
                sd[f"{p}.lstm.weight_ih_l{layer}"] = _rand(gen, 4 * arg, arg, scale=s)
                sd[f"{p}.lstm.weight_hh_l{layer}"] = _rand(gen, 4 * arg, arg, scale=s)
                sd[f"{p}.lstm.bias_ih_l{layer}"] = _rand(gen, 4 * arg, scale=s)
                sd[f"{p}.lstm.bias_hh_l{layer}"] = _rand(gen, 4 * arg, scale=s)


def encodec_state(seed: int = 0, n_q: int = 2, codebook: int = 16) -> dict:
    """``encodec_24khz-d7cc33bc.th`` layout: ``encoder.*``, ``decoder.*``, ``quantizer.vq.layers.N._codebook.*``."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict = {}
    _seanet_keys(sd, "encoder", ENCODER_TABLE, gen)
    _seanet_keys(sd, "decoder", DECODER_TABLE, gen)
    for q in range(n_q):
        p = f"quantizer.vq.layers.{q}._codebook"
        sd[f"{p}.inited"] = torch.ones(1)
        sd[f"{p}.cluster_size"] = _rand(gen, codebook).abs()
        sd[f"{p}.embed"] = _rand(gen, codebook, 128)
        sd[f"{p}.embed_avg"] = _rand(gen, codebook, 128)
    return sd


def transformer_keys(sd, prefix, dim, heads, layers, ff, gen, shared=True):
    """Upstream ``TransformerEncoder`` keys; with ``shared`` the FFN tensors are the same in every layer."""
    inner = (dim // heads) * heads
    s = 1 / math.sqrt(dim)
    ffn = {
        "ff_layer.0.weight": _rand(gen, ff, dim, scale=s),
        "ff_layer.0.bias": _rand(gen, ff, scale=0.05),
        "ff_layer.2.weight": _rand(gen, dim, ff, scale=1 / math.sqrt(ff)),
        "ff_layer.2.bias": _rand(gen, dim, scale=0.05),
    }
    for i in range(layers):
        p = f"{prefix}encoder_layers.{i}."
        for name in ("wq", "wk", "wv"):
            sd[f"{p}att_layer.{name}.weight"] = _rand(gen, inner, dim, scale=s)
        sd[f"{p}att_layer.wo.weight"] = _rand(gen, dim, inner, scale=1 / math.sqrt(inner))
        for norm in ("norm1", "norm2"):
            sd[f"{p}{norm}.weight"] = 1 + _rand(gen, dim, scale=0.1)
            sd[f"{p}{norm}.bias"] = _rand(gen, dim, scale=0.1)
        for key, value in ffn.items():
            sd[p + key] = value if shared else value + _rand(gen, *value.shape, scale=0.01)
    sd[f"{prefix}final_norm.weight"] = 1 + _rand(gen, dim, scale=0.1)
    sd[f"{prefix}final_norm.bias"] = _rand(gen, dim, scale=0.1)


def encodecmae_state(
    dim=32, heads=4, layers=2, ff=64, seed=1, prefix="", encodec=None, pretraining=True, st=False
) -> dict:
    """EnCodecMAE v1 ``model.pt['state_dict']`` (docs/architecture.md §5.3), incl. pretraining-only modules."""
    gen = torch.Generator().manual_seed(seed)
    encodec = encodec if encodec is not None else encodec_state(seed)
    sd: dict = {}
    for key, value in encodec.items():
        if key.startswith("encoder."):
            sd[prefix + "wav_encoder.model." + key[len("encoder.") :]] = value.clone()
    sd[prefix + "feat_projector.weight"] = _rand(gen, dim, 128, scale=0.1 / math.sqrt(128))  # EnCodec latents are O(10)
    sd[prefix + "feat_projector.bias"] = _rand(gen, dim, scale=0.05)
    sd[prefix + "positional_encoder.scale"] = torch.tensor(0.8)
    transformer_keys(sd, prefix + "visible_encoder.", dim, heads, layers, ff, gen)
    if pretraining:
        sd[prefix + "decoder_projector.weight"] = _rand(gen, dim, dim)
        sd[prefix + "decoder_projector.bias"] = _rand(gen, dim)
        transformer_keys(sd, prefix + "decoder.", dim, heads, 2, ff, gen)
        sd[prefix + "head.layer.weight"] = _rand(gen, 16 * 8, dim)
        sd[prefix + "head.layer.bias"] = _rand(gen, 16 * 8)
        for q in range(2):
            p = f"{prefix}target_encoder.model.vq.layers.{q}._codebook"
            sd[f"{p}.inited"] = torch.ones(1)
            sd[f"{p}.cluster_size"] = _rand(gen, 16).abs()
            sd[f"{p}.embed"] = _rand(gen, 16, 128)
            sd[f"{p}.embed_avg"] = _rand(gen, 16, 128)
        if st:
            sd[prefix + "extra_head.weight"] = _rand(gen, 16, dim)
            sd[prefix + "extra_head.bias"] = _rand(gen, 16)
    return sd


def diffusion_state(
    dim=32,
    frame_heads=4,
    frame_layers=2,
    cls_heads=2,
    cls_layers=2,
    den_heads=2,
    den_layers=2,
    ff=64,
    seed=2,
    encodec=None,
) -> dict:
    """encodecmae2wav ``TransformerAEDiffusion`` state dict (docs/architecture.md §6.6 full key set)."""
    gen = torch.Generator().manual_seed(seed)
    sd = encodecmae_state(dim, frame_heads, frame_layers, ff, seed + 100, "encoder.encodecmae_model.", encodec)
    transformer_keys(sd, "encoder.encoder.", dim, cls_heads, cls_layers, ff, gen)
    sd["encoder.cls_tokens.weight"] = _rand(gen, 1, dim)
    sd["encoder.pos_encoder.scale"] = torch.tensor(1.3)
    transformer_keys(sd, "denoiser.", dim, den_heads, den_layers, ff, gen)
    sd["in_adapter.weight"] = _rand(gen, dim, 128, scale=1 / math.sqrt(128))
    sd["in_adapter.bias"] = _rand(gen, dim, scale=0.05)
    sd["out_adapter.weight"] = _rand(gen, 128, dim, scale=1 / math.sqrt(dim))
    sd["out_adapter.bias"] = _rand(gen, 128, scale=0.05)
    sd["time_embedding.0.weight"] = _rand(gen, dim, 1)
    sd["time_embedding.0.bias"] = _rand(gen, dim)
    sd["time_embedding.2.weight"] = _rand(gen, dim, dim, scale=1 / math.sqrt(dim))
    sd["time_embedding.2.bias"] = _rand(gen, dim, scale=0.05)
    return sd


# Oracles -------------------------------------------------------------------------------------------------
def ref_wn(sd, prefix):
    """Legacy weight norm: w = g · v / ‖v‖ (norm over every axis but 0)."""
    v, g = sd[prefix + ".weight_v"].to(REF_DTYPE[0]), sd[prefix + ".weight_g"].to(REF_DTYPE[0])
    norm = v.pow(2).sum(dim=tuple(range(1, v.dim())), keepdim=True).sqrt()
    return g * v / norm


def ref_causal_conv(x, w, b, stride):
    """EnCodec SConv1d: reflect-pad k − stride on the left and (ceil(L/s)·s − L) on the right."""
    k, length = w.shape[-1], x.shape[-1]
    extra = math.ceil(length / stride) * stride - length
    x = F.pad(x, (k - stride, extra), mode="reflect")
    return F.conv1d(x, w, b, stride=stride)


def ref_causal_convtr(x, w, b, stride):
    """EnCodec SConvTranspose1d: full transposed conv, then trim k − stride samples on the right."""
    y = F.conv_transpose1d(x, w, b, stride=stride)
    return y[..., : y.shape[-1] - (w.shape[-1] - stride)]


def ref_seanet(sd, prefix, table, x):
    """(B, C, L) through an upstream SEANet ``model`` Sequential, following the spec table, in float64."""
    x = x.to(REF_DTYPE[0])
    for index, kind, arg in table:
        p = f"{prefix}.model.{index}"
        if kind == "conv":
            x = ref_causal_conv(x, ref_wn(sd, p + ".conv.conv"), sd[p + ".conv.conv.bias"].to(REF_DTYPE[0]), arg[3])
        elif kind == "convtr":
            x = ref_causal_convtr(
                x, ref_wn(sd, p + ".convtr.convtr"), sd[p + ".convtr.convtr.bias"].to(REF_DTYPE[0]), arg[3]
            )
        elif kind == "elu":
            x = F.elu(x)
        elif kind == "res":
            h = ref_causal_conv(
                F.elu(x), ref_wn(sd, p + ".block.1.conv.conv"), sd[p + ".block.1.conv.conv.bias"].to(REF_DTYPE[0]), 1
            )
            h = ref_causal_conv(
                F.elu(h), ref_wn(sd, p + ".block.3.conv.conv"), sd[p + ".block.3.conv.conv.bias"].to(REF_DTYPE[0]), 1
            )
            x = (
                ref_causal_conv(
                    x, ref_wn(sd, p + ".shortcut.conv.conv"), sd[p + ".shortcut.conv.conv.bias"].to(REF_DTYPE[0]), 1
                )
                + h
            )
        elif kind == "lstm":
            x = x + ref_lstm(sd, p + ".lstm", x)
    return x


def ref_lstm(sd, prefix, x):
    """2-layer LSTM over time of (B, C, T), written out gate by gate (i, f, g, o), float64."""
    h_in = x.permute(2, 0, 1)  # (T, B, C)
    for layer in (0, 1):
        w_ih, w_hh = (
            sd[f"{prefix}.weight_ih_l{layer}"].to(REF_DTYPE[0]),
            sd[f"{prefix}.weight_hh_l{layer}"].to(REF_DTYPE[0]),
        )
        bias = sd[f"{prefix}.bias_ih_l{layer}"].to(REF_DTYPE[0]) + sd[f"{prefix}.bias_hh_l{layer}"].to(REF_DTYPE[0])
        hid = w_hh.shape[1]
        h = torch.zeros(h_in.shape[1], hid, dtype=REF_DTYPE[0])
        c = torch.zeros_like(h)
        outs = []
        for t in range(h_in.shape[0]):
            gates = h_in[t] @ w_ih.T + h @ w_hh.T + bias
            i, f, g, o = gates.split(hid, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        h_in = torch.stack(outs)
    return h_in.permute(1, 2, 0)


def ref_pe(length, dim):
    """pe[t, 2k] = sin(t·ω_k), pe[t, 2k+1] = cos(t·ω_k), ω_k = exp(−2k·ln(10000)/D), positions from 0."""
    pe = torch.zeros(length, dim, dtype=REF_DTYPE[0])
    for t in range(length):
        for k in range((dim + 1) // 2):
            omega = math.exp(-2 * k * math.log(10000.0) / dim)
            pe[t, 2 * k] = math.sin(t * omega)
            if 2 * k + 1 < dim:
                pe[t, 2 * k + 1] = math.cos(t * omega)
    return pe


def ref_mha(x, sd, prefix, heads, pad_mask=None):
    """Interleaved-head attention with an explicit loop over heads: head h owns channels d·H + h."""
    x = x.to(REF_DTYPE[0])
    wq, wk, wv, wo = (sd[f"{prefix}{n}.weight"].to(REF_DTYPE[0]) for n in ("wq", "wk", "wv", "wo"))
    q, k, v = x @ wq.T, x @ wk.T, x @ wv.T
    head_dim = x.shape[-1] // heads
    out = torch.zeros_like(q)
    for h in range(heads):
        idx = torch.arange(head_dim) * heads + h
        scores = q[..., idx] @ k[..., idx].transpose(1, 2) * head_dim**-0.5
        if pad_mask is not None:
            scores = scores + pad_mask[:, None, :].to(REF_DTYPE[0]) * -1e9
        out[..., idx] = torch.softmax(scores, dim=-1) @ v[..., idx]
    return out @ wo.T


def _ln(x, sd, prefix):
    return F.layer_norm(
        x, x.shape[-1:], sd[prefix + ".weight"].to(REF_DTYPE[0]), sd[prefix + ".bias"].to(REF_DTYPE[0]), 1e-5
    )


def ref_encoder(x, sd, prefix, heads, pad_mask=None):
    """ResiDual encoder: a, b = x; per layer u = MHA(a); a = LN1(a+u); b += u; f = FFN_i(a); a = LN2(a+f); b += f;
    output a + final_norm(b). Each layer uses its own ``ff_layer`` keys (as stored upstream)."""
    a = b = x.to(REF_DTYPE[0])
    n_layers = 1 + max(int(k[len(prefix) :].split(".")[1]) for k in sd if k.startswith(prefix + "encoder_layers."))
    for i in range(n_layers):
        p = f"{prefix}encoder_layers.{i}."
        u = ref_mha(a, sd, p + "att_layer.", heads, pad_mask)
        a = _ln(a + u, sd, p + "norm1")
        b = b + u
        hidden = torch.relu(
            a @ sd[p + "ff_layer.0.weight"].to(REF_DTYPE[0]).T + sd[p + "ff_layer.0.bias"].to(REF_DTYPE[0])
        )
        f = hidden @ sd[p + "ff_layer.2.weight"].to(REF_DTYPE[0]).T + sd[p + "ff_layer.2.bias"].to(REF_DTYPE[0])
        a = _ln(a + f, sd, p + "norm2")
        b = b + f
    return a + _ln(b, sd, prefix + "final_norm")


def ref_frame_embeddings(sd, wav, heads, prefix="", pad_mask=None):
    """EnCodecMAE v1 inference path from its own state dict: (B, L) → (B, T, D) visible embeddings."""
    enc = {
        k[len(prefix + "wav_encoder.model.") :]: v for k, v in sd.items() if k.startswith(prefix + "wav_encoder.model.")
    }
    feats = ref_seanet({"e." + k: v for k, v in enc.items()}, "e", ENCODER_TABLE, wav[:, None, :]).transpose(1, 2)
    proj = feats @ sd[prefix + "feat_projector.weight"].to(REF_DTYPE[0]).T + sd[prefix + "feat_projector.bias"].to(
        REF_DTYPE[0]
    )
    proj = proj + sd[prefix + "positional_encoder.scale"].to(REF_DTYPE[0]) * ref_pe(proj.shape[1], proj.shape[2])
    return ref_encoder(proj, sd, prefix + "visible_encoder.", heads, pad_mask)


def ref_z(sd, frames, cls_heads, pad_mask=None):
    """CLS encoder: [cls ; frames + PE(0..T−1)] → encoder → output at the CLS position."""
    b, t, d = frames.shape
    cls = sd["encoder.cls_tokens.weight"].to(REF_DTYPE[0])[None].expand(b, 1, d)
    x = torch.cat(
        [cls, frames.to(REF_DTYPE[0]) + sd["encoder.pos_encoder.scale"].to(REF_DTYPE[0]) * ref_pe(t, d)], dim=1
    )
    mask = None if pad_mask is None else torch.cat([torch.zeros(b, 1, dtype=torch.bool), pad_mask], dim=1)
    return ref_encoder(x, sd, "encoder.encoder.", cls_heads, mask)[:, 0]


def ref_denoiser(sd, x_noisy, sigma, code, den_heads):
    """Tokens [code ; time_emb(σ) ; in_adapter(x) + PE_cls] → denoiser → out_adapter(frames)."""
    b, t, _ = x_noisy.shape
    s = sigma.to(REF_DTYPE[0]).reshape(b, 1, 1)
    tau = torch.relu(
        s @ sd["time_embedding.0.weight"].to(REF_DTYPE[0]).T + sd["time_embedding.0.bias"].to(REF_DTYPE[0])
    )
    tau = tau @ sd["time_embedding.2.weight"].to(REF_DTYPE[0]).T + sd["time_embedding.2.bias"].to(REF_DTYPE[0])
    h = x_noisy.to(REF_DTYPE[0]) @ sd["in_adapter.weight"].to(REF_DTYPE[0]).T + sd["in_adapter.bias"].to(REF_DTYPE[0])
    h = h + sd["encoder.pos_encoder.scale"].to(REF_DTYPE[0]) * ref_pe(t, h.shape[-1])
    tokens = torch.cat([code.to(REF_DTYPE[0]).reshape(b, 1, -1), tau, h], dim=1)
    out = ref_encoder(tokens, sd, "denoiser.", den_heads)[:, 2:]
    return out @ sd["out_adapter.weight"].to(REF_DTYPE[0]).T + sd["out_adapter.bias"].to(REF_DTYPE[0])


def rel_err(a, b) -> float:
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()
