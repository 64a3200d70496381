"""The one config mechanism: versioned configs, strict loading, Hub options, the old format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import tiny_autoencoder

from pecmae_hub.configuration import AutoencoderRef
from pecmae_hub.errors import ConfigError, ModelNotFoundError
from pecmae_hub.models.autoencoder import Autoencoder, AutoencoderConfig
from pecmae_hub.models.head import PrototypeHead, PrototypeHeadConfig

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints" / "gm-solos"


def _head(seed: int = 0) -> PrototypeHead:
    torch.manual_seed(seed)
    ref = AutoencoderRef(repo_id="org/ae", revision="v1", fingerprint="0123456789abcdef", embedding_dim=32)
    return PrototypeHead(
        ["violin", "piano"],
        embedding_dim=32,
        protos_per_class=2,
        norm_mean=0.1,
        norm_std=0.7,
        autoencoder=ref,
        temperature=0.1,
    ).eval()


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, z: torch.Tensor) -> None:
    if isinstance(a, PrototypeHead):
        assert torch.equal(a(z), b(z))
    else:
        wav = torch.randn(2, a.chunk_samples, generator=torch.Generator().manual_seed(0)) * 0.1
        assert torch.equal(a.encode_chunks(wav), b.encode_chunks(wav))


@pytest.mark.parametrize("make", [tiny_autoencoder, _head], ids=["autoencoder", "head"])
def test_folder_round_trip_keeps_config_and_outputs(make, tmp_path):
    model = make()
    model.save_pretrained(tmp_path / "m")
    data = json.loads((tmp_path / "m" / "config.json").read_text())
    assert data["model_type"] == model.config.MODEL_TYPE and data["version"] == model.config.VERSION
    loaded = type(model).from_pretrained(tmp_path / "m")
    assert loaded.config == model.config and not loaded.training
    _same_outputs(model, loaded, torch.randn(3, 32))


@pytest.mark.parametrize("make", [tiny_autoencoder, _head], ids=["autoencoder", "head"])
def test_hub_round_trip_with_token_and_force_download(make, hub, tmp_path, _isolated_hf_cache):
    model = make()
    model.save_pretrained(tmp_path / "m")
    hub.add_folder("org/private-model", tmp_path / "m", private=True)
    cls = type(model)
    with pytest.raises(ModelNotFoundError, match="not found"):  # private: invisible without a token
        cls.from_pretrained("org/private-model")
    loaded = cls.from_pretrained("org/private-model", token="hf_test_token")
    assert loaded.config == model.config
    _same_outputs(model, loaded, torch.randn(3, 32))
    weights = hub.count("GET", "model.safetensors")
    again = cls.from_pretrained("org/private-model", token="hf_test_token")  # cached: no new download
    assert hub.count("GET", "model.safetensors") == weights and again.config == model.config
    cls.from_pretrained("org/private-model", token="hf_test_token", force_download=True)
    assert hub.count("GET", "model.safetensors") == weights + 1
    other_cache = tmp_path / "elsewhere"
    cls.from_pretrained("org/private-model", token="hf_test_token", cache_dir=other_cache)
    assert any(other_cache.rglob("model.safetensors"))


def test_pipeline_passes_token_and_force_download_to_head_and_autoencoder(hub, tmp_path):
    from conftest import tiny_pecmae

    from pecmae_hub.pipeline import PECMAE

    tiny_pecmae(seed=1).save_pretrained(tmp_path / "m")
    hub.add_folder("org/private-pecmae", tmp_path / "m", private=True)
    with pytest.raises(ModelNotFoundError):
        PECMAE.from_pretrained("org/private-pecmae", device="cpu")
    model = PECMAE.from_pretrained("org/private-pecmae", device="cpu", token="hf_test_token")
    before = hub.count("GET", "model.safetensors")
    PECMAE.from_pretrained("org/private-pecmae", device="cpu", token="hf_test_token", force_download=True)
    assert hub.count("GET", "model.safetensors") == before + 2  # the head's and the autoencoder's weights
    assert model.labels == ["violin", "piano", "flute"]


def test_newer_version_other_type_unknown_and_missing_fields_are_refused():
    data = tiny_autoencoder().config.to_dict()
    with pytest.raises(ConfigError, match=r"format 99, newer than this pecmae-hub understands .*upgrade"):
        AutoencoderConfig.from_dict({**data, "version": 99})
    with pytest.raises(ConfigError, match="describes a 'pecmae-prototype-head'"):
        AutoencoderConfig.from_dict({**data, "model_type": "pecmae-prototype-head"})
    with pytest.raises(ConfigError, match=r"unknown pecmae-autoencoder config fields \['extra'\]"):
        AutoencoderConfig.from_dict({**data, "extra": 1})
    missing = {k: v for k, v in data.items() if k not in ("model_dim", "ff_dim")}
    with pytest.raises(ConfigError, match=r"lacks the required fields \['ff_dim', 'model_dim'\]"):
        AutoencoderConfig.from_dict(missing)
    head = _head().config.to_dict()
    with pytest.raises(ConfigError, match=r"lacks the required fields \['labels'\]"):
        PrototypeHeadConfig.from_dict({k: v for k, v in head.items() if k != "labels"})
    with pytest.raises(ConfigError, match="unknown autoencoder reference fields"):
        PrototypeHeadConfig.from_dict({**head, "autoencoder": {"repo": "org/x"}})


def test_autoencoder_ref_stays_inside_the_model_folder():
    with pytest.raises(ConfigError, match="inside the model folder"):
        AutoencoderRef(path="../elsewhere")
    with pytest.raises(ConfigError, match="inside the model folder"):
        AutoencoderRef(path="/etc")
    with pytest.raises(ConfigError, match="one of path, repo_id or name"):
        AutoencoderRef(path="autoencoder", repo_id="org/ae")
    assert AutoencoderRef.from_dict(AutoencoderRef(path="ae").to_dict()) == AutoencoderRef(path="ae")


def test_head_takes_a_config_or_its_fields_never_both():
    config = _head().config
    assert PrototypeHead(config).config is config
    assert PrototypeHead(config=config).config is config
    with pytest.raises(ConfigError, match="not both"):
        PrototypeHead(config, protos_per_class=3)


def test_format_1_autoencoder_still_loads_with_a_deprecation_note(tmp_path):
    model = tiny_autoencoder()
    model.save_pretrained(tmp_path / "old")
    path = tmp_path / "old" / "config.json"
    data = json.loads(path.read_text())
    del data["model_type"]
    data["version"] = 1
    path.write_text(json.dumps(data))
    (tmp_path / "old" / "checksums.json").unlink()  # folders of format 1 had none
    with pytest.warns(FutureWarning, match=r"format 1 without model_type.*Re-save it with save_pretrained"):
        old = Autoencoder.from_pretrained(tmp_path / "old", verify=False)
    assert old.config == model.config and old.fingerprint() == model.fingerprint()


def test_shipped_model_is_in_the_current_format_and_loads_without_warnings(tmp_path, recwarn):
    for folder, cls in ((SHIPPED / "autoencoder", Autoencoder), (SHIPPED, PrototypeHead)):
        data = json.loads((folder / "config.json").read_text())
        assert (data["model_type"], data["version"]) == (cls.config_class.MODEL_TYPE, cls.config_class.VERSION)
        cls.from_pretrained(folder)
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning)]
    # the head's fingerprint of its autoencoder survived the format change
    head = PrototypeHead.from_pretrained(SHIPPED)
    assert Autoencoder.from_pretrained(SHIPPED / "autoencoder").matches_fingerprint(head.config.autoencoder.fingerprint)
    shutil.rmtree(tmp_path, ignore_errors=True)
