"""A model folder's fidelity record at load and save time.

At load, :func:`load_precision` turns ``precision="auto"`` into a mode for the folder about to load (its
``fidelity.json`` judged by :func:`~pecmae_hub.models.fidelity_record.resolve_precision` against the digests of
the files it decides). At save, :func:`save_fidelity` carries the loaded record into the new folder while it
still names the files written, or measures a new one (:mod:`pecmae_hub.fidelity`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pecmae_hub.configuration import AutoencoderRef
from pecmae_hub.hub.files import ModelFiles
from pecmae_hub.models.fidelity_record import identity_problem, note_once, resolve_precision
from pecmae_hub.models.ood import OOD_CONFIG_NAME
from pecmae_hub.models.precision import AUTO
from pecmae_hub.storage.pretrained import CONFIG_NAME

if TYPE_CHECKING:
    from pecmae_hub.pipeline import PECMAE


def load_precision(requested: str, device, record: dict | None, files: ModelFiles, spec: AutoencoderRef):
    """``(precision, reason)`` of a model about to load from ``files`` (``"auto"`` decided by its fidelity
    ``record``; any other mode is taken as asked for)."""
    from pecmae_hub.fidelity import decisive_files, reference_blocker

    if requested != AUTO:
        return requested, "asked for"
    blocker = reference_blocker(spec)
    judged = record is not None and blocker is None  # what the record must cover is read only when it is judged
    return resolve_precision(
        requested,
        device,
        record,
        decisive_files(files, spec) if judged else {},
        where=f"model {files.describe()}",
        classes=True,
        ood=judged and files.get(OOD_CONFIG_NAME, required=False) is not None,
        decoder=judged and _can_decode(files, spec),
        blocker=blocker,
    )


def save_fidelity(model: PECMAE, folder: Path, fidelity) -> None:
    """After ``model`` was saved to ``folder``: its loaded record carried over when it names the files written
    (``fidelity`` None or True), else a record measured on ``fidelity`` (held-out audio) or, for True, on
    synthetic probes; False writes none."""
    from pecmae_hub.fidelity import folder_digests, store_record, write_fidelity

    carried, fidelity = False, None if fidelity is False else fidelity
    if model.fidelity is not None and (fidelity is None or fidelity is True):
        problem = identity_problem(model.fidelity, folder_digests(folder, "model"))
        if problem is None:
            store_record(model.fidelity, folder)
            carried = True
        else:
            note_once(f"model {model.name}", f"the fidelity record is not carried into {folder}: {problem}")
    if fidelity is True and not carried:
        write_fidelity(model, folder, None, progress=True)
    elif fidelity is not None and fidelity is not True:
        write_fidelity(model, folder, fidelity, progress=True)


def _can_decode(files: ModelFiles, spec: AutoencoderRef) -> bool:
    """Whether the model's autoencoder has a decoder, from its config alone (it is not loaded yet)."""
    if spec.name:
        return True  # the upstream autoencoders known by name are all diffusion autoencoders
    if spec.path:
        ae_files = files.child(spec.path)
    else:
        ae_files = ModelFiles(
            repo_id=spec.repo_id,
            revision=spec.revision,
            cache_dir=files.cache_dir,
            local_files_only=files.local_files_only,
            token=files.token,
            verify=files.verify,
        )
    config = ae_files.json(CONFIG_NAME)
    return bool(config.get("denoiser_layers", 8)) and bool(config.get("cls_layers", 2))
