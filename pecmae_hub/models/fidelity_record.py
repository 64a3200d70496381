"""The fidelity record (``fidelity.json``) and what ``precision="auto"`` makes of it.

``auto`` (the default of ``PECMAE.from_pretrained``, ``Autoencoder.from_pretrained``, the command line and
the app) runs a model in its fast mode (:func:`~pecmae_hub.models.precision.fast_precision`: int8 GEMMs +
bf16 codec on a CPU that has them, bf16/fp16 on CUDA) only when the model carries a fidelity record that
says the fast mode is safe *for this model*:

- the record was measured on exactly these files (``files``: :func:`content_digest` of every file that decides
  the numbers, compared with the files loaded now; a record of another head, decoder or autoencoder is stale);
- its entry for the fast mode meets every bound of :data:`BOUNDS` against fp32 on a held-out set: z cosine,
  classification agreement, out-of-domain verdict agreement, and for sonification, with the same noise, the
  relative L2 of the decoder's output, the log-mel distance of the audio and re-classification of the
  decoded prototypes as their own class (docs/hub.md, "Precision"). The bounds are this code's, checked at
  every load: a record never passes because it says so;
- it covers the codec dtype the fast mode would use here (a record measured with an fp32 codec does not
  vouch for a bf16 one).

When the record does not vouch for that mode, the next mode of
:func:`~pecmae_hub.models.precision.fallback_precisions` whose entry passes is taken (bf16 on a CPU that computes
bfloat16 natively: the embedded gm-solos model's int8 decoder misses the latent bound, its bf16 one does not).
Otherwise ``auto`` is fp32, and the reason is logged once (``logging``, logger ``pecmae_hub.precision``).
The record is written by :mod:`pecmae_hub.fidelity` at save time (recipes, ``pecmae convert``, ``pecmae push``,
``pecmae fidelity``) and listed in ``checksums.json`` like every file, so a tampered record is refused on load.
"""

from __future__ import annotations

import logging
import math
from typing import Any, TypeGuard

import torch

from pecmae_hub.models.precision import (
    AUTO,
    PRECISION_CHOICES,
    codec_dtype_for,
    fallback_precisions,
    fast_precision,
)

FIDELITY_NAME = "fidelity.json"
FORMAT = "pecmae-fidelity"
VERSION = 1
REFERENCE = "fp32"

#: what a fast mode must meet against fp32 on the held-out set (a record is judged by these, not by itself)
BOUNDS: dict[str, float] = {
    "z_cosine_min": 0.999,
    "classification_agreement": 0.99,
    "ood_agreement": 0.99,
    "latent_rel_l2_max": 0.05,
    "log_mel_db_mean": 0.5,
    "log_mel_db_max": 1.0,
    "own_class_drop_per_24": 1.0,
}
#: each bound in words (docs/hub.md's table of the bounds is generated from these two dicts)
BOUND_MEANINGS: dict[str, str] = {
    "z_cosine_min": "cosine of every held-out chunk's z to fp32's, at least",
    "classification_agreement": "share of held-out clips whose label equals fp32's, at least",
    "ood_agreement": "share of in-domain / out-of-domain verdicts equal to fp32's (held-out clips and synthetic "
    "probes), at least",
    "latent_rel_l2_max": "decoder output from the same noise, worst prototype: ||x - x_fp32|| / ||x_fp32||, at most",
    "log_mel_db_mean": "mean |difference| of the sonified audio's 64-band log-mel spectrogram (dB), mean over "
    "prototypes, at most",
    "log_mel_db_max": "the same, worst prototype, at most",
    "own_class_drop_per_24": "decoded prototypes the fp32 model re-classifies as their own class: at most this many "
    "in 24 fewer than fp32's",
}

log = logging.getLogger("pecmae_hub.precision")
_noted: set[tuple[str, str]] = set()


def note_once(where: str, message: str, level: int = logging.INFO) -> None:
    """Log ``message`` about model ``where`` once per process (the reason ``auto`` chose what it chose)."""
    if (where, message) not in _noted:
        _noted.add((where, message))
        log.log(level, "%s: %s", where, message)


