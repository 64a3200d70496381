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

from pecmae_hub.configuration import ModelConfig, is_repo_id
from pecmae_hub.errors import CheckpointError, ConfigError, ModelNotFoundError, PecmaeError
from pecmae_hub.storage.atomic import atomic_write, atomic_write_text, refuse_links
from pecmae_hub.storage.integrity import CHECKSUMS_NAME, verify_hub_download, verify_in_folder, write_checksums

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
    verify: bool = ...,
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
    verify: bool = ...,
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
    verify: bool = True,
) -> Path | None:
    """Path of ``filename`` inside a local folder or a Hub repo (downloaded to the HF cache), verified.

    A folder's file is checked against its ``checksums.json``, a Hub file against the Hub's digest
    (:mod:`pecmae_hub.storage.integrity`; ``verify=False`` skips both, with a warning).
    Raises :class:`ModelNotFoundError` naming the repo/folder and the file when it cannot be found
    (and, offline, that it is not cached), :class:`CheckpointError` when it cannot be verified.
    Returns None for a missing optional file.
    """
    local = Path(os.fspath(name_or_path)).expanduser()
    if local.is_dir():
        return resolve_local_file(local, filename, required=required, verify=verify)
    return resolve_hub_file(
        os.fspath(name_or_path),
        filename,
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        token=token,
        force_download=force_download,
        required=required,
        verify=verify,
    )


def resolve_local_file(folder: Path, filename: str, *, required: bool = True, verify: bool = True) -> Path | None:
    """``folder/filename`` after checking it (:func:`~pecmae_hub.storage.integrity.verify_in_folder`)."""
    path = folder / filename
    if path.is_file():
        verify_in_folder(folder, filename, verify=verify)
        return path
    if required:
        raise ModelNotFoundError(f"{filename} not found in model folder {folder}")
    return None


def resolve_hub_file(
    repo_id: str,
    filename: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    force_download: bool = False,
    required: bool = True,
    verify: bool = True,
) -> Path | None:
    """``filename`` of Hub repo ``repo_id`` (never a local folder), downloaded to the HF cache and verified.

    The Hub is used only when it answers (:func:`~pecmae_hub.storage.connectivity.hub_reachable`, a short
    HTTP probe) and with short timeouts and no retries (:func:`~pecmae_hub.storage.connectivity.hub_preflight`),
    so a Hub that does not answer costs seconds, not minutes: a cached file then loads, an uncached one is a
    :class:`ModelNotFoundError`.
    """
    if not is_repo_id(repo_id):
        raise ModelNotFoundError(f"{repo_id!r} is neither an existing folder nor a Hub repo id of the form 'org/name'")
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    from pecmae_hub.storage.connectivity import (
        HUB_ETAG_TIMEOUT,
        HubNotAnswering,
        describe_unreachable,
        hub_offline,
        hub_preflight,
        hub_reachable,
    )

    cache = None if cache_dir is None else os.fspath(cache_dir)
    # an unreachable Hub is detected once (cached probe): read only the cache, fail fast, never wait on timeouts
    unreachable = not (local_files_only or hub_offline()) and not hub_reachable()
    if unreachable and force_download:
        raise ModelNotFoundError(
            f"cannot re-download {filename!r} of Hub repo {repo_id!r} (force_download): {describe_unreachable()}"
        )
    offline = local_files_only or unreachable or hub_offline()
    if not offline and (force_download or try_to_load_from_cache(repo_id, filename, cache, revision) is None):
        try:  # not cached: the Hub must answer now, within the short timeout, or the download is not tried
            hub_preflight(repo_id, filename, revision, token)
        except HubNotAnswering as exc:
            raise ModelNotFoundError(f"cannot download {filename!r} of Hub repo {repo_id!r}: {exc}") from None
        except hf_errors.HfHubHTTPError:
            pass  # the Hub answered (no such repo, revision or file ...): hf_hub_download says it again, and
            # records a missing file in the cache
    try:
        downloaded = Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                cache_dir=cache,
                local_files_only=offline,
                token=token,
                force_download=force_download,
                etag_timeout=HUB_ETAG_TIMEOUT,
            )
        )
    except hf_errors.RepositoryNotFoundError:
        raise ModelNotFoundError(f"Hub repo {repo_id!r} not found (or private without a token)") from None
    except hf_errors.RevisionNotFoundError:
        raise ModelNotFoundError(f"revision {revision!r} not found in Hub repo {repo_id!r}") from None
    except hf_errors.LocalEntryNotFoundError:
        # must come before EntryNotFoundError: in huggingface_hub >= 1.0 it is a subclass of it
        if not required and offline:
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
    except PecmaeError:
        raise
    except Exception as exc:  # a timeout, a reset connection or an HTTP error in the middle of a download
        raise ModelNotFoundError(
            f"cannot download {filename!r} of Hub repo {repo_id!r}: {type(exc).__name__}: {exc}"
        ) from None
    verify_hub_download(downloaded, repo_id, filename, token=token, verify=verify, online=not offline)
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
    if not (missing or unexpected or shapes):
        check_finite(state, source)
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


