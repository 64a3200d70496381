"""``pecmae convert``: upstream files (built from the spec's key tables) → our folder → same numbers as an oracle."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
from safetensors.torch import save_file
from upstream_layout import (
    LayoutOnly,
    diffusion_state,
    encodec_state,
    encodecmae_state,
    ref_denoiser,
    ref_frame_embeddings,
    ref_z,
    rel_err,
)

from pecmae_hub.cli import convert as convert_cli
from pecmae_hub.convert import autoencoder as convert
from pecmae_hub.convert import checkpoint_io, key_mapping
from pecmae_hub.errors import CheckpointError, ConfigError, ModelNotFoundError
from pecmae_hub.models.autoencoder import Autoencoder, AutoencoderConfig
from pecmae_hub.storage.integrity import sha256_file

TINY = dict(dim=32, frame_heads=4, frame_layers=2, cls_heads=2, cls_layers=2, den_heads=2, den_layers=2, ff=64)
HEAD_FLAGS = ["--frame-heads", "4", "--cls-heads", "2", "--denoiser-heads", "2"]


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="pecmae")
    convert_cli.register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["convert", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Upstream containers: EnCodec .th (plain dict with quantizer), a Lightning-like .ckpt + config.gin,
    a weights.pt, an EnCodecMAE model.pt; all share one EnCodec encoder."""
    root = tmp_path_factory.mktemp("upstream")
    ec = encodec_state(seed=0)
    torch.save(ec, root / "encodec_24khz-d7cc33bc.th")
    diff = diffusion_state(**TINY, encodec=ec)
    ckpt_dir = root / "DiffTransformerAE2L8L1CLS-10s"
    ckpt_dir.mkdir()
    torch.save(
        {
            "state_dict": diff,
            "epoch": 12,
            "global_step": 285000,
            "pytorch-lightning_version": "1.9.0",
            "optimizer_states": [],
            "lr_schedulers": [],
        },
        ckpt_dir / "weights.ckpt",
    )
    (ckpt_dir / "config.gin").write_text(
        "META_MODEL = 'ChunkDiffusionSampler'\nMAX_AUDIO_DURATION = 10\nNUM_ENCODER_LAYERS = 4\n"
    )
    plain = root / "weights.pt"
    torch.save({"state_dict": diff}, plain)
    mae = encodecmae_state(dim=40, heads=12, layers=2, ff=48, encodec=ec, st=True)  # 40 // 12: 36-wide projections
    torch.save({"state_dict": mae}, root / "model.pt")
    return dict(
        root=root,
        encodec=root / "encodec_24khz-d7cc33bc.th",
        ckpt=ckpt_dir / "weights.ckpt",
        gin=ckpt_dir / "config.gin",
        weights=plain,
        mae=root / "model.pt",
        ec_state=ec,
        diff_state=diff,
        mae_state=mae,
    )


