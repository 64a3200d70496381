"""Where models live: the registry of short names, model files (folder or pinned Hub commit), cards, push.

Short names map to Hub repos of an organisation (``$PECMAE_HUB_ORG``, default ``pecmae-hub``);
``gm-solos`` is the model shipped inside the package. A repo holds a PECMAE model in the folder
layout documented in ``docs/hub.md``.

The registry promises only what exists: no organisation publishes the ``gtzan`` and
``medley-solos-db`` models yet. Each entry names the recipe that builds and publishes it
(``pecmae recipe gtzan --data hub --push ORG/gtzan-pecmae-5``); loading a name whose repo cannot be
found or reached raises :class:`ModelNotFoundError` saying so and giving that command
(:func:`registry_model_missing`), never a silent fallback to another model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pecmae_hub.errors import ModelNotFoundError

ORG_ENV = "PECMAE_HUB_ORG"
DEFAULT_ORG = "pecmae-hub"
DEFAULT_MODEL = "gm-solos"
AUTOENCODER_REPO_NAME = "encodecmae-diffusion-4s"  # the shared autoencoder repo of the registry models
LIBRARY_NAME = "pecmae-hub"
INFO_NAME, METRICS_NAME, PROTOTYPES_DIR = "pecmae.json", "metrics.json", "prototypes"


@dataclass(frozen=True)
class RegistryEntry:
    """A short model name: ``repo_name`` inside the registry organisation, or an embedded folder."""

    name: str
    repo_name: str | None
    dataset: str
    description: str
    revision: str | None = None
    recipe: str | None = None  # the command that builds it (``--push ORG/<repo_name>`` publishes it)

    @property
    def embedded(self) -> bool:
        return self.repo_name is None


REGISTRY: dict[str, RegistryEntry] = {
    e.name: e
    for e in (
        RegistryEntry(
            "gtzan",
            "gtzan-pecmae-5",
            "gtzan",
            "music genre (GTZAN, 10 classes), 5 prototypes per class",
            recipe="pecmae recipe gtzan --data hub",
        ),
        RegistryEntry(
            "medley-solos-db",
            "medley-solos-db-pecmae-20",
            "medley-solos-db",
            "solo instrument (Medley-solos-DB, 8 classes), 20 prototypes per class",
            recipe="pecmae recipe medley-solos-db --data MEDLEY_SOLOS_DB_FOLDER",
        ),
        RegistryEntry(
            "gm-solos", None, "gm-solos", "solo instrument (synthetic GM-Solos, shipped with the package; no download)"
        ),
    )
}


def hub_org() -> str:
    """Organisation of the registry repos: ``$PECMAE_HUB_ORG`` or ``pecmae-hub``."""
    return os.environ.get(ORG_ENV, "").strip() or DEFAULT_ORG


def registry_repo_id(name: str) -> str | None:
    """Hub repo id of a short name (None for the embedded model)."""
    entry = REGISTRY[name]
    return None if entry.embedded else f"{hub_org()}/{entry.repo_name}"


def autoencoder_repo_id() -> str:
    """The Hub repo of the autoencoder shared by the registry models."""
    return f"{hub_org()}/{AUTOENCODER_REPO_NAME}"


def known_names() -> list[str]:
    return sorted(REGISTRY)


def embedded_candidates(name: str = DEFAULT_MODEL) -> list[Path]:
    """Folders searched for an embedded model: next to the package (wheel), then the source tree."""
    package = Path(__file__).resolve().parents[1]
    return [package / "checkpoints" / name, package.parent / "checkpoints" / name]


def embedded_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """The shipped folder of an embedded model; :class:`ModelNotFoundError` naming the places looked at."""
    for folder in embedded_candidates(name):
        if (folder / "config.json").is_file():
            return folder
    places = " or ".join(str(p) for p in embedded_candidates(name))
    raise ModelNotFoundError(
        f"the embedded model {name!r} is not installed (looked for {places}); train it with "
        f"`pecmae recipe {name}` or use a Hub model such as 'gtzan'"
    )


def resolve_model(name_or_path: str | os.PathLike, revision: str | None = None) -> tuple[str, str | Path, str | None]:
    """Classify a model reference: ``("folder", Path, None)`` or ``("hub", repo_id, revision)``.

    Order: registry short name, existing folder, ``org/name`` repo id. Anything else raises
    :class:`ModelNotFoundError` listing the known short names.
    """
    text = os.fspath(name_or_path)
    if not text.strip():
        raise ModelNotFoundError(
            f"the model name is empty: give a short name ({', '.join(known_names())}), "
            "a Hub repo id 'org/name' or a model folder"
        )
    if text in REGISTRY:
        entry = REGISTRY[text]
        if entry.embedded:
            return "folder", embedded_model_dir(text), None
        return "hub", f"{hub_org()}/{entry.repo_name}", revision or entry.revision
    folder = Path(text).expanduser()
    if folder.is_dir():
        return "folder", folder, None
    if text.count("/") == 1 and not text.startswith((".", "/", "~")) and all(text.split("/")):
        return "hub", text, revision
    raise ModelNotFoundError(
        f"unknown model {text!r}: not a short name ({', '.join(known_names())}), not an existing folder, "
        f"and not a Hub repo id of the form 'org/name'"
    )


def build_command(name: str, org: str = "ORG") -> str:
    """The one command that trains registry model ``name`` and publishes it where the registry looks for it."""
    entry = REGISTRY[name]
    return f"{entry.recipe} --push {org}/{entry.repo_name}"


def registry_model_missing(name: str, cause: Exception | str) -> ModelNotFoundError:
    """The error for a registry short name whose Hub repo cannot be found or reached (``cause`` says which)."""
    entry = REGISTRY[name]
    return ModelNotFoundError(
        f"{cause}: the registry model {name!r} is looked up as {hub_org()}/{entry.repo_name} (${ORG_ENV} selects the "
        f"organisation) and could not be loaded from there. No organisation publishes PECMAE Hub's {name!r} model "
        f"yet; build and publish it with\n    {build_command(name)}\nthen set {ORG_ENV}=ORG (or load "
        f"'ORG/{entry.repo_name}' directly)."
    )
