"""Atomic file writes, and never writing through a symbolic link."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pecmae_hub.errors import ConfigError

# Whatever a later run reads back (features, manifests, checkpoints, metadata tables, rendered clips) is
# written through these helpers, so that an interrupted run never leaves a truncated file that a resumed
# run would trust: the data goes to a hidden file in the same folder, renamed over the target at the end
# (os.replace is atomic within one file system). The temporary name keeps the target's suffix, so writers
# that choose the format from it (soundfile, np.save) behave as with the real name. No fsync: this guards
# against interruption, not against power loss.


class _AtomicPath:
    def __init__(self, path: Path):
        import uuid

        self.path = path
        self.tmp = path.with_name(f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{path.suffix}")

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self.tmp

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                os.replace(self.tmp, self.path)
        finally:
            if self.tmp.exists():
                self.tmp.unlink()


def atomic_path(path: str | os.PathLike) -> _AtomicPath:
    """Context manager yielding a temporary path to write instead of ``path``.

    When the block succeeds the temporary file replaces ``path``; when it raises, the temporary file
    is removed and ``path`` stays as it was. The parent folder is created::

        with atomic_path(out / "clip.wav") as tmp:
            soundfile.write(tmp, audio, 24000)
    """
    return _AtomicPath(Path(path))


def atomic_write(path: str | os.PathLike, write: Any) -> Path:
    """Call ``write(tmp_path)`` (e.g. ``lambda p: torch.save(state, p)``), then move the result to ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; ``\\n`` is written as is on every OS."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding=encoding, newline=""))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_save_npy(path: str | os.PathLike, array: Any) -> Path:
    """``np.save`` ``array`` to exactly ``path`` (no ``.npy`` appended), atomically."""
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, array)

    return atomic_write(path, write)


def refuse_links(folder: str | os.PathLike, names: Iterable[str], trees: Iterable[str] = ()) -> None:
    """:class:`ConfigError` when a path that is about to be written inside ``folder`` is a symbolic link.

    ``names`` are the files and folders (relative paths) that will be written, ``trees`` the folders whose
    whole content may be: every link on the way to a name, and every link inside a tree, is listed. Writing
    through such a link would write outside ``folder`` (``folder`` itself may be a link: the caller chose it).
    """
    folder = Path(folder)
    found: list[str] = []
    for name in [*names, *trees]:
        path = folder
        for part in Path(name).parts:
            path = path / part
            if path.is_symlink():
                found.append(f"{path.relative_to(folder).as_posix()} -> {os.readlink(path)}")
                break
    for tree in trees:
        root = folder / tree
        if root.is_dir() and not root.is_symlink():
            for base, dirs, files in os.walk(root):  # os.walk does not follow links to folders
                for entry in dirs + files:
                    path = Path(base) / entry
                    if path.is_symlink():
                        found.append(f"{path.relative_to(folder).as_posix()} -> {os.readlink(path)}")
    if found:
        raise ConfigError(
            f"refusing to write into {folder}: {', '.join(sorted(set(found)))} "
            f"{'is a symbolic link' if len(set(found)) == 1 else 'are symbolic links'}, and writing through a link "
            "would write outside the folder. Remove the link(s) or choose an empty folder"
        )
