"""Hubs that do not answer, for the fault tests: one that accepts connections and never says a word, and one
that answers the reachability probe (``HEAD /``) but nothing else."""

from __future__ import annotations

import socket
import threading
from contextlib import contextmanager


class SilentHub:
    """A TCP server on 127.0.0.1 that accepts every connection and then stays silent.

    With ``answer_probe=True`` it answers ``HEAD /`` with ``200 OK`` (so the Hub looks reachable) and keeps
    every other request waiting, like a Hub whose file servers hang.
    """

    def __init__(self, answer_probe: bool = False):
        self.answer_probe = answer_probe
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests: list[str] = []
        self._held: list[socket.socket] = []
        self._closed = False
        if answer_probe:
            threading.Thread(target=self._serve, daemon=True, name="silent-hub").start()

    def _serve(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            line = conn.recv(4096).split(b"\r\n", 1)[0].decode("latin-1")
        except OSError:
            return
        self.requests.append(line)
        if line.startswith("HEAD / "):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            conn.close()
        else:
            self._held.append(conn)  # never answered

    def close(self) -> None:
        self._closed = True
        self.sock.close()
        for conn in self._held:
            conn.close()


@contextmanager
def hub_endpoint(monkeypatch, url: str):
    """Point ``huggingface_hub`` (and the reachability probe) at ``url`` for the duration of the block."""
    from huggingface_hub import constants

    from pecmae_hub.storage.connectivity import clear_probe_cache

    old = constants.ENDPOINT
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", constants.HUGGINGFACE_CO_URL_TEMPLATE.replace(old, url)
    )
    clear_probe_cache()
    try:
        yield url
    finally:
        monkeypatch.setattr(constants, "ENDPOINT", old)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", constants.HUGGINGFACE_CO_URL_TEMPLATE.replace(url, old)
        )
        clear_probe_cache()


def run_with_deadline(fn, seconds: float):
    """``(finished, result or exception, seconds taken)`` of ``fn()`` run in a daemon thread for at most
    ``seconds`` (a call that hangs is abandoned, so a test fails in time instead of waiting minutes)."""
    import time

    box: dict = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the test
            box["value"] = exc

    start = time.monotonic()
    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    return not worker.is_alive(), box.get("value"), time.monotonic() - start
