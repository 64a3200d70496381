"""`pecmae app`: start the web app (the same app as ``python app.py`` and the Hugging Face Space).

The address is checked first (:func:`pecmae_hub.app.ports.choose_port`): a busy port is one line naming
``--port`` / ``GRADIO_SERVER_PORT`` and exit status 1, before the model loads.
"""

from __future__ import annotations

import argparse
import os
import sys

from pecmae_hub.cli.commands import command_help


def run_app(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no outbound calls
    for name, value in (
        ("PECMAE_MODEL", args.model),
        ("GRADIO_SERVER_PORT", args.port),
        ("GRADIO_SERVER_NAME", args.host),
    ):
        if value is not None:
            os.environ[name] = str(value)
    from pecmae_hub.app import settings as cfg
    from pecmae_hub.app.ports import choose_port

    model = cfg.AppSettings.from_env().model  # every setting checked first (PECMAE_MAX_SECONDS=ten: one line)
    host = cfg.server_name()
    port, note = choose_port(host, cfg.server_port())  # GRADIO_SERVER_PORT=abc or a busy port: one line
    if note:
        print(f"pecmae app: {note}", file=sys.stderr)
    from pecmae_hub.extras import require

    require("gradio", "pecmae app")
    from pecmae_hub.app.ui import build_app, launch_options

    options = launch_options(server_name=host, server_port=port)
    print(f"pecmae app: loading model {model}…", file=sys.stderr, flush=True)
    demo = build_app()
    try:
        demo.launch(**options)
    except OSError as exc:  # the port was taken between the check and the start
        print(
            f"pecmae app: error: cannot serve on {host}:{port}: {exc}. Choose another port with --port PORT "
            "(or GRADIO_SERVER_PORT)",
            file=sys.stderr,
            flush=True,
        )
        os._exit(1)  # a normal exit would abort in the model's background threads ("terminate called ...")
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "app",
        help=command_help("app"),
        description="Start the PECMAE Hub web app (Gradio). Settings: PECMAE_* environment variables, see docs/app.md.",
        epilog="example:\n  pecmae app --port 8080              # then open http://127.0.0.1:8080",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", help="model loaded at start (default: $PECMAE_MODEL or gm-solos)")
    p.add_argument("--port", type=int, help="port (default: $GRADIO_SERVER_PORT, else 7860 or the next free one)")
    p.add_argument(
        "--host", help="interface to bind (default: $GRADIO_SERVER_NAME or 127.0.0.1; 0.0.0.0 for every interface)"
    )
    p.set_defaults(func=run_app)
