"""Optional dependencies: import them where a feature needs them, with a message that says what to install.

``pip install pecmae-hub`` (the core) classifies, sonifies and loads models from the Hub. Training,
evaluation, the web app and data rendering need the extras listed in ``pyproject.toml``:

| extra | packages | features |
|---|---|---|
| ``train`` | accelerate, scikit-learn, matplotlib | ``pecmae extract``/``train``/``evaluate``/``recipe`` |
| ``app`` | gradio, spaces, matplotlib | ``python app.py``, the Space |
| ``data`` | pyfluidsynth, music21 | ``pecmae data gm-solos``, the gm-solos recipe |
| ``datasets`` | datasets | ``hf://datasets/...`` inputs of classify / extract, ``PECMAE.classify_dataset`` |
"""

from __future__ import annotations

import importlib
from types import ModuleType

from pecmae_hub.errors import MissingDependencyError

#: top-level import name -> (distribution on PyPI, extra that provides it)
OPTIONAL: dict[str, tuple[str, str]] = {
    "accelerate": ("accelerate", "train"),
    "sklearn": ("scikit-learn", "train"),
    "matplotlib": ("matplotlib", "train"),
    "gradio": ("gradio", "app"),
    "spaces": ("spaces", "app"),
    "fluidsynth": ("pyfluidsynth", "data"),
    "music21": ("music21", "data"),
    "datasets": ("datasets", "datasets"),
}


def install_hint(extra: str) -> str:
    """The install command for ``extra``, as a user of the repository runs it."""
    return f"pip install 'pecmae-hub[{extra}]' (from a clone of the repository: pip install -e '.[{extra}]')"


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` (e.g. ``"sklearn.cluster"``) for ``feature`` (e.g. ``"pecmae train"``).

    Raises :class:`MissingDependencyError` naming the package and the extra that installs it, instead of
    a bare ``ImportError`` from deep inside the feature.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        if top not in OPTIONAL or (exc.name and exc.name.split(".")[0] != top):
            raise  # not an optional package of ours (or a broken install of one): show the real error
        dist, extra = OPTIONAL[top]
        raise MissingDependencyError(
            f"{feature} needs the optional package {dist!r}, which is not installed: {install_hint(extra)}"
        ) from None


def require_extra(extra: str, feature: str) -> None:
    """Check every package of ``extra`` up front, so ``feature`` fails before any work when one is missing."""
    for module, (_, its_extra) in OPTIONAL.items():
        if its_extra == extra:
            require(module, feature)
