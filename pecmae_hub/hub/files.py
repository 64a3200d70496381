"""Read-only access to a model's files (a local folder or a Hub repo pinned to one commit) and the
per-process cache of the autoencoders they name."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from pecmae_hub.configuration import AutoencoderRef
from pecmae_hub.errors import CheckpointError, ConfigError
from pecmae_hub.hub.model_json import CHECKS, check_object
from pecmae_hub.storage.pretrained import CONFIG_NAME, WEIGHTS_NAME, resolve_hub_file, resolve_local_file

if TYPE_CHECKING:
    import torch

    from pecmae_hub.models.autoencoder import Autoencoder

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_AUTOENCODERS: dict[tuple, Any] = {}  # in-process cache, keyed by resolved commit/folder and device


def inside_path(name: str, where: str) -> str:
    """``name`` as a clean relative POSIX path, or :class:`CheckpointError` when it could leave its folder."""
    text = str(name).replace("\\", "/")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if not text or text.startswith("/") or (len(text) > 1 and text[1] == ":") or ".." in parts or not parts:
        raise CheckpointError(f"{where} names the file {name!r}, which is not a path inside the model: refused")
    return "/".join(parts)


class ModelFiles:
    """Read-only access to the files of one model: a local folder, or a Hub repo pinned to one commit.

    The first file fetched from a Hub repo fixes the commit (read from the cache path
    ``snapshots/<sha>/``); later files are fetched at that exact commit, so a model never mixes
    files of two revisions, and cached files need no request at all. Offline (``local_files_only``
    or ``HF_HUB_OFFLINE=1``) only the cache is read. Every file is verified before it is used (a folder's
    ``checksums.json``, the Hub's digests); ``verify=False`` skips that, with a warning.
    """

    def __init__(
        self,
        *,
        folder: str | os.PathLike | None = None,
        repo_id: str | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        force_download: bool = False,
        subfolder: str = "",
        verify: bool = True,
    ):
        if (folder is None) == (repo_id is None):
            raise ValueError("give exactly one of folder= and repo_id=")
        self.folder = Path(folder) if folder is not None else None
        self.repo_id, self.revision, self.cache_dir = repo_id, revision, cache_dir
        self.local_files_only, self.token, self.force_download = local_files_only, token, force_download
        self.subfolder = subfolder.strip("/")
        self.verify = verify
        self.commit: str | None = revision if revision and _COMMIT.match(revision) else None
        self._fetched: set[str] = set()  # force_download applies once per file, not on every get()

    @property
    def is_hub(self) -> bool:
        return self.repo_id is not None

    def describe(self) -> str:
        if self.folder is not None:
            return str(self.folder / self.subfolder) if self.subfolder else str(self.folder)
        where = f"{self.repo_id}@{self.commit or self.revision or 'main'}"
        return f"{where}/{self.subfolder}" if self.subfolder else where

    def _offline(self) -> bool:
        from huggingface_hub import constants

        return self.local_files_only or bool(constants.HF_HUB_OFFLINE)

    @overload
    def get(self, filename: str, required: Literal[True] = ...) -> Path: ...
    @overload
    def get(self, filename: str, required: bool) -> Path | None: ...
    def get(self, filename: str, required: bool = True) -> Path | None:
        """Local path of ``filename`` (downloaded if needed); None for a missing optional file.

        ``filename`` comes from the model's own files (an index, a config), so it must name a file
        inside the model: absolute paths, ``..`` and links leading out are a :class:`CheckpointError`.
        """
        name = inside_path(f"{self.subfolder}/{filename}" if self.subfolder else filename, self.describe())
        if self.folder is not None:
            path = resolve_local_file(self.folder, name, required=required, verify=self.verify)
            if path is not None and not path.resolve().is_relative_to(self.folder.resolve()):
                raise CheckpointError(f"{filename!r} in {self.describe()} links outside the model folder")
            return path
        assert self.repo_id is not None
        if not required and self.commit:
            from huggingface_hub import try_to_load_from_cache
            from huggingface_hub.file_download import _CACHED_NO_EXIST

            cache_dir = None if self.cache_dir is None else os.fspath(self.cache_dir)
            if (
                try_to_load_from_cache(self.repo_id, name, cache_dir=cache_dir, revision=self.commit)
                is _CACHED_NO_EXIST
            ):
                return None  # the Hub already told us this commit has no such file
        path = resolve_hub_file(  # a repo id is never read as a local folder, whatever exists on disk
            self.repo_id,
            name,
            revision=self.commit or self.revision,
            cache_dir=self.cache_dir,
            local_files_only=self._offline(),
            token=self.token,
            force_download=self.force_download and name not in self._fetched,
            required=required,
            verify=self.verify,
        )
        self._fetched.add(name)
        if path is not None and self.commit is None:
            parts = Path(path).parts
            depth = len(Path(name).parts)
            if len(parts) > depth and _COMMIT.match(parts[-depth - 1]):
                self.commit = parts[-depth - 1]
        return path

    def json(self, filename: str, required: bool = True) -> Any:
        """The parsed JSON object ``filename`` of the model, checked against its shape
        (:mod:`pecmae_hub.hub.model_json`); None for a missing optional file.

        Raises:
            CheckpointError: not valid JSON, or not of the file's shape (a wrong type, naming the field).
        """
        path = self.get(filename, required=required)
        if path is None:
            return None
        try:
            data = json.loads(Path(path).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{filename} of {self.describe()} is not valid JSON: {exc}") from None
        CHECKS.get(filename, check_object)(data, f"{filename} of {self.describe()}")
        return data

    def local_dir(self) -> Path:
        """The local folder holding the files fetched so far (the snapshot folder for a Hub repo)."""
        return self.get(CONFIG_NAME).parent

    def child(self, subfolder: str) -> ModelFiles:
        """The files of ``subfolder`` of this model (same folder, or same repo *and commit*)."""
        sub = f"{self.subfolder}/{subfolder}" if self.subfolder else subfolder
        if self.folder is not None:
            return ModelFiles(folder=self.folder, subfolder=sub, verify=self.verify)
        return ModelFiles(
            repo_id=self.repo_id,
            revision=self.commit or self.revision,
            cache_dir=self.cache_dir,
            local_files_only=self.local_files_only,
            token=self.token,
            force_download=self.force_download,
            subfolder=sub,
            verify=self.verify,
        )


def clear_cache() -> None:
    """Forget the autoencoders loaded in this process."""
    _AUTOENCODERS.clear()


def load_autoencoder(
    ref: AutoencoderRef,
    files: ModelFiles,
    *,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
) -> tuple[Autoencoder, AutoencoderRef, str]:
    """The autoencoder a head's :class:`AutoencoderRef` names, loaded once per process per
    commit/folder and device. A ``path`` is relative to the head's ``files`` (same folder, or same
    repo and commit); a ``repo_id`` is fetched with the head's cache/offline/token options.

    Returns ``(autoencoder, pinned reference, description of where it came from)``; the pinned
    reference has a Hub repo's revision replaced by the exact commit that was loaded.
    """
    from pecmae_hub.models.autoencoder import Autoencoder

    if ref.name:
        key: tuple = (
            "upstream",
            ref.name,
            tuple(sorted((ref.sources or {}).items())),
            str(device),
            precision,
            files.verify,
        )
        if key not in _AUTOENCODERS or files.force_download:
            _AUTOENCODERS[key] = Autoencoder.from_pretrained(
                ref.name,
                revision=dict(ref.sources) if ref.sources else None,
                cache_dir=files.cache_dir,
                local_files_only=files._offline(),
                token=files.token,
                force_download=files.force_download,
                device=device,
                precision=precision,
                verify=files.verify,
                upstream_only=True,  # a name in a model's config never reaches a folder
            )
        ae = _AUTOENCODERS[key]
        sources = ae.upstream_sources or ref.sources or {}
        where = f"{ref.name} (" + ", ".join(f"{repo}@{commit[:12]}" for repo, commit in sources.items()) + ")"
        return ae, ref.replace(sources=sources or None), where
    if ref.path:
        ae_files = files.child(ref.path)
    elif ref.repo_id:
        ae_files = ModelFiles(
            repo_id=ref.repo_id,
            revision=ref.revision,
            cache_dir=files.cache_dir,
            local_files_only=files.local_files_only,
            token=files.token,
            force_download=files.force_download,
            verify=files.verify,
        )
    else:
        raise ConfigError(
            f"head {files.describe()} does not name its autoencoder (config['autoencoder'] has no "
            "'path', 'repo_id' or 'name'); pass autoencoder=... to PECMAE.from_pretrained"
        )
    config_path = ae_files.get(CONFIG_NAME)
    if ae_files.is_hub:
        key = ("hub", ae_files.repo_id, ae_files.commit, ae_files.subfolder, str(device), precision, files.verify)
    else:
        weights = config_path.parent / WEIGHTS_NAME
        stamp = weights.stat().st_mtime_ns if weights.exists() else 0
        key = ("folder", str(config_path.parent.resolve()), stamp, str(device), precision, files.verify)
    if key not in _AUTOENCODERS or files.force_download:
        ae_files.get(WEIGHTS_NAME)
        _AUTOENCODERS[key] = Autoencoder.from_pretrained(
            config_path.parent, device=device, precision=precision, verify=files.verify
        )
    pinned = ref.replace(revision=ae_files.commit) if ref.repo_id and ae_files.commit else ref
    return _AUTOENCODERS[key], pinned, ae_files.describe()
