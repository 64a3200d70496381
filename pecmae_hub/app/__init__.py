"""The PECMAE Hub web app (Gradio): ``pecmae app``, ``python app.py``, and the Hugging Face Space.

``pecmae_hub.app.build_app()`` builds it and ``launch_options()`` gives its launch arguments. Importing this
package is cheap: Gradio (the ``app`` extra) is imported by :mod:`pecmae_hub.app.ui` only.
"""

from __future__ import annotations

__all__ = ["build_app", "launch_options"]


def __getattr__(name):
    if name in __all__:
        from pecmae_hub.app import ui

        return getattr(ui, name)
    raise AttributeError(f"module 'pecmae_hub.app' has no attribute {name!r}")
