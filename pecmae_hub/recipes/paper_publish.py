"""The ``push`` stage of the paper recipes: upload ``WORK/model`` (and, when needed, its autoencoder).

How the published model finds its autoencoder (docs/hub.md, "Saving and publishing"):

- ``--bundle-autoencoder``: the autoencoder goes into the model repo (``autoencoder/``); the card
  carries its licence notes (EnCodec weights: CC-BY-NC 4.0);
- an autoencoder loaded from a Hub repo: referenced there, pinned to the commit the features came from;
- an autoencoder loaded by upstream name (the default ``encodecmae-diffusion-4s``): referenced by that name and
  the source commits it was converted from, so users get it from its authors' repos (no autoencoder repo);
- an autoencoder from a local folder: uploaded to its own repo (``--autoencoder-repo``,
  default ``ORG/<upstream name or folder name>`` in the organisation of ``--push``) with a card, then
  referenced at that commit, so that several heads share one copy.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from pecmae_hub.configuration import AutoencoderRef
from pecmae_hub.errors import ConfigError
from pecmae_hub.hub.publish import push_folder, repo_url
from pecmae_hub.hub.registry import ORG_ENV, REGISTRY


def default_autoencoder_repo(org: str, source) -> str:
    """``ORG/<name>`` for an autoencoder that is not on the Hub yet."""
    base = source.name if source.kind == "name" else Path(source.folder or source.name).name
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.") or "autoencoder"
    return f"{org}/{slug}"


def push_autoencoder(ae, source, repo_id: str, *, licence: str, notes: list[str], private: bool = False) -> str:
    """Upload ``ae`` (config + weights, and the source folder's README.md or a new card) to ``repo_id``;
    returns the commit sha."""
    from pecmae_hub.hub.cards import render_autoencoder_reference_card

    with tempfile.TemporaryDirectory(prefix="pecmae-ae-push-") as tmp:
        ae.save_pretrained(tmp)
        readme = Path(source.folder) / "README.md" if source.folder else None
        if readme is not None and readme.is_file():
            shutil.copyfile(readme, Path(tmp) / "README.md")
        else:
            card = render_autoencoder_reference_card(
                title=repo_id.split("/")[-1],
                source=source.describe(),
                config=ae.config,
                licence=licence,
                licence_notes=notes,
            )
            (Path(tmp) / "README.md").write_text(card)
        return push_folder(tmp, repo_id, private=private, commit_message="Upload autoencoder with pecmae-hub")


def publish(recipe, repo_id: str) -> dict:
    """Push ``recipe``'s model folder to ``repo_id`` as described in the module doc; returns the stage summary."""
    from pecmae_hub.pipeline import PECMAE
    from pecmae_hub.recipes.sources import autoencoder_licence

    cfg = recipe.cfg
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ConfigError(f"--push {repo_id!r}: give the target repo as ORG/NAME")
    ae, source = recipe.autoencoder()
    model = PECMAE.from_pretrained(recipe.path["model"], device="cpu", autoencoder=ae)
    ae_repo = ae_commit = None
    if cfg.bundle_autoencoder:
        model.autoencoder_ref = AutoencoderRef()
    elif source.kind == "name":  # referenced by upstream name + source commits: no autoencoder repo needed
        model.autoencoder_ref = AutoencoderRef(name=source.name, sources=source.sources)
    elif source.kind == "hub":
        ae_repo, ae_commit = source.repo_id, source.revision
    else:
        ae_repo = cfg.autoencoder_repo or default_autoencoder_repo(repo_id.split("/")[0], source)
        licence, notes = autoencoder_licence(ae, source)
        ae_commit = push_autoencoder(ae, source, ae_repo, licence=licence, notes=notes, private=cfg.private)
        recipe.say(f"push: autoencoder uploaded to {repo_url(ae_repo)} (commit {ae_commit})")
        published = f"Autoencoder: {source.describe()}, published for this model as {ae_repo} (commit {ae_commit})."
        model.info = {
            **model.info,
            "autoencoder_source": published,
            "licence_notes": [published, *list(model.info.get("licence_notes") or [])[1:]],
        }
    sha = model.push_to_hub(
        repo_id,
        private=cfg.private,
        render=False,
        autoencoder_repo_id=ae_repo,
        autoencoder_revision=ae_commit,
        commit_message=f"PECMAE {cfg.dataset} model from `pecmae recipe {cfg.dataset}`",
    )
    recipe.say(f"push: model uploaded to {repo_url(repo_id)} (commit {sha})")
    org, name = repo_id.split("/")
    entry = REGISTRY.get(cfg.dataset)
    if entry is not None and entry.repo_name == name:
        recipe.say(
            f"push: with {ORG_ENV}={org}, PECMAE.from_pretrained({cfg.dataset!r}) loads it "
            f"(and `pecmae classify --model {cfg.dataset}`)"
        )
    else:
        hint = f" (the short name {cfg.dataset!r} looks for {org}/{entry.repo_name})" if entry else ""
        recipe.say(f"push: load it with PECMAE.from_pretrained({repo_id!r}){hint}")
    return {
        "repo": repo_id,
        "commit": sha,
        "autoencoder_repo": ae_repo,
        "autoencoder_commit": ae_commit,
        "autoencoder_bundled": ae_repo is None,
    }
