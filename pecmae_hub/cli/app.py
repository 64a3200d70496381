"""`pecmae app`: start the web app (the same app as ``python app.py`` and the Hugging Face Space)."""

from __future__ import annotations

import argparse
import os

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
    from pecmae_hub.extras import require

    require("gradio", "pecmae app")
    from pecmae_hub.app.ui import build_app, launch_options

    options = launch_options()  # the settings (host, port, limits) are checked before the model loads
    build_app().launch(**options)
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "app",
        help=command_help("app"),
        description="Start the PECMAE Hub web app (Gradio). Settings: PECMAE_* environment variables, see docs/app.md.",
    )
    p.add_argument("--model", help="model loaded at start (default: $PECMAE_MODEL or gm-solos)")
    p.add_argument("--port", type=int, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    p.add_argument("--host", help="interface to bind (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    p.set_defaults(func=run_app)