def test_diffusion_lightning_ckpt_converts_and_matches_oracle(files, tmp_path, capsys):
    out = tmp_path / "ae"
    assert (
        run_cli("--encodec", str(files["encodec"]), "--autoencoder", str(files["ckpt"]), *HEAD_FLAGS, "--out", str(out))
        == 0
    )
    printed = capsys.readouterr().out
    assert "MAX_AUDIO_DURATION = 10" in printed and "dropped" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "checksums.json",
        "config.json",
        "fidelity.json",  # measured on synthetic probes: what lets precision="auto" run it fast
        "model.safetensors",
    ]
    cfg = json.loads((out / "config.json").read_text())
    assert (
        cfg["chunk_seconds"] == 10 and cfg["cls_layers"] == 2 and cfg["denoiser_layers"] == 2 and cfg["model_dim"] == 32
    )
    card = (out / "README.md").read_text()
    assert sha256_file(files["ckpt"]) in card and sha256_file(files["encodec"]) in card
    assert "CC-BY-NC 4.0" in card and "check the upstream licence" in card and "weights.ckpt" in card
    from huggingface_hub import ModelCard

    meta = ModelCard(card).data  # front matter built by ModelCardData (hub.cards), parsed back
    assert meta.library_name == "pecmae-hub" and meta.license == "other" and "converted" in meta.tags

    ae = Autoencoder.from_pretrained(out, precision="fp32")  # parity with the oracles: the exact path
    sd = files["diff_state"]
    wav = torch.randn(2, 6400, generator=torch.Generator().manual_seed(3)) * 0.2
    with torch.inference_mode():
        frames = ae.frame_encoder(ae.codec.encode(wav))
        z = ae.encode_chunks(wav)
        x = torch.randn(2, 20, 128, generator=torch.Generator().manual_seed(4))
        sigma, code = torch.tensor([0.3, 0.9]), torch.randn(2, 32, generator=torch.Generator().manual_seed(5))
        v = ae.predict_v(x, sigma, code)
    ref_frames = ref_frame_embeddings(sd, wav, 4, prefix="encoder.encodecmae_model.")
    assert rel_err(frames, ref_frames) < 1e-5
    assert rel_err(z, ref_z(sd, ref_frames, 2)) < 1e-5
    assert rel_err(v, ref_denoiser(sd, x, sigma, code, 2)) < 1e-5
    # the public path (load_audio + chunking) gives the same z as the oracle for a short clip
    z_public = ae.encode(wav[0].numpy(), sr=24000)
    assert z_public.shape == (1, 32) and rel_err(z_public[0], ref_z(sd, ref_frames[:1], 2)[0]) < 1e-5


def test_diffusion_weights_pt_chunk_seconds_and_safetensors(files, tmp_path):
    # a plain {'state_dict'} file with no config.gin next to it: --chunk-seconds decides
    conv = convert.convert_autoencoder(
        files["weights"],
        files["encodec"],
        tmp_path / "a",
        chunk_seconds=4,
        frame_heads=4,
        cls_heads=2,
        denoiser_heads=2,
    )
    assert conv.model.chunk_seconds == 4 and "--chunk-seconds" in " ".join(conv.notes)
    # the same tensors as .safetensors, with new-torch weight-norm names, and the gin text given explicitly
    renamed = {}
    for key, value in files["diff_state"].items():
        key = key.replace(".weight_g", ".parametrizations.weight.original0").replace(
            ".weight_v", ".parametrizations.weight.original1"
        )
        renamed[key] = value.contiguous().clone()
    save_file(renamed, str(tmp_path / "diff.safetensors"))
    ec = {
        k.replace(".weight_g", ".parametrizations.weight.original0"): v.contiguous().clone()
        for k, v in files["ec_state"].items()
    }
    save_file(ec, str(tmp_path / "encodec.safetensors"))
    conv2 = convert.convert_autoencoder(
        tmp_path / "diff.safetensors",
        tmp_path / "encodec.safetensors",
        tmp_path / "b",
        config_gin=files["gin"],
        frame_heads=4,
        cls_heads=2,
        denoiser_heads=2,
    )
    assert conv2.model.chunk_seconds == 10
    a, b = conv.model.state_dict(), conv2.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="contradicts"):
        convert.convert_autoencoder(
            files["ckpt"], files["encodec"], None, chunk_seconds=4, frame_heads=4, cls_heads=2, denoiser_heads=2
        )


def test_chunk_seconds_resolution(tmp_path):
    ckpt = tmp_path / "weights.pt"
    assert convert.resolve_chunk_seconds(ckpt, None, None)[0] == 4.0  # default, with a warning elsewhere
    named = tmp_path / "DiffTransformerAE2L8L1CLS-10s" / "weights.pt"
    named.parent.mkdir()
    assert convert.resolve_chunk_seconds(named, None, None)[0] == 10.0
    assert convert.resolve_chunk_seconds(tmp_path / "diffusion-10s-2L8L-jamendofma-285k.ckpt", None, None)[0] == 10.0
    assert (
        convert.resolve_chunk_seconds(
            tmp_path / "diffusion_encodec_transformer_4L8Lclsx1_punc01_330ksteps.ckpt", None, None
        )[0]
        == 4.0
    )
    gin = tmp_path / "config.gin"
    gin.write_text("MAX_AUDIO_DURATION=4 # seconds\nMETA_MODEL = @ChunkDiffusionSampler\n")
    assert convert.resolve_chunk_seconds(ckpt, None, None)[:1] == (4.0,)
    gin.write_text("META_MODEL = 'ChunkSampler'\nMAX_AUDIO_DURATION = 1\n")
    with pytest.raises(CheckpointError, match="not a diffusion autoencoder"):
        convert.resolve_chunk_seconds(ckpt, None, None)
    with pytest.raises(ModelNotFoundError):
        convert.resolve_chunk_seconds(ckpt, tmp_path / "missing.gin", None)


