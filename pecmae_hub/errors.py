"""Typed errors. Every error a user can act on derives from :class:`PecmaeError`.

Each class also derives from the matching built-in (``ValueError``, ``FileNotFoundError`` ...)
so callers that already catch those keep working.
"""


class PecmaeError(Exception):
    """Base class of every error raised on purpose by pecmae_hub."""


class AudioError(PecmaeError, ValueError):
    """Audio that cannot be read or used: unreadable, empty, silent where it matters, NaN/inf."""


class InputShapeError(PecmaeError, ValueError):
    """A tensor argument with the wrong shape, dtype or size (e.g. a ``z`` of the wrong dimension)."""


class CheckpointError(PecmaeError, ValueError):
    """A weights file that does not match the architecture (missing/unexpected keys, shapes, format)."""


class ConfigError(PecmaeError, ValueError):
    """An invalid or inconsistent configuration value."""


class ModelNotFoundError(PecmaeError, FileNotFoundError):
    """A model name, repo id, revision or file that cannot be found (or is not cached when offline)."""


class DatasetError(PecmaeError, ValueError):
    """A dataset folder, split file or metadata table that does not have the expected layout."""


class IncompleteRunError(PecmaeError, RuntimeError):
    """A resumable long run that stopped before its end (e.g. its time budget was spent): run it again."""


class MissingDependencyError(PecmaeError, ImportError):
    """An optional package that a feature needs is not installed; the message names the extra to install."""


class NumericalError(PecmaeError, ArithmeticError):
    """A computation that gave NaN or infinite values (e.g. weights that overflow): no answer is made up."""


class OutputError(PecmaeError, OSError):
    """A result or model file that cannot be written (disk full, quota, read-only): nothing half-written is kept."""


class ProcessGroupError(PecmaeError, RuntimeError):
    """A run under ``accelerate launch`` stopped because one of its processes failed or was lost; the message
    names the rank. Work finished so far is kept: rerunning the same command resumes."""
