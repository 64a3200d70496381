"""File integrity: SHA-256 digests written next to saved models and checked when they are read.

- ``save_pretrained`` writes ``checksums.json`` (``{"files": {relpath: {"sha256", "size"}}}``) for
  every file it wrote; loading from a folder checks each file it reads against it, so a corrupted
  or edited weight file is a :class:`CheckpointError` naming the file instead of a silently wrong
  model.
- A file downloaded from the Hub is checked against the Hub's own digest: the cache stores it as
  ``blobs/<sha256>`` (large files) or ``blobs/<git blob sha1>`` (small files).

Digests are cached per process by (path, size, mtime), so loading the same model again costs a
``stat`` per file, not a re-hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from pecmae_hub.errors import CheckpointError
from pecmae_hub.storage.atomic import atomic_write_text

CHECKSUMS_NAME = "checksums.json"
CHECKSUMS_FORMAT = "pecmae-checksums"
_HEX64, _HEX40 = re.compile(r"^[0-9a-f]{64}$"), re.compile(r"^[0-9a-f]{40}$")
_digests: dict[tuple[str, str, int, int], str] = {}  # (kind, path, size, mtime_ns) -> hex digest
_manifests: dict[tuple[str, int], dict] = {}  # (path, mtime_ns) -> parsed checksums.json


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in blocks (cached by size and modification time)."""
    return _digest(Path(path), "sha256")


def _digest(path: Path, kind: str) -> str:
    stat = path.stat()
    key = (kind, str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        h = hashlib.sha256() if kind == "sha256" else hashlib.sha1(b"blob %d\0" % stat.st_size)
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _digests[key] = h.hexdigest()
    return _digests[key]


def write_checksums(folder: str | os.PathLike, files: Iterable[str] | None = None) -> Path:
    """Write ``folder/checksums.json`` for ``files`` (relative paths; default: every file below ``folder``)."""
    folder = Path(folder)
    if files is None:
        names = sorted(
            p.relative_to(folder).as_posix()
            for p in folder.rglob("*")
            if p.is_file() and p.name != CHECKSUMS_NAME and not p.name.startswith(".")
        )
    else:
        names = sorted(set(files))
    entries = {}
    for name in names:
        path = folder / name
        entries[name] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    text = json.dumps({"format": CHECKSUMS_FORMAT, "version": 1, "files": entries}, indent=1) + "\n"
    return atomic_write_text(folder / CHECKSUMS_NAME, text)


def _manifest(folder: Path) -> dict | None:
    path = folder / CHECKSUMS_NAME
    try:
        stamp = path.stat().st_mtime_ns
    except FileNotFoundError:
        return None
    key = (str(path.resolve()), stamp)
    if key not in _manifests:
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path} is not valid JSON ({exc}): the model folder is damaged") from None
        if (
            not isinstance(data, dict)
            or data.get("format") != CHECKSUMS_FORMAT
            or not isinstance(data.get("files"), dict)
        ):
            raise CheckpointError(f"{path} is not a {CHECKSUMS_FORMAT} file: the model folder is damaged")
        _manifests[key] = data["files"]
    return _manifests[key]


def verify_in_folder(folder: str | os.PathLike, name: str) -> None:
    """Check ``folder/name`` against ``folder/checksums.json`` when the folder has one that lists it."""
    folder = Path(folder)
    entry = (_manifest(folder) or {}).get(name)
    if entry is None:
        return
    path = folder / name
    size = path.stat().st_size
    if size != entry.get("size", size) or sha256_file(path) != entry.get("sha256"):
        raise CheckpointError(
            f"{name} in {folder} does not match the SHA-256 recorded in {CHECKSUMS_NAME}: the file is corrupted "
            "or was modified after saving. Restore it (re-download or re-save the model) before loading."
        )


def verify_hub_download(path: str | os.PathLike, repo_id: str, filename: str) -> None:
    """Check a file fetched by ``huggingface_hub`` against the digest the Hub gave it (its blob name)."""
    blob = Path(path).resolve()
    name = blob.name
    if _HEX64.match(name):
        ok = sha256_file(blob) == name
    elif _HEX40.match(name):
        ok = _digest(blob, "git-sha1") == name
    else:
        return  # not a cache blob (e.g. a local_dir download): nothing to compare with
    if not ok:
        raise CheckpointError(
            f"{filename!r} of Hub repo {repo_id!r} does not match the Hub's digest {name[:12]}…: the cached copy "
            f"({blob}) is corrupted. Load again with force_download=True to fetch it anew."
        )