def test_encodecmae_model_pt_frame_encoder_oracle(files, tmp_path, capsys):
    out = tmp_path / "mae"
    assert run_cli("--encodec", str(files["encodec"]), "--encodecmae", str(files["mae"]), "--out", str(out)) == 0
    printed = capsys.readouterr().out
    for dropped in ("decoder.*", "head.*", "target_encoder.*", "decoder_projector.*", "extra_head.*"):
        assert dropped in printed
    ae = Autoencoder.from_pretrained(out, precision="fp32")  # parity with the oracles: the exact path
    assert ae.config.cls_layers == 0 and ae.frame_encoder.visible_encoder.encoder_layers[
        0
    ].att_layer.wq.weight.shape == (36, 40)
    wav = torch.randn(1, 4800, generator=torch.Generator().manual_seed(6)) * 0.3
    with torch.inference_mode():
        frames = ae.frame_encoder(ae.codec.encode(wav))
        frames_public = ae.encode_frames(wav[0].numpy(), sr=24000)
    ref = ref_frame_embeddings(files["mae_state"], wav, 12)
    assert frames.shape == (1, 15, 40) and rel_err(frames, ref) < 1e-5
    assert rel_err(frames_public, ref[0]) < 1e-5
    with pytest.raises(CheckpointError, match="neither base nor large"):
        convert.convert_encodecmae(files["mae"], files["encodec"], None, size="base")


def test_base_and_large_key_layout_and_shapes():
    """Real sizes: every upstream key lands on a parameter of the right shape (zeros: layout only)."""
    with LayoutOnly():
        ec = encodec_state(n_q=32, codebook=1024)
        diff = diffusion_state(
            dim=768,
            frame_heads=12,
            frame_layers=10,
            cls_heads=8,
            cls_layers=2,
            den_heads=8,
            den_layers=8,
            ff=4096,
            encodec=ec,
        )
    enc_keys = [k for k in ec if k.startswith("encoder.")]
    assert len(enc_keys) == 62 and ec["encoder.model.12.conv.conv.weight_v"].shape == (512, 256, 16)
    assert ec["decoder.model.3.convtr.convtr.weight_g"].shape == (512, 1, 1)
    mapped, dropped, counts = key_mapping.map_diffusion(diff)
    codec, dropped_ec = key_mapping.map_encodec(ec)
    key_mapping._merge_encodec(mapped, codec, "ckpt", "th", False, print)
    assert counts == {"frame": 10, "cls": 2, "denoiser": 8}
    with torch.device("meta"):
        expected = Autoencoder(AutoencoderConfig.upstream()).state_dict()
    assert mapped.keys() == expected.keys()
    assert all(mapped[k].shape == expected[k].shape for k in expected)
    assert sum(v for k, v in dropped.items() if "target_encoder" in k) == 4 * 2
    assert (
        sum(dropped_ec.values()) == 4 * 32
    )  # quantizer.vq.layers.<0..31>._codebook.{inited,cluster_size,embed,embed_avg}
    del mapped, diff

    with LayoutOnly():
        mae = encodecmae_state(dim=1024, heads=12, layers=20, ff=4096, encodec=ec, pretraining=False)
    assert mae["visible_encoder.encoder_layers.0.att_layer.wq.weight"].shape == (1020, 1024)
    mapped, _, n_layers = key_mapping.map_encodecmae(mae)
    key_mapping._merge_encodec(mapped, codec, "model.pt", "th", False, print)
    with torch.device("meta"):
        large = Autoencoder(AutoencoderConfig.encodecmae("large")).state_dict()
    assert n_layers == 20 and mapped.keys() == large.keys()
    assert all(mapped[k].shape == large[k].shape for k in large)


