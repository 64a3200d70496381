"""Publishing a model folder to the Hub, and where a published repo can be seen."""

from __future__ import annotations

import os


def repo_url(repo_id: str, repo_type: str = "model") -> str:
    """The web address of ``repo_id`` on the configured Hub endpoint (``HF_ENDPOINT``)."""
    from huggingface_hub import constants

    prefix = {"model": "", "dataset": "datasets/", "space": "spaces/"}.get(repo_type, "")
    return f"{constants.ENDPOINT.rstrip('/')}/{prefix}{repo_id}"


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload ``folder`` to ``repo_id`` (created if missing; branch ``revision`` created if missing).

    Returns the commit sha of the upload.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, token=token)
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True, token=token)
    info = api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        revision=revision,
        token=token,
        commit_message=commit_message or "Upload PECMAE model with pecmae-hub",
    )
    return info.oid
