"""Reference implementations the benches measure against, standing in for the upstream code.

Written from the upstream structure (docs/architecture.md §3, §4, §6), in the plain PyTorch style of the upstream
repositories, never from our optimised modules:

- ``RefCodec``: EnCodec 24 kHz encoder/decoder as encodec 0.1.1 builds them (``weight_norm`` ``nn.Conv1d`` /
  ``nn.ConvTranspose1d``, ``nn.LSTM``, channels first); it loads our codec's state dict (same keys);
- ``RefDenoiser``: encodecmae2wav's denoiser from an **upstream-layout** state dict (``denoiser.encoder_layers.i.*``,
  ``time_embedding.*``, ``in_adapter``/``out_adapter``, the CLS encoder's ``pos_encoder.scale``): bias-free
  q/k/v/o with interleaved heads, softmax attention with additive masks, ResiDual layers sharing one FFN;
- ``ref_sample``: the upstream v-diffusion sampler loop (§6.5), conditional and unconditional passes run one
  after the other;
- ``upstream_size_model(work)``: the upstream-size autoencoder (EnCodecMAE-base, 2 CLS layers, 8 denoiser layers,
  D 768) built from the test suite's upstream-layout weights (``tests/upstream_layout.py``) and converted by
  ``pecmae_hub.convert.convert_autoencoder``, as a user converts the authors' checkpoint, with its fidelity
  record measured like ``pecmae convert`` does.
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent


# ---- EnCodec (encodec 0.1.1's structure) ---------------------------------------------------------------------
def _ref_pad(x, left, right):
    extra = max(0, max(left, right) - x.shape[-1] + 1)
    x = F.pad(F.pad(x, (0, extra)), (left, right), mode="reflect")
    return x[..., : x.shape[-1] - extra]


def _wn(module):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # weight_norm's deprecation notice
        return nn.utils.weight_norm(module)


class _RefConv(nn.Module):
    def __init__(self, cin, cout, k, stride=1):
        super().__init__()
        self.conv = nn.Module()
        self.conv.conv = _wn(nn.Conv1d(cin, cout, k, stride))
        self.k, self.s = k, stride

    def forward(self, x):
        extra = math.ceil(x.shape[-1] / self.s) * self.s - x.shape[-1]
        return self.conv.conv(_ref_pad(x, self.k - self.s, extra))


class _RefConvTr(nn.Module):
    def __init__(self, cin, cout, k, stride):
        super().__init__()
        self.convtr = nn.Module()
        self.convtr.convtr = _wn(nn.ConvTranspose1d(cin, cout, k, stride))
        self.trim = k - stride

    def forward(self, x):
        y = self.convtr.convtr(x)
        return y[..., : y.shape[-1] - self.trim]


class _RefRes(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.block = nn.Sequential(nn.ELU(), _RefConv(d, d // 2, 3), nn.ELU(), _RefConv(d // 2, d, 1))
        self.shortcut = _RefConv(d, d, 1)

    def forward(self, x):
        return self.shortcut(x) + self.block(x)


class _RefLSTM(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.lstm = nn.LSTM(d, d, 2)

    def forward(self, x):
        x = x.permute(2, 0, 1)
        return (self.lstm(x)[0] + x).permute(1, 2, 0)


class RefCodec(nn.Module):
    """EnCodec 24 kHz encoder/decoder as encodec 0.1.1 builds them; loads our state dict (same keys)."""

    def __init__(self):
        super().__init__()
        enc, mult = [_RefConv(1, 32, 7)], 1
        for r in (2, 4, 5, 8):
            enc += [_RefRes(32 * mult), nn.ELU(), _RefConv(32 * mult, 64 * mult, 2 * r, r)]
            mult *= 2
        self.encoder = nn.Module()
        self.encoder.model = nn.Sequential(*enc, _RefLSTM(512), nn.ELU(), _RefConv(512, 128, 7))
        dec = [_RefConv(128, 512, 7), _RefLSTM(512)]
        for r in (8, 5, 4, 2):
            dec += [nn.ELU(), _RefConvTr(32 * mult, 16 * mult, 2 * r, r), _RefRes(16 * mult)]
            mult //= 2
        self.decoder = nn.Module()
        self.decoder.model = nn.Sequential(*dec, nn.ELU(), _RefConv(32, 1, 7))


# ---- the encodecmae2wav denoiser ---------------------------------------------------------------------------------
class _RefAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        inner = self.head_dim * heads
        self.wq, self.wk, self.wv = (nn.Linear(dim, inner, bias=False) for _ in range(3))
        self.wo = nn.Linear(inner, dim, bias=False)

    def forward(self, x, mask=None):
        b, t, _ = x.shape

        def heads(y):  # channel c = d·H + h belongs to head h
            return y.view(b, t, self.head_dim, self.heads).permute(0, 3, 1, 2)

        q, k, v = heads(self.wq(x)), heads(self.wk(x)), heads(self.wv(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        if mask is not None:
            scores = scores + mask[:, None, None, :].to(scores.dtype) * -1e9
        out = torch.matmul(torch.softmax(scores, dim=-1), v)  # (b, H, t, d_h)
        return self.wo(out.permute(0, 2, 3, 1).reshape(b, t, -1))


class _RefLayer(nn.Module):
    def __init__(self, dim, heads, ff_layer):
        super().__init__()
        self.att_layer = _RefAttention(dim, heads)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff_layer = ff_layer  # one FFN object shared by every layer, as upstream builds it

    def forward(self, a, b, mask=None):
        u = self.att_layer(a, mask)
        a, b = self.norm1(a + u), b + u
        f = self.ff_layer(a)
        return self.norm2(a + f), b + f


class RefDenoiser(nn.Module):
    """``denoiser(x_sigma, sigma, code)`` of encodecmae2wav, loaded from an upstream-layout state dict."""

    def __init__(self, sd: dict, heads: int = 8):
        super().__init__()
        prefix = "denoiser.encoder_layers."
        n_layers = 1 + max(int(k[len(prefix) :].split(".")[0]) for k in sd if k.startswith(prefix))
        dim = sd["in_adapter.weight"].shape[0]
        ff = sd[f"{prefix}0.ff_layer.0.weight"].shape[0]
        shared = nn.Sequential(nn.Linear(dim, ff), nn.ReLU(), nn.Linear(ff, dim))
        self.layers = nn.ModuleList(_RefLayer(dim, heads, shared) for _ in range(n_layers))
        self.final_norm = nn.LayerNorm(dim)
        self.time_embedding = nn.Sequential(nn.Linear(1, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.in_adapter = nn.Linear(sd["in_adapter.weight"].shape[1], dim)
        self.out_adapter = nn.Linear(dim, sd["out_adapter.weight"].shape[0])
        self.pe_scale = nn.Parameter(torch.tensor(1.0))
        state = {"pe_scale": sd["encoder.pos_encoder.scale"]}
        for key, value in sd.items():
            if key.startswith(prefix):
                state["layers." + key[len(prefix) :]] = value
            elif key.startswith(("denoiser.final_norm.", "time_embedding.", "in_adapter.", "out_adapter.")):
                state[key.removeprefix("denoiser.")] = value
        self.load_state_dict(state, strict=True)
        self.eval()

    @staticmethod
    def _pe(length, dim):
        position = torch.arange(length, dtype=torch.float32)[:, None]
        omega = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        pe = torch.zeros(length, dim)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(position * omega), torch.cos(position * omega)
        return pe

    def forward(self, x, sigma, code):
        b, t, _ = x.shape
        tau = self.time_embedding(sigma.reshape(b, 1, 1))
        h = self.in_adapter(x)
        h = h + self.pe_scale * self._pe(t, h.shape[-1])
        a = bb = torch.cat([code.reshape(b, 1, -1), tau, h], dim=1)
        for layer in self.layers:
            a, bb = layer(a, bb)
        return self.out_adapter((a + self.final_norm(bb))[:, 2:])


@torch.inference_mode()
def ref_sample(denoiser: RefDenoiser, codec: RefCodec, z, noise, steps: int = 40, guidance: float = 1.0):
    """The upstream sampler (docs/architecture.md §6.5) and EnCodec decoding: (latents, audio)."""
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    alphas, betas = torch.cos(sigmas * math.pi / 2), torch.sin(sigmas * math.pi / 2)
    x = noise.clone()
    for i in range(steps):
        s = sigmas[i].repeat(x.shape[0])
        v = denoiser(x, s, z)
        if guidance > 0:
            v = v + guidance * (v - denoiser(x, s, torch.zeros_like(z)))
        x0, eps = alphas[i] * x - betas[i] * v, betas[i] * x + alphas[i] * v
        x = alphas[i + 1] * x0 + betas[i + 1] * eps
    return x, codec.decoder.model(x.transpose(1, 2))[:, 0]


# ---- the upstream-size model ------------------------------------------------------------------------------------
UPSTREAM_SIZE = dict(
    dim=768, frame_heads=12, frame_layers=10, cls_heads=8, cls_layers=2, den_heads=8, den_layers=8, ff=4096
)


def _layout():
    sys.path.insert(0, str(ROOT / "tests"))
    import upstream_layout

    return upstream_layout


def upstream_size_state() -> dict:
    """The upstream-layout state dict of the test suite (``tests/upstream_layout.py``) at the released sizes."""
    layout = _layout()
    return layout.diffusion_state(**UPSTREAM_SIZE, encodec=layout.encodec_state(0))


def upstream_size_model(work: Path, state: dict | None = None, record: bool = True, log=print) -> Path:
    """``work/autoencoder``: the upstream-size autoencoder converted from ``state`` (default
    :func:`upstream_size_state`) with ``pecmae_hub.convert.convert_autoencoder``, and (``record``) its fidelity
    record measured as ``pecmae convert`` does (synthetic probes, int8). Reused when already there."""
    import time

    from pecmae_hub.convert.autoencoder import convert_autoencoder

    work = Path(work)
    out = work / "autoencoder"
    if not (out / "model.safetensors").is_file():
        work.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": state if state is not None else upstream_size_state()}, work / "weights.pt")
        torch.save(_layout().encodec_state(0), work / "encodec.th")  # the EnCodec inside the state above
        convert_autoencoder(work / "weights.pt", work / "encodec.th", out, chunk_seconds=4, overwrite=True)
    if record and not (out / "fidelity.json").is_file():
        from pecmae_hub.fidelity import write_fidelity
        from pecmae_hub.models.autoencoder import Autoencoder

        t0 = time.perf_counter()
        write_fidelity(Autoencoder.from_pretrained(out, precision="fp32"), out, None, precisions=["int8"])
        log(f"# upstream-size fidelity record (int8, synthetic probes) measured in {time.perf_counter() - t0:.0f} s")
    return out
