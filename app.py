"""Start the PECMAE Hub app: ``python app.py`` (also the Hugging Face Space entry point).

Runs fully offline on the embedded default model (``gm-solos``). Settings come from the environment
(``PECMAE_*``, ``GRADIO_SERVER_NAME`` (default 127.0.0.1), ``GRADIO_SERVER_PORT``; docs/app.md lists them
all). The address and the settings are checked before the model loads: a busy port or a bad setting is one
line, not a traceback. The UI itself lives in ``pecmae_hub/app/`` (also ``pecmae app``).
"""

import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no outbound calls

from pecmae_hub.app import settings
from pecmae_hub.app.ports import choose_port
from pecmae_hub.errors import PecmaeError

if __name__ == "__main__":
    try:
        settings.AppSettings.from_env()  # every setting checked first
        port, note = choose_port(settings.server_name(), settings.server_port())
    except PecmaeError as exc:
        sys.exit(f"app.py: error: {exc}")
    if note:
        print(f"app.py: {note}", file=sys.stderr)
    os.environ["GRADIO_SERVER_PORT"] = str(port)

# Gradio and the model only after the port check: a busy port answers at once
from pecmae_hub.app.ui import build_app, launch_options

try:
    options = launch_options()
    demo = build_app()
except PecmaeError as exc:  # e.g. PECMAE_MAX_SECONDS=abc: one line, no traceback
    raise SystemExit(f"app.py: error: {exc}") from None

if __name__ == "__main__":
    demo.launch(**options)
