"""Start the PECMAE Hub app: ``python app.py`` (also the Hugging Face Space entry point).

Runs fully offline on the embedded default model (``gm-solos``). Settings come from the environment:
``PECMAE_MODEL``, ``PECMAE_MAX_SECONDS``, ``PECMAE_DEVICE``, ``GRADIO_SERVER_NAME`` (default 127.0.0.1),
``GRADIO_SERVER_PORT``; see docs/app.md. The UI itself lives in ``pecmae_hub/app/`` (also ``pecmae app``).
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no outbound calls

from pecmae_hub.app.ui import build_app, launch_options
from pecmae_hub.errors import PecmaeError

try:
    options = launch_options()
    demo = build_app()
except PecmaeError as exc:  # e.g. PECMAE_MAX_SECONDS=abc: one line, no traceback
    raise SystemExit(f"pecmae app: error: {exc}") from None

if __name__ == "__main__":
    demo.launch(**options)
