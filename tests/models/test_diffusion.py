"""Frame encoder, CLS encoder, denoiser (against oracles) and the v-diffusion sampler of docs/architecture.md §6.5."""

from __future__ import annotations

import math

import pytest
import torch
from upstream_layout import ref_denoiser, ref_encoder, ref_pe, ref_z, rel_err

from pecmae_hub.models.encoders import CLSEncoder, Denoiser, FrameEncoder
from pecmae_hub.sampling.v_diffusion import angle_schedule, sample_v_diffusion, v_diffusion_targets


def _upstream_view(module_state: dict, src: str, dst: str, layers: int) -> dict:
    """Our encoder keys → upstream names (per-layer FFN copies), for the oracles."""
    out = {}
    for key, value in module_state.items():
        if not key.startswith(src):
            continue
        rest = key[len(src) :]
        if rest.startswith("ff_layer."):
            for i in range(layers):
                out[f"{dst}encoder_layers.{i}.{rest}"] = value
        else:
            out[dst + rest] = value
    return out


def _randomise(module, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("scale"):
                p.fill_(0.7)
            elif "norm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn(p.shape, generator=gen))
    return module.eval()


def test_frame_encoder_matches_oracle_with_padding_mask():
    enc = _randomise(FrameEncoder(16, 32, 4, 2, 64), 0)
    state = {k: v.detach() for k, v in enc.state_dict().items()}
    sd = _upstream_view(state, "visible_encoder.", "visible_encoder.", 2)
    feats = torch.randn(2, 12, 16)
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[1, 9:] = True
    with torch.inference_mode():
        out = enc(feats, mask)
    proj = feats.double() @ state["feat_projector.weight"].double().T + state["feat_projector.bias"].double()
    ref = ref_encoder(proj + 0.7 * ref_pe(12, 32), sd, "visible_encoder.", 4, mask)
    assert out.shape == (2, 12, 32) and rel_err(out[~mask], ref[~mask]) < 1e-5


def test_cls_encoder_no_pe_on_cls_and_frames_from_zero():
    cls = _randomise(CLSEncoder(32, 2, 2, 64), 1)
    state = {k: v.detach() for k, v in cls.state_dict().items()}
    sd = _upstream_view(state, "encoder.", "encoder.encoder.", 2)
    sd["encoder.cls_tokens.weight"] = state["cls_tokens.weight"]
    sd["encoder.pos_encoder.scale"] = state["pos_encoder.scale"]
    frames = torch.randn(3, 10, 32)
    mask = torch.zeros(3, 10, dtype=torch.bool)
    mask[2, 4:] = True
    with torch.inference_mode():
        z = cls(frames, mask)
        z_unmasked = cls(frames)
    assert z.shape == (3, 32) and rel_err(z, ref_z(sd, frames, 2, mask)) < 1e-5
    assert rel_err(z_unmasked, ref_z(sd, frames, 2)) < 1e-5
    # the masked frames of row 2 do not matter
    frames2 = frames.clone()
    frames2[2, 4:] = 100.0
    with torch.inference_mode():
        assert rel_err(cls(frames2, mask)[2], z[2]) < 1e-6


def test_denoiser_token_order_and_shared_pe():
    cls = _randomise(CLSEncoder(32, 2, 1, 64), 2)
    den = _randomise(Denoiser(16, 32, 2, 2, 64), 3)
    with torch.no_grad():
        cls.pos_encoder.scale.fill_(1.7)  # the denoiser must use *this* PE scale
    sd = _upstream_view({k: v.detach() for k, v in den.state_dict().items()}, "denoiser.", "denoiser.", 2)
    for name in ("time_embedding", "in_adapter", "out_adapter"):
        for key, value in getattr(den, name).state_dict().items():
            sd[f"{name}.{key}"] = value.detach()
    sd["encoder.pos_encoder.scale"] = cls.pos_encoder.scale.detach()
    x, sigma, code = torch.randn(2, 9, 16), torch.tensor([0.2, 1.0]), torch.randn(2, 32)
    with torch.inference_mode():
        v = den(x, sigma, code, cls.pos_encoder)
    assert v.shape == (2, 9, 16) and rel_err(v, ref_denoiser(sd, x, sigma, code, 2)) < 1e-5


def test_schedule_and_training_targets():
    s = angle_schedule(4)
    assert torch.allclose(s, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    x0, eps, sigma = torch.randn(3, 5, 2), torch.randn(3, 5, 2), torch.tensor([0.0, 0.5, 1.0])
    x_sigma, v = v_diffusion_targets(x0, eps, sigma)
    alpha, beta = torch.cos(sigma * math.pi / 2)[:, None, None], torch.sin(sigma * math.pi / 2)[:, None, None]
    assert torch.allclose(x_sigma, alpha * x0 + beta * eps) and torch.allclose(v, alpha * eps - beta * x0)
    assert torch.allclose(x_sigma[0], x0[0]) and torch.allclose(x_sigma[2], eps[2], atol=1e-6)


def _oracle_predictor(x0, calls):
    """Exact v for a known x0: ε = (x − α·x0)/β, v = α·ε − β·x0 (ignores the code)."""

    def predict_v(x, sigma, code):
        calls.append((sigma.clone(), code.clone()))
        a = torch.cos(sigma * math.pi / 2).reshape(-1, 1, 1).double()
        b = torch.sin(sigma * math.pi / 2).reshape(-1, 1, 1).double()
        target = x0.repeat(x.shape[0] // x0.shape[0], 1, 1).double()
        eps = (x.double() - a * target) / b
        return (a * eps - b * target).to(x.dtype)

    return predict_v


@pytest.mark.parametrize("guidance", [0.0, 1.0, 3.0])
def test_sampler_recovers_x0_with_exact_predictor(guidance):
    gen = torch.Generator().manual_seed(0)
    x0, noise, code = torch.randn(2, 30, 8, generator=gen), torch.randn(2, 30, 8, generator=gen), torch.randn(2, 16)
    calls = []
    steps_seen = []
    out = sample_v_diffusion(
        _oracle_predictor(x0, calls),
        code,
        noise,
        steps=7,
        guidance=guidance,
        progress=lambda i, n: steps_seen.append((i, n)),
    )
    assert rel_err(out, x0) < 1e-5
    assert len(calls) == 7 and steps_seen[-1] == (7, 7)
    sigmas = torch.stack([c[0][0] for c in calls])
    assert torch.allclose(sigmas, angle_schedule(7)[:-1])  # σ = 1, …, 1/N: the last step lands on σ = 0
    if guidance > 0:  # conditional and unconditional branches in one batch; the second half has a zero code
        assert calls[0][1].shape == (4, 16) and torch.equal(calls[0][1][:2], code) and not calls[0][1][2:].any()
    else:
        assert calls[0][1].shape == (2, 16)


def test_sampler_guidance_formula():
    """v = v_c + w (v_c − v_u): with constant branch outputs one step from σ=1 gives x0_hat = α x − β v."""

    def predict_v(x, sigma, code):
        return torch.where(
            code.abs().sum(-1, keepdim=True)[:, :, None] > 0, torch.full_like(x, 2.0), torch.full_like(x, 0.5)
        )

    noise = torch.zeros(1, 3, 2)
    out = sample_v_diffusion(predict_v, torch.ones(1, 4), noise, steps=1, guidance=2.0)
    v = 2.0 + 2.0 * (2.0 - 0.5)
    assert torch.allclose(out, torch.full_like(out, -v), atol=1e-6)  # α_0 ≈ 0, β_0 = 1, then σ_1 = 0