def entry_failures(entry: dict, *, classes: bool, ood: bool, decoder: bool) -> list[str]:
    """The bounds of :data:`BOUNDS` that a record's entry for one fast mode misses (empty: it passes).

    ``classes``: the model has a prototype head (classification and re-classification are required);
    ``ood``: it has an out-of-domain scorer; ``decoder``: its autoencoder can sonify.
    """
    failures: list[str] = []

    def need(section: str, key: str, bound: str, higher: bool = True) -> None:
        value = (entry.get(section) or {}).get(key)
        if not _is_number(value):
            failures.append(f"no {section}.{key} measured")
        elif (value < BOUNDS[bound]) if higher else (value > BOUNDS[bound]):
            sign = ">=" if higher else "<="
            failures.append(f"{section}.{key} {value:.6g} (bound {sign} {BOUNDS[bound]:g})")

    need("encode", "z_cosine_min", "z_cosine_min")
    if classes:
        need("classification", "agreement", "classification_agreement")
    if ood:
        need("ood", "agreement", "ood_agreement")
    if decoder:
        need("sonify", "latent_rel_l2_max", "latent_rel_l2_max", higher=False)
        need("sonify", "log_mel_db_mean", "log_mel_db_mean", higher=False)
        need("sonify", "log_mel_db_max", "log_mel_db_max", higher=False)
        if classes:
            son = entry.get("sonify") or {}
            counts = [v for v in (son.get(k) for k in ("own_class_reference", "own_class", "items")) if _is_number(v)]
            if len(counts) < 3:
                failures.append("no sonify.own_class re-classification measured")
            else:
                ref, own, n = counts
                if ref - own > BOUNDS["own_class_drop_per_24"] * n / 24 + 1e-9:
                    failures.append(
                        f"sonify.own_class {own:g}/{n:g} prototypes re-classified as their own class, fp32 "
                        f"{ref:g}/{n:g} (bound: at most {BOUNDS['own_class_drop_per_24']:g} in 24 fewer)"
                    )
    return failures


def identity_problem(record: dict, digests: dict[str, str]) -> str | None:
    """Why ``record`` is not about the files loaded now (``digests``: relative name -> SHA-256 of every file
    that decides the numbers), or None when it is."""
    measured = record.get("files")
    if not isinstance(measured, dict) or not measured:
        return "the record names no files it was measured on"
    for name in sorted(set(measured) | set(digests)):
        if name not in digests:
            return f"it was measured with {name}, which this model does not have"
        if name not in measured:
            return f"it was measured without {name} (the model changed since)"
        if measured[name] != digests[name]:
            return f"it was measured on another {name} (the model changed since it was measured)"
    return None


def resolve_precision(
    requested: str,
    device: torch.device | str,
    record: dict | None,
    digests: dict[str, str],
    *,
    where: str,
    classes: bool,
    ood: bool,
    decoder: bool,
    blocker: str | None = None,
) -> tuple[str, str]:
    """``(precision, reason)`` for a model about to load: ``requested`` itself unless it is ``"auto"``.

    ``auto`` gives the fast mode of ``device`` when ``record`` (the model's ``fidelity.json``, None when
    absent) is about these ``digests`` and its entry for that mode passes :func:`entry_failures`, else the first
    of :func:`~pecmae_hub.models.precision.fallback_precisions` whose entry passes, else ``"fp32"``.
    ``blocker`` is a reason known beforehand that rules out the fast mode (e.g. an autoencoder
    referenced by a branch, whose weights no record can name). The reason is logged once per model.
    """
    from pecmae_hub.errors import ConfigError

    if requested not in PRECISION_CHOICES:
        raise ConfigError(f"precision must be one of {PRECISION_CHOICES}, got {requested!r}")
    if requested != AUTO:
        return requested, "asked for"
    fast, what = fast_precision(device)
    level = logging.INFO
    if fast is None:
        reason = f"fp32: {what}"
    elif blocker:
        reason = f"fp32: {blocker}"
    elif record is None:
        reason = f"fp32: the model has no fidelity record ({FIDELITY_NAME}); `pecmae fidelity` measures one"
    else:
        refused: list[str] = []  # the faster modes the record does not vouch for, and why
        for candidate in [fast, *fallback_precisions(device)]:
            chosen, reason = _judge(record, candidate, device, digests, classes=classes, ood=ood, decoder=decoder)
            if chosen != REFERENCE:
                if refused:
                    reason = f"{reason}; not {', not '.join(refused)}"
                    what = f"{chosen} autocast" + (", bf16 codec" if chosen == "bf16" else "")
                note_once(where, f"precision auto -> {chosen}: {reason}; {what}")
                return chosen, f"{reason}; {what}"
            refused.append(f"{candidate} ({reason.removeprefix('fp32: ')})")
            if reason.startswith("fp32: the fidelity record is stale") or "newer format" in reason:
                break  # no mode of a record about other files (or of an unknown format) can pass
        reason = "fp32: " + "; ".join(refused)
        level = logging.WARNING  # a record that exists but does not vouch: something to look at
    note_once(where, f"precision auto -> {reason}", level)
    return REFERENCE, reason.removeprefix("fp32: ")