def check_finite(state: dict[str, torch.Tensor], source: str) -> None:
    """:class:`CheckpointError` naming the first tensor of ``state`` that holds NaN or infinite values: such
    weights give NaN scores, and argmax of NaN is class 0, a made-up answer."""
    for key, tensor in state.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(
                f"tensor {key!r} in {source} holds {bad} NaN or infinite value(s) (of {tensor.numel()}): the weights "
                "are damaged (a diverged training or a corrupted file) and are refused"
            )


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


def copy_model_folder(src: str | os.PathLike, dst: str | os.PathLike, *, verify: bool = True) -> Path:
    """Copy a model folder's ``config.json`` + ``model.safetensors`` into ``dst``, verified on the way
    (:func:`resolve_local_file`), with their ``checksums.json``."""
    src, dst = Path(src), Path(dst)
    refuse_links(dst, [CONFIG_NAME, WEIGHTS_NAME, CHECKSUMS_NAME])
    dst.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        path = resolve_local_file(src, name, verify=verify)
        atomic_write(dst / name, lambda tmp, path=path: shutil.copyfile(path, tmp))
    write_checksums(dst, [CONFIG_NAME, WEIGHTS_NAME])
    return dst


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` for an ``nn.Module`` whose ``config`` is a
    :class:`~pecmae_hub.configuration.ModelConfig` of type ``config_class`` and whose constructor
    takes that config as its first argument."""

    config_class: ClassVar[type[ModelConfig]]
    config: ModelConfig

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write ``config.json`` (versioned), ``model.safetensors`` and their ``checksums.json`` to ``folder``."""
        refuse_links(folder, [CONFIG_NAME, WEIGHTS_NAME, CHECKSUMS_NAME])
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
        verify: bool = True,
    ):
        """Load a folder or Hub repo ``org/name`` (at ``revision``) in our format, in eval mode.

        ``cache_dir``, ``local_files_only``, ``token`` and ``force_download`` are passed to
        ``huggingface_hub``. Keys are checked strictly, tensors must hold finite numbers, and nothing is
        unpickled. Files are verified (a folder's ``checksums.json``, the Hub's digests); ``verify=False``
        loads an old or third-party folder without ``checksums.json``, with a warning.

        Raises:
            ModelNotFoundError: no such folder, repo, revision or file (or not cached while offline).
            ConfigError: the config is invalid, of another model type, or from a newer pecmae-hub.
            CheckpointError: unreadable, unverifiable or non-finite weights, or weights that do not fit the config.
        """
        kwargs = dict(
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            force_download=force_download,
            verify=verify,
        )
        data, config_path = read_config(name_or_path, **kwargs)
        config = cls.config_class.from_dict(data, source=config_path)
        try:
            model = cls(config)  # type: ignore[call-arg]
        except PecmaeError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:  # a field of the wrong type or range
            raise ConfigError(f"{config_path}: invalid {config.MODEL_TYPE} config: {exc}") from None
        state, source = load_weights(name_or_path, **kwargs)
        load_state_dict_strict(model, state, source)  # type: ignore[arg-type]
        return model.to(device).eval()  # type: ignore[attr-defined]
