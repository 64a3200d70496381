"""The app's address, checked before anything slow happens: a busy port is one clear line, not a traceback
after the model has loaded.

:func:`choose_port` is called by ``pecmae app`` and ``python app.py`` before the model loads. A port named by
the user (``--port`` or ``GRADIO_SERVER_PORT``) must be free; without one the first free port from 7860 is
taken, as Gradio does. Imports nothing heavy (no Gradio, no torch).
"""

from __future__ import annotations

import socket

from pecmae_hub.errors import ConfigError

DEFAULT_PORT = 7860
SEARCH = 100  # ports tried after DEFAULT_PORT when none is named (Gradio tries 7860-7959)


def port_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (e.g. "Address already in use"), or None when it can."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return f"unknown host {host!r} ({exc})"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is no obstacle
        try:
            sock.bind(address)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def choose_port(host: str, port: int | None) -> tuple[int, str | None]:
    """``(port, note)``: the port to serve on and, when it is not the default, a line saying why.

    Raises:
        ConfigError: the named ``port`` cannot be used, or no port is free; the message names ``--port`` and
            ``GRADIO_SERVER_PORT``.
    """
    if port is not None:
        if not 0 < int(port) < 65536:
            raise ConfigError(f"{port} is not a port number (1-65535): choose one with --port or GRADIO_SERVER_PORT")
        problem = port_problem(host, int(port))
        if problem:
            raise ConfigError(
                f"cannot serve on {host}:{port}: {problem}. Choose another port with --port PORT "
                "(or GRADIO_SERVER_PORT), or stop the program that uses it"
            )
        return int(port), None
    for candidate in range(DEFAULT_PORT, DEFAULT_PORT + SEARCH):
        problem = port_problem(host, candidate)
        if problem is None:
            note = None if candidate == DEFAULT_PORT else f"port {DEFAULT_PORT} is in use; serving on {candidate}"
            return candidate, note
        if "in use" not in problem:
            raise ConfigError(f"cannot serve on {host}:{candidate}: {problem}; choose the address with --host")
    raise ConfigError(
        f"ports {DEFAULT_PORT}-{DEFAULT_PORT + SEARCH - 1} on {host} are all in use: choose one with --port PORT "
        "(or GRADIO_SERVER_PORT)"
    )
