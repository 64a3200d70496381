"""The PECMAE Hub web app (Gradio), also deployable as a Hugging Face Space.

``space.app_ui.build_app()`` builds it; the top-level ``app.py`` only builds and launches. Importing this
package is cheap: Gradio is imported by :mod:`space.app_ui` only.
"""
from __future__ import annotations

__all__ = ["build_app", "launch_options"]


def __getattr__(name):
    if name in __all__:
        from . import app_ui

        return getattr(app_ui, name)
    raise AttributeError(f"module 'space' has no attribute {name!r}")
