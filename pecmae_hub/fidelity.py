"""Measuring a model's fidelity record (``fidelity.json``): its fast modes against fp32 on held-out audio.

``precision="auto"`` runs a model fast only when its record vouches for it
(:mod:`pecmae_hub.models.fidelity_record`). This module measures that record and writes it next to the
model's files, listed in ``checksums.json``:

    >>> record = write_fidelity(model, "my-model", held_out="data/test-clips/")   # a PECMAE model folder
    >>> record["precisions"]["int8"]["classification"]["agreement"]
    0.9975

For every fast mode measurable here (:func:`measurable_precisions`: int8, and bf16 where the CPU computes it
natively; bf16 and fp16 on CUDA), each against fp32 on the same inputs:

- ``encode``: cosine of each chunk's z to fp32's (min, mean) over the held-out clips and the OOD probes;
- ``classification``: share of held-out clips whose label (mean logits over the audible chunks, as
  ``classify``) equals fp32's, and the same per chunk;
- ``ood``: share of in-domain / out-of-domain verdicts equal to fp32's, over the held-out clips and the
  out-of-domain probes (:func:`probe_signals`, plus any ``ood`` audio given);
- ``sonify``: every prototype (an autoencoder alone: the z of some held-out chunks) decoded with the model's
  default on-the-fly settings from the same noise: relative L2 of the decoder output, mean |difference| of
  the 64-band log-mel spectrogram of the audio (dB), and how many decoded prototypes the fp32 model
  re-classifies as their own class, for fp32's audio and for the fast mode's;
- ``speed``: fp32 seconds over the fast mode's, for encoding and for decoding (informative only).

Held-out audio is the caller's (a recipe's test split); without it the synthetic probes stand in, and the
record says so (``held_out.source``). Each clip is cut to ``max_seconds``; at most ``max_clips`` clips,
spread evenly over the list, are used.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from pecmae_hub.audio import SAMPLE_RATE, chunk_bounds, collect_audio_files, load_audio, silent_chunks
from pecmae_hub.configuration import AutoencoderRef
from pecmae_hub.errors import ConfigError, DatasetError, PecmaeError
from pecmae_hub.models.fidelity_record import (
    BOUNDS,
    FIDELITY_NAME,
    FORMAT,
    REFERENCE,
    VERSION,
    content_digest,
    entry_failures,
    identity_problem,
)
from pecmae_hub.models.precision import (
    codec_dtype_for,
    cpu_has_native_bf16,
    cpu_int8_support,
    fast_precision,
    precision_scope,
)
from pecmae_hub.storage.atomic import atomic_write_text, refuse_links
from pecmae_hub.storage.integrity import CHECKSUMS_NAME, update_checksums
from pecmae_hub.storage.pretrained import CONFIG_NAME, WEIGHTS_NAME

if TYPE_CHECKING:
    from pecmae_hub.hub.files import ModelFiles
    from pecmae_hub.models.autoencoder import Autoencoder
    from pecmae_hub.pipeline import PECMAE

#: files of a model folder whose bytes decide the numbers a fidelity record vouches for (when present)
HEAD_FILES = (CONFIG_NAME, WEIGHTS_NAME, "ood.json", "ood.safetensors")
PROBES_SOURCE = "synthetic probes (noise, tones, sweeps, clicks)"


# ---- which files a record is about ------------------------------------------------------------------
def decisive_files(files: ModelFiles, spec: AutoencoderRef | None = None) -> dict[str, str]:
    """The content digest (:func:`~pecmae_hub.models.fidelity_record.content_digest`) of every file of ``files``
    that decides the numbers: the head (or the autoencoder folder's own ``config.json`` + ``model.safetensors``
    when ``spec`` is None), the OOD scorer, and the autoencoder shipped inside the model (``spec.path``). Files
    the model does not have are left out."""
    names = list(HEAD_FILES) if spec is not None else [CONFIG_NAME, WEIGHTS_NAME]
    if spec is not None and spec.path:
        names += [f"{spec.path}/{CONFIG_NAME}", f"{spec.path}/{WEIGHTS_NAME}"]
    out = {}
    for name in names:
        path = files.get(name, required=name in (CONFIG_NAME, WEIGHTS_NAME))
        if path is not None:
            out[name] = content_digest(path)
    return out


def reference_blocker(spec: AutoencoderRef) -> str | None:
    """Why no record can vouch for a model whose autoencoder ``spec`` names (a Hub repo at a branch or tag,
    whose weights may change without the model's files changing), or None."""
    if spec.repo_id and not (spec.revision and len(spec.revision) == 40 and spec.revision.isalnum()):
        return (
            f"its autoencoder is referenced as {spec.repo_id} at revision {spec.revision or 'main'}, not at a commit, "
            "so no fidelity record can name its weights"
        )
    return None


# ---- inputs -------------------------------------------------------------------------------------------
def probe_signals(seconds: float, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Deterministic synthetic signals of ``seconds`` at 24 kHz, unlike any music training set: white and
    brown noise, a sine sweep, a click train, a square wave, amplitude-modulated noise, a dense inharmonic
    chord and a noise-burst pattern. The out-of-domain probes of every record (and its held-out stand-in
    when no audio is given)."""
    n = max(int(round(seconds * SAMPLE_RATE)), SAMPLE_RATE // 2)
    t = np.arange(n) / SAMPLE_RATE
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(n)
    brown = np.cumsum(rng.standard_normal(n))
    brown = (brown - np.convolve(brown, np.ones(2401) / 2401, mode="same")) / 60
    sweep = np.sin(2 * np.pi * (50 * t + (8000 - 50) / (2 * seconds) * t**2))
    clicks = np.zeros(n)
    clicks[:: SAMPLE_RATE // 7] = 1.0
    square = np.sign(np.sin(2 * np.pi * 97 * t))
    am_noise = white * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    chord = sum(np.sin(2 * np.pi * f * t + i) for i, f in enumerate((211.0, 347.3, 523.9, 811.1, 1297.7)))
    bursts = white * ((t * 4) % 1 < 0.15)
    signals = {
        "white-noise": white,
        "brown-noise": brown,
        "sine-sweep": sweep,
        "click-train": clicks,
        "square-wave": square,
        "am-noise": am_noise,
        "inharmonic-chord": chord,
        "noise-bursts": bursts,
    }
    return [(name, (0.3 * x / max(np.max(np.abs(x)), 1e-9)).astype(np.float32)) for name, x in signals.items()]


def _clips(audio, max_clips: int, max_seconds: float) -> tuple[list[tuple[str, np.ndarray]], int, str]:
    """``(clips, unreadable, description)`` of held-out ``audio``: paths, folders, a list file, or
    ``(name, samples at 24 kHz)`` pairs; at most ``max_clips`` spread evenly, each cut to ``max_seconds``."""
    limit = int(max_seconds * SAMPLE_RATE)
    if isinstance(audio, (str, os.PathLike)) or (
        isinstance(audio, Sequence) and audio and isinstance(audio[0], (str, os.PathLike))
    ):
        given = [audio] if isinstance(audio, (str, os.PathLike)) else list(audio)
        missing = [os.fspath(p) for p in given if not Path(p).exists()]
        if missing:  # a typo must not quietly shrink the set a record is measured on
            raise DatasetError(f"held-out audio not found: {', '.join(missing)}")
        paths = [f.path for f in collect_audio_files(audio)]
        description = os.fspath(audio) if isinstance(audio, (str, os.PathLike)) else f"{len(paths)} files"
        items: list = paths
    else:
        items = list(audio or [])
        description = f"{len(items)} clips given"
    if len(items) > max_clips:
        items = [items[int(i)] for i in np.linspace(0, len(items) - 1, max_clips).round()]
    clips, bad = [], 0
    for item in items:
        try:
            if isinstance(item, tuple):
                clips.append((str(item[0]), load_audio(item[1], SAMPLE_RATE, max_seconds=None)[:limit]))
            else:
                clips.append((os.fspath(item), load_audio(item, max_seconds=None)[:limit]))
        except PecmaeError:
            bad += 1  # an unreadable file is counted, not fatal
    return clips, bad, description


def measurable_precisions(device: torch.device | str) -> list[str]:
    """The fast modes that can be measured on ``device``: ``auto``'s own first, then bf16 where it runs
    natively (so that a record made on a CPU also vouches for bf16 on CUDA)."""
    device = torch.device(device)
    if device.type == "cuda":
        first = fast_precision(device)[0]
        return list(dict.fromkeys([p for p in (first, "bf16", "fp16") if p]))
    out = ["int8"] if cpu_int8_support()[0] else []
    return out + (["bf16"] if device.type == "cpu" and cpu_has_native_bf16() else [])


class LogMel:
    """64-band log-mel spectrogram in dB (our mel front end's analysis, independent of any model)."""

    def __init__(self):
        from pecmae_hub.models.melspec import MelCodec

        self.codec = MelCodec(n_mels=64)

    def __call__(self, wav: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            feats = self.codec.encode(torch.as_tensor(wav, dtype=torch.float32)[None])[0]
        return feats * self.codec.scale * (10 / math.log(10))


# ---- one pass at one precision ---------------------------------------------------------------------------
def _run(ae: Autoencoder, precision: str, clips, items, sampler, progress) -> dict[str, Any]:
    """z of every clip and the decoder output + audio of every item, at ``precision``, timed."""
    steps, scheduler, seed, guidance, temperature = sampler
    out: dict[str, Any] = {"z": [], "latents": [], "audio": []}
    with precision_scope(ae, precision):
        t0 = time.perf_counter()
        for _, wav in clips:
            out["z"].append(ae.encode(wav, sr=SAMPLE_RATE))
            progress()
        out["encode_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for z in items:
            noise = torch.randn(
                (1, ae.chunk_frames, ae.config.signal_dim), generator=torch.Generator().manual_seed(seed)
            )
            latents = ae.decode_latents(
                z[None], steps, guidance, noise=noise, scheduler=scheduler, temperature=temperature
            )
            out["latents"].append(latents.float().cpu())
            out["audio"].append(np.asarray(ae.synthesize(latents)[0], dtype=np.float32))
            progress()
        out["decode_s"] = time.perf_counter() - t0
    return out


def _decisions(model: PECMAE, clips, zs) -> tuple[list[int], list[list[int]], list[bool | None]]:
    """Per clip: the label index ``classify`` would give (mean logits over audible chunks), the chunk labels,
    and the in-domain verdict (None without a scorer)."""
    labels, chunk_labels, verdicts = [], [], []
    chunk = model.autoencoder.chunk_samples
    for (_, wav), z in zip(clips, zs):
        silent = silent_chunks(wav, chunk)
        audible = (
            torch.tensor([not s for s in silent]) if not all(silent) else torch.ones(len(silent), dtype=torch.bool)
        )
        with torch.no_grad():
            logits = model.head(z).float().cpu()
        labels.append(int(logits[audible].mean(0).argmax()))
        chunk_labels.append(logits.argmax(1).tolist())
        verdict = None
        if model.ood is not None:
            weights = torch.tensor([float(e - s) for s, e in chunk_bounds(len(wav), chunk)]) * audible
            verdict = model.ood.assess(z, weights=weights)[1]
        verdicts.append(verdict)
    return labels, chunk_labels, verdicts


def _share(pairs) -> float | None:
    pairs = list(pairs)
    return None if not pairs else float(np.mean([a == b for a, b in pairs]))


def _compare(model, ae, ref, fast, clips, n_held_out, item_classes, logmel, precision, device) -> dict[str, Any]:
    cos = F.cosine_similarity(torch.cat(fast["z"]), torch.cat(ref["z"]), dim=-1)
    entry: dict[str, Any] = {
        "codec_dtype": codec_dtype_for(precision, device),
        "encode": {"z_cosine_min": float(cos.min()), "z_cosine_mean": float(cos.mean()), "chunks": len(cos)},
    }
    if model is not None:
        lab_r, chunks_r, ood_r = _decisions(model, clips, ref["z"])
        lab_f, chunks_f, ood_f = _decisions(model, clips, fast["z"])
        held = slice(0, n_held_out)
        entry["classification"] = {
            "agreement": _share(zip(lab_f[held], lab_r[held])),
            "chunk_agreement": _share((a, b) for x, y in zip(chunks_f[held], chunks_r[held]) for a, b in zip(x, y)),
            "clips": n_held_out,
        }
        if model.ood is not None:
            entry["ood"] = {
                "agreement": _share(zip(ood_f, ood_r)),
                "clips": len(clips),
                "out_of_domain_probes": len(clips) - n_held_out,
                "in_domain_reference": int(sum(bool(v) for v in ood_r)),
            }
    if ref["latents"]:
        rel = [float((f - r).norm() / r.norm().clamp_min(1e-12)) for f, r in zip(fast["latents"], ref["latents"])]
        db = [float((logmel(f) - logmel(r)).abs().mean()) for f, r in zip(fast["audio"], ref["audio"])]
        entry["sonify"] = {
            "items": len(rel),
            "latent_rel_l2_max": max(rel),
            "latent_rel_l2_mean": float(np.mean(rel)),
            "log_mel_db_max": max(db),
            "log_mel_db_mean": float(np.mean(db)),
        }
        if model is not None and item_classes:
            entry["sonify"]["own_class_reference"] = ref["own_class"]
            entry["sonify"]["own_class"] = _own_class(model, fast["audio"], item_classes)
    entry["speed"] = {
        "encode_speedup": ref["encode_s"] / max(fast["encode_s"], 1e-9),
        **({"sonify_speedup": ref["decode_s"] / max(fast["decode_s"], 1e-9)} if ref["latents"] else {}),
    }
    return entry


def _own_class(model: PECMAE, audio: list[np.ndarray], classes: list[int]) -> int:
    """How many decoded items the model (at fp32) classifies as their own class, from the audio a listener
    gets (loudness-normalised, within ±1)."""
    from pecmae_hub.loudness import normalize_loudness

    hits = 0
    with precision_scope(model.autoencoder, REFERENCE):
        for wav, c in zip(audio, classes):
            heard = normalize_loudness(wav)[0]
            z = model.autoencoder.encode(heard, sr=SAMPLE_RATE)
            with torch.no_grad():
                hits += int(model.head(z).float().mean(0).argmax()) == c
    return hits


# ---- the record -------------------------------------------------------------------------------------------
def measure_fidelity(
    model: PECMAE | Autoencoder,
    held_out=None,
    *,
    ood=None,
    precisions: Sequence[str] | None = None,
    max_clips: int = 64,
    max_seconds: float = 30.0,
    max_items: int | None = None,
    steps: int | None = None,
    scheduler=None,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Measure the fast modes of ``model`` (a :class:`~pecmae_hub.pipeline.PECMAE` or an autoencoder alone)
    against fp32 (see the module docstring); returns the record without its ``files`` (see
    :func:`write_fidelity`). The model is left at the precision it had.

    ``held_out``: paths, a folder, a list file, or ``(name, samples at 24 kHz)`` pairs (default: the synthetic
    probes); ``ood``: extra out-of-domain audio, the same way; ``precisions``: default
    :func:`measurable_precisions`; ``max_items``: prototypes to sonify (default all; an autoencoder alone:
    2); ``steps``/``scheduler``: the sampler (default: the model's on-the-fly default, as ``sonify``).

    Raises:
        ConfigError: a precision this device cannot run.
        DatasetError: a held-out path that does not exist, or no held-out clip could be read.
    """
    from tqdm.auto import tqdm

    from pecmae_hub.models.precision import check_precision
    from pecmae_hub.pipeline import PECMAE
    from pecmae_hub.sampling.schedulers import DEFAULT_SCHEDULER, recommended_steps, scheduler_to_dict

    pipeline = model if isinstance(model, PECMAE) else None
    ae = pipeline.autoencoder if pipeline is not None else cast("Autoencoder", model)
    device = ae.device
    precisions = list(precisions) if precisions is not None else measurable_precisions(device)
    for p in precisions:
        if p == REFERENCE:
            raise ConfigError("fp32 is the reference of a fidelity record, not a mode to measure against it")
        check_precision(p, device)
    if not precisions:
        raise ConfigError(f"no fast precision can be measured on this device ({fast_precision(device)[1]})")
    probes = probe_signals(max(ae.chunk_seconds + 0.5, 2.0))  # a whole chunk and a partial one
    if held_out is None:
        clips, bad, source = list(probes), 0, PROBES_SOURCE
    else:
        clips, bad, source = _clips(held_out, max_clips, max_seconds)
        if not clips:
            raise DatasetError(f"none of the held-out audio ({source}) could be read: a record needs some")
    n_held_out = len(clips)
    extra, bad_ood, ood_source = _clips(ood, max_clips, max_seconds) if ood is not None else ([], 0, None)
    clips += (probes if held_out is not None else []) + extra
    if pipeline is not None and steps is None and scheduler is None:
        steps, scheduler = pipeline.render_settings_for(None, None)
    scheduler = scheduler or DEFAULT_SCHEDULER
    steps = steps or recommended_steps(scheduler_to_dict(scheduler)["name"])
    items, item_classes = _items(pipeline, ae, clips, max_items)
    temperature = pipeline.default_temperature() if pipeline is not None else 1.0  # the renders' (as sonify)
    sampler = (int(steps), scheduler, int(seed), 1.0, temperature)
    total = (len(precisions) + 1) * (len(clips) + len(items))
    with tqdm(total=total, desc="measuring fidelity", disable=not progress) as bar:
        tick = lambda: bar.update(1)  # noqa: E731
        ref = _run(ae, REFERENCE, clips, items, sampler, tick)
        if pipeline is not None and item_classes:
            ref["own_class"] = _own_class(pipeline, ref["audio"], item_classes)
        logmel = LogMel()
        entries = {}
        for p in precisions:
            fast = _run(ae, p, clips, items, sampler, tick)
            entry = _compare(pipeline, ae, ref, fast, clips, n_held_out, item_classes, logmel, p, device)
            failures = entry_failures(
                entry,
                classes=pipeline is not None,
                ood=pipeline is not None and pipeline.ood is not None,
                decoder=ae.can_decode,
            )
            entries[p] = {**entry, "passed": not failures, "failures": failures}
    return {
        "format": FORMAT,
        "version": VERSION,
        "kind": "model" if pipeline is not None else "autoencoder",
        "reference": REFERENCE,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "held_out": {
            "source": source,
            "clips": n_held_out,
            "unreadable": bad,
            "max_seconds": max_seconds,
            "ood_probes": PROBES_SOURCE,
            **({"ood_source": ood_source, "ood_unreadable": bad_ood} if ood is not None else {}),
        },
        "sonify_settings": {
            "steps": int(steps),
            "scheduler": scheduler_to_dict(scheduler),
            "seed": int(seed),
            "temperature": float(temperature),
        }
        if items
        else None,
        "measured_on": _machine(device),
        "bounds": dict(BOUNDS),
        "precisions": entries,
    }


def _items(pipeline, ae, clips, max_items) -> tuple[list[torch.Tensor], list[int]]:
    """What is sonified: the prototypes (spread over the classes), or z of the first chunk of some clips."""
    if not ae.can_decode:
        return [], []
    if pipeline is None:
        n = 2 if max_items is None else max_items
        with precision_scope(ae, REFERENCE), torch.inference_mode():
            zs = [ae.encode(wav[: ae.chunk_samples], sr=SAMPLE_RATE)[0] for _, wav in clips[:n]]
        return zs, []
    head = pipeline.head
    order = [c * head.protos_per_class + k for k in range(head.protos_per_class) for c in range(len(head.labels))]
    chosen = sorted(order[: max_items or len(order)])
    protos = head.effective_prototypes().detach().float().cpu()
    return [protos[p] for p in chosen], [pipeline.labels.index(head.prototype_name(p)[0]) for p in chosen]


def _machine(device: torch.device) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("pecmae-hub")
    except PackageNotFoundError:  # a source tree that was not installed
        ours = "unknown"
    info: dict[str, Any] = {"device": device.type, "torch": torch.__version__, "pecmae_hub": ours}
    if device.type == "cpu":
        info["cpu"] = cpu_int8_support()[1]
        info["native_bf16"] = cpu_has_native_bf16()
    elif device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def write_fidelity(model: PECMAE | Autoencoder, folder: str | os.PathLike, held_out=None, **options) -> dict[str, Any]:
    """Measure ``model`` (:func:`measure_fidelity`, ``options`` passed on) and write ``folder/fidelity.json``
    for the files of ``folder`` (already saved: a model folder for a PECMAE, an autoencoder folder for an
    autoencoder), listed in its ``checksums.json``. Returns the record."""
    return store_record(measure_fidelity(model, held_out, **options), folder)


def folder_digests(folder: str | os.PathLike, kind: str) -> dict[str, str]:
    """:func:`decisive_files` of a saved model folder (``kind="model"``) or autoencoder folder."""
    from pecmae_hub.hub.files import ModelFiles

    spec = None
    if kind == "model":
        try:
            config = json.loads((Path(folder) / CONFIG_NAME).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{folder} is not a saved model folder ({CONFIG_NAME}: {exc})") from None
        spec = AutoencoderRef.from_dict(config.get("autoencoder"), source=f"{folder}/{CONFIG_NAME}")
    return decisive_files(ModelFiles(folder=folder), spec)


def store_record(record: dict, folder: str | os.PathLike) -> dict[str, Any]:
    """Write ``record`` as ``folder/fidelity.json`` with the digests of the folder's decisive files and list it
    in ``checksums.json``. Entries of the folder's earlier record of the same files, for precisions not in
    ``record``, are kept (a record made on a CPU and one made on a GPU add up)."""
    folder = Path(folder)
    refuse_links(folder, [FIDELITY_NAME])
    digests = folder_digests(folder, record.get("kind", "model"))
    record = {**record, "files": digests, "precisions": {**_previous(folder, digests), **record["precisions"]}}
    atomic_write_text(folder / FIDELITY_NAME, json.dumps(record, indent=1) + "\n")
    if (folder / CHECKSUMS_NAME).is_file():  # a folder without one stays unverified (loaded with verify=False)
        update_checksums(folder, [FIDELITY_NAME])
    return record


def _previous(folder: Path, digests: dict[str, str]) -> dict:
    """The entries of the folder's current record when it is about these very files, else none."""
    from pecmae_hub.models.fidelity_record import read_record

    path = folder / FIDELITY_NAME
    try:
        old = read_record(path) if path.is_file() else None
    except PecmaeError:
        return {}
    if old is None or identity_problem(old, digests) is not None:
        return {}
    return dict(old.get("precisions") or {})