def test_encoder_copy_mismatch(files, tmp_path):
    ec = {k: v.clone() for k, v in files["ec_state"].items()}
    ec["encoder.model.0.conv.conv.bias"] += 1e-3
    torch.save(ec, tmp_path / "other.th")
    with pytest.raises(CheckpointError, match=r"encoder.model.0.conv.conv.bias.*allow-encoder-mismatch"):
        convert.convert_autoencoder(
            files["weights"], tmp_path / "other.th", None, chunk_seconds=4, frame_heads=4, cls_heads=2, denoiser_heads=2
        )
    warnings = []
    conv = convert.convert_autoencoder(
        files["weights"],
        tmp_path / "other.th",
        None,
        chunk_seconds=4,
        frame_heads=4,
        cls_heads=2,
        denoiser_heads=2,
        allow_encoder_mismatch=True,
        warn=warnings.append,
    )
    assert warnings and "keeping the embedded copy" in warnings[0]
    used = conv.model.state_dict()["codec.encoder.model.0.conv.conv.bias"]
    assert torch.equal(used, files["diff_state"]["encoder.encodecmae_model.wav_encoder.model.model.0.conv.conv.bias"])
    assert torch.equal(
        conv.model.state_dict()["codec.decoder.model.0.conv.conv.bias"], ec["decoder.model.0.conv.conv.bias"]
    )


def _save_variant(tmp_path, name, edit, encodec):
    sd = dict(diffusion_state(**TINY, encodec=encodec))
    edit(sd)
    path = tmp_path / name
    torch.save({"state_dict": sd}, path)
    return path


def test_unshared_ffn_unknown_and_missing_keys(files, tmp_path):
    kw = dict(chunk_seconds=4, frame_heads=4, cls_heads=2, denoiser_heads=2)

    def unshare(sd):
        sd["denoiser.encoder_layers.1.ff_layer.2.bias"] = sd["denoiser.encoder_layers.1.ff_layer.2.bias"] + 0.5

    with pytest.raises(CheckpointError, match=r"feed-forward weights of denoiser\. differ between layer 0 and layer 1"):
        convert.convert_autoencoder(
            _save_variant(tmp_path, "a.pt", unshare, files["ec_state"]), files["encodec"], None, **kw
        )
    with pytest.raises(CheckpointError, match=r"unknown keys.*encoder\.mystery\.weight"):
        convert.convert_autoencoder(
            _save_variant(
                tmp_path, "b.pt", lambda sd: sd.update({"encoder.mystery.weight": torch.ones(2)}), files["ec_state"]
            ),
            files["encodec"],
            None,
            **kw,
        )

    def drop(sd):
        del sd["denoiser.final_norm.weight"], sd["encoder.encoder.final_norm.bias"]

    with pytest.raises(
        CheckpointError,
        match=r"missing keys \(2\).*cls_encoder\.encoder\.final_norm\.bias.*denoiser\.denoiser\.final_norm\.weight",
    ):
        convert.convert_autoencoder(
            _save_variant(tmp_path, "c.pt", drop, files["ec_state"]), files["encodec"], None, **kw
        )
    with pytest.raises(CheckpointError, match="attention projections are 32 wide"):
        convert.convert_autoencoder(files["weights"], files["encodec"], None, chunk_seconds=4, frame_heads=5)
    with pytest.raises(CheckpointError, match="use --encodecmae"):
        convert.convert_autoencoder(files["mae"], files["encodec"], None, chunk_seconds=4)
    with pytest.raises(CheckpointError, match="use --autoencoder"):
        convert.convert_encodecmae(files["weights"], files["encodec"], None)


class Hyper:  # a Lightning-style object inside a checkpoint
    lr = 1e-4


