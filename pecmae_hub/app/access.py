"""Which models a client of the app may load, and error texts that never show server paths.

``/load_model`` takes a name from any client, so the operator decides what it may reach
(:class:`ModelPolicy`):

- the start-up model (``PECMAE_MODEL``) always;
- registry names and Hub repo ids matching ``PECMAE_ALLOWED_MODELS`` (comma-separated names, repo ids,
  shell patterns such as ``my-org/*``, or ``registry`` for every registry name); by default only the
  models embedded in the package (``gm-solos``);
- model folders inside the folders of ``PECMAE_MODEL_DIRS`` (``os.pathsep``-separated), by path or by
  name relative to one of them; none by default.

Anything else is refused with one message, whether or not it exists on the server: a name outside the
allowed folders is judged on its spelling alone, without touching the file system, so the app cannot
be used to probe which server paths exist. :func:`scrub_paths` removes absolute paths from the texts
of errors that do reach a client.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pecmae_hub.hub.registry import REGISTRY, known_names

ALLOWED_ENV = "PECMAE_ALLOWED_MODELS"
DIRS_ENV = "PECMAE_MODEL_DIRS"
ALL_REGISTRY = "registry"  # in PECMAE_ALLOWED_MODELS: every registry short name
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
_ABS_PATH = re.compile(r"(?<![\w:/.~-])~?/[^\s'\"`,;()\[\]]*")


def embedded_names() -> tuple[str, ...]:
    """The registry models shipped inside the package (no download, nothing to configure)."""
    return tuple(n for n in known_names() if REGISTRY[n].embedded)


def parse_allowed(text: str | None) -> tuple[str, ...]:
    """``PECMAE_ALLOWED_MODELS`` as patterns (empty or unset: :func:`embedded_names`)."""
    items = tuple(p.strip() for p in (text or "").split(",") if p.strip())
    return items or embedded_names()


def parse_dirs(text: str | None) -> tuple[Path, ...]:
    """``PECMAE_MODEL_DIRS`` as absolute folders (empty or unset: none)."""
    return tuple(
        Path(os.path.abspath(os.path.expanduser(p.strip()))) for p in (text or "").split(os.pathsep) if p.strip()
    )


def scrub_paths(text: str) -> str:
    """``text`` with every absolute path replaced by ``…/<last part>`` (URLs are left alone)."""
    return _ABS_PATH.sub(lambda m: "…/" + (os.path.basename(m.group(0).rstrip("/")) or ""), str(text))


def display_name(reference: str) -> str:
    """What a client may see of a model reference: a folder's own name, a registry name or repo id as is."""
    if reference in REGISTRY or (_REPO_ID.fullmatch(reference) and not os.path.isabs(reference)):
        return reference
    return Path(reference).name or reference


def _inside(path: str, root: str) -> bool:
    return path != root and path.startswith(root.rstrip(os.sep) + os.sep)


@dataclass(frozen=True)
class ModelPolicy:
    """The operator's choice of loadable models (see the module docstring)."""

    startup: str
    allowed: tuple[str, ...] = ()
    model_dirs: tuple[Path, ...] = ()

    @classmethod
    def from_env(
        cls, startup: str, allowed: str | tuple | list | None = None, model_dirs: str | tuple | list | None = None
    ) -> ModelPolicy:
        """Policy from arguments, else ``$PECMAE_ALLOWED_MODELS`` / ``$PECMAE_MODEL_DIRS``."""
        if allowed is None or isinstance(allowed, str):
            allowed = parse_allowed(os.environ.get(ALLOWED_ENV) if allowed is None else allowed)
        if model_dirs is None or isinstance(model_dirs, str):
            model_dirs = parse_dirs(os.environ.get(DIRS_ENV) if model_dirs is None else model_dirs)
        return cls(
            str(startup),
            tuple(allowed) or embedded_names(),
            tuple(Path(os.path.abspath(os.path.expanduser(str(d)))) for d in model_dirs),
        )

    @property
    def startup_alias(self) -> str:
        """The start-up model as clients see and name it (a folder's own name, not its path)."""
        return display_name(self.startup)

    def matches(self, name: str) -> bool:
        """Whether a registry name or repo id is allowed by the patterns."""
        return any((p == ALL_REGISTRY and name in REGISTRY) or fnmatch.fnmatchcase(name, p) for p in self.allowed)

    def offered(self) -> list[str]:
        """Names a client may pick from: the start-up model, the allowed registry names, then the Hub repo
        ids the operator lists by name (patterns such as ``org/*`` can be typed but are not listed)."""
        names = [self.startup_alias]
        names += [n for n in known_names() if self.matches(n) and n not in names and n != self.startup]
        return names + [p for p in self.allowed if p.count("/") == 1 and "*" not in p and p not in names]

    def refusal(self, name: str) -> str:
        """The one message for every refused name (it does not depend on what exists on the server)."""
        extra = [p for p in self.allowed if p != ALL_REGISTRY and p not in REGISTRY]
        text = f"model {name!r} is not offered by this server. Available: {', '.join(self.offered())}"
        if extra:
            text += f"; Hub repos matching {', '.join(extra)}"
        if self.model_dirs:
            text += "; model folders provided by the operator"
        return text + " (the server's operator chooses which models it offers)."

    def resolve(self, name: str) -> str | None:
        """The reference to load for ``name`` (the start-up model, a registry name, a Hub repo id or an
        absolute folder), or None when ``name`` is not allowed (then say :meth:`refusal`)."""
        name = name.strip()
        if name in (self.startup, self.startup_alias):
            return self.startup
        if name in REGISTRY:
            return name if self.matches(name) else None
        folder = self._folder(name)
        if folder is not None:
            return folder
        if _REPO_ID.fullmatch(name) and ".." not in name and self.matches(name) and not os.path.lexists(name):
            return name  # (a local path spelled like a repo id is not loaded as a folder)
        return None

    def _folder(self, name: str) -> str | None:
        text = os.path.expanduser(name)
        for root in self.model_dirs:
            candidate = os.path.normpath(text if os.path.isabs(text) else os.path.join(root, text))
            if not _inside(candidate, str(root)):
                continue  # judged on the spelling: nothing outside the allowed folders is looked at
            real, real_root = os.path.realpath(candidate), os.path.realpath(root)
            if _inside(real, real_root) and os.path.isdir(real):
                return real
        return None
