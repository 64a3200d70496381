"""Our artefact format: a folder (or Hub repo) holding ``config.json`` + ``model.safetensors``.

Loading never unpickles and checks keys strictly, listing what is missing or unexpected.
Both the autoencoder and the prototype head use these helpers (via :class:`SavableModel`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from pecmae_hub.errors import CheckpointError, ModelNotFoundError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def resolve_file(
    name_or_path: str | os.PathLike,
    filename: str,
    *,
    revision: str | None = None,
    cache_dir: str | None = None,
    local_files_only: bool = False,
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
            return path
        if required:
            raise ModelNotFoundError(f"{filename} not found in model folder {local}")
        return None
    repo_id = os.fspath(name_or_path)
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/")):
        raise ModelNotFoundError(f"{repo_id!r} is neither an existing folder nor a Hub repo id of the form 'org/name'")
    from huggingface_hub import hf_hub_download
    from huggingface_hub import errors as hf_errors

    try:
        return Path(
            hf_hub_download(
                repo_id, filename, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
            )
        )
    except hf_errors.RepositoryNotFoundError:
        raise ModelNotFoundError(f"Hub repo {repo_id!r} not found (or private without a token)") from None
    except hf_errors.RevisionNotFoundError:
        raise ModelNotFoundError(f"revision {revision!r} not found in Hub repo {repo_id!r}") from None
    except hf_errors.LocalEntryNotFoundError:
        # must come before EntryNotFoundError: in huggingface_hub >= 1.0 it is a subclass of it
        from huggingface_hub import constants as hf_constants

        if not required and (local_files_only or hf_constants.HF_HUB_OFFLINE):
            return None
        raise ModelNotFoundError(
            f"{filename!r} of Hub repo {repo_id!r} (revision {revision or 'main'}) is not in the local cache "
            "and the Hub cannot be reached (offline mode or no network)"
        ) from None
    except hf_errors.EntryNotFoundError:
        if required:
            raise ModelNotFoundError(f"file {filename!r} not found in Hub repo {repo_id!r} (revision {revision or 'main'})") from None
        return None
    except hf_errors.HFValidationError as exc:
        raise ModelNotFoundError(f"{repo_id!r} is not a valid Hub repo id: {exc}") from None


def read_config(name_or_path, **kwargs) -> dict[str, Any]:
    """Read ``config.json`` of a folder or repo."""
    path = resolve_file(name_or_path, CONFIG_NAME, **kwargs)
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
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
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:12])}{' ...' if len(missing) > 12 else ''}")
        if unexpected:
            parts.append(
                f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:12])}{' ...' if len(unexpected) > 12 else ''}"
            )
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {'; '.join(shapes[:8])}")
        raise CheckpointError("\n  ".join(parts))
    module.load_state_dict(state, strict=True)


def save_folder(module: torch.nn.Module, config: dict[str, Any], folder: str | os.PathLike) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (tensors made contiguous and unshared)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    return folder


def load_weights(name_or_path, **kwargs) -> tuple[dict[str, torch.Tensor], str]:
    """Read ``model.safetensors`` of a folder or repo; returns (state dict, its path as text)."""
    from safetensors.torch import load_file

    path = resolve_file(name_or_path, WEIGHTS_NAME, **kwargs)
    try:
        return load_file(str(path)), str(path)
    except Exception as exc:
        raise CheckpointError(f"cannot read safetensors file {path}: {exc}") from None
