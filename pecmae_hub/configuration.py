"""One config mechanism for every model: a versioned, validated dataclass stored as ``config.json``.

A model's config class is its schema: the dataclass fields are the constructor arguments, their
defaults the in-code defaults, and :meth:`ModelConfig.from_dict` is the only way a file becomes a
config. Reading a file is strict where a silent default would change the model:

- ``model_type`` must match the class (a head folder cannot be loaded as an autoencoder);
- a ``version`` newer than this package knows is refused with a message that says to upgrade;
- unknown fields are refused (a newer format, or a typo), and so are missing architecture fields;
- older formats are migrated in memory by :meth:`ModelConfig.migrate` with a ``FutureWarning``
  naming the file, so the user knows to re-save it.

:class:`AutoencoderRef` is the typed reference from a head to the autoencoder that produced its z.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from pecmae_hub.errors import ConfigError

C = TypeVar("C", bound="ModelConfig")


@dataclass
class ModelConfig:
    """Base of the model configs. Subclasses are dataclasses and set the class variables below."""

    MODEL_TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    # fields that an older file may lack (they get the dataclass default); every other field is required
    OPTIONAL_IN_FILE: ClassVar[frozenset[str]] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict with ``model_type`` and ``version`` first (what ``config.json`` holds)."""
        data = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {"model_type": self.MODEL_TYPE, "version": self.VERSION, **data}

    @classmethod
    def migrate(cls, data: dict[str, Any], version: int) -> dict[str, Any]:
        """Bring a file of an older ``version`` to the current format (override per config)."""
        return data

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], source: str = "config.json") -> C:
        """Validate a ``config.json`` dict and build the config; :class:`ConfigError` says what is wrong."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a config must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        model_type = data.pop("model_type", None)
        if model_type is not None and model_type != cls.MODEL_TYPE:
            raise ConfigError(
                f"{source} describes a {model_type!r}, not a {cls.MODEL_TYPE!r}: is this the right folder?"
            )
        version = data.pop("version", None)
        try:
            version = int(version) if version is not None else 1
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{source}: version must be an integer, got {version!r}") from None
        if version > cls.VERSION:
            raise ConfigError(
                f"{source} is {cls.MODEL_TYPE} format {version}, newer than this pecmae-hub understands "
                f"(format {cls.VERSION}): upgrade pecmae-hub to load it"
            )
        if version < cls.VERSION or model_type is None:
            warnings.warn(
                f"{source} is {cls.MODEL_TYPE} format {version}{'' if model_type else ' without model_type'}; "
                f"it was converted in memory to format {cls.VERSION}. Re-save it with save_pretrained() to "
                "upgrade the file: old formats will stop loading in a later release.",
                FutureWarning,
                stacklevel=3,
            )
            data = cls.migrate(data, version)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"{source}: unknown {cls.MODEL_TYPE} config fields {unknown} "
                f"(known: {sorted(names)}); was it written by a newer pecmae-hub?"
            )
        missing = sorted(names - set(data) - cls.OPTIONAL_IN_FILE)
        if missing:
            raise ConfigError(
                f"{source}: {cls.MODEL_TYPE} config lacks the required fields {missing}; "
                "the file is incomplete (no defaults are guessed for the architecture)"
            )
        try:
            return cls(**data)
        except ConfigError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            raise ConfigError(f"{source}: invalid {cls.MODEL_TYPE} config: {exc}") from None


@dataclass(frozen=True)
class AutoencoderRef:
    """Where a head's autoencoder lives, one of: a folder ``path`` inside the head's folder/repo, a
    Hub ``repo_id`` in our format at ``revision``, or an upstream ``name`` (e.g.
    ``"encodecmae-diffusion-4s"``) converted from its authors' repos, pinned by ``sources``
    (``{source repo id: commit}``). ``fingerprint`` and ``embedding_dim`` identify the model z came from.
    """

    repo_id: str | None = None
    revision: str | None = None
    path: str | None = None
    fingerprint: str | None = None
    embedding_dim: int | None = None
    name: str | None = None
    sources: dict[str, str] | None = None

    def __post_init__(self):
        given = [k for k in ("path", "repo_id", "name") if getattr(self, k)]
        if len(given) > 1:
            raise ConfigError(f"an autoencoder reference names one of path, repo_id or name, not {given}: {self}")
        # a reference comes from a model's config.json, i.e. from whoever published the model: it may name a
        # Hub repo, a known upstream model or a folder inside the model, never a place on the loading machine
        for key in ("path", "repo_id", "name", "revision"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"autoencoder {key} must be a string, got {type(value).__name__}")
        if self.path is not None and not _is_inside_path(self.path):
            raise ConfigError(f"autoencoder path {self.path!r} must be a folder inside the model folder (relative)")
        if self.repo_id is not None and not is_repo_id(self.repo_id):
            raise ConfigError(f"autoencoder repo_id {self.repo_id!r} is not a Hub repo id of the form 'org/name'")
        if self.name is not None and not _UPSTREAM_NAME.fullmatch(self.name):
            raise ConfigError(
                f"autoencoder name {self.name!r} is not an upstream model name (e.g. 'encodecmae-diffusion-4s')"
            )
        if self.sources is not None and (
            not isinstance(self.sources, dict)
            or not all(is_repo_id(k) and isinstance(v, str) for k, v in self.sources.items())
        ):
            raise ConfigError(f"autoencoder sources must map Hub repo ids to commits, got {self.sources!r}")

    @property
    def is_set(self) -> bool:
        return bool(self.path or self.repo_id or self.name)

    def replace(self, **changes: Any) -> AutoencoderRef:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: AutoencoderRef | dict[str, Any] | None, source: str = "config.json") -> AutoencoderRef:
        """Build from a config's ``autoencoder`` entry (None gives an empty reference)."""
        if isinstance(data, AutoencoderRef):
            return data
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: 'autoencoder' must be an object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{source}: unknown autoencoder reference fields {unknown} (known: {sorted(names)})")
        return cls(**data)


_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
_UPSTREAM_NAME = re.compile(r"[A-Za-z0-9][\w.-]{0,95}")


def is_repo_id(text: str) -> bool:
    """``org/name`` as the Hub spells repo ids (no ``..``/``--``, no path of this machine)."""
    return bool(_REPO_ID.fullmatch(text)) and ".." not in text and "--" not in text


def _is_inside_path(text: str) -> bool:
    """A relative path that stays inside its folder: no root, drive, home (``~``), ``..`` or empty part list."""
    parts = [p for p in text.replace("\\", "/").split("/") if p not in ("", ".")]
    return bool(parts) and not text.startswith(("/", "\\", "~")) and ":" not in text and ".." not in parts


def _plain(value: Any) -> Any:
    if isinstance(value, AutoencoderRef):
        return value.to_dict()
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
