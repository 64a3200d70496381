"""Where the GTZAN audio comes from: a folder, an archive, or the ``marsyas/gtzan`` dataset repo on the Hub.

``prepare_gtzan(data, unpack_dir)`` turns the recipe's ``--data`` value into the folder that holds the
genre folders:

- a folder in one of the known layouts (``<root>/<genre>/``, ``genres/``, ``genres_original/``,
  ``Data/genres_original/``);
- an archive (``genres.tar.gz``, any ``.tar*``, or a ``.zip`` such as the Kaggle copy);
- ``hub``: ``data/genres.tar.gz`` of the dataset repo ``marsyas/gtzan`` (``repo_type="dataset"``),
  downloaded into the Hugging Face cache.

Archives are unpacked once, into ``unpack_dir``, and safely: every member must be a plain file or folder
whose path stays inside ``unpack_dir`` (no absolute paths, no ``..``, no links, no devices), and the
archive as a whole must stay within bounds (an archive bomb): at most :data:`MAX_UNPACKED_BYTES` unpacked
(GTZAN is 1.2 GB), at most :data:`MAX_MEMBERS` members, and at most :data:`MAX_RATIO` times the archive's
own size (audio hardly compresses: GTZAN's ratio is about 1.1). Anything else refuses the whole archive
with a :class:`DatasetError` before a byte is written; the sizes checked are those the archive declares,
and no more than that is ever written (tar reads exactly the declared size, zip stops at it). An
interrupted unpack leaves only a ``.partial`` folder, which the next run starts again.

``scan_gtzan(base)`` applies the paper split (docs/architecture.md §11.2) and says which files it left
out and which kept tracks are missing.
"""
from __future__ import annotations

import json
import re
import shutil
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pecmae_hub.audio import AUDIO_EXTENSIONS
from pecmae_hub.data.splits import GTZAN_EXCLUDED, GTZAN_GENRES, DatasetSplits, gtzan_splits_from_names
from pecmae_hub.errors import DatasetError

GTZAN_HUB_REPO = "marsyas/gtzan"
GTZAN_HUB_FILE = "data/genres.tar.gz"
#: GTZAN tracks known to be undecodable; all of them are among the paper split's exclusions
GTZAN_KNOWN_CORRUPT = ("jazz/jazz.00054",)
_MARKER = ".pecmae-unpacked.json"
MAX_UNPACKED_BYTES = 8 * 1024**3  #: most bytes an archive may unpack to
MAX_MEMBERS = 100_000  #: most files and folders in an archive
MAX_RATIO = 100.0  #: most unpacked bytes per byte of archive
_TRACK = re.compile(r"^([a-z]+)\.(\d{5})\.[A-Za-z0-9]+$")


@dataclass
class GtzanScan:
    """The paper split of a GTZAN folder plus what it left out (``genre/file`` names)."""

    splits: DatasetSplits
    excluded: list[str] = field(default_factory=list)  # present but excluded by the paper split
    missing: list[str] = field(default_factory=list)   # kept by the paper split but not present
    kept_total: int = 0                                 # tracks the paper split keeps (918)


def is_archive(path: Path) -> bool:
    """Whether ``path`` is a tar (any compression) or zip file."""
    return path.is_file() and (zipfile.is_zipfile(path) or tarfile.is_tarfile(path))


def _check_member(name: str, dest: Path, archive: Path) -> None:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    target = (dest / Path(*parts)).resolve() if parts else dest
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts \
            or not target.is_relative_to(dest.resolve()):
        raise DatasetError(f"{archive}: member {name!r} would be written outside {dest}; the archive is refused "
                           "(nothing was unpacked)")


def _check_totals(sizes: list[int], archive: Path) -> None:
    """:class:`DatasetError` when the declared sizes of an archive's members exceed the bounds (module doc)."""
    total, packed = sum(max(0, n) for n in sizes), max(1, archive.stat().st_size)
    problem = None
    if len(sizes) > MAX_MEMBERS:
        problem = f"it has {len(sizes)} members (at most {MAX_MEMBERS} are unpacked)"
    elif total > MAX_UNPACKED_BYTES:
        problem = f"it would unpack to {total / 1e9:.2f} GB (at most {MAX_UNPACKED_BYTES / 1e9:.2f} GB)"
    elif total / packed > MAX_RATIO:
        problem = (f"it would unpack to {total / 1e6:.1f} MB from {packed / 1e6:.2f} MB, {total / packed:.0f} times "
                   f"its size (audio archives hardly compress; at most {MAX_RATIO:g} times)")
    if problem:
        raise DatasetError(f"{archive}: {problem}; the archive is refused (nothing was unpacked)")


def _safe_tar_members(tar: tarfile.TarFile, dest: Path, archive: Path) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    for m in members:
        _check_member(m.name, dest, archive)
        if not (m.isfile() or m.isdir()):
            kind = "link" if (m.issym() or m.islnk()) else "special file"
            raise DatasetError(f"{archive}: member {m.name!r} is a {kind}; only plain files and folders are "
                               "unpacked, so the archive is refused (nothing was unpacked)")
    _check_totals([m.size for m in members], archive)
    return members


