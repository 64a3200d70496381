"""Is the Hub reachable? One fast TCP probe per endpoint, remembered for a few seconds.

``huggingface_hub`` on its own waits for connection and read timeouts (and, when downloading, retries)
before it falls back to the local cache, so a dead network can cost tens of seconds per file. The
package instead probes the endpoint once: a TCP connection that opens within :data:`PROBE_TIMEOUT`
seconds (name resolution included, which ignores socket timeouts and therefore runs in a daemon
thread). The answer is reused for :data:`PROBE_TTL` seconds per endpoint, so a burst of downloads
costs one probe, and a Hub that comes back is noticed soon after.

:func:`pecmae_hub.storage.pretrained.resolve_file` asks :func:`hub_reachable` before every Hub download
and reads only the local cache when the answer is no: a cached file still loads, an uncached one
fails at once with a :class:`~pecmae_hub.errors.ModelNotFoundError`.

Leaf module: it imports only the standard library and ``huggingface_hub.constants``.
"""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

PROBE_TIMEOUT = 3.0  # seconds to wait for a TCP connection to the Hub
PROBE_TTL = 15.0  # seconds a probe result is reused

# endpoint -> (monotonic time of the probe, reachable)
_probe_cache: dict[str, tuple[float, bool]] = {}
_lock = threading.Lock()


def hub_endpoint() -> str:
    """The Hub URL ``huggingface_hub`` talks to (``$HF_ENDPOINT`` or https://huggingface.co)."""
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set: only the local cache may be read."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def clear_probe_cache() -> None:
    """Forget every probe result (the next :func:`hub_reachable` call probes again)."""
    with _lock:
        _probe_cache.clear()


def _probe(host: str, port: int, timeout: float) -> bool:
    result: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=connect, name="pecmae-hub-probe", daemon=True)
    worker.start()
    worker.join(timeout + 0.5)  # a hanging name lookup is abandoned, not waited for
    return bool(result and result[0])


def hub_reachable(endpoint: str | None = None, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether a TCP connection to the Hub ``endpoint`` (default: :func:`hub_endpoint`) opens within
    ``timeout`` seconds. The answer is cached per endpoint for :data:`PROBE_TTL` seconds.

    It does not look at ``HF_HUB_OFFLINE`` (see :func:`hub_offline`); an endpoint without a host
    name is reported unreachable.
    """
    endpoint = endpoint or hub_endpoint()
    now = time.monotonic()
    with _lock:
        cached = _probe_cache.get(endpoint)
    if cached is not None and now - cached[0] < PROBE_TTL:
        return cached[1]
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # a malformed port in HF_ENDPOINT
        port = 0
    ok = bool(host and port) and _probe(host, port, timeout)
    with _lock:
        _probe_cache[endpoint] = (time.monotonic(), ok)
    return ok


def describe_unreachable(endpoint: str | None = None) -> str:
    """Why the Hub is not used right now, in words for an error message."""
    if hub_offline():
        return "offline mode is on (HF_HUB_OFFLINE=1)"
    return f"the Hub ({endpoint or hub_endpoint()}) is unreachable from this machine"
