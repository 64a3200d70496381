"""Dataset splits: label maps, GTZAN (paper split), Medley-Solos-DB and generic TSV / class folders.

Every loader returns a :class:`DatasetSplits`: ordered class names plus ``(label, relative/path)`` items
per split (``/`` paths relative to ``DatasetSplits.root``). Label order is the given order (label map,
``labels.txt``, ``labels=``); names are sorted only when nothing gives one. The split files themselves
(``label<TAB>path`` TSVs, ``labels.txt``) are read and written by :mod:`pecmae_hub.data.split_files`.
See ``docs/datasets.md``.
"""
from __future__ import annotations

import csv
import inspect
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

from pecmae_hub.audio import AUDIO_EXTENSIONS, find_audio_files
from pecmae_hub.data.split_files import LABELS_FILE, Item, read_labels, read_tsv, write_labels, write_tsv
from pecmae_hub.errors import ConfigError, DatasetError

SPLIT_NAMES = ("train", "val", "test")

GTZAN_GENRES = ("blues", "classical", "country", "disco", "hiphop",
                "jazz", "metal", "pop", "reggae", "rock")
GTZAN_SHORT_LABELS = ("blu", "cla", "cou", "dis", "hip", "jaz", "met", "pop", "reg", "roc")
MEDLEY_SOLOS_LABELS = ("clarinet", "distorted electric guitar", "female singer", "flute", "piano",
                       "tenor saxophone", "trumpet", "violin")
XAI_GENRE_LABELS = ("afrobeat", "ambient", "bolero", "bop", "bossa nova", "contemporary jazz", "cumbia",
                    "disco", "doo wop", "dub", "electro", "europop", "funk", "gospel", "heavy metal",
                    "house", "indie rock", "punk", "techno", "trance", "salsa", "samba", "soul", "swing")
NSYNTH_LABELS = ("bass", "brass", "flute", "guitar", "keyboard", "mallet", "organ", "reed", "string",
                 "vocal")
LABEL_MAPS: dict[str, tuple[str, ...]] = {
    "gtzan": GTZAN_GENRES, "medley_solos": MEDLEY_SOLOS_LABELS,
    "xai_genre": XAI_GENRE_LABELS, "nsynth": NSYNTH_LABELS,
}
#: other spellings of a map's labels (upstream GTZAN TSVs use the short ones) -> our class names
LABEL_ALIASES: dict[str, dict[str, str]] = {"gtzan": dict(zip(GTZAN_SHORT_LABELS, GTZAN_GENRES))}
_MAP_NAMES = {"medley_solos_db": "medley_solos", "medley": "medley_solos", "xaigenre": "xai_genre"}


def _map_key(name: str) -> str:
    key = name.lower().replace("-", "_")
    key = _MAP_NAMES.get(key, key)
    if key not in LABEL_MAPS:
        raise ConfigError(f"unknown label map {name!r}; known: {', '.join(LABEL_MAPS)}")
    return key


def label_map(name: str) -> tuple[str, ...]:
    """Ordered class names of a known dataset (``gtzan``, ``medley_solos``, ``xai_genre``, ``nsynth``)."""
    return LABEL_MAPS[_map_key(name)]


def label_aliases(name: str) -> dict[str, str]:
    """Alternative label spellings of a known dataset mapped to its class names (may be empty)."""
    return dict(LABEL_ALIASES.get(_map_key(name), {}))


@dataclass
class DatasetSplits:
    """Ordered class names and the ``(label, relative path)`` items of the train/val/test splits."""

    labels: tuple[str, ...]
    train: list[Item]
    val: list[Item]
    test: list[Item]
    root: Path | None = None

    def __post_init__(self) -> None:
        self.labels = tuple(str(label) for label in self.labels)
        if len(set(self.labels)) != len(self.labels):
            raise DatasetError(f"duplicate class names in labels {list(self.labels)}")
        for name in SPLIT_NAMES:
            items = [(str(label), str(path)) for label, path in getattr(self, name)]
            for label, path in (i for i in items if i[0] not in self.labels):
                raise DatasetError(f"split {name!r}: label {label!r} of {path!r} is not one of "
                                   f"{list(self.labels)}")
            setattr(self, name, items)
        self.root = Path(self.root) if self.root is not None else None

    def split(self, name: str) -> list[Item]:
        """The items of split ``name`` (``train``, ``val`` or ``test``)."""
        if name not in SPLIT_NAMES:
            raise ConfigError(f"unknown split {name!r}; expected one of {SPLIT_NAMES}")
        return getattr(self, name)

    def label_ids(self, name: str) -> list[int]:
        """Integer ids of the items of split ``name``, in item order."""
        return [self.labels.index(label) for label, _ in self.split(name)]

    def counts(self, name: str) -> list[int]:
        """Number of items per class of split ``name``, in label order."""
        ids = self.label_ids(name)
        return [ids.count(i) for i in range(len(self.labels))]


