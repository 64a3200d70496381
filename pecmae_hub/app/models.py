"""Which models the app offers and how it loads them: cache first, the Hub only when reachable.

A model is named by a registry short name (``gm-solos``, ``gtzan``, ``medley-solos-db``), a Hub repo
id or a local folder, among those the operator allows (:class:`pecmae_hub.app.access.ModelPolicy`; by
default the start-up model and the embedded ones). Errors a client sees name no server path. Loaded
models are kept in memory (the start-up model always, plus the most recently used others). Loading
never waits on a dead network: the Hugging Face cache is tried first, then the Hub is probed with a
short timeout, and an unreachable Hub gives :class:`ModelUnavailable` with a message a user can act on.
A model fetched from the Hub gets all its audio (pre-rendered prototypes, nearest training chunks) in
one ``snapshot_download`` right after loading.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

from pecmae_hub.app.access import ModelPolicy, display_name, scrub_paths
from pecmae_hub.app.settings import MAX_CONCURRENT_LOADS
from pecmae_hub.errors import ModelNotFoundError, PecmaeError
from pecmae_hub.hub.nearest_audio import prefetch_audio
from pecmae_hub.hub.registry import DEFAULT_MODEL, REGISTRY, registry_repo_id, resolve_model
from pecmae_hub.storage.connectivity import (  # noqa: F401
    PROBE_TIMEOUT,
    PROBE_TTL,
    _probe_cache,
    hub_endpoint,
    hub_offline,
    hub_reachable,
)

log = logging.getLogger(__name__)


class ModelUnavailable(PecmaeError):  # noqa: N818 (public name)
    """A model that cannot be loaded here and now (not cached and the Hub unreachable, missing files …)."""


def describe_model(name: str) -> str:
    """Human label of a model reference for the selector."""
    entry = REGISTRY.get(name)
    if entry is None:
        return f"{display_name(name)} (folder)" if Path(name).expanduser().is_dir() else f"{name} (Hub)"
    if entry.embedded:
        return f"{name} · embedded, offline"
    return f"{name} · Hub {registry_repo_id(name)}"


class ModelManager:
    """Loads PECMAE models by name and keeps them in memory; thread-safe. A model already in memory is
    returned at once, whatever is loading meanwhile (locks per name, not one global lock).

    Args:
        default: the model loaded at start-up and kept resident.
        device: passed to ``PECMAE.from_pretrained`` (``auto`` → CUDA when available).
        max_loaded: how many models besides the default stay in memory.
        policy: which names clients may load (default: :meth:`ModelPolicy.from_env` for ``default``).
    """

    def __init__(
        self,
        default: str,
        device: str = "auto",
        max_loaded: int = 2,
        policy: ModelPolicy | None = None,
        max_concurrent_loads: int = MAX_CONCURRENT_LOADS,
    ):
        self.default, self.device, self.max_loaded = str(default), device, max_loaded
        self.policy = policy or ModelPolicy.from_env(self.default)
        self._models: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()  # held only to look up or store: never during a load
        self._loading: dict[str, threading.Lock] = {}  # one lock per name: a slow load blocks only its own name
        self._load_slots = threading.BoundedSemaphore(max_concurrent_loads)

    def choices(self) -> list[tuple[str, str]]:
        """``(label, value)`` pairs for the model selector: the default first, then the other allowed names
        (``PECMAE_ALLOWED_MODELS``) that actually load here, so the selector never offers a model that is
        not published or cannot be reached."""
        names = [n for n in self.policy.offered() if n == self.policy.startup_alias or self._loads(n)]
        return [(describe_model(self.default if n == self.policy.startup_alias else n), n) for n in names]

    def _loads(self, name: str) -> bool:
        try:
            self.get(name)
        except ModelUnavailable as exc:
            log.info("model %r left out of the selector: %s", name, exc)
            return False
        return True

    def is_loaded(self, name: str) -> bool:
        return name in self._models

    def get(self, name: str | None = None):
        """The loaded :class:`~pecmae_hub.pipeline.PECMAE` for ``name`` (default model when None).

        Raises:
            ModelUnavailable: with a readable reason (not allowed here, offline and not cached, bad files),
                the same for a name that is not allowed whether or not it exists on the server.
        """
        name = (name or self.default).strip()
        reference = self.policy.resolve(name)
        if reference is None:
            raise ModelUnavailable(self.policy.refusal(name))
        name = reference
        with self._lock:
            if name in self._models:
                self._models.move_to_end(name)
                return self._models[name]
            gate = self._loading.setdefault(name, threading.Lock())
        with gate:  # one load per name at a time; others wait for it
            with self._lock:
                if name in self._models:
                    return self._models[name]
            with self._load_slots:  # at most a few loads at once; a model in memory never waits here
                model = self._load(name)
            with self._lock:
                self._models[name] = model
                others = [n for n in self._models if n != self.default]
                for old in others[: max(0, len(others) - self.max_loaded)]:
                    del self._models[old]
            return model

    def _load(self, name: str):
        try:
            return self._load_checked(name)
        except ModelUnavailable as exc:  # the full text for the operator, no server path for the client
            log.warning("model %s cannot be loaded: %s", name, exc)
            raise ModelUnavailable(scrub_paths(str(exc))) from None

    def _load_checked(self, name: str):
        from pecmae_hub.pipeline import PECMAE

        shown = display_name(name)
        try:
            kind, _, _ = resolve_model(name)
        except ModelNotFoundError as exc:
            raise ModelUnavailable(str(exc).replace(name, shown)) from None
        try:  # the cache (or the folder) first: no network, no retries
            return PECMAE.from_pretrained(name, device=self.device, local_files_only=True)
        except ModelNotFoundError as exc:
            if kind == "folder":
                raise ModelUnavailable(f"model {shown!r} cannot be loaded: {str(exc).replace(name, shown)}") from None
        except PecmaeError as exc:
            raise ModelUnavailable(f"model {shown!r} cannot be loaded: {str(exc).replace(name, shown)}") from None
        endpoint = hub_endpoint()
        if hub_offline():
            raise ModelUnavailable(
                f"model {name!r} is not in the local Hugging Face cache and the Hub is unreachable "
                "(this server runs offline). Download it once while online, or choose the embedded model "
                f"{DEFAULT_MODEL!r}."
            )
        if not hub_reachable(endpoint):
            raise ModelUnavailable(
                f"model {name!r} is not in the local Hugging Face cache and the Hub ({endpoint}) is unreachable. "
                f"Connect to the internet and try again, or choose the embedded model {DEFAULT_MODEL!r}."
            )
        try:
            model = PECMAE.from_pretrained(name, device=self.device)
        except PecmaeError as exc:
            raise ModelUnavailable(f"model {name!r} cannot be loaded from the Hub: {exc}") from None
        prefetch_audio(model.files)  # every prototype and nearest-chunk WAV in one request, not one each
        return model

    def forget(self, name: str) -> None:
        """Drop ``name`` from memory (tests, or after a model folder changed on disk)."""
        with self._lock:
            self._models.pop(name, None)


def model_files(model):
    """The :class:`pecmae_hub.hub.ModelFiles` of a loaded model, or None (model built in memory)."""
    return getattr(model, "files", None) or getattr(model, "_files", None)


def optional_file(model, filename: str) -> Path | None:
    """Local path of an optional file of ``model``'s folder/repo (e.g. ``README.md``), or None."""
    files = model_files(model)
    if files is None:
        return None
    try:
        path = files.get(filename, required=False)
    except PecmaeError:
        return None
    return Path(path) if path is not None and os.path.isfile(path) else None
