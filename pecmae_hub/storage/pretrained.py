"""Our artefact format: a folder (or Hub repo) holding ``config.json`` + ``model.safetensors``.

Loading never unpickles and checks keys strictly, listing what is missing or unexpected. Both the
autoencoder and the prototype head save and load through :class:`PretrainedMixin`, with their
config class from :mod:`pecmae_hub.configuration`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, ClassVar, Literal, overload

import torch

from pecmae_hub.configuration import ModelConfig
from pecmae_hub.errors import CheckpointError, ModelNotFoundError
from pecmae_hub.storage.atomic import atomic_write, atomic_write_text
from pecmae_hub.storage.integrity import verify_hub_download, verify_in_folder, write_checksums

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@overload
def resolve_file(
    name_or_path: str | os.PathLike,
    filename: str,
    *,
    revision: str | None = ...,
    cache_dir: str | os.PathLike | None = ...,
    local_files_only: bool = ...,
    token: str | bool | None = ...,
    force_download: bool = ...,
    required: Literal[True] = ...,
) -> Path: ...
@overload
def resolve_file(
    name_or_path: str | os.PathLike,
    filename: str,
    *,
    revision: str | None = ...,
    cache_dir: str | os.PathLike | None = ...,
    local_files_only: bool = ...,
    token: str | bool | None = ...,
    force_download: bool = ...,
    required: bool,
) -> Path | None: ...
def resolve_file(
    name_or_path: str | os.PathLike,
    filename: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    force_download: bool = False,
    required: bool = True,
) -> Path | None:
    """Path of ``filename`` inside a local folder or a Hub repo (downloaded to the HF cache).

    Raises :class:`ModelNotFoundError` naming the repo/folder and the file when it cannot be found
    (and, offline, that it is not cached). Returns None for a missing optional file.
    """
    local = Path(os.fspath(name_or_path)).expanduser()
    if local.is_dir():
        path = local / filename
        if path.is_file():
            verify_in_folder(local, filename)
            return path
        if required:
            raise ModelNotFoundError(f"{filename} not found in model folder {local}")
        return None
    repo_id = os.fspath(name_or_path)
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/")):
        raise ModelNotFoundError(f"{repo_id!r} is neither an existing folder nor a Hub repo id of the form 'org/name'")
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import hf_hub_download

    from pecmae_hub.storage.connectivity import describe_unreachable, hub_offline, hub_reachable

    # an unreachable Hub is detected once (cached probe): read only the cache, fail fast, never wait on timeouts
    unreachable = not (local_files_only or hub_offline()) and not hub_reachable()
    if unreachable and force_download:
        raise ModelNotFoundError(
            f"cannot re-download {filename!r} of Hub repo {repo_id!r} (force_download): {describe_unreachable()}"
        )
    try:
        downloaded = Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                cache_dir=None if cache_dir is None else os.fspath(cache_dir),
                local_files_only=local_files_only or unreachable,
                token=token,
                force_download=force_download,
            )
        )
    except hf_errors.RepositoryNotFoundError:
        raise ModelNotFoundError(f"Hub repo {repo_id!r} not found (or private without a token)") from None
    except hf_errors.RevisionNotFoundError:
        raise ModelNotFoundError(f"revision {revision!r} not found in Hub repo {repo_id!r}") from None
    except hf_errors.LocalEntryNotFoundError:
        # must come before EntryNotFoundError: in huggingface_hub >= 1.0 it is a subclass of it
        from huggingface_hub import constants as hf_constants

        if not required and (local_files_only or unreachable or hf_constants.HF_HUB_OFFLINE):
            return None
        why = "local_files_only=True" if local_files_only else describe_unreachable()
        raise ModelNotFoundError(
            f"{filename!r} of Hub repo {repo_id!r} (revision {revision or 'main'}) is not in the local cache "
            f"and the Hub cannot be used ({why}): download it once while online"
        ) from None
    except hf_errors.EntryNotFoundError:
        if required:
            raise ModelNotFoundError(
                f"file {filename!r} not found in Hub repo {repo_id!r} (revision {revision or 'main'})"
            ) from None
        return None
    except hf_errors.HFValidationError as exc:
        raise ModelNotFoundError(f"{repo_id!r} is not a valid Hub repo id: {exc}") from None
    verify_hub_download(downloaded, repo_id, filename)
    return downloaded


def read_config(name_or_path, **kwargs) -> tuple[dict[str, Any], str]:
    """Read ``config.json`` of a folder or repo; returns (the parsed JSON, its path as text)."""
    path = resolve_file(name_or_path, CONFIG_NAME, **kwargs)
    try:
        return json.loads(Path(path).read_text()), str(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None


def load_state_dict_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``module`` and raise :class:`CheckpointError` listing any key or shape mismatch."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = [f"weights in {source} do not match {type(module).__name__}:"]
        if missing:
            parts.append(
                f"missing keys ({len(missing)}): {', '.join(missing[:12])}{' ...' if len(missing) > 12 else ''}"
            )
        if unexpected:
            parts.append(
                f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:12])}"
                f"{' ...' if len(unexpected) > 12 else ''}"
            )
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {'; '.join(shapes[:8])}")
        raise CheckpointError("\n  ".join(parts))
    module.load_state_dict(state, strict=True)


def save_folder(
    module: torch.nn.Module,
    config: dict[str, Any],
    folder: str | os.PathLike,
    state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (tensors made contiguous and unshared); ``state``
    replaces ``module.state_dict()`` (e.g. some tensors stored in a smaller dtype)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")
    source = module.state_dict() if state is None else state
    state = {k: v.detach().cpu().contiguous().clone() for k, v in source.items()}
    atomic_write(folder / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    return folder


def load_weights(name_or_path, **kwargs) -> tuple[dict[str, torch.Tensor], str]:
    """Read ``model.safetensors`` of a folder or repo; returns (state dict, its path as text)."""
    from safetensors.torch import load_file

    path = resolve_file(name_or_path, WEIGHTS_NAME, **kwargs)
    try:
        return load_file(str(path)), str(path)
    except Exception as exc:
        raise CheckpointError(f"cannot read safetensors file {path}: {exc}") from None


def copy_model_folder(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy a model folder's ``config.json`` + ``model.safetensors`` into ``dst``."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (src / name).is_file():
            raise ModelNotFoundError(f"{name} not found in model folder {src}")
        shutil.copyfile(src / name, dst / name)
    return dst


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` for an ``nn.Module`` whose ``config`` is a
    :class:`~pecmae_hub.configuration.ModelConfig` of type ``config_class`` and whose constructor
    takes that config as its first argument."""

    config_class: ClassVar[type[ModelConfig]]
    config: ModelConfig

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write ``config.json`` (versioned), ``model.safetensors`` and their ``checksums.json`` to ``folder``."""
        folder = save_folder(self, self.config.to_dict(), folder, self.state_for_saving())  # type: ignore[arg-type]
        write_checksums(folder, [CONFIG_NAME, WEIGHTS_NAME])
        return folder

    def state_for_saving(self) -> dict[str, torch.Tensor] | None:
        """The tensors ``save_pretrained`` writes; None: the module's state dict as it is."""
        return None

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        *,
        token: str | bool | None = None,
        force_download: bool = False,
        device: str | torch.device = "cpu",
    ):
        """Load a folder or Hub repo ``org/name`` (at ``revision``) in our format, in eval mode.

        ``cache_dir``, ``local_files_only``, ``token`` and ``force_download`` are passed to
        ``huggingface_hub``. Keys are checked strictly and nothing is unpickled.

        Raises:
            ModelNotFoundError: no such folder, repo, revision or file (or not cached while offline).
            ConfigError: the config is invalid, of another model type, or from a newer pecmae-hub.
            CheckpointError: unreadable weights, or weights that do not fit the config.
        """
        kwargs = dict(
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            force_download=force_download,
        )
        data, config_path = read_config(name_or_path, **kwargs)
        model = cls(cls.config_class.from_dict(data, source=config_path))  # type: ignore[call-arg]
        state, source = load_weights(name_or_path, **kwargs)
        load_state_dict_strict(model, state, source)  # type: ignore[arg-type]
        return model.to(device).eval()  # type: ignore[attr-defined]