def _judge(
    record: dict, fast: str, device, digests: dict[str, str], *, classes: bool, ood: bool, decoder: bool
) -> tuple[str, str]:
    if record.get("format") != FORMAT or not isinstance(record.get("version"), int):
        return REFERENCE, f"fp32: {FIDELITY_NAME} is not a {FORMAT} record"
    if record["version"] > VERSION:
        return (
            REFERENCE,
            f"fp32: {FIDELITY_NAME} is of a newer format (version {record['version']}); upgrade pecmae-hub",
        )
    problem = identity_problem(record, digests)
    if problem:
        return REFERENCE, f"fp32: the fidelity record is stale: {problem}; `pecmae fidelity` measures it again"
    entry = (record.get("precisions") or {}).get(fast)
    if not isinstance(entry, dict):
        measured = ", ".join(sorted(record.get("precisions") or {})) or "none"
        return REFERENCE, f"fp32: the fidelity record has no {fast} measurement (measured: {measured})"
    codec = codec_dtype_for(fast, device)
    if entry.get("codec_dtype", "float32") != codec and codec != "float32":
        return REFERENCE, (
            f"fp32: the fidelity record measured {fast} with a {entry.get('codec_dtype', 'float32')} codec, but here "
            f"the codec would run in {codec}"
        )
    failures = entry_failures(entry, classes=classes, ood=ood, decoder=decoder)
    if failures:
        return REFERENCE, f"fp32: the fidelity record's {fast} measurement misses its bounds: {'; '.join(failures)}"
    return fast, f"the fidelity record passed ({summary(entry)})"


def summary(entry: dict) -> str:
    """One line of a record entry's main figures (for logs, the command line and the app)."""
    parts = []
    z = (entry.get("encode") or {}).get("z_cosine_min")
    if _is_number(z):
        parts.append(f"z cosine >= {z:.5f}")
    agree = (entry.get("classification") or {}).get("agreement")
    if _is_number(agree):
        parts.append(f"{100 * agree:.2f} % same labels")
    ood = (entry.get("ood") or {}).get("agreement")
    if _is_number(ood):
        parts.append(f"{100 * ood:.2f} % same in-domain verdicts")
    son = entry.get("sonify") or {}
    if _is_number(son.get("log_mel_db_mean")):
        parts.append(f"sonified log-mel {son['log_mel_db_mean']:.2f} dB from fp32")
    if all(_is_number(son.get(k)) for k in ("own_class", "own_class_reference", "items")):
        parts.append(f"own class {son['own_class']}/{son['items']} (fp32 {son['own_class_reference']})")
    return ", ".join(parts) or "no figures"


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_record(path) -> dict | None:
    """The parsed record at ``path`` (None for None), or :class:`~pecmae_hub.errors.CheckpointError`."""
    import json
    from pathlib import Path

    from pecmae_hub.errors import CheckpointError

    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise CheckpointError(f"{FIDELITY_NAME} at {path} is not readable JSON: {exc}") from None
    check_record_shape(data, str(path))
    return data


