"""One writer per output file: an OS-level lock that a killed process cannot leave behind.

:class:`OutputLock` takes ``fcntl.flock`` on ``.<name>.lock`` next to the output file. The kernel
releases a ``flock`` when its process ends however it ends (``kill -9`` included), so a crashed run
never blocks the next one, while two live runs on one file are impossible: the second one fails at
once with :class:`OutputBusyError` naming the process that holds the file. The lock file holds that
process id and is removed on a clean release. Where ``fcntl`` does not exist (Windows) no lock is taken.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pecmae_hub.errors import ConfigError


class OutputBusyError(ConfigError):
    """Another live process is writing the same output file (it holds the file's lock)."""


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of ``path``: ``.<name>.lock`` in the same folder."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


class OutputLock:
    """Exclusive, non-blocking lock of an output file for the lifetime of a run (a context manager)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.lock_file = lock_path(path)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock now, or raise :class:`OutputBusyError` without waiting."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on POSIX: run without a lock
            return
        for _ in range(10):
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise OutputBusyError(
                    f"{self.path} is being written by another `pecmae classify` (process {holder}): wait for it "
                    "to finish, or write to another --out. The lock is released when that process ends."
                ) from None
            try:  # the holder before us may have removed the file we opened: then lock the new one
                same = os.fstat(fd).st_ino == os.stat(self.lock_file).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return
            os.close(fd)
        raise OutputBusyError(f"could not lock {self.path}: its lock file {self.lock_file} keeps changing")

    def release(self) -> None:
        """Remove the lock file and drop the lock (a no-op when not held)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.lock_file)
        os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