def unpack_archive(archive: str | Path, dest: str | Path, progress: bool = True) -> Path:
    """Unpack ``archive`` into ``dest`` once (safely, see the module doc); returns ``dest``.

    A ``dest`` already unpacked from an archive of the same name and size is reused as it is.
    """
    archive, dest = Path(archive), Path(dest)
    stamp = {"archive": archive.name, "size": archive.stat().st_size}
    marker = dest / _MARKER
    if marker.is_file() and json.loads(marker.read_text()) == stamp:
        return dest
    partial = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _check_member(info.filename, partial, archive)
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:  # a symlink stored in the zip
                        raise DatasetError(f"{archive}: member {info.filename!r} is a link; the archive is refused")
                _check_totals([info.file_size for info in zf.infolist()], archive)
                zf.extractall(partial)
        elif tarfile.is_tarfile(archive):
            from tqdm.auto import tqdm

            with tarfile.open(archive) as tar:
                members = _safe_tar_members(tar, partial, archive)
                tar.extractall(partial, members=tqdm(members, desc="unpack", unit="file", disable=not progress),
                               filter="data")
        else:
            raise DatasetError(f"{archive} is neither a tar nor a zip archive")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise DatasetError(f"cannot unpack {archive}: {type(exc).__name__}: {exc} "
                           "(is the download complete?)") from None
    except DatasetError:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    (partial / _MARKER).write_text(json.dumps(stamp))
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
    return dest


def fetch_hub_archive(repo_id: str = GTZAN_HUB_REPO, filename: str = GTZAN_HUB_FILE,
                      revision: str | None = None) -> Path:
    """Download ``filename`` of the dataset repo ``repo_id`` into the Hugging Face cache; returns its path."""
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import hf_hub_download

    from pecmae_hub.storage.connectivity import HUB_ETAG_TIMEOUT, hub_offline, hub_reachable

    cache_only = not hub_offline() and not hub_reachable()  # fail fast instead of waiting on timeouts
    try:
        return Path(hf_hub_download(repo_id, filename, repo_type="dataset", revision=revision,
                                    local_files_only=cache_only, etag_timeout=HUB_ETAG_TIMEOUT))
    except (hf_errors.RepositoryNotFoundError, hf_errors.RevisionNotFoundError, hf_errors.EntryNotFoundError,
            hf_errors.LocalEntryNotFoundError) as exc:
        raise DatasetError(
            f"cannot fetch {filename} of the Hub dataset {repo_id} ({type(exc).__name__}); download GTZAN "
            "yourself and pass --data genres.tar.gz or --data FOLDER"
        ) from None


def find_gtzan_base(root: str | Path) -> Path:
    """The folder holding the genre folders under ``root`` (known layouts), or :class:`DatasetError`."""
    root = Path(root)
    for base in (root, root / "genres", root / "genres_original", root / "Data" / "genres_original"):
        if any((base / genre).is_dir() for genre in GTZAN_GENRES):
            return base
    raise DatasetError(f"no GTZAN genre folders ({', '.join(GTZAN_GENRES[:3])}, ...) under {root}; expected "
                       "<root>/<genre>/<genre>.000NN.<ext> or a genres/ or genres_original/ folder")


def prepare_gtzan(data: str, unpack_dir: str | Path, progress: bool = True) -> tuple[Path, str]:
    """``(folder with the genre folders, description of the source)`` for a ``--data`` value."""
    if data == "hub":
        archive = fetch_hub_archive()
        return find_gtzan_base(unpack_archive(archive, unpack_dir, progress)), \
            f"Hugging Face dataset {GTZAN_HUB_REPO} ({GTZAN_HUB_FILE})"
    path = Path(data).expanduser()
    if path.is_dir():
        return find_gtzan_base(path), f"folder {path}"
    if is_archive(path):
        return find_gtzan_base(unpack_archive(path, unpack_dir, progress)), f"archive {path.name}"
    raise DatasetError(f"--data {data!r} is not a GTZAN folder, a tar/zip archive or 'hub'")


def scan_gtzan(base: str | Path) -> GtzanScan:
    """Apply the paper split to the audio files under ``base/<genre>/``; missing tracks are reported, not fatal."""
    base = Path(base)
    exts = {e.lower() for e in AUDIO_EXTENSIONS}
    names = [f"{genre}/{p.name}" for genre in GTZAN_GENRES if (base / genre).is_dir()
             for p in sorted((base / genre).iterdir()) if p.is_file() and p.suffix.lower() in exts]
    splits = gtzan_splits_from_names(names, root=base, extensions=AUDIO_EXTENSIONS, require_complete=False)
    present: set[tuple[str, int]] = set()
    excluded = []
    for name in names:
        match = _TRACK.match(name.split("/")[-1])
        if match is None or match.group(1) not in GTZAN_EXCLUDED:
            continue
        genre, track = match.group(1), int(match.group(2))
        present.add((genre, track))
        if track in GTZAN_EXCLUDED[genre]:
            excluded.append(name)
    kept = [(g, t) for g in GTZAN_GENRES for t in range(100) if t not in GTZAN_EXCLUDED[g]]
    missing = [f"{g}/{g}.{t:05d}" for g, t in kept if (g, t) not in present]
    return GtzanScan(splits, excluded, missing, len(kept))
