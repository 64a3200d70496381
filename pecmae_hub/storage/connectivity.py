"""Is the Hub answering? One short HTTP probe per endpoint, remembered for a few seconds; short timeouts.

``huggingface_hub`` on its own waits for its connection and read timeouts (10 s each) and, when a file
is not cached, retries with a 60 s timeout and a back-off, so a Hub that accepts connections but never
answers costs minutes per file. The package instead:

- probes the endpoint once with a real HTTP request (``HEAD`` of its root) that must be answered within
  :data:`PROBE_TIMEOUT` seconds, name resolution included (which ignores socket timeouts and therefore
  runs in a daemon thread). Any HTTP answer below 500 counts as reachable. The answer is reused for
  :data:`PROBE_TTL` seconds per endpoint, so a burst of downloads costs one probe, and a Hub that comes
  back is noticed soon after;
- asks for a file's metadata itself, with :data:`HUB_ETAG_TIMEOUT` and no retries, before a file that is
  not cached is downloaded (:func:`hub_preflight`; once per :data:`PROBE_TTL` seconds and endpoint while
  the Hub keeps answering), so a download does not enter ``huggingface_hub``'s retry loop on a silent
  Hub; a Hub that does not answer then is remembered as unreachable;
- passes :data:`HUB_ETAG_TIMEOUT` to every download (``etag_timeout``; ``$HF_HUB_ETAG_TIMEOUT`` still wins,
  as in ``huggingface_hub``); the read timeout of a download in progress is ``huggingface_hub``'s
  ``$HF_HUB_DOWNLOAD_TIMEOUT`` (10 s between two received bytes).

So a Hub that never answers fails a load in about :data:`PROBE_TIMEOUT` seconds (at most
``PROBE_TIMEOUT + HUB_ETAG_TIMEOUT``), with a :class:`~pecmae_hub.errors.ModelNotFoundError` that says so.
:func:`pecmae_hub.storage.pretrained.resolve_hub_file` uses all of this; when the Hub is unreachable it reads
only the local cache: a cached file still loads, an uncached one fails at once.

Leaf module: it imports only the standard library and ``huggingface_hub``. The probe uses ``urllib`` so that
it opens a new connection each time (a kept-alive connection of a download would answer for a dead server).
"""

from __future__ import annotations

import threading
import time
from urllib.parse import urlsplit

PROBE_TIMEOUT = 3.0  # seconds for the Hub to answer one HTTP request (connection included)
PROBE_TTL = 15.0  # seconds a probe result is reused
HUB_ETAG_TIMEOUT = 5.0  # seconds for the Hub to answer a file's metadata request (huggingface_hub: 10, then 60)

# endpoint -> (monotonic time of the probe, reachable)
_probe_cache: dict[str, tuple[float, bool]] = {}
_answered: dict[str, float] = {}  # endpoint -> monotonic time a metadata request was last answered
_lock = threading.Lock()


class HubNotAnswering(OSError):  # noqa: N818 (internal signal, turned into ModelNotFoundError by callers)
    """The Hub accepted (or refused) the connection but did not answer in time."""


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
        _answered.clear()


def _remember(endpoint: str, ok: bool) -> None:
    with _lock:
        _probe_cache[endpoint] = (time.monotonic(), ok)
        if not ok:
            _answered.pop(endpoint, None)


def _probe(endpoint: str, timeout: float) -> bool:
    result: list[bool] = []

    def ask() -> None:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(endpoint.rstrip("/") + "/", method="HEAD")
        try:  # a new connection each time (a kept-alive one would not tell), proxies from the environment
            with urllib.request.urlopen(request, timeout=timeout) as response:
                result.append(response.status < 500)
        except urllib.error.HTTPError as exc:  # an answer all the same
            result.append(exc.code < 500)
        except Exception:  # no connection, no answer in time, TLS failure ...
            result.append(False)

    worker = threading.Thread(target=ask, name="pecmae-hub-probe", daemon=True)
    worker.start()
    worker.join(timeout + 0.5)  # a hanging name lookup is abandoned, not waited for
    return bool(result and result[0])


def hub_reachable(endpoint: str | None = None, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether the Hub ``endpoint`` (default: :func:`hub_endpoint`) answers an HTTP request within
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
    try:
        valid = bool(parts.hostname) and parts.scheme in ("http", "https") and parts.port != 0
    except ValueError:  # a malformed port in HF_ENDPOINT
        valid = False
    ok = valid and _probe(endpoint, timeout)
    _remember(endpoint, ok)
    return ok


def hub_preflight(repo_id: str, filename: str, revision: str | None, token: str | bool | None = None) -> None:
    """Ask the Hub for ``filename``'s metadata with :data:`HUB_ETAG_TIMEOUT` and no retries.

    Raises:
        HubNotAnswering: no answer in time, or a broken connection (the endpoint is then remembered as
            unreachable for :data:`PROBE_TTL` seconds).
        huggingface_hub errors: the Hub answered that the repo, revision or file does not exist.
    """
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    endpoint = hub_endpoint()
    with _lock:
        if time.monotonic() - _answered.get(endpoint, -PROBE_TTL) < PROBE_TTL:
            return  # it answered a moment ago
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision), token=token, timeout=HUB_ETAG_TIMEOUT)
    except hf_errors.HfHubHTTPError as exc:  # an HTTP answer: a missing repo, revision or file, a gated repo ...
        status = getattr(getattr(exc, "response", None), "status_code", 0) or 0
        if status >= 500:
            _remember(endpoint, False)
            raise HubNotAnswering(f"the Hub ({endpoint}) answered HTTP {status}") from None
        with _lock:
            _answered[endpoint] = time.monotonic()
        raise
    except Exception as exc:  # timeouts, refused or reset connections
        _remember(endpoint, False)
        raise HubNotAnswering(
            f"the Hub ({endpoint}) did not answer within {HUB_ETAG_TIMEOUT:g} s ({type(exc).__name__})"
        ) from None
    with _lock:
        _answered[endpoint] = time.monotonic()


def describe_unreachable(endpoint: str | None = None) -> str:
    """Why the Hub is not used right now, in words for an error message."""
    if hub_offline():
        return "offline mode is on (HF_HUB_OFFLINE=1)"
    return f"the Hub ({endpoint or hub_endpoint()}) is unreachable from this machine or does not answer"
