"""The recipes' ``--autoencoder``: what it names, how it is loaded, and what its licence asks of a published model.

``--autoencoder`` takes one of

- an existing **folder** in our format (``pecmae convert`` output, or a tiny test model);
- a **Hub repo id** ``org/name`` in our format (pinned to the commit it was loaded from);
- an **upstream name** such as ``encodecmae-diffusion-4s`` (the default): downloaded from its authors'
  repos and converted once by :func:`pecmae_hub.convert.upstream.materialize` (cached; the source
  commits are recorded).

Where the autoencoder came from decides how a published model refers to it (docs/hub.md): a Hub repo
is referenced at its commit; a folder or an upstream name is either bundled into the model repo
(``--bundle-autoencoder``) or uploaded to its own repo and referenced there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pecmae_hub.errors import ModelNotFoundError
from pecmae_hub.models.autoencoder import Autoencoder

DEFAULT_AUTOENCODER = "encodecmae-diffusion-4s"


@dataclass
class AutoencoderSource:
    """Where the recipe's autoencoder came from."""

    kind: str  # "folder" | "hub" | "name"
    name: str  # the --autoencoder value
    folder: Path | None = None
    repo_id: str | None = None
    revision: str | None = None  # the exact commit of a Hub autoencoder
    sources: dict[str, str] | None = None  # upstream name: {source repo: commit} it was converted from

    def describe(self) -> str:
        if self.kind == "hub":
            return f"Hub repo {self.repo_id}" + (f" at commit {self.revision}" if self.revision else "")
        if self.kind == "name":
            pinned = ", ".join(f"{repo}@{commit[:12]}" for repo, commit in (self.sources or {}).items())
            return f"upstream autoencoder {self.name!r} converted by pecmae-hub" + (f" from {pinned}" if pinned else "")
        return f"local folder {self.folder.name if self.folder else self.name}"


def classify_autoencoder_arg(name: str) -> str:
    """``"folder"``, ``"hub"`` or ``"name"`` for an ``--autoencoder`` value (without loading anything)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return "folder"
    if name.startswith((".", "/", "~", "\\")) or name.count("/") > 1 or (len(name) > 1 and name[1] == ":"):
        return "folder"  # meant as a path; loading says that it does not exist
    return "hub" if name.count("/") == 1 else "name"


def load_autoencoder_source(
    name: str, revision: str | None = None, device: str = "cpu"
) -> tuple[Autoencoder, AutoencoderSource]:
    """Load the autoencoder an ``--autoencoder`` value names (see the module doc).

    Raises:
        ModelNotFoundError: a missing folder or repo, or an upstream name this installation cannot convert.
    """
    kind = classify_autoencoder_arg(name)
    if kind == "folder":
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise ModelNotFoundError(
                f"autoencoder folder {folder} does not exist (--autoencoder takes a folder, "
                "a Hub repo id org/name or an upstream name such as "
                f"{DEFAULT_AUTOENCODER})"
            )
        return Autoencoder.from_pretrained(folder, device=device), AutoencoderSource("folder", name, folder=folder)
    if kind == "hub":
        from pecmae_hub.hub.files import ModelFiles
        from pecmae_hub.storage.pretrained import CONFIG_NAME, WEIGHTS_NAME

        files = ModelFiles(repo_id=name, revision=revision)
        files.get(CONFIG_NAME)
        files.get(WEIGHTS_NAME)
        ae = Autoencoder.from_pretrained(files.local_dir(), device=device)
        return ae, AutoencoderSource("hub", name, repo_id=name, revision=files.commit or revision)
    from pecmae_hub.convert.upstream import materialize, sources_of

    try:
        folder = Path(materialize(name, revision=revision))
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(
            f"autoencoder {name!r}: {str(exc).rstrip('.')}. --autoencoder also takes a folder converted with "
            "`pecmae convert` "
            "(docs/convert.md) or a Hub repo id org/name of a converted autoencoder"
        ) from None
    ae = Autoencoder.from_pretrained(folder, device=device)
    return ae, AutoencoderSource("name", name, folder=folder, sources=sources_of(folder))


def autoencoder_licence(ae: Autoencoder, source: AutoencoderSource) -> tuple[str, list[str]]:
    """``(licence id for the model card, licence notes)`` of a model built on ``ae``.

    EnCodec-based autoencoders carry Meta's EnCodec weights (CC-BY-NC 4.0: non-commercial); the mel
    front end has no third-party weights.
    """
    where = f"Autoencoder: {source.describe()}" + (
        f"; provenance recorded in its config: {ae.config.source}" if ae.config.source else ""
    )
    if ae.config.frontend == "encodec":
        from pecmae_hub.convert.autoencoder import LICENCE_NOTES

        return "cc-by-nc-4.0", [
            where + ".",
            LICENCE_NOTES["encodec"],
            LICENCE_NOTES["autoencoder"],
            "Because the autoencoder embeds EnCodec, this model may be used for non-commercial purposes only.",
        ]
    return "mit", [
        where + ".",
        "The autoencoder uses a log-mel front end and a Griffin-Lim vocoder: it embeds no third-party weights.",
    ]