def check_record_shape(data: Any, source: str) -> None:
    """A fidelity record is an object whose ``files`` maps names to digests and whose ``precisions`` maps
    modes to objects; anything else is a :class:`~pecmae_hub.errors.CheckpointError` naming the field."""
    from pecmae_hub.errors import CheckpointError

    def fail(what: str) -> CheckpointError:
        return CheckpointError(f"{source} is malformed: {what}; the model's files are damaged")

    if not isinstance(data, dict):
        raise fail("the file must hold a JSON object")
    files = data.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise fail("'files' must map file names to SHA-256 digests")
    precisions = data.get("precisions", {})
    if not isinstance(precisions, dict) or not all(isinstance(v, dict) for v in precisions.values()):
        raise fail("'precisions' must map precision names to objects")
    for name, entry in precisions.items():
        for section, value in entry.items():
            if section in ("encode", "classification", "ood", "sonify") and not isinstance(value, (dict, type(None))):
                raise fail(f"precisions.{name}.{section} must be an object")


def autoencoder_precision(model, name_or_path, requested: str, **file_options) -> tuple[str, str]:
    """:func:`resolve_precision` for an autoencoder loaded on its own from ``name_or_path`` (a folder or Hub
    repo in our format): its own ``fidelity.json`` next to ``config.json`` decides ``auto``."""
    from pecmae_hub.storage.pretrained import CONFIG_NAME, WEIGHTS_NAME, resolve_file

    if requested != AUTO:
        return resolve_precision(
            requested, model.device, None, {}, where=str(name_or_path), classes=False, ood=False, decoder=False
        )
    record = read_record(resolve_file(name_or_path, FIDELITY_NAME, required=False, **file_options))
    digests = {}
    if record is not None:
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            digests[name] = content_digest(resolve_file(name_or_path, name, **file_options))
    return resolve_precision(
        requested,
        model.device,
        record,
        digests,
        where=f"autoencoder {name_or_path}",
        classes=False,
        ood=False,
        decoder=model.can_decode,
    )


def reconcile_record(folder) -> None:
    """After an autoencoder folder was (re)written: keep its ``fidelity.json`` listed in ``checksums.json`` when
    it is still about the folder's ``config.json`` + ``model.safetensors``, else delete it (a stale record
    would never pass, and an unlisted file is refused on load)."""
    from pathlib import Path

    from pecmae_hub.errors import PecmaeError
    from pecmae_hub.storage.integrity import update_checksums
    from pecmae_hub.storage.pretrained import CONFIG_NAME, WEIGHTS_NAME

    path = Path(folder) / FIDELITY_NAME
    if not path.is_file():
        return
    try:
        record = read_record(path)
    except PecmaeError:
        record = None
    digests = {name: content_digest(Path(folder) / name) for name in (CONFIG_NAME, WEIGHTS_NAME)}
    if record is not None and identity_problem(record, digests) is None:
        update_checksums(folder, [FIDELITY_NAME])
    else:
        path.unlink()


_content_digests: dict[tuple[str, int, int], str] = {}


def content_digest(path) -> str:
    """SHA-256 of what a file holds, as a record names it: the bytes, except that a ``.safetensors`` header is
    read with its keys sorted (safetensors writes its metadata in no fixed order, so two saves of the same
    tensors may differ in bytes but not in content). Cached by path, size and modification time."""
    import hashlib
    import json
    import os
    import struct

    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _content_digests:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            if str(path).endswith(".safetensors") and stat.st_size >= 8:
                (length,) = struct.unpack("<Q", fh.read(8))
                try:
                    header = json.loads(fh.read(min(length, stat.st_size - 8)))
                    digest.update(b"safetensors\0" + json.dumps(header, sort_keys=True).encode())
                except ValueError:  # not a safetensors file after all: its plain bytes
                    fh.seek(0)
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        _content_digests[key] = digest.hexdigest()
    return _content_digests[key]