def test_unreadable_checkpoints(files, tmp_path):
    torch.save({"state_dict": files["diff_state"], "hyper_parameters": Hyper()}, tmp_path / "objects.ckpt")
    with pytest.raises(CheckpointError) as info:
        checkpoint_io.read_state_dict(tmp_path / "objects.ckpt")
    message = str(info.value)
    assert "arbitrary Python objects" in message and "weights_only=False" in message and "clean.pt" in message
    assert "Hyper" in message
    (tmp_path / "garbage.pt").write_bytes(bytes(range(256)) * 8)
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        checkpoint_io.read_state_dict(tmp_path / "garbage.pt")
    (tmp_path / "empty.th").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        checkpoint_io.read_state_dict(tmp_path / "empty.th")
    with pytest.raises(ModelNotFoundError):
        checkpoint_io.read_state_dict(tmp_path / "nope.pt")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="safetensors"):
        checkpoint_io.read_state_dict(tmp_path / "bad.safetensors")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a state dict"):
        checkpoint_io.read_state_dict(tmp_path / "list.pt")


def test_cli_validation_and_overwrite(files, tmp_path, capsys):
    with pytest.raises(ConfigError, match="exactly one"):
        run_cli("--encodec", str(files["encodec"]), "--out", str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="exactly one"):
        run_cli("--autoencoder", "a", "--encodecmae", "b", "--out", str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="needs --encodec"):
        run_cli("--autoencoder", str(files["ckpt"]), "--out", str(tmp_path / "x"))
    out = tmp_path / "mae"
    run_cli("--encodec", str(files["encodec"]), "--encodecmae", str(files["mae"]), "--out", str(out), "--no-fidelity")
    with pytest.raises(ConfigError, match="--overwrite"):
        run_cli("--encodec", str(files["encodec"]), "--encodecmae", str(files["mae"]), "--out", str(out))
    assert (
        run_cli(
            "--encodec",
            str(files["encodec"]),
            "--encodecmae",
            str(files["mae"]),
            "--out",
            str(out),
            "--overwrite",
            "--no-fidelity",
        )
        == 0
    )
    # through the real entry point: errors become exit code 1 with the message on stderr
    from pecmae_hub.cli import main

    assert main(["convert", "--encodecmae", str(files["mae"]), "--out", str(tmp_path / "y")]) == 1
    assert "needs --encodec" in capsys.readouterr().err


def test_head_dispatch(monkeypatch, tmp_path):
    import pecmae_hub.cli.convert as convert_head

    seen = {}
    monkeypatch.setattr(convert_head, "convert_head_from_args", lambda args: seen.update(vars(args)), raising=False)
    assert (
        run_cli(
            "--head",
            "protos.ckpt",
            "--labels",
            "a,b",
            "--norm-mean",
            "0.1",
            "--norm-std",
            "2",
            "--out",
            str(tmp_path / "h"),
        )
        == 0
    )
    assert (
        seen["head"] == "protos.ckpt"
        and seen["labels"] == "a,b"
        and seen["norm_mean"] == 0.1
        and seen["out"] == str(tmp_path / "h")
    )
    assert seen["distance"] == "l2" and seen["autoencoder_repo"] is None


def test_pe_scale_and_cls_token_values_survive(files, tmp_path):
    conv = convert.convert_autoencoder(
        files["weights"], files["encodec"], None, chunk_seconds=4, frame_heads=4, cls_heads=2, denoiser_heads=2
    )
    sd, state = files["diff_state"], conv.model.state_dict()
    assert math.isclose(state["cls_encoder.pos_encoder.scale"].item(), 1.3, rel_tol=1e-6)
    assert math.isclose(state["frame_encoder.positional_encoder.scale"].item(), 0.8, rel_tol=1e-6)
    assert torch.equal(state["cls_encoder.cls_tokens.weight"], sd["encoder.cls_tokens.weight"])
    assert torch.equal(state["denoiser.denoiser.ff_layer.0.weight"], sd["denoiser.encoder_layers.1.ff_layer.0.weight"])
    assert torch.equal(
        state["codec.decoder.model.3.convtr.convtr.weight_v"],
        files["ec_state"]["decoder.model.3.convtr.convtr.weight_v"],
    )
    assert not any(k.startswith("codec.quantizer") for k in state)