#: tracks left out of the paper split (docs/architecture.md §11.2), by genre; 918 of the 1000 tracks remain
GTZAN_EXCLUDED: dict[str, frozenset[int]] = {genre: frozenset(ids) for genre, ids in {
    "blues": [], "classical": [*range(20, 27), 49], "country": [2, 39],
    "disco": [3, 11, 20, 23, 26, 27, 29, 34], "hiphop": [3, 5, 26, 29, 31, 38, 40],
    "jazz": [0, 1, 52, 54, 66], "metal": [21, 29, 33, 46, 50, 51, 58, 59, 60, 71, 72, 73, 79, 84, 86, 97],
    "pop": [9, 15, 21, 22, 61, 63, 65, 81], "reggae": [52, 86, 99],
    "rock": [1, 2, 4, *range(10, 16), 27, 36, 38, 40, 47, 62, 63, *range(71, 79), 90],
}.items()}
_GTZAN_FILE = re.compile(r"^([a-z]+)\.(\d{5})(\.[A-Za-z0-9]+)$")


def gtzan_split_of(track: int) -> str:
    """Paper split of GTZAN track number ``track``: last digit 9 -> test, 8 -> val, 0-7 -> train."""
    return {9: "test", 8: "val"}.get(track % 10, "train")


def gtzan_splits_from_names(names: Iterable[str], *, root: str | Path | None = None,
                            extensions: Sequence[str] | None = None,
                            require_complete: bool = True) -> DatasetSplits:
    """Paper GTZAN split (731/96/91) from file names such as ``blues/blues.00000.wav``.

    A bare ``blues.00000.wav`` is placed under ``blues/``. Names that are not GTZAN tracks, have an
    extension outside ``extensions`` (None: any) or are excluded are ignored. With
    ``require_complete``, a missing kept track raises :class:`DatasetError` naming a few.
    """
    exts = None if extensions is None else {e.lower() for e in extensions}
    found: dict[tuple[str, int], str] = {}
    for name in names:
        path = PurePosixPath(str(name).replace("\\", "/"))
        match = _GTZAN_FILE.match(path.name)
        genre, track, ext = match.groups() if match else ("", "0", "")
        track = int(track)
        if genre not in GTZAN_EXCLUDED or track > 99 or track in GTZAN_EXCLUDED[genre] \
                or (exts is not None and ext.lower() not in exts):
            continue
        rel = path.as_posix() if len(path.parts) > 1 else f"{genre}/{path.name}"
        if found.setdefault((genre, track), rel) != rel:
            raise DatasetError(f"GTZAN track {genre}.{track:05d} appears twice: "
                               f"{found[(genre, track)]} and {rel}")
    kept = [(g, t) for g in GTZAN_GENRES for t in range(100) if t not in GTZAN_EXCLUDED[g]]
    missing = [f"{g}/{g}.{t:05d}" for g, t in kept if (g, t) not in found]
    if missing and require_complete:
        raise DatasetError(f"GTZAN: {len(missing)} of the {len(kept)} tracks of the paper split are missing "
                           f"{'in the given names' if root is None else f'under {root}'}, e.g. "
                           f"{', '.join(missing[:5])}")
    splits: dict[str, list[Item]] = {name: [] for name in SPLIT_NAMES}
    for genre, track in [key for key in kept if key in found]:
        splits[gtzan_split_of(track)].append((genre, found[(genre, track)]))
    return DatasetSplits(GTZAN_GENRES, root=root, **splits)


def gtzan_splits(root: str | Path, *, extensions: Sequence[str] = AUDIO_EXTENSIONS) -> DatasetSplits:
    """Paper GTZAN split from a folder tree ``<root>/<genre>/<genre>.000NN.<ext>``.

    ``root`` may also be the folder above ``genres/`` or ``genres_original/`` (original tarball and
    Kaggle layouts). Raises :class:`DatasetError` when no genre folder exists or kept tracks are missing.
    """
    root = Path(root)
    for base in (root, root / "genres", root / "genres_original", root / "Data" / "genres_original"):
        if any((base / genre).is_dir() for genre in GTZAN_GENRES):
            break
    else:
        raise DatasetError(f"no GTZAN genre folders ({', '.join(GTZAN_GENRES[:3])}, ...) under {root}")
    names = [f"{genre}/{p.name}" for genre in GTZAN_GENRES if (base / genre).is_dir()
             for p in sorted((base / genre).iterdir()) if p.is_file()]
    return gtzan_splits_from_names(names, root=base, extensions=extensions)


MEDLEY_SUBSETS = {"training": "train", "validation": "val", "test": "test"}


