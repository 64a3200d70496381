"""File integrity: nothing is loaded that cannot be verified, unless the caller says ``verify=False``.

- ``save_pretrained`` writes ``checksums.json`` (``{"files": {relpath: {"sha256", "size"}}}``) for
  every file it wrote; loading from a folder checks each file it reads against it, so a corrupted
  or edited file is a :class:`CheckpointError` naming the file instead of a silently wrong model.
  Every folder pecmae-hub writes carries it, so a folder *without* ``checksums.json``, or a file it
  does not list, is refused too (an old or third-party folder loads with ``verify=False``, with a
  warning), as safetensors refuses what it cannot verify.
- A file downloaded from the Hub is checked against the digest the Hub records for it (the sha256 of
  an LFS file, the git blob sha1 of a small one), whatever the cache layout: the cache names a blob by
  that digest (``blobs/<digest>``), and a plain copy in ``snapshots/`` (a cache on a file system
  without symbolic links) is checked against the digest the Hub gives for that file at that commit
  (one metadata request), remembered next to the cache for later offline loads
  (``<repo folder>/.pecmae-digests/<commit>.json``). A plain copy that was never checked online cannot
  be verified offline and is refused.

Digests are cached per process by (path, size, mtime), so loading the same model again costs a
``stat`` per file, not a re-hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path

from pecmae_hub.errors import CheckpointError
from pecmae_hub.storage.atomic import atomic_write_text

CHECKSUMS_NAME = "checksums.json"
CHECKSUMS_FORMAT = "pecmae-checksums"
_HEX64, _HEX40 = re.compile(r"^[0-9a-f]{64}$"), re.compile(r"^[0-9a-f]{40}$")
_digests: dict[tuple[str, str, int, int], str] = {}  # (kind, path, size, mtime_ns) -> hex digest
_manifests: dict[tuple[str, int], dict] = {}  # (path, mtime_ns) -> parsed checksums.json
_unverified_warned: set[str] = set()  # folders / repos already warned about (verify=False)
_hub_digests: dict[tuple[str, str, str], str] = {}  # (repo id, commit, filename) -> digest the Hub gave
_records_lock = threading.Lock()
DIGESTS_DIR = ".pecmae-digests"  # in a Hub cache repo folder: digests of plain copies, for offline checks
NO_VERIFY_HINT = "load it with verify=False (command line: --no-verify) only if you trust where it came from"


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


def update_checksums(folder: str | os.PathLike, files: Iterable[str]) -> Path:
    """Add (or refresh) the entries of ``files`` in ``folder/checksums.json``, keeping the others as they are
    (used after writing a few files into a saved model, e.g. rendered prototypes)."""
    folder = Path(folder)
    entries = dict(_manifest(folder) or {})
    for name in sorted(set(files)):
        path = folder / name
        entries[name] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    text = json.dumps({"format": CHECKSUMS_FORMAT, "version": 1, "files": dict(sorted(entries.items()))}, indent=1)
    return atomic_write_text(folder / CHECKSUMS_NAME, text + "\n")


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


def warn_unverified(where: str) -> None:
    """The one warning (once per folder or repo) that files are loaded without verification."""
    if where not in _unverified_warned:
        _unverified_warned.add(where)
        warnings.warn(
            f"loading {where} without verifying its files (verify=False): a corrupted or edited file would "
            "load as if it were the model",
            UserWarning,
            stacklevel=4,
        )


def verify_in_folder(folder: str | os.PathLike, name: str, verify: bool = True) -> None:
    """Check ``folder/name`` before it is read: against the Hub's digest when ``folder`` is a Hub cache
    snapshot, else against ``folder/checksums.json``.

    Raises:
        CheckpointError: a file that does not match its digest; with ``verify`` (the default) also a folder
            without ``checksums.json`` or a file it does not list (``verify=False`` skips every check,
            with a warning).
    """
    folder = Path(folder)
    snapshot = hub_snapshot_of(folder / name)
    if snapshot is not None:
        repo_id, commit, filename = snapshot
        verify_hub_download(folder / name, repo_id, filename, commit=commit, verify=verify)
        return
    if not verify:
        warn_unverified(f"model folder {folder}")
        return
    root, relname, manifest = _enclosing_manifest(folder, name)
    if manifest is None:
        raise CheckpointError(
            f"model folder {folder} has no {CHECKSUMS_NAME}, so {name} cannot be verified (pecmae-hub writes one "
            f"with every model it saves; this folder is older or was made by hand): {NO_VERIFY_HINT}, or re-save "
            "it with save_pretrained()"
        )
    entry = manifest.get(relname)
    if entry is None:
        raise CheckpointError(
            f"{name} in {folder} is not listed in {root / CHECKSUMS_NAME}, so it cannot be verified (was it added "
            f"after saving?): {NO_VERIFY_HINT}, or re-save the model with save_pretrained()"
        )
    path = folder / name
    size = path.stat().st_size
    if size != entry.get("size", size) or sha256_file(path) != entry.get("sha256"):
        raise CheckpointError(
            f"{name} in {folder} does not match the SHA-256 recorded in {CHECKSUMS_NAME}: the file is corrupted "
            "or was modified after saving. Restore it (re-download or re-save the model) before loading."
        )


_MANIFEST_LEVELS = 3  # a sub-folder of a model (autoencoder/) may be listed in the model's checksums.json


def _enclosing_manifest(folder: Path, name: str) -> tuple[Path, str, dict | None]:
    """``(folder holding the manifest, name relative to it, manifest)``: the ``checksums.json`` nearest to
    the file, from its own folder up to :data:`_MANIFEST_LEVELS` levels above ``folder`` (a sub-folder of a
    model, e.g. ``autoencoder/``, is listed in its own manifest or in the model's)."""
    path = Path(os.path.abspath(folder / name))
    root, relname = path.parent, path.name
    for _ in range(len(Path(name).parts) - 1 + _MANIFEST_LEVELS + 1):
        manifest = _manifest(root)
        if manifest is not None:
            return root, relname, manifest
        if root.parent == root:
            break
        relname, root = f"{root.name}/{relname}", root.parent
    return folder, name, None


def hub_snapshot_of(path: str | os.PathLike) -> tuple[str, str, str] | None:
    """``(repo id, commit, filename)`` when ``path`` lies in a Hugging Face cache snapshot
    (``.../models--org--name/snapshots/<commit>/<filename>``), else None."""
    parts = Path(os.path.abspath(path)).parts
    for i in range(len(parts) - 3, 0, -1):
        if parts[i] == "snapshots" and _HEX40.match(parts[i + 1]):
            kind, _, repo = parts[i - 1].partition("--")
            if kind in ("models", "datasets", "spaces") and "--" in repo:
                return repo.replace("--", "/", 1), parts[i + 1], "/".join(parts[i + 2 :])
            return None
    return None


def _matches(path: Path, digest: str) -> bool:
    if _HEX64.match(digest):
        return sha256_file(path) == digest
    return _HEX40.match(digest) is not None and _digest(path, "git-sha1") == digest


def _record_path(path: Path, filename: str) -> Path:
    """``<repo folder>/.pecmae-digests/<commit>.json`` for a file in ``<repo folder>/snapshots/<commit>/``."""
    snapshot = Path(os.path.abspath(path))
    for _ in filename.split("/"):
        snapshot = snapshot.parent
    return snapshot.parent.parent / DIGESTS_DIR / f"{snapshot.name}.json"


def _recorded_digest(record: Path, filename: str) -> str | None:
    try:
        value = json.loads(record.read_text()).get(filename)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _remember_digest(record: Path, filename: str, digest: str) -> None:
    with _records_lock:
        try:
            data = json.loads(record.read_text()) if record.is_file() else {}
            data = data if isinstance(data, dict) else {}
            data[filename] = digest
            atomic_write_text(record, json.dumps(data, indent=1, sort_keys=True) + "\n")
        except (OSError, ValueError):
            pass  # a read-only cache: the file was verified now, it is checked online again next time


def _digest_from_hub(repo_id: str, commit: str, filename: str, token, repo_type: str) -> str | None:
    """The digest the Hub records for ``filename`` at ``commit`` (one HEAD request), or None when the Hub
    cannot be asked (offline, unreachable)."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url

    from pecmae_hub.storage.connectivity import HUB_ETAG_TIMEOUT, hub_reachable

    if constants.HF_HUB_OFFLINE or not hub_reachable():
        return None
    try:
        url = hf_hub_url(repo_id, filename, revision=commit, repo_type=repo_type)
        meta = get_hf_file_metadata(url, token=token, timeout=HUB_ETAG_TIMEOUT)
    except Exception:  # network trouble or an answer without metadata: the digest stays unknown
        return None
    etag = (meta.etag or "").strip('"').lower()
    return etag if _HEX64.match(etag) or _HEX40.match(etag) else None


def verify_hub_download(
    path: str | os.PathLike,
    repo_id: str,
    filename: str,
    *,
    commit: str | None = None,
    token: str | bool | None = None,
    verify: bool = True,
    repo_type: str = "model",
    online: bool = True,
) -> None:
    """Check a file of the Hugging Face cache against the digest the Hub records for it, whatever the cache
    layout (see the module docstring); ``commit`` defaults to the snapshot folder ``path`` lies in.
    ``online=False`` (``local_files_only``) never asks the Hub: only a digest known already is used.

    Raises:
        CheckpointError: a file that does not match; with ``verify``, also a plain copy whose digest is unknown
            (never checked online).
    """
    if not verify:
        warn_unverified(f"Hub repo {repo_id!r}")
        return
    path = Path(path)
    blob = path.resolve()
    if path.is_symlink() and (_HEX64.match(blob.name) or _HEX40.match(blob.name)):
        expected = blob.name  # the blob is named by the ETag the Hub sent
    else:  # a plain copy (a cache without symbolic links): ask the Hub, or what it said before
        snapshot = hub_snapshot_of(path)
        commit = commit or (snapshot[1] if snapshot else None)
        if commit is None:
            raise CheckpointError(
                f"{filename!r} of Hub repo {repo_id!r} ({path}) is not in a Hugging Face cache snapshot, so it "
                f"cannot be verified: {NO_VERIFY_HINT}"
            )
        key = (repo_id, commit, filename)
        record = _record_path(path, filename)
        known = _hub_digests.get(key) or _recorded_digest(record, filename)
        if known is None:
            known = _digest_from_hub(repo_id, commit, filename, token, repo_type) if online else None
            if known is None:
                raise CheckpointError(
                    f"{filename!r} of Hub repo {repo_id!r} is a plain copy in the cache ({path}), not a blob named "
                    "by its digest, and the Hub cannot be asked for that digest now (offline or unreachable), so it "
                    f"cannot be verified: connect once to verify it, or {NO_VERIFY_HINT}"
                )
            if _matches(blob, known):
                _remember_digest(record, filename, known)
        _hub_digests[key] = expected = known
    if not _matches(blob, expected):
        raise CheckpointError(
            f"{filename!r} of Hub repo {repo_id!r} does not match the Hub's digest {expected[:12]}…: the cached copy "
            f"({blob}) is corrupted or was modified. Load again with force_download=True to fetch it anew."
        )
