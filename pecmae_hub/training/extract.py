"""``pecmae extract``: one z per audio chunk for every track, written as features for training.

On-disk layout of ``OUT`` (mirrors the input's relative paths, as upstream, docs/architecture.md §7):
- ``<relpath with suffix .npy>``: float32 ``(n_chunks, D)``, one row per ``chunk_seconds`` window
  (the trailing partial chunk kept and encoded at its own length, exactly as ``Autoencoder.encode``);
- ``extract_manifest.json``: the autoencoder (repo id / revision / local path), its config hash, D,
  chunk length and the counts of the last run;
- ``failures.tsv``: ``path<TAB>error`` of the files that failed in the last run (absent when none).
Inputs and relative paths follow :func:`pecmae_hub.audio.collect_audio_files`: a folder input -> path
relative to it; a list file (one path per line, relative ones resolved against the list's folder) ->
relative to the list's folder when inside it, else ``<parent>/<name>``; a Python sequence of paths ->
``<parent>/<name>``.
Re-running skips tracks whose ``.npy`` exists; files are written atomically
(:func:`pecmae_hub.storage.pretrained.atomic_path`), so an interrupted run never leaves a partial file.
Several processes or machines: ``accelerate launch -m pecmae_hub.cli extract ...`` shards the tracks over
them (docs/scale.md); the features do not depend on the number of processes (bit for bit).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pecmae_hub.audio import AudioFile, collect_audio_files, load_audio
from pecmae_hub.dataset_source import FileSource, open_source
from pecmae_hub.devices import resolve_device
from pecmae_hub.distributed import Guard, processes, shard
from pecmae_hub.errors import ConfigError, DatasetError
from pecmae_hub.storage.atomic import atomic_save_npy, atomic_write_text
from pecmae_hub.training.features import feature_path

MANIFEST_NAME = "extract_manifest.json"
FAILURES_NAME = "failures.tsv"


@dataclass
class ExtractSummary:
    """What one :func:`extract_features` run did (the main process: every process's counts; the others: their own)."""

    out_dir: Path
    total: int
    written: int = 0
    skipped: int = 0
    failed: int = 0
    chunks: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def extract_jobs(inputs) -> list[AudioFile]:
    """The tracks of ``inputs`` (:func:`~pecmae_hub.audio.collect_audio_files`), checked to have distinct outputs."""
    jobs = collect_audio_files(inputs)
    outs: dict[str, str] = {}
    for path, rel in jobs:
        key = feature_path("", rel).as_posix()
        if key in outs:
            raise DatasetError(f"{outs[key]} and {path} would both be written to {key}; rename one of them")
        outs[key] = path
    return jobs


class _AudioFiles(torch.utils.data.Dataset):
    def __init__(self, jobs):
        self.jobs = jobs

    def __len__(self):
        return len(self.jobs)

    def __getitem__(self, i):
        try:
            return i, load_audio(self.jobs[i][0]), None
        except Exception as exc:  # any decode problem becomes a reported failure, not a crash
            return i, None, f"{type(exc).__name__}: {exc}"


def _first(batch):
    return batch[0]


class _Batcher:
    """Full chunks of consecutive tracks encoded in batches of exactly ``batch_size`` (the very last one padded
    with zeros), each partial chunk alone: the z of a chunk then depends on nothing but the chunk, not on its
    neighbours, so features are the same bit for bit whatever the sharding over processes, the order or a
    resume (a batch of another size may take other kernels, e.g. 1 row vs 15, and round differently)."""

    def __init__(self, ae, batch_size: int, device):
        self.ae, self.batch_size, self.device = ae, batch_size, device
        self.tracks: list[tuple[AudioFile, np.ndarray]] = []
        self.chunks: list[torch.Tensor] = []  # full chunks not encoded yet, in track order
        self.zs: list[torch.Tensor] = []  # z of the encoded full chunks of the tracks still held
        self.pending = 0

    def add(self, job: AudioFile, wav: np.ndarray) -> list[tuple[AudioFile, np.ndarray | None, str | None]]:
        """Queue a track; returns the tracks finished by the full batches that are now possible."""
        cs = self.ae.chunk_samples
        full = torch.from_numpy(wav[: len(wav) // cs * cs]).reshape(-1, cs)
        self.tracks.append((job, wav))
        self.chunks.append(full)
        self.pending += len(full)
        return self._encode(final=False)

    def close(self) -> list[tuple[AudioFile, np.ndarray | None, str | None]]:
        return self._encode(final=True) if self.tracks else []

    @torch.inference_mode()
    def _encode(self, final: bool):
        bs = self.batch_size
        n = self.pending if final else self.pending // bs * bs
        if n and self.chunks:
            flat = torch.cat(self.chunks)
            try:
                for s in range(0, n, bs):
                    batch = flat[s : s + bs]
                    pad = bs - len(batch)
                    if pad:
                        batch = torch.cat([batch, batch.new_zeros(pad, batch.shape[1])])
                    self.zs.append(self.ae.encode_chunks(batch.to(self.device)).float().cpu()[: bs - pad])
            except Exception:  # isolate the culprit: every queued track on its own (same batch size, same z)
                return self._one_by_one()
            self.chunks, self.pending = [flat[n:]], self.pending - n
        z = torch.cat(self.zs) if self.zs else torch.zeros(0, self.ae.embedding_dim)
        done, pos, kept = [], 0, 0
        for job, wav in self.tracks:
            k = len(wav) // self.ae.chunk_samples
            if pos + k > len(z):
                break
            done.append((job, self._with_tail(z[pos : pos + k], wav), None))
            pos, kept = pos + k, kept + 1
        self.tracks, self.zs = self.tracks[kept:], [z[pos:]]
        return done

    def _with_tail(self, z: torch.Tensor, wav: np.ndarray) -> np.ndarray:
        cs = self.ae.chunk_samples
        if len(wav) % cs:
            tail = torch.from_numpy(wav[len(wav) // cs * cs :])[None].to(self.device)
            with torch.inference_mode():
                z = torch.cat([z, self.ae.encode_chunks(tail).float().cpu()])
        return z.numpy().astype(np.float32)

    def _one_by_one(self):
        tracks, out = self.tracks, []
        self.tracks, self.chunks, self.zs, self.pending = [], [], [], 0
        for job, wav in tracks:
            alone = _Batcher(self.ae, self.batch_size, self.device)
            try:
                alone.add(job, wav)
                out += alone.close()
            except Exception as exc:
                out.append((job, None, f"{type(exc).__name__}: {exc}"))
        return out


def extract_features(
    inputs,
    out_dir,
    autoencoder,
    device: str = "auto",
    batch_size: int = 32,
    progress: bool = True,
    num_workers: int = 0,
    revision: str | None = None,
    on_track_done: Callable[[str], None] | None = None,
    precision: str = "fp32",
    dataset: dict | None = None,
) -> ExtractSummary:
    """Encode every track of ``inputs`` with ``autoencoder`` (an ``Autoencoder``, a folder or a Hub repo id).

    ``inputs`` is a folder, a list file, audio files, or one ``hf://datasets/ORG/NAME`` (streamed; ``dataset``
    holds ``split``, ``audio_column`` and ``id_column``, see :mod:`pecmae_hub.dataset_source`; features are
    written as ``OUT/<row id>.npy``). Full chunks of consecutive tracks share batches of ``batch_size``.
    Tracks whose ``.npy`` exists are skipped; a file that fails is listed in ``failures.tsv`` and the others
    finish. ``on_track_done`` is called with each written relative path (an exception raised there stops
    the run cleanly). ``precision`` (``fp32``, ``int8``, ``bf16``, ``fp16``) is recorded in the manifest:
    features of two precisions are never mixed in one folder. Under ``accelerate launch`` every process
    encodes its share (:mod:`pecmae_hub.distributed`); a failing process stops them all, naming its rank.
    """
    from tqdm.auto import tqdm

    from pecmae_hub.models.autoencoder import Autoencoder

    t0 = time.time()
    out = Path(out_dir)
    state = processes()
    # "auto" under Accelerate: the device of this process; anything else is checked before any work
    device = (
        (state.device if torch.cuda.is_available() else torch.device("cpu"))
        if device == "auto"
        else resolve_device(device)
    )
    if isinstance(autoencoder, (str, os.PathLike)):
        name = os.fspath(autoencoder)
        local = Path(name).is_dir()
        ae_id = {
            "repo_id": None if local else name,
            "revision": revision,
            "folder": str(Path(name).resolve()) if local else None,
        }
        autoencoder = Autoencoder.from_pretrained(name, revision=revision, device=device, precision=precision)
        if autoencoder.upstream_sources:  # an upstream name: heads reference it by name + source commits
            ae_id = {"name": name, "sources": autoencoder.upstream_sources, "folder": None}
    else:
        ae_id = {"repo_id": None, "revision": None, "folder": None}
    ae = autoencoder.to(device).eval()
    if ae.precision != precision:
        from pecmae_hub.models.precision import apply_precision

        apply_precision(ae, precision)
    ae_id["precision"] = precision
    source = open_source(inputs, **(dataset or {}))
    jobs = extract_jobs(inputs) if isinstance(source, FileSource) else _dataset_jobs(source)
    manifest = {
        "autoencoder": {**ae_id, "fingerprint": ae.fingerprint()},
        "embedding_dim": ae.embedding_dim,
        "chunk_seconds": ae.chunk_seconds,
        "layout": "<relpath>.npy float32 (n_chunks, D)",
    }
    _check_manifest(out / MANIFEST_NAME, manifest)
    if state.is_main_process and not (out / MANIFEST_NAME).is_file():  # so an interrupted run is still identified
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / MANIFEST_NAME, json.dumps({**manifest, "counts": None}, indent=2) + "\n")

    todo = [j for j in jobs if not feature_path(out, j[1]).is_file()]
    summary = ExtractSummary(out, total=len(jobs), skipped=len(jobs) - len(todo))
    with Guard("extract") as guard:
        if isinstance(source, FileSource):
            mine = shard(todo)
            tracks, count = _decoded_files(mine, num_workers), len(mine)
        else:
            tracks, count = _decoded_rows(source, {j.path for j in todo}), None
        bar = tqdm(total=count, disable=not progress or not state.is_main_process, desc="extract", unit="track")
        batcher = _Batcher(ae, batch_size, device)
        for job, wav, err in tracks:
            if err is not None:
                _fail(summary, job, err, bar)
            else:
                _save(batcher.add(job, wav), out, summary, bar, on_track_done)
            guard.tick()
        _save(batcher.close(), out, summary, bar, on_track_done)
        bar.close()
        _write_reports(out, state, summary, manifest, len(jobs), guard)
    summary.seconds = time.time() - t0
    return summary


def _dataset_jobs(source) -> list[AudioFile]:
    """One job per row: its id (or index) is both the key and the relative path of its features."""
    jobs = []
    for key in source.input_keys():
        if Path(key).is_absolute() or ".." in Path(key).parts or not key.strip():
            raise DatasetError(f"{source.name}: row id {key!r} cannot name a feature file; choose --id-column")
        jobs.append(AudioFile(key, key))
    return jobs


def _decoded_files(jobs: list[AudioFile], num_workers: int):
    """``(job, wav, error)`` of audio files, decoded by ``num_workers`` DataLoader workers."""
    loader = torch.utils.data.DataLoader(_AudioFiles(jobs), batch_size=1, collate_fn=_first, num_workers=num_workers)
    for i, wav, err in loader:
        yield jobs[i], wav, err


def _decoded_rows(source, wanted: set[str]):
    """``(job, wav, error)`` of this process's pending dataset rows (streamed)."""
    for key, audio in source.rows():
        if key not in wanted:
            continue
        job = AudioFile(key, key)
        try:
            if isinstance(audio, Exception):
                raise audio
            yield job, load_audio(audio, name=key), None
        except Exception as exc:  # any decode problem becomes a reported failure, not a crash
            yield job, None, f"{type(exc).__name__}: {exc}"


def _save(results, out, summary, bar, on_track_done):
    for job, z, err in results:
        if err is not None:
            _fail(summary, job, err, bar)
            continue
        atomic_save_npy(feature_path(out, job[1]), z)
        summary.written += 1
        summary.chunks += len(z)
        bar.update(1)
        if on_track_done is not None:
            on_track_done(job[1])


def _fail(summary, job, err, bar):
    summary.failed += 1
    summary.failures.append((str(job[0]), err.replace("\t", " ").replace("\n", " ")))
    bar.update(1)


def _check_manifest(path: Path, manifest: dict) -> None:
    if not path.is_file():
        return
    old = json.loads(path.read_text()).get("autoencoder", {})
    if (
        old.get("fingerprint", old.get("config_hash")) != manifest["autoencoder"]["fingerprint"]
        or old.get("precision", "fp32") != manifest["autoencoder"]["precision"]
    ):
        raise ConfigError(
            f"{path.parent} already holds features of another autoencoder or precision ({old}); "
            "features of different models must not be mixed: choose a new output folder"
        )


def _write_reports(out: Path, state, summary: ExtractSummary, manifest: dict, total: int, guard: Guard) -> None:
    """Wait for every process; the main one then holds the whole run's counts and writes the reports."""
    shares = guard.finish((summary.written, summary.chunks, summary.failures))
    if not state.is_main_process:
        return
    summary.written = sum(w for w, _, _ in shares)
    summary.chunks = sum(c for _, c, _ in shares)
    summary.failures = [f for _, _, failures in shares for f in failures]
    summary.failed = len(summary.failures)
    out.mkdir(parents=True, exist_ok=True)
    failures = out / FAILURES_NAME
    if summary.failures:
        atomic_write_text(failures, "path\terror\n" + "".join(f"{p}\t{e}\n" for p, e in summary.failures))
    elif failures.exists():
        failures.unlink()
    manifest["counts"] = {
        "tracks": total,
        "failed": summary.failed,
        "written_last_run": summary.written,
        "skipped_last_run": summary.skipped,
    }
    manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    atomic_write_text(out / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
