"""The ``data`` stage of the paper recipes: from ``--data`` to the split files the later stages read.

Writes into ``WORK/splits``:

- ``train.tsv``, ``val.tsv``, ``test.tsv``: ``label<TAB>key`` with ``key = <parent folder>/<file name>``,
  the relative path ``pecmae extract`` gives a track listed by absolute path (so the feature of a
  track is ``WORK/features/<key>.npy``, e.g. ``blues/blues.00000.npy``);
- ``labels.txt`` (the dataset's label map, docs/architecture.md §11.1), ``tracks.txt`` (absolute
  paths of every split track, the input of the extract stage) and ``dataset.json`` (the summary below).

GTZAN follows the paper split (docs/architecture.md §11.2): a missing kept track is reported, not fatal
(the report then states the counts actually used, which differ from 731/96/91); files the split
excludes, the known-corrupt ``jazz.00054`` among them, are never decoded. Medley-Solos-DB uses its
official CSV; every listed file must exist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pecmae_hub.data.split_files import write_labels, write_tsv
from pecmae_hub.data.splits import SPLIT_NAMES, medley_solos_splits
from pecmae_hub.errors import DatasetError
from pecmae_hub.storage.atomic import atomic_write_text


@dataclass(frozen=True)
class PaperDataset:
    """A data set of the paper recipes."""

    name: str  # recipe / registry name
    preset: str  # TrainConfig preset (docs/architecture.md §8.1)
    dataset_id: str  # the model card's dataset id (a Hub dataset repo where one exists)
    title: str


DATASETS = {
    "gtzan": PaperDataset("gtzan", "gtzan", "marsyas/gtzan", "GTZAN"),
    "medley-solos-db": PaperDataset("medley-solos-db", "medley-solos-db", "medley-solos-db", "Medley-solos-DB"),
}


def _gtzan(data: str, data_dir: Path, progress: bool):
    from pecmae_hub.data.gtzan_source import GTZAN_KNOWN_CORRUPT, prepare_gtzan, scan_gtzan

    base, source = prepare_gtzan(data, data_dir / "gtzan", progress)
    scan = scan_gtzan(base)
    corrupt = [n for n in scan.excluded if n.rsplit(".", 1)[0] in GTZAN_KNOWN_CORRUPT]
    extra = {
        "kept_total": scan.kept_total,
        "excluded": scan.excluded,
        "missing": scan.missing,
        "known_corrupt_excluded": corrupt,
    }
    return scan.splits, base, source, extra


def _medley(data: str):
    root = Path(data).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"--data {data!r} must be the Medley-Solos-DB folder holding the audio and its "
            "metadata CSV (Medley-solos-DB_metadata.csv)"
        )
    return medley_solos_splits(root), root, f"folder {root}", {}


def prepare_splits(cfg, data_dir: Path, splits_dir: Path) -> dict:
    """Build the split of ``cfg.dataset`` from ``cfg.data`` and write the files above; returns the summary.

    Raises:
        DatasetError: unusable ``--data``, or a split without a single track.
    """
    if cfg.dataset == "gtzan":
        splits, root, source, extra = _gtzan(cfg.data, data_dir, cfg.progress)
    else:
        splits, root, source, extra = _medley(cfg.data)
    rows: dict[str, list[tuple[str, str]]] = {}
    tracks: dict[str, str] = {}
    for split in SPLIT_NAMES:
        rows[split] = []
        for label, rel in splits.split(split):
            path = (Path(root) / rel).absolute()
            key = f"{path.parent.name}/{path.name}"
            if tracks.setdefault(key, str(path)) != str(path):
                raise DatasetError(f"two tracks would share the feature name {key}: {tracks[key]} and {path}")
            rows[split].append((label, key))
        if not rows[split]:
            raise DatasetError(
                f"the {split} split of {cfg.spec.title} is empty under {root}: the recipe needs "
                "train, val and test tracks"
            )
    for split, items in rows.items():
        write_tsv(items, splits_dir / f"{split}.tsv")
    write_labels(splits_dir / "labels.txt", splits.labels)
    atomic_write_text(splits_dir / "tracks.txt", "".join(f"{p}\n" for p in tracks.values()))
    summary = {
        "dataset": cfg.dataset,
        "source": source,
        "root": str(Path(root).absolute()),
        "labels": list(splits.labels),
        "tracks": {s: len(rows[s]) for s in SPLIT_NAMES},
        "per_class": {s: splits.counts(s) for s in SPLIT_NAMES},
        **extra,
    }
    atomic_write_text(splits_dir / "dataset.json", json.dumps(summary, indent=1) + "\n")
    return summary
