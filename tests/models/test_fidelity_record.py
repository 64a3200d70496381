"""What ``precision="auto"`` makes of a fidelity record: the bounds, staleness, the machine, the log line."""

from __future__ import annotations

import logging

import pytest
import torch

from pecmae_hub.errors import CheckpointError, ConfigError
from pecmae_hub.models import fidelity_record as fr
from pecmae_hub.models import precision as prec

DIGESTS = {"config.json": "a" * 64, "model.safetensors": "b" * 64}


def _entry(**changes) -> dict:
    entry = {
        "codec_dtype": prec.codec_dtype_for("int8", "cpu"),
        "encode": {"z_cosine_min": 0.99991, "z_cosine_mean": 0.99998, "chunks": 400},
        "classification": {"agreement": 0.9975, "clips": 400},
        "ood": {"agreement": 1.0, "clips": 408},
        "sonify": {
            "items": 24,
            "latent_rel_l2_max": 0.022,
            "latent_rel_l2_mean": 0.014,
            "log_mel_db_max": 0.32,
            "log_mel_db_mean": 0.18,
            "own_class_reference": 24,
            "own_class": 24,
        },
    }
    for path, value in changes.items():
        section, key = path.split("__")
        entry[section][key] = value
    return entry


def _record(entry=None, precision="int8", digests=DIGESTS) -> dict:
    return {
        "format": fr.FORMAT,
        "version": fr.VERSION,
        "files": dict(digests),
        "precisions": {precision: entry or _entry()},
    }


def _auto(record, device="cpu", digests=DIGESTS, **kw):
    opts = dict(where=f"model test-{id(record)}", classes=True, ood=True, decoder=True) | kw
    return fr.resolve_precision("auto", device, record, digests, **opts)


@pytest.fixture
def int8_cpu(monkeypatch):
    """A CPU that runs int8 fast, whatever this machine is."""
    monkeypatch.setattr(fr, "fast_precision", lambda device: ("int8", "int8 GEMMs on AVX512 + VNNI, bf16 codec"))
    monkeypatch.setattr(fr, "fallback_precisions", lambda device: [])


def test_a_passing_record_gives_int8_on_a_cpu_that_has_it(int8_cpu):
    precision, reason = _auto(_record())
    assert precision == "int8"
    assert "fidelity record passed" in reason and "z cosine >= 0.99991" in reason and "AVX512" in reason


def test_a_record_that_refuses_int8_but_vouches_for_bf16_gives_bf16(int8_cpu, monkeypatch):
    """The embedded model's case: its int8 decoder misses the latent bound, its bf16 one meets every bound."""
    monkeypatch.setattr(fr, "fallback_precisions", lambda device: ["bf16"])
    monkeypatch.setattr(fr, "codec_dtype_for", lambda precision, device: "bfloat16")
    record = _record(_entry(sonify__latent_rel_l2_max=0.054))
    record["precisions"]["bf16"] = _entry()
    precision, reason = _auto(record)
    assert precision == "bf16" and "fidelity record passed" in reason
    assert "not int8 (the fidelity record's int8 measurement misses its bounds: sonify.latent_rel_l2_max 0.054" in (
        reason
    )
    del record["precisions"]["bf16"]  # no bf16 measurement: fp32, naming why each mode was refused
    precision, reason = _auto(record)
    assert precision == "fp32" and "int8 (" in reason and "bf16 (the fidelity record has no bf16 measurement" in reason
    bad = _record(_entry(sonify__latent_rel_l2_max=0.054))
    bad["precisions"]["bf16"] = _entry(classification__agreement=0.95)
    assert _auto(bad)[0] == "fp32"


def test_without_a_record_or_fast_hardware_auto_is_fp32_and_says_why_once(int8_cpu, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="pecmae_hub.precision")
    for _ in range(3):
        precision, reason = _auto(None, where="model without-record")
    assert precision == "fp32" and "no fidelity record (fidelity.json)" in reason
    assert sum("no fidelity record" in r.getMessage() for r in caplog.records) == 1  # logged once, not per load
    monkeypatch.setattr(fr, "fast_precision", lambda device: (None, "aarch64 CPU (DEFAULT): not measured faster"))
    precision, reason = _auto(_record())
    assert precision == "fp32" and reason == "aarch64 CPU (DEFAULT): not measured faster"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"encode__z_cosine_min": 0.998}, "encode.z_cosine_min 0.998 (bound >= 0.999)"),
        ({"classification__agreement": 0.985}, "classification.agreement 0.985 (bound >= 0.99)"),
        ({"ood__agreement": 0.98}, "ood.agreement 0.98"),
        ({"sonify__latent_rel_l2_max": 0.08}, "sonify.latent_rel_l2_max 0.08 (bound <= 0.05)"),
        ({"sonify__log_mel_db_mean": 0.7}, "sonify.log_mel_db_mean 0.7"),
        ({"sonify__log_mel_db_max": 1.5}, "sonify.log_mel_db_max 1.5"),
        ({"sonify__own_class": 22}, "22/24 prototypes re-classified as their own class, fp32 24/24"),
    ],
)
def test_a_record_that_misses_a_bound_gives_fp32_with_a_warning(int8_cpu, caplog, change, words):
    caplog.set_level(logging.INFO, logger="pecmae_hub.precision")
    record = _record(_entry(**change))
    record["precisions"]["int8"]["passed"] = True  # what the file claims does not count: the code's bounds do
    precision, reason = _auto(record)
    assert precision == "fp32" and "misses its bounds" in reason and words in reason
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


