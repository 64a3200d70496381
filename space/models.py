"""Which models the app offers and how it loads them: cache first, the Hub only when reachable.

A model is named by a registry short name (``gm-solos``, ``gtzan``, ``medley-solos-db``), a Hub repo
id or a local folder. Loaded models are kept in memory (the start-up model always, plus the most
recently used others). Loading never waits on a dead network: the Hugging Face cache is tried first,
then the Hub is probed with a short timeout, and an unreachable Hub gives :class:`ModelUnavailable`
with a message a user can act on.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from collections import OrderedDict
from pathlib import Path
from urllib.parse import urlsplit

from pecmae_hub.hub.registry import DEFAULT_MODEL, REGISTRY, known_names, registry_repo_id, resolve_model
from pecmae_hub.errors import ModelNotFoundError, PecmaeError

PROBE_TIMEOUT = 3.0     # seconds to wait for a TCP connection to the Hub
PROBE_TTL = 15.0        # seconds a probe result is reused


class ModelUnavailable(PecmaeError):
    """A model that cannot be loaded here and now (not cached and the Hub unreachable, missing files …)."""


def hub_endpoint() -> str:
    """The Hub URL ``huggingface_hub`` talks to (``$HF_ENDPOINT`` or https://huggingface.co)."""
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set: only the local cache may be read."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


_probe_cache: dict[str, tuple[float, bool]] = {}


def hub_reachable(endpoint: str | None = None, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether a TCP connection to the Hub opens within ``timeout`` s (DNS included; cached briefly)."""
    endpoint = endpoint or hub_endpoint()
    now = time.monotonic()
    cached = _probe_cache.get(endpoint)
    if cached and now - cached[0] < PROBE_TTL:
        return cached[1]
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=probe, daemon=True)  # getaddrinfo ignores socket timeouts
    worker.start()
    worker.join(timeout + 0.5)
    ok = bool(result and result[0])
    _probe_cache[endpoint] = (now, ok)
    return ok


def describe_model(name: str) -> str:
    """Human label of a model reference for the selector."""
    entry = REGISTRY.get(name)
    if entry is None:
        return f"{Path(name).name} (folder)" if Path(name).expanduser().is_dir() else f"{name} (Hub)"
    if entry.embedded:
        return f"{name} · embedded, offline"
    return f"{name} · Hub {registry_repo_id(name)}"


class ModelManager:
    """Loads PECMAE models by name and keeps them in memory; thread-safe.

    Args:
        default: the model loaded at start-up and kept resident.
        device: passed to ``PECMAE.from_pretrained`` (``auto`` → CUDA when available).
        max_loaded: how many models besides the default stay in memory.
    """

    def __init__(self, default: str, device: str = "auto", max_loaded: int = 2):
        self.default, self.device, self.max_loaded = str(default), device, max_loaded
        self._models: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def choices(self) -> list[tuple[str, str]]:
        """``(label, value)`` pairs for the model selector: the default first, then the registry."""
        names = [self.default] + [n for n in known_names() if n != self.default]
        return [(describe_model(n), n) for n in names]

    def is_loaded(self, name: str) -> bool:
        return name in self._models

    def get(self, name: str | None = None):
        """The loaded :class:`~pecmae_hub.pipeline.PECMAE` for ``name`` (default model when None).

        Raises:
            ModelUnavailable: with a readable reason (offline and not cached, unknown name, bad files).
        """
        name = (name or self.default).strip()
        with self._lock:
            if name in self._models:
                self._models.move_to_end(name)
                return self._models[name]
            gate = self._loading.setdefault(name, threading.Lock())
        with gate:  # one load per name at a time; others wait for it
            with self._lock:
                if name in self._models:
                    return self._models[name]
            model = self._load(name)
            with self._lock:
                self._models[name] = model
                others = [n for n in self._models if n != self.default]
                for old in others[: max(0, len(others) - self.max_loaded)]:
                    del self._models[old]
            return model

    def _load(self, name: str):
        from pecmae_hub.pipeline import PECMAE

        try:
            kind, _, _ = resolve_model(name)
        except ModelNotFoundError as exc:
            raise ModelUnavailable(str(exc)) from None
        try:  # the cache (or the folder) first: no network, no retries
            return PECMAE.from_pretrained(name, device=self.device, local_files_only=True)
        except ModelNotFoundError as exc:
            if kind == "folder":
                raise ModelUnavailable(f"model {name!r} cannot be loaded: {exc}") from None
        except PecmaeError as exc:
            raise ModelUnavailable(f"model {name!r} cannot be loaded: {exc}") from None
        endpoint = hub_endpoint()
        if hub_offline():
            raise ModelUnavailable(
                f"model {name!r} is not in the local Hugging Face cache and the Hub is unreachable "
                "(HF_HUB_OFFLINE=1). Download it once while online, or choose the embedded model "
                f"{DEFAULT_MODEL!r}."
            )
        if not hub_reachable(endpoint):
            raise ModelUnavailable(
                f"model {name!r} is not in the local Hugging Face cache and the Hub ({endpoint}) is unreachable. "
                f"Connect to the internet and try again, or choose the embedded model {DEFAULT_MODEL!r}."
            )
        try:
            return PECMAE.from_pretrained(name, device=self.device)
        except PecmaeError as exc:
            raise ModelUnavailable(f"model {name!r} cannot be loaded from the Hub: {exc}") from None

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
