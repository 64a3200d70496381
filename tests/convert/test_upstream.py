"""The upstream autoencoder by name (``convert.upstream``) against upstream-layout repos on the local Hub.

The local Hub hosts ``lpepino/encodecmae2wav`` (a tiny ``weights.pt`` + ``config.gin``, built from the
spec's key tables) and ``facebook/encodec_24khz`` written by the ``transformers`` library's own
``EncodecModel.save_pretrained``, so the EnCodec key layout is the real one. The ``.th`` layout of the
same weights is derived here from the spec table (tests/upstream_layout.py), independently of the code.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import time

import pytest
import torch
from safetensors.torch import load_file, save_file
from upstream_layout import DECODER_TABLE, ENCODER_TABLE, diffusion_state

from pecmae_hub.cli import convert as convert_cli
from pecmae_hub.convert import upstream
from pecmae_hub.convert.autoencoder import convert_autoencoder
from pecmae_hub.convert.key_mapping import map_encodec
from pecmae_hub.errors import ConfigError, ModelNotFoundError
from pecmae_hub.models.autoencoder import Autoencoder
from pecmae_hub.storage import connectivity
from pecmae_hub.storage.pretrained import resolve_file

NAME = "encodecmae-diffusion-4s"
AE_REPO, EC_REPO = "lpepino/encodecmae2wav", "facebook/encodec_24khz"
WEIGHTS, GIN = "models/DiffTransformerAE2L8L1CLS-4s/weights.pt", "models/DiffTransformerAE2L8L1CLS-4s/config.gin"
# tiny dims that fit upstream's head counts (12 / 8 / 8), which materialize() uses
TINY = dict(dim=24, frame_heads=12, frame_layers=2, cls_heads=8, cls_layers=2, den_heads=8, den_layers=2, ff=32)


def transformers_to_th(hf_state: dict) -> dict:
    """The ``encodec_24khz-d7cc33bc.th`` names of a Transformers ``EncodecModel`` state dict, from the spec table."""
    out = {}
    for part, table in (("encoder", ENCODER_TABLE), ("decoder", DECODER_TABLE)):
        renames = {}
        for index, kind, _ in table:
            src, dst = f"{part}.layers.{index}.", f"{part}.model.{index}."
            if kind in ("conv", "convtr"):
                renames[src + "conv."] = dst + ("convtr.convtr." if kind == "convtr" else "conv.conv.")
            elif kind == "res":
                for sub in ("block.1", "block.3", "shortcut"):
                    renames[f"{src}{sub}.conv."] = f"{dst}{sub}.conv.conv."
            elif kind == "lstm":
                renames[src + "lstm."] = dst + "lstm."
        for key, value in hf_state.items():
            for old, new in renames.items():
                if key.startswith(old):
                    rest = key[len(old) :].replace("parametrizations.weight.original0", "weight_g")
                    out[new + rest.replace("parametrizations.weight.original1", "weight_v")] = value.clone()
    for key, value in hf_state.items():
        if key.startswith("quantizer.layers."):
            q, rest = key[len("quantizer.layers.") :].split(".", 1)
            out[f"quantizer.vq.layers.{q}._{rest}"] = value.clone()
    assert len(out) == len(hf_state)
    return out


@pytest.fixture(scope="module")
def upstream_files(tmp_path_factory):
    from transformers import EncodecConfig, EncodecModel

    root = tmp_path_factory.mktemp("upstream-hub")
    torch.manual_seed(0)
    hf = EncodecModel(EncodecConfig()).eval()
    hf.save_pretrained(root / "encodec_24khz")  # config.json + model.safetensors, the library's own layout
    hf_state = load_file(root / "encodec_24khz" / "model.safetensors")
    assert any(".parametrizations.weight.original0" in k for k in hf_state)
    old_style = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
    legacy = {}  # the weight_g / weight_v style of older transformers versions (and of the real Hub file)
    for key, value in hf_state.items():
        for new, old in old_style.items():
            key = key.replace(new, old)
        legacy[key] = value
    save_file(legacy, root / "legacy.safetensors")
    th = transformers_to_th(hf_state)
    torch.save(th, root / "encodec_24khz-d7cc33bc.th")
    buffer = io.BytesIO()
    torch.save({"state_dict": diffusion_state(**TINY, encodec=th)}, buffer)
    (root / "weights.pt").write_bytes(buffer.getvalue())
    (root / "config.gin").write_text("META_MODEL = 'ChunkDiffusionSampler'\nMAX_AUDIO_DURATION = 4\n")
    return dict(
        root=root,
        hf=hf,
        weights=buffer.getvalue(),
        th=root / "encodec_24khz-d7cc33bc.th",
        hf_file=root / "encodec_24khz" / "model.safetensors",
        legacy=root / "legacy.safetensors",
        encodec_repo={p.name: p.read_bytes() for p in (root / "encodec_24khz").iterdir()},
    )


def host(hub, files, seconds=(4,)) -> dict[str, str]:
    """Put the two upstream repos on the local Hub; returns ``{repo: commit}``."""
    ae = {}
    for s in seconds:
        folder = f"models/DiffTransformerAE2L8L1CLS-{s}s"
        ae[f"{folder}/weights.pt"] = files["weights"]
        ae[f"{folder}/config.gin"] = f"META_MODEL = 'ChunkDiffusionSampler'\nMAX_AUDIO_DURATION = {s}\n".encode()
    return {AE_REPO: hub.add_files(AE_REPO, ae), EC_REPO: hub.add_files(EC_REPO, files["encodec_repo"])}


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="pecmae")
    convert_cli.register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["convert", *argv])
    return args.func(args)


def test_transformers_layout_and_th_give_identical_tensors(upstream_files, one_thread):
    f = upstream_files
    from_th = convert_autoencoder(f["root"] / "weights.pt", f["th"], None, config_gin=f["root"] / "config.gin").model
    for other in (f["hf_file"], f["legacy"]):  # parametrizations.* and weight_g/weight_v styles
        model = convert_autoencoder(f["root"] / "weights.pt", other, None, config_gin=f["root"] / "config.gin").model
        a, b = from_th.state_dict(), model.state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    th_map, _ = map_encodec(torch.load(f["th"], weights_only=True))
    hf_map, dropped = map_encodec(load_file(f["hf_file"]))
    assert th_map.keys() == hf_map.keys() and all(torch.equal(th_map[k], hf_map[k]) for k in th_map)
    assert sum(dropped.values()) == 4 * len(f["hf"].quantizer.layers)
    # and the converted codec computes what transformers' EncodecModel computes
    wav = torch.randn(1, 3200, generator=torch.Generator().manual_seed(1)) * 0.1
    with torch.no_grad():
        ours = from_th.codec.encode(wav)
        theirs = f["hf"].encoder(wav[:, None, :]).transpose(1, 2)
        assert ours.shape == theirs.shape == (1, 10, 128)
        assert (ours - theirs).abs().max() <= 1e-4 * theirs.abs().max()
        audio, ref = from_th.codec.decode(theirs), f["hf"].decoder(theirs.transpose(1, 2))[:, 0]
        assert audio.shape == ref.shape == (1, 3200)
        assert (audio - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_materialize_converts_once_then_reads_the_cache(hub, upstream_files, _isolated_hf_cache, monkeypatch):
    commits = host(hub, upstream_files)
    before = upstream.CONVERSIONS[NAME]
    folder = upstream.materialize(NAME)
    assert upstream.CONVERSIONS[NAME] == before + 1
    assert folder == _isolated_hf_cache / "pecmae-hub" / "converted" / NAME / f"{commits[AE_REPO]}-{commits[EC_REPO]}"
    assert {p.name for p in folder.iterdir()} == {
        "config.json",
        "model.safetensors",
        "checksums.json",
        "README.md",
        "upstream.json",
    }
    ae = Autoencoder.from_pretrained(folder)
    assert ae.chunk_seconds == 4 and ae.embedding_dim == 24 and ae.can_decode
    assert upstream.sources_of(folder) == commits == upstream.sources(NAME)
    source = json.loads((folder / "config.json").read_text())["source"]
    assert source == f"{NAME}: {AE_REPO}@{commits[AE_REPO]} + {EC_REPO}@{commits[EC_REPO]}"

    def no_reading(*args, **kwargs):
        raise AssertionError("an upstream file was read again")

    monkeypatch.setattr("pecmae_hub.convert.autoencoder.read_state_dict", no_reading)
    hub.requests.clear()
    assert upstream.materialize(NAME) == folder
    assert upstream.CONVERSIONS[NAME] == before + 1  # nothing converted
    assert sorted(hub.requests) == [
        ("HEAD", f"/{EC_REPO}/resolve/main/model.safetensors"),
        ("HEAD", f"/{AE_REPO}/resolve/main/{WEIGHTS}"),
    ]  # which commit is main: no GET
    # a pinned revision: no request at all
    hub.requests.clear()
    assert upstream.materialize(NAME, revision=commits) == folder and hub.requests == []
    with pytest.raises(ConfigError, match="does not use"):
        upstream.materialize(NAME, revision={"someone/else": "main"})


def test_offline_with_the_cache_loads(hub, upstream_files, monkeypatch, _isolated_hf_cache, caplog):
    from huggingface_hub import constants

    commits = host(hub, upstream_files)
    folder = upstream.materialize(NAME)
    hub.requests.clear()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert upstream.materialize(NAME) == folder  # the cache's refs/main say which commits
    assert upstream.materialize(NAME, local_files_only=True) == folder
    assert upstream.sources(NAME) == commits
    Autoencoder.from_pretrained(folder)
    before = upstream.CONVERSIONS[NAME]
    shutil.rmtree(folder)  # converted folder gone, downloads still cached: converts again, offline
    assert upstream.materialize(NAME) == folder and upstream.CONVERSIONS[NAME] == before + 1
    assert "newest conversion" not in caplog.text
    for repo in commits:  # no refs: the newest converted folder, with a warning
        shutil.rmtree(_isolated_hf_cache / ("models--" + repo.replace("/", "--")) / "refs")
    assert upstream.materialize(NAME) == folder and "newest conversion" in caplog.text
    assert upstream.sources(NAME) == commits
    assert upstream.CONVERSIONS[NAME] == before + 1 and hub.requests == []
    with pytest.raises(ModelNotFoundError, match="not converted"):  # a pinned revision is never swapped for another
        upstream.materialize(NAME, revision="v-other")


def _assert_teaching(message: str) -> None:
    for text in (AE_REPO, EC_REPO, WEIGHTS, GIN, "model.safetensors", "pecmae convert"):
        assert text in message, text


def test_offline_without_cache_fails_fast_naming_the_files(hub, upstream_files, monkeypatch):
    from huggingface_hub import constants

    host(hub, upstream_files)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(ModelNotFoundError) as info:
        upstream.materialize(NAME)
    assert time.monotonic() - start < 5
    _assert_teaching(str(info.value))
    assert "HF_HUB_OFFLINE" in str(info.value) and hub.requests == []


def test_unreachable_hub_fails_fast_and_cached_files_still_load(hub, upstream_files):
    commits = host(hub, upstream_files)
    small = resolve_file(AE_REPO, GIN)  # cached now
    hub.stop()
    connectivity.clear_probe_cache()
    start = time.monotonic()
    with pytest.raises(ModelNotFoundError) as info:
        upstream.materialize(NAME)
    _assert_teaching(str(info.value))
    assert "unreachable" in str(info.value)
    with pytest.raises(ModelNotFoundError, match="unreachable"):
        resolve_file(EC_REPO, "model.safetensors")
    assert resolve_file(AE_REPO, GIN) == small  # from the cache, no network wait
    assert time.monotonic() - start < 5
    hub.start()
    connectivity.clear_probe_cache()
    folder = upstream.materialize(NAME)
    hub.stop()
    connectivity.clear_probe_cache()
    assert upstream.materialize(NAME) == folder  # converted and cached: no Hub needed
    assert upstream.sources(NAME) == commits


def test_probe_runs_once_per_endpoint(hub, monkeypatch):
    calls = []
    real = connectivity._probe
    monkeypatch.setattr(connectivity, "_probe", lambda *a: calls.append(a) or real(*a))
    hub.add_files("org/small", {"a.txt": b"a", "b.txt": b"b"})
    resolve_file("org/small", "a.txt")
    resolve_file("org/small", "b.txt")
    assert connectivity.hub_reachable() and len(calls) == 1
    assert not connectivity.hub_reachable("http://127.0.0.1:1") and len(calls) == 2  # another endpoint


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ModelNotFoundError, match=r"encodecmae-diffusion-10s, encodecmae-diffusion-4s"):
        upstream.materialize("encodecmae-diffusion-5s")
    assert upstream.known_names() == ["encodecmae-diffusion-10s", "encodecmae-diffusion-4s"]


def test_cli_from_hub_writes_a_loadable_folder_with_a_card(hub, upstream_files, tmp_path, capsys):
    from huggingface_hub import ModelCard

    commits = host(hub, upstream_files, seconds=(4, 10))
    out = tmp_path / "ae-10s"
    assert run_cli("--from-hub", "encodecmae-diffusion-10s", "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert "encodecmae-diffusion-10s: converted" in printed and commits[AE_REPO] in printed
    ae = Autoencoder.from_pretrained(out)
    assert ae.chunk_seconds == 10
    card = (out / "README.md").read_text()
    for text in (*commits.values(), *commits, "CC-BY-NC 4.0", "models/DiffTransformerAE2L8L1CLS-10s/weights.pt"):
        assert text in card, text
    assert ModelCard(card).data.license == "other"
    with pytest.raises(ConfigError, match="--overwrite"):
        run_cli("--from-hub", "encodecmae-diffusion-10s", "--out", str(out))
    record = json.loads((out / "fidelity.json").read_text())  # measured at conversion, on synthetic probes
    assert record["kind"] == "autoencoder" and record["held_out"]["source"].startswith("synthetic probes")
    args = ("--from-hub", "encodecmae-diffusion-10s", "--out", str(out), "--overwrite", "--offline", "--no-fidelity")
    assert run_cli(*args) == 0
    assert "taken from the conversion cache" in capsys.readouterr().out
    # the same files again: the record still names them, so it is kept (and listed in checksums.json)
    assert json.loads((out / "fidelity.json").read_text()) == record
    assert Autoencoder.from_pretrained(out).precision_reason != ""
    with pytest.raises(ConfigError, match="does not apply to --from-hub"):
        run_cli("--from-hub", NAME, "--encodec", "x.th", "--out", str(tmp_path / "x"))


def test_pinned_commits_and_force_download(hub, upstream_files):
    old = host(hub, upstream_files)
    new_ae = hub.add_files(AE_REPO, {"README.md": b"a later commit"})
    before = upstream.CONVERSIONS[NAME]
    pinned = upstream.materialize(NAME, revision={AE_REPO: old[AE_REPO]})
    latest = upstream.materialize(NAME)
    assert pinned.name == f"{old[AE_REPO]}-{old[EC_REPO]}" and latest.name == f"{new_ae}-{old[EC_REPO]}"
    assert upstream.sources_of(pinned) == old and upstream.sources(NAME) == {AE_REPO: new_ae, EC_REPO: old[EC_REPO]}
    assert upstream.CONVERSIONS[NAME] == before + 2
    hub.requests.clear()
    assert upstream.materialize(NAME, force_download=True) == latest
    assert upstream.CONVERSIONS[NAME] == before + 3 and hub.count("GET", "/resolve/") == 3


def test_published_head_gets_its_autoencoder_from_the_authors_repos(hub, upstream_files, tmp_path, _isolated_hf_cache):
    """A head trained on the upstream autoencoder references it by name + source commits: publishing needs no
    autoencoder repo of ours, and a user loading the head gets the autoencoder converted from its authors' files."""
    from pecmae_hub.configuration import AutoencoderRef
    from pecmae_hub.models.head import PrototypeHead
    from pecmae_hub.pipeline import PECMAE

    commits = host(hub, upstream_files)
    ae = Autoencoder.from_pretrained(NAME)
    assert ae.upstream_sources == commits
    head = PrototypeHead(["a", "b"], embedding_dim=ae.embedding_dim, protos_per_class=1)
    model = PECMAE(ae, head, name="tiny", autoencoder_ref=AutoencoderRef(name=NAME, sources=ae.upstream_sources))
    model.save_pretrained(tmp_path / "model")
    saved = json.loads((tmp_path / "model" / "config.json").read_text())["autoencoder"]
    assert (saved["name"], saved["sources"], saved["path"], saved["repo_id"]) == (NAME, commits, None, None)
    assert not (tmp_path / "model" / "autoencoder").exists()  # nothing of the autoencoder is redistributed
    hub.add_folder("someone/tiny-head", tmp_path / "model")
    loaded = PECMAE.from_pretrained("someone/tiny-head", device="cpu")
    assert loaded.autoencoder.fingerprint() == ae.fingerprint()
    assert loaded.autoencoder_ref.sources == commits and NAME in loaded.autoencoder_source
    wav = torch.randn(24000 * 4, generator=torch.Generator().manual_seed(0)).numpy() * 0.1
    assert loaded.classify(wav, sr=24000).label in ("a", "b")