def test_one_fewer_own_class_in_24_passes_two_do_not(int8_cpu):
    assert _auto(_record(_entry(sonify__own_class=23)))[0] == "int8"
    assert _auto(_record(_entry(sonify__own_class=22)))[0] == "fp32"
    # 48 prototypes: two fewer is one in 24
    assert _auto(_record(_entry(sonify__items=48, sonify__own_class_reference=45, sonify__own_class=43)))[0] == "int8"


def test_what_the_model_lacks_is_not_required_but_what_it_has_is(int8_cpu):
    entry = _entry()
    del entry["ood"], entry["sonify"]
    assert _auto(_record(entry), ood=False, decoder=False)[0] == "int8"  # a frame encoder without a scorer
    precision, reason = _auto(_record(entry))
    assert precision == "fp32" and "no ood.agreement measured" in reason and "no sonify" in reason


def test_a_record_of_other_files_is_stale(int8_cpu):
    other = {**DIGESTS, "model.safetensors": "c" * 64}
    precision, reason = _auto(_record(), digests=other)
    assert precision == "fp32" and "stale" in reason and "another model.safetensors" in reason
    precision, reason = _auto(_record(), digests={**DIGESTS, "ood.json": "d" * 64})
    assert precision == "fp32" and "measured without ood.json" in reason


def test_a_newer_or_foreign_record_is_not_trusted(int8_cpu):
    assert "newer format" in _auto({**_record(), "version": fr.VERSION + 1})[1]
    assert "not a pecmae-fidelity record" in _auto({**_record(), "format": "something"})[1]


def test_cuda_uses_bf16_or_fp16_as_the_gpu_and_the_record_allow(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert prec.fast_precision("cuda")[0] == "bf16"
    bf16 = _entry()
    bf16["codec_dtype"] = "bfloat16"
    assert _auto(_record(bf16, "bf16"), device="cuda")[0] == "bf16"
    precision, reason = _auto(_record(), device="cuda")  # measured int8 only
    assert precision == "fp32" and "no bf16 measurement (measured: int8)" in reason
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    fp16 = {**bf16, "codec_dtype": "float16"}
    assert prec.fast_precision("cuda") == ("fp16", "float16 autocast (no bfloat16 on this GPU)")
    assert _auto(_record(fp16, "fp16"), device="cuda")[0] == "fp16"


def test_a_record_of_the_fp32_codec_does_not_vouch_for_a_bf16_one(int8_cpu, monkeypatch):
    monkeypatch.setattr(fr, "codec_dtype_for", lambda precision, device: "bfloat16")
    entry = _entry()
    entry["codec_dtype"] = "float32"
    precision, reason = _auto(_record(entry))
    assert precision == "fp32" and "float32 codec" in reason and "bfloat16" in reason


def test_cpu_capability_is_read_honestly(monkeypatch):
    prec.cpu_int8_support.cache_clear()
    try:
        monkeypatch.setattr(prec.platform, "machine", lambda: "aarch64")
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
        fast, what = prec.cpu_int8_support()
        assert not fast and "aarch64" in what and "not measured faster" in what
        prec.cpu_int8_support.cache_clear()
        monkeypatch.setattr(prec.platform, "machine", lambda: "x86_64")
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
        monkeypatch.setattr(prec, "_cpu_flags", lambda: frozenset({"avx2", "avx_vnni"}))
        assert prec.cpu_int8_support() == (True, "AVX2 + AVX-VNNI")
        assert prec.fast_precision("cpu")[0] == "int8"
        prec.cpu_int8_support.cache_clear()
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "NO AVX")
        assert prec.cpu_int8_support()[0] is False and prec.fast_precision("cpu")[0] is None
    finally:
        prec.cpu_int8_support.cache_clear()


def test_explicit_precisions_pass_through_and_typos_are_refused():
    assert fr.resolve_precision("fp32", "cpu", None, {}, where="m", classes=True, ood=False, decoder=True) == (
        "fp32",
        "asked for",
    )
    with pytest.raises(ConfigError, match="precision must be one of"):
        fr.resolve_precision("int4", "cpu", None, {}, where="m", classes=True, ood=False, decoder=True)


def test_malformed_records_are_checkpoint_errors(tmp_path):
    path = tmp_path / "fidelity.json"
    path.write_text('{"files": ["config.json"]}')
    with pytest.raises(CheckpointError, match="'files' must map file names"):
        fr.read_record(path)
    path.write_text('{"precisions": {"int8": {"encode": 3}}}')
    with pytest.raises(CheckpointError, match="precisions.int8.encode must be an object"):
        fr.read_record(path)
    path.write_text("not json")
    with pytest.raises(CheckpointError, match="not readable JSON"):
        fr.read_record(path)


def test_the_fallback_after_int8_is_bf16_only_where_the_cpu_computes_it(monkeypatch):
    monkeypatch.setattr(prec, "fast_precision", lambda device: ("int8", "int8 GEMMs"))
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: True)
    assert prec.fallback_precisions("cpu") == ["bf16"]
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: False)
    assert prec.fallback_precisions("cpu") == []
    monkeypatch.setattr(prec, "fast_precision", lambda device: ("bf16", "bfloat16 autocast"))
    assert prec.fallback_precisions("cuda") == ["fp16"]
    monkeypatch.setattr(prec, "fast_precision", lambda device: (None, "no fast mode"))
    assert prec.fallback_precisions("cpu") == []
