"""Prototype audio of a :class:`~pecmae_hub.pipeline.PECMAE` model: which prototype a name means, its
pre-rendered WAV when the settings match, decoding it with a sampler otherwise, the nearest training
chunks' audio, rendering every prototype, and carrying those files over when the model is saved.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from pecmae_hub.audio import SAMPLE_RATE, load_audio, write_wav
from pecmae_hub.errors import CheckpointError, ConfigError, ModelNotFoundError
from pecmae_hub.hub.files import inside_path
from pecmae_hub.hub.registry import PROTOTYPES_DIR
from pecmae_hub.loudness import TARGET_LUFS, LevelChange
from pecmae_hub.models.synthesis import check_temperature, resolve_vocoder
from pecmae_hub.render_index import (
    build_index,
    entry_for,
    index_settings,
    key_matches,
    legacy_entry_valid,
    prototypes_digest,
    render_key,
    settings_record,
)
from pecmae_hub.sampling.schedulers import (
    DEFAULT_SCHEDULER,
    SchedulerSpec,
    check_steps,
    recommended_steps,
    scheduler_to_dict,
)
from pecmae_hub.storage.atomic import refuse_links
from pecmae_hub.storage.integrity import CHECKSUMS_NAME, update_checksums

if TYPE_CHECKING:
    from pecmae_hub.hub.files import ModelFiles
    from pecmae_hub.models.autoencoder import Autoencoder
    from pecmae_hub.models.head import PrototypeHead


class PrototypeAudio:
    """Mixin of :class:`~pecmae_hub.pipeline.PECMAE` (needs ``head``, ``autoencoder``, ``labels`` and the
    model's files): everything that turns prototypes into audio."""

    # set by PECMAE.__init__
    head: PrototypeHead
    autoencoder: Autoencoder
    _files: ModelFiles | None
    _index: dict | Literal[False] | None  # prototypes/index.json; False: not looked up yet
    _sonified: dict[str, np.ndarray]  # render key → audio
    _nearest_audio: dict | Literal[False] | None  # nearest/index.json; False: not looked up yet
    _loaded_prototypes: str | None  # prototypes_digest of the prototypes as loaded from the files

    if TYPE_CHECKING:

        @property
        def labels(self) -> list[str]: ...

    # ---- prototypes ------------------------------------------------------------------------------
    def prototype_index(self, prototype: int | str | tuple[str, int]) -> int:
        """Index p of a prototype given as ``p``, ``"p"``, ``(label, k)`` or ``"label:k"``."""
        head, n = self.head, self.head.num_prototypes
        if isinstance(prototype, str):
            text = prototype.strip()
            if text.lstrip("-").isdigit():
                prototype = int(text)
            elif ":" in text and text.rsplit(":", 1)[1].strip().isdigit():
                name, idx = text.rsplit(":", 1)
                prototype = (name.strip(), int(idx))
            else:
                raise ConfigError(f"prototype {text!r} is neither an index nor 'label:k' (labels: {self.labels})")
        if isinstance(prototype, (tuple, list)) and len(prototype) == 2:
            label, k = prototype
            if label not in self.labels:
                raise ConfigError(f"unknown class {label!r}; classes: {self.labels}")
            if not 0 <= int(k) < head.protos_per_class:
                raise ConfigError(f"class {label!r} has prototypes 0..{head.protos_per_class - 1}, not {k}")
            return self.labels.index(label) * head.protos_per_class + int(k)
        if isinstance(prototype, (int, np.integer)) and not isinstance(prototype, bool) and 0 <= prototype < n:
            return int(prototype)
        raise ConfigError(f"prototype {prototype!r} out of range: give 0..{n - 1} or (label, k)")

    def _render_index(self) -> dict | None:
        if self._index is False:
            self._index = self._files.json(f"{PROTOTYPES_DIR}/index.json", required=False) if self._files else None
        return self._index

    def prototype_audio_path(
        self,
        prototype,
        steps: int = 40,
        guidance: float = 1.0,
        seed: int = 0,
        scheduler: SchedulerSpec = "upstream",
        vocoder: str | None = None,
        loudness: float | None = TARGET_LUFS,
        temperature: float = 1.0,
    ) -> Path | None:
        """The pre-rendered WAV of ``prototype`` when one was rendered from exactly this prototype, decoder and
        settings (its render key matches, :mod:`pecmae_hub.render_index`), else None."""
        p, index = self.prototype_index(prototype), self._render_index()
        entry = entry_for(index, p)
        settings = self._settings(steps, guidance, seed, scheduler, vocoder, loudness, temperature)
        if index is None or entry is None or not self._entry_valid(index, entry, p, settings):
            return None
        assert self._files is not None  # the index was read from the model's files
        try:
            return self._files.get(f"{PROTOTYPES_DIR}/{entry['file']}", required=False)
        except ModelNotFoundError:  # not cached and the Hub is unreachable: the decoder will do
            return None

    def _settings(self, steps, guidance, seed, scheduler, vocoder, loudness, temperature=1.0) -> dict:
        vocoder = resolve_vocoder(self.autoencoder, vocoder)
        return settings_record(steps, guidance, seed, scheduler, vocoder, loudness, check_temperature(temperature))

    def _entry_valid(self, index: dict, entry: dict, p: int, wanted: dict) -> bool:
        if "key" in entry:  # made at the precision in force, or at exact fp32 (render_index.key_matches)
            return key_matches(entry["key"], self.head.effective_prototypes()[p], self.autoencoder, wanted) is not None
        unchanged = prototypes_digest(self.head.effective_prototypes()) == self._loaded_prototypes
        return index_settings(index) == wanted and legacy_entry_valid(index, self.autoencoder, unchanged)

    def _decode(
        self,
        p: int,
        steps: int,
        guidance: float,
        seed: int,
        progress=None,
        scheduler: SchedulerSpec = "upstream",
        vocoder: str | None = None,
        loudness: float | None = TARGET_LUFS,
        temperature: float = 1.0,
    ) -> tuple[np.ndarray, LevelChange | None]:
        # one prototype per call: vocoders may draw per-batch randomness, so batching could change the audio
        ae = self.autoencoder
        gen = torch.Generator().manual_seed(int(seed))
        noise = torch.randn((1, ae.chunk_frames, ae.config.signal_dim), generator=gen)
        z = self.head.effective_prototypes()[p : p + 1]
        wav, level = ae.decode_with_level(
            z,
            steps=steps,
            guidance=guidance,
            noise=noise,
            progress=progress,
            scheduler=scheduler,
            vocoder=vocoder,
            loudness=loudness,
            temperature=temperature,
        )
        return np.asarray(wav, dtype=np.float32), level

    def render_settings_for(
        self, steps: int | None = None, scheduler: SchedulerSpec | None = None
    ) -> tuple[int, SchedulerSpec]:
        """``(steps, scheduler)`` with the defaults filled in: the settings of the shipped pre-renders when the
        model has them (so a default request plays them at once), else :data:`DEFAULT_SCHEDULER` at its
        recommended steps (docs/hub.md, "Sonification")."""
        index = self._render_index()
        rendered = index.get("scheduler", {"name": "upstream"}) if index else None
        if scheduler is None:
            scheduler = rendered if rendered is not None else DEFAULT_SCHEDULER
        if steps is None:
            if index and scheduler_to_dict(scheduler) == scheduler_to_dict(rendered):
                steps = int(index["steps"])
            else:
                steps = recommended_steps(scheduler_to_dict(scheduler)["name"])
        return steps, scheduler

    def default_temperature(self) -> float:
        """The sampling temperature of the shipped pre-renders (so a default request plays them), else 1."""
        index = self._render_index()
        return float(index.get("temperature", 1.0)) if index else 1.0

    def sonify(
        self,
        prototype,
        steps: int | None = None,
        guidance: float = 1.0,
        seed: int = 0,
        progress=None,
        scheduler: SchedulerSpec | None = None,
        vocoder: str | None = None,
        loudness: float | None = TARGET_LUFS,
        temperature: float | None = None,
    ) -> np.ndarray:
        """Audio (float32, 24 kHz, one chunk) of a prototype: the pre-rendered WAV when it was rendered from
        this prototype with these settings, else ``autoencoder.decode`` of the effective prototype (same seed →
        same audio).

        ``scheduler``: ``"upstream"`` (the exact sampler), ``"unipc"``, ``"dpmsolver++"`` or ``"ddim"``
        (:mod:`pecmae_hub.sampling.schedulers`); ``None`` and ``steps=None`` pick :meth:`render_settings_for`.
        ``vocoder``: ``None`` (the model's own: its neural vocoder when it has one), ``"vocos"`` or
        ``"griffin-lim"``. ``loudness``: LUFS target (true peak ≤ -1 dBFS), or ``None`` for the decoder's own
        level (never beyond ±1). ``temperature``: the scale of the starting noise (below 1: steadier audio, less
        variety); ``None``: the pre-renders' (:meth:`default_temperature`).

        ``progress(i, n)`` is called after each of the n diffusion steps of a decode (not for a
        pre-rendered or already decoded prototype, which needs no steps).

        Raises:
            ConfigError: an unknown prototype, sampler or vocoder, or settings outside
                :func:`check_render_settings` (checked before any work).
        """
        steps, scheduler = self.render_settings_for(steps, scheduler)
        steps, guidance, seed = check_render_settings(steps, guidance, seed, scheduler)
        temperature = self.default_temperature() if temperature is None else temperature
        p = self.prototype_index(prototype)
        settings = self._settings(steps, guidance, seed, scheduler, vocoder, loudness, temperature)
        key = render_key(self.head.effective_prototypes()[p], self.autoencoder, settings)
        if key not in self._sonified:
            path = self.prototype_audio_path(p, steps, guidance, seed, scheduler, vocoder, loudness, temperature)
            if path is not None:
                import soundfile as sf

                try:
                    wav, file_sr = sf.read(str(path), dtype="float32")
                except Exception as exc:  # soundfile's LibsndfileError, RuntimeError ...
                    raise CheckpointError(f"pre-rendered prototype audio {path.name} is not readable: {exc}") from None
                self._sonified[key] = wav if file_sr == SAMPLE_RATE and wav.ndim == 1 else load_audio(path)
            else:
                self._sonified[key] = self._decode(
                    p, steps, guidance, seed, progress, scheduler, vocoder, loudness, temperature
                )[0]
        return self._sonified[key].copy()

    def nearest_audio_path(self, prototype, rank: int = 0) -> Path | None:
        """The WAV (24 kHz, one chunk) of the ``rank``-th training chunk nearest to ``prototype`` when the
        model ships it (``nearest/``, :mod:`pecmae_hub.hub.nearest_audio`), else None: ``nearest.json``
        then still names the chunk in words."""
        from pecmae_hub.hub.nearest_audio import nearest_audio_path, read_index

        p = self.prototype_index(prototype)
        if self._nearest_audio is False:
            self._nearest_audio = read_index(self._files)
        return nearest_audio_path(self._files, self._nearest_audio, p, rank)

    @property
    def nearest_audio_index(self) -> dict | None:
        """``nearest/index.json`` (plain-word facts of each shipped nearest chunk), or None."""
        from pecmae_hub.hub.nearest_audio import read_index

        if self._nearest_audio is False:
            self._nearest_audio = read_index(self._files)
        return self._nearest_audio

    def render_prototypes(
        self,
        folder: str | os.PathLike,
        steps: int = 40,
        guidance: float = 1.0,
        seed: int = 0,
        progress: bool = False,
        scheduler: SchedulerSpec = "upstream",
        vocoder: str | None = None,
        loudness: float | None = TARGET_LUFS,
        precision: str | None = "fp32",
        temperature: float = 1.0,
    ) -> dict:
        """Write ``folder/prototypes/p<idx>_<class>_<k>.wav`` (16-bit, 24 kHz) for every prototype and
        ``index.json`` recording the settings, the precision, each render's key and its loudness normalisation;
        returns the index (:mod:`pecmae_hub.render_index`).

        ``precision``: the decoder's precision while rendering, ``"fp32"`` by default whatever the model runs at
        (a shipped render is the exact sound, and plays at every precision); ``None``: the one in force.
        """
        from tqdm.auto import tqdm

        from pecmae_hub.models.precision import precision_scope

        steps, guidance, seed = check_render_settings(steps, guidance, seed, scheduler)
        settings = self._settings(steps, guidance, seed, scheduler, vocoder, loudness, temperature)
        prototypes = self.head.effective_prototypes()
        refuse_links(folder, [PROTOTYPES_DIR, CHECKSUMS_NAME], trees=[PROTOTYPES_DIR])
        out = Path(folder) / PROTOTYPES_DIR
        out.mkdir(parents=True, exist_ok=True)
        entries = []
        precision = precision or self.autoencoder.precision
        with precision_scope(self.autoencoder, precision):
            for p in tqdm(range(self.head.num_prototypes), desc="rendering prototypes", disable=not progress):
                label, k = self.head.prototype_name(p)
                name = f"p{p:03d}_{re.sub(r'[^A-Za-z0-9._-]+', '-', label).strip('-') or 'class'}_{k}.wav"
                wav, level = self._decode(p, steps, guidance, seed, None, scheduler, vocoder, loudness, temperature)
                write_wav(out / name, wav)
                entry = {"index": p, "label": label, "k": k, "file": name}
                entry["key"] = render_key(prototypes[p], self.autoencoder, settings)
                entries.append({**entry, **(level.to_dict() if level is not None else {})})
        index = build_index(self.autoencoder, settings, entries, precision)
        (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
        # the folder's checksums.json lists what was just written (a saved model stays verifiable)
        update_checksums(folder, [f"{PROTOTYPES_DIR}/{e['file']}" for e in entries] + [f"{PROTOTYPES_DIR}/index.json"])
        if self._files is not None and self._files.folder is not None:
            self._index, self._sonified = False, {}  # it may have been our own folder: look again
        return index

    def _copy_nearest_audio(self, folder: Path) -> None:
        """Carry the shipped nearest-chunk audio (``nearest/``) over to a re-saved or pushed model."""
        from pecmae_hub.hub.nearest_audio import NEAREST_AUDIO_DIR, NEAREST_AUDIO_INDEX, read_index

        index = read_index(self._files)
        if not index or self._files is None:
            return
        dest = folder / NEAREST_AUDIO_DIR
        dest.mkdir(parents=True, exist_ok=True)
        for entry in index.get("entries", []):
            name = inside_path(entry["file"], NEAREST_AUDIO_INDEX)
            src = self._files.get(f"{NEAREST_AUDIO_DIR}/{name}")
            if src.resolve() != (dest / name).resolve():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest / name)
        (folder / NEAREST_AUDIO_INDEX).write_text(json.dumps(index, indent=1) + "\n")

    def _copy_renders(self, folder: Path) -> dict | None:
        """Carry over the pre-rendered WAVs that are still the audio of this model's prototypes (their render
        key matches now; format-1 renders only for the prototypes they were loaded with), upgrading the index
        to the keyed format. Returns the new index, or None when no render is valid any more."""
        index = self._render_index()
        if not index:
            return None
        settings = index_settings(index)
        prototypes = self.head.effective_prototypes()
        unchanged = prototypes_digest(prototypes) == self._loaded_prototypes
        assert self._files is not None  # the index was read from the model's files
        entries = []
        ae = self.autoencoder
        # the precision the renders were made at: recorded, or (older indexes) the one in force or exact fp32
        candidates = (
            [str(index["precision"])] if index.get("precision") else list(dict.fromkeys((ae.precision, "fp32")))
        )
        made_at = candidates[0]
        for entry in index.get("prototypes", []):
            p = int(entry["index"])
            if not 0 <= p < len(prototypes):
                continue
            keys = {c: render_key(prototypes[p], ae, settings, c) for c in candidates}
            if "key" not in entry:  # format 1 (rendered at fp32): trusted only for the folder's own prototypes
                found = candidates[-1] if legacy_entry_valid(index, ae, unchanged) else None
            else:
                found = next((c for c, k in keys.items() if k == entry["key"]), None)
            if found is None:
                continue  # rendered from other prototypes or another decoder: stale
            made_at, key = found, keys[found]
            name = inside_path(entry["file"], f"{PROTOTYPES_DIR}/index.json")
            src = self._files.get(f"{PROTOTYPES_DIR}/{name}")
            dest = folder / PROTOTYPES_DIR / name
            if src.resolve() != dest.resolve():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
            entries.append({**entry, "key": key})
        if not entries:
            return None
        new_index = build_index(ae, settings, entries, made_at)
        (folder / PROTOTYPES_DIR / "index.json").write_text(json.dumps(new_index, indent=1) + "\n")
        return new_index


#: largest noise seed (torch generators take 64-bit seeds; one more bit keeps it a signed int64)
MAX_SEED = 2**63 - 1


def check_render_settings(steps, guidance, seed, scheduler: SchedulerSpec = "upstream") -> tuple[int, float, int]:
    """``(steps, guidance, seed)`` as (int, float, int), or :class:`ConfigError` naming the bad one.

    ``steps`` must be a whole number in 1..1000 (:func:`pecmae_hub.sampling.schedulers.check_steps`, which also
    refuses an unknown ``scheduler``), ``guidance`` a finite number, ``seed`` an integer in 0..2**63-1.
    Checked before any decoding, so a typo never starts hours of work.
    """

    def whole(value, what):
        if (
            isinstance(value, (bool, np.bool_))
            or not isinstance(value, (int, float, np.integer, np.floating))
            or (isinstance(value, (float, np.floating)) and not np.isfinite(value))  # a huge int is no float
            or int(value) != value
        ):
            raise ConfigError(f"{what} must be a whole number, got {value!r}")
        return int(value)

    steps = check_steps(steps, scheduler)
    if (
        isinstance(guidance, (bool, np.bool_))
        or not isinstance(guidance, (int, float, np.integer, np.floating))
        or not np.isfinite(guidance)
    ):
        raise ConfigError(f"guidance must be a finite number (1.0: no guidance), got {guidance!r}")
    seed = whole(seed, "seed")
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed must be in 0..2**63-1, got {seed}")
    return steps, float(guidance), seed
