"""EnCodec SEANet: shapes, causal reflect padding, transposed-conv trimming, LSTM skip, fast path = reference."""

from __future__ import annotations

import pytest
import torch
from upstream_layout import (
    DECODER_TABLE,
    ENCODER_TABLE,
    encodec_state,
    ref_causal_conv,
    ref_causal_convtr,
    ref_lstm,
    ref_seanet,
    rel_err,
)

from pecmae_hub.models.encodec import SLSTM, EncodecCodec, SConv1d, SConvTranspose1d


@pytest.fixture(scope="module")
def codec():
    sd = encodec_state(seed=0)
    model = EncodecCodec().eval()
    model.load_state_dict({k: v for k, v in sd.items() if not k.startswith("quantizer.")}, strict=True)
    return model, sd


def _wn_weight(conv):
    inner = conv.conv.conv if hasattr(conv, "conv") else conv.convtr.convtr
    v, g = inner.weight_v.detach(), inner.weight_g.detach()
    return g * v / v.pow(2).sum(dim=(1, 2), keepdim=True).sqrt()


def test_shapes_match_spec(codec):
    model, _ = codec
    with torch.inference_mode():
        assert model.encoder(torch.randn(1, 1, 96_000) * 0.1).shape == (1, 128, 300)
        assert model.decoder(torch.randn(1, 128, 300)).shape == (1, 1, 96_000)
        assert model.encode(torch.randn(2, 24_001) * 0.1).shape == (2, 76, 128)  # ceil(L / 320)
        assert model.decode(torch.randn(3, 75, 128)).shape == (3, 24_000)
    assert len([k for k in model.state_dict() if k.startswith("encoder.")]) == 62


@pytest.mark.parametrize(
    "cin,cout,k,stride,length",
    [(3, 4, 7, 1, 50), (4, 6, 4, 2, 51), (2, 3, 10, 5, 23), (3, 2, 16, 8, 64), (3, 3, 3, 1, 2)],
)
def test_sconv1d_causal_reflect_padding(cin, cout, k, stride, length):
    torch.manual_seed(0)
    conv = SConv1d(cin, cout, k, stride=stride)
    with torch.no_grad():
        conv.conv.conv.weight_g.uniform_(0.5, 1.5)
        conv.conv.conv.bias.normal_()
    x = torch.randn(2, cin, length)
    w, b = _wn_weight(conv).double(), conv.conv.conv.bias.detach().double()
    y = conv(x)
    assert y.shape[-1] == -(-length // stride)  # ceil(L / stride) frames
    if length > k:  # (F.pad's reflect needs pad < length; EnCodec zero-extends shorter inputs first)
        assert rel_err(y, ref_causal_conv(x.double(), w, b, stride)) < 1e-6
    # causal: the last input sample only reaches the last output frame (the left reflect padding mirrors
    # x[1..k−stride], so this holds once the input is longer than the kernel)
    if length <= k:
        return
    x2 = x.clone()
    x2[..., -1] += 1.0
    assert torch.allclose(conv(x2)[..., :-1], y[..., :-1], atol=1e-6)
    assert not torch.allclose(conv(x2)[..., -1], y[..., -1], atol=1e-6)


@pytest.mark.parametrize("cin,cout,stride", [(5, 3, 8), (4, 2, 2)])
def test_transposed_conv_trims_right(cin, cout, stride):
    torch.manual_seed(1)
    conv = SConvTranspose1d(cin, cout, 2 * stride, stride)
    x = torch.randn(2, cin, 9)
    ref = ref_causal_convtr(x.double(), _wn_weight(conv).double(), conv.convtr.convtr.bias.detach().double(), stride)
    assert conv(x).shape == (2, cout, 9 * stride) and rel_err(conv(x), ref) < 1e-6
    full = torch.nn.functional.conv_transpose1d(x, _wn_weight(conv), conv.convtr.convtr.bias.detach(), stride=stride)
    assert torch.allclose(conv(x), full[..., : 9 * stride], atol=1e-6)  # trimming is on the right only


def test_slstm_has_a_skip_connection():
    torch.manual_seed(2)
    lstm = SLSTM(8)
    x = torch.randn(2, 8, 5)
    sd = {f"l.{k}": v.detach() for k, v in lstm.lstm.state_dict().items()}
    assert rel_err(lstm(x), x.double() + ref_lstm(sd, "l", x.double())) < 1e-6


def test_encoder_and_decoder_match_spec_oracle(codec):
    model, sd = codec
    wav = torch.randn(2, 3_200, generator=torch.Generator().manual_seed(3)) * 0.2
    with torch.inference_mode():
        latents = model.encode(wav)
        audio = model.decode(latents[:, :8])
    ref_lat = ref_seanet(sd, "encoder", ENCODER_TABLE, wav[:, None, :]).transpose(1, 2)
    ref_audio = ref_seanet(sd, "decoder", DECODER_TABLE, ref_lat[:, :8].transpose(1, 2))[:, 0]
    assert latents.shape == (2, 10, 128) and rel_err(latents, ref_lat) < 1e-5
    assert audio.shape == (2, 2_560) and rel_err(audio, ref_audio) < 1e-5


@pytest.mark.parametrize("length", [96_000, 12_345, 7, 1])
def test_fast_path_equals_reference_path(codec, length):
    model, _ = codec
    wav = torch.randn(2, length, generator=torch.Generator().manual_seed(length)) * 0.1
    with torch.enable_grad():  # autograd recording → the channels-first reference modules
        ref = model.encode(wav)
        ref_audio = model.decode(ref[:1, :7])
    with torch.inference_mode():
        fast = model.encode(wav)
        fast_audio = model.decode(ref[:1, :7].detach())
    assert fast.shape == ref.shape and rel_err(fast, ref) < 1e-5
    assert rel_err(fast_audio, ref_audio) < 1e-5


def test_cached_weights_follow_parameter_changes():
    torch.manual_seed(4)
    model = EncodecCodec().eval()
    wav = torch.randn(1, 4_000) * 0.1
    with torch.inference_mode():
        before = model.encode(wav)
    with torch.no_grad():  # in-place update (as an optimiser or load_state_dict does)
        model.encoder.model[0].conv.conv.weight_g.mul_(2.0)
    with torch.inference_mode():
        after = model.encode(wav)
    with torch.enable_grad():
        ref = model.encode(wav)
    assert rel_err(after, before) > 1e-3 and rel_err(after, ref) < 1e-5
    other = EncodecCodec().eval()
    model.load_state_dict(other.state_dict())
    with torch.inference_mode():
        assert rel_err(model.encode(wav), other.encode(wav)) < 1e-6


def test_batched_decode_runs_chunk_by_chunk_with_the_same_numbers(codec):
    """Above the LSTM's frame rate the decoder runs one chunk at a time (micro-batches): same output."""
    model, _ = codec
    latents = torch.randn(3, 300, 128, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        fast = model.decode(latents)
        single = torch.cat([model.decode(latents[i : i + 1]) for i in range(3)])
    with torch.enable_grad():
        ref = model.decode(latents)
    assert fast.shape == (3, 96_000) and rel_err(fast, ref) < 1e-5 and rel_err(single, ref) < 1e-5


def test_fast_path_restores_the_thread_count(codec):
    model, _ = codec
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():
            model.decode(torch.randn(1, 5, 128))  # the LSTM runs on one thread, then the count comes back
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