def medley_solos_file_name(subset: str, instrument_id: int, uuid4: str, extension: str = ".wav") -> str:
    """Official file name ``Medley-solos-DB_<subset>-<instrument_id>_<uuid4><extension>``."""
    return f"Medley-solos-DB_{subset}-{int(instrument_id)}_{uuid4}{extension}"


def medley_solos_splits(path: str | Path, *, metadata: str | Path | None = None,
                        check_files: bool | None = None, extension: str = ".wav") -> DatasetSplits:
    """Official Medley-Solos-DB splits from its metadata CSV.

    ``path`` is the CSV itself, or the audio folder (the CSV is then ``metadata``, or found in it as
    ``Medley-solos-DB_metadata.csv`` or its only ``*.csv``). The CSV has a header with at least
    ``subset,instrument,instrument_id,uuid4`` (subset: training, validation or test). Class ids follow
    :data:`MEDLEY_SOLOS_LABELS`; an ``instrument`` string that disagrees with its id is an error. With
    ``check_files`` (default: when ``path`` is a folder) every file must exist somewhere under it and
    the item paths are the found relative paths.
    """
    path = Path(path)
    root = path if path.is_dir() else None
    if metadata is None and root is not None:
        csvs = sorted(root.glob("*.csv"))
        found = [p for p in csvs if p.name.lower() == "medley-solos-db_metadata.csv"] or csvs
        if len(found) != 1:
            raise DatasetError(f"no single Medley-Solos-DB metadata CSV in {root}; pass metadata=PATH")
        metadata = found[0]
    metadata = Path(metadata if metadata is not None else path)
    if not metadata.is_file():
        raise DatasetError(f"Medley-Solos-DB metadata CSV not found: {metadata}")
    splits: dict[str, list[Item]] = {name: [] for name in SPLIT_NAMES}
    with open(metadata, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [c.strip() for c in reader.fieldnames or []]
        absent = [c for c in ("subset", "instrument", "instrument_id", "uuid4") if c not in header]
        if absent:
            raise DatasetError(f"{metadata}: missing column(s) {absent}; header is {header}")
        reader.fieldnames = header
        for row in reader:
            subset, iid, uuid4 = (str(row[c] or "").strip() for c in ("subset", "instrument_id", "uuid4"))
            subset = subset.lower()
            label = MEDLEY_SOLOS_LABELS[int(iid)] if iid.isdigit() and int(iid) < 8 else None
            instrument = " ".join(str(row["instrument"] or "").lower().split())
            if subset not in MEDLEY_SUBSETS:
                problem = f"unknown subset {subset!r}; expected {list(MEDLEY_SUBSETS)}"
            elif label is None:
                problem = f"bad instrument_id {iid!r} (expected 0-7)"
            elif instrument and instrument != label:
                problem = f"instrument {instrument!r} does not match instrument_id {iid} ({label!r})"
            else:
                problem = "empty uuid4" if not uuid4 else None
            if problem:
                raise DatasetError(f"{metadata}:{reader.line_num}: {problem}")
            name = medley_solos_file_name(subset, int(iid), uuid4, extension)
            splits[MEDLEY_SUBSETS[subset]].append((label, name))
    if check_files or (check_files is None and root is not None):
        if root is None:
            raise DatasetError(f"check_files needs the audio folder, not the CSV {metadata}")
        index = {p.name: p.relative_to(root).as_posix()
                 for p in root.rglob("Medley-solos-DB_*") if p.is_file()}
        missing = [n for items in splits.values() for _, n in items if n not in index]
        if missing:
            raise DatasetError(f"Medley-Solos-DB: {len(missing)} file(s) listed in {metadata.name} are "
                               f"missing under {root}, e.g. {', '.join(missing[:5])}")
        splits = {k: [(label, index[n]) for label, n in v] for k, v in splits.items()}
    return DatasetSplits(MEDLEY_SOLOS_LABELS, root=root, **splits)


_TSV_NAMES = {"train": ("train.tsv", "groundtruth_train.tsv", "training_groundtruth.tsv"),
              "val": ("val.tsv", "groundtruth_val.tsv", "validation_groundtruth.tsv"),
              "test": ("test.tsv", "groundtruth_test.tsv", "test_groundtruth.tsv")}


def tsv_splits(root: str | Path | None = None, *, train: str | Path | None = None,
               val: str | Path | None = None, test: str | Path | None = None,
               labels: Sequence[str] | str | None = None, holdout: float = 0.15,
               seed: int = 42) -> DatasetSplits:
    """Splits from TSV files: explicit paths, or ``train.tsv``/``val.tsv``/``test.tsv`` (or the upstream
    ``groundtruth_*.tsv`` names) in ``root``.

    ``labels``: a list, a label-map name (``"gtzan"`` also accepts the short TSV labels), else
    ``root/labels.txt`` if present, else the sorted label names found. A missing val or test file is
    replaced by a seeded stratified ``holdout`` fraction of train (val first, then test).
    """
    base = Path(root if root is not None else ".")  # explicit relative paths are relative to root
    files: dict[str, Path | None] = {}
    for name, given in zip(SPLIT_NAMES, (train, val, test)):
        found = [base / n for n in _TSV_NAMES[name] if (base / n).is_file()] if given is None else [base / given]
        files[name] = found[0] if found else None
    if files["train"] is None:
        raise DatasetError(f"no train split file (train.tsv) in {base}; pass train=PATH")
    aliases = None
    if isinstance(labels, str):
        labels, aliases = label_map(labels), label_aliases(labels)
    elif labels is None and root is not None and (base / LABELS_FILE).is_file():
        labels = read_labels(base / LABELS_FILE)
    items = {n: read_tsv(p, labels, aliases=aliases) if p else None for n, p in files.items()}
    if labels is None:
        labels = sorted({label for split in items.values() for label, _ in split or []})
    for name in ("val", "test"):
        if items[name] is None:
            items["train"], items[name] = _stratified_split(items["train"], holdout, seed)
    return DatasetSplits(tuple(labels), root=root, **items)


def _stratified_split(items: list[Item], fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """Split off a stratified ``fraction`` of ``items`` (sklearn, ``random_state=seed``); both sorted."""
    if fraction <= 0 or not items:
        return sorted(items), []
    from sklearn.model_selection import train_test_split
    try:
        keep, held = train_test_split(list(items), test_size=fraction, random_state=seed,
                                      stratify=[label for label, _ in items])
    except ValueError as exc:
        raise DatasetError(f"cannot split {len(items)} items stratified by class: {exc}") from None
    return sorted(map(tuple, keep)), sorted(map(tuple, held))


def folder_splits(root: str | Path, *, labels: Sequence[str] | None = None,
                  fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 42,
                  extensions: Sequence[str] = AUDIO_EXTENSIONS) -> DatasetSplits:
    """Seeded stratified train/val/test split of ``root/<class>/**/*.<ext>``.

    Classes are the sorted sub-folder names, or ``labels`` in the given order (other folders are then
    ignored). ``fractions`` are the train/val/test shares; the same ``seed`` gives the same split.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    if len(fractions) != 3 or min(fractions) < 0 or fractions[0] <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(f"fractions must be three shares (train > 0) summing to 1, got {fractions}")
    if labels is None:
        labels = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    items: list[Item] = []
    for label in labels:
        folder = root / label
        if not folder.is_dir():
            raise DatasetError(f"class folder not found: {folder}")
        # sorted as strings, as always, so that a seed keeps giving the same split
        files = sorted(p.relative_to(root).as_posix() for p in find_audio_files(folder, extensions))
        if not files:
            raise DatasetError(f"class folder {folder} has no audio files ({', '.join(extensions)})")
        items += [(label, f) for f in files]
    f_train, f_val, f_test = fractions
    rest, test = _stratified_split(items, f_test, seed)
    train, val = _stratified_split(rest, f_val / (f_train + f_val), seed)
    return DatasetSplits(tuple(labels), train, val, test, root=root)


_KINDS = {"gtzan": gtzan_splits, "medley-solos-db": medley_solos_splits, "tsv": tsv_splits,
          "folders": folder_splits, "medley": medley_solos_splits, "folder": folder_splits}


def load_dataset_splits(kind: str, root: str | Path, **options) -> DatasetSplits:
    """Build splits of ``kind`` (``gtzan``, ``medley-solos-db``, ``tsv``, ``folders``) from ``root``.

    ``options`` go to :func:`gtzan_splits` (extensions), :func:`medley_solos_splits` (metadata,
    check_files, extension), :func:`tsv_splits` (train, val, test, labels, holdout, seed) or
    :func:`folder_splits` (labels, fractions, seed, extensions).
    """
    key = kind.lower().replace("_", "-")
    if key not in _KINDS:
        raise ConfigError(f"unknown dataset kind {kind!r}; expected one of {', '.join(list(_KINDS)[:4])}")
    func = _KINDS[key]
    try:
        inspect.signature(func).bind(root, **options)
    except TypeError as exc:
        raise ConfigError(f"bad option for dataset kind {key!r}: {exc}") from None
    return func(root, **options)


def export_splits(splits: DatasetSplits, out_dir: str | Path) -> dict[str, Path]:
    """Write ``train.tsv``, ``val.tsv``, ``test.tsv`` and ``labels.txt`` into ``out_dir``; return the paths."""
    out = Path(out_dir)
    paths = {name: write_tsv(splits.split(name), out / f"{name}.tsv") for name in SPLIT_NAMES}
    paths["labels"] = write_labels(out / LABELS_FILE, splits.labels)
    return paths
