"""The exclusive, non-blocking writer lock of a database file.

POSIX ``flock(LOCK_EX | LOCK_NB)`` as Durus 4.3 takes it, so Durus 4.3 and this
storage exclude each other.  ``flock`` locks belong to an open file
description: a second ``open()`` of the same file in the same process is a
second writer and is refused too.
"""

from __future__ import annotations

import os

from durus.shelf_errors import FileLockedError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt

__all__ = ["FileLockedError", "lock_file", "unlock_file"]


def lock_file(fd: int, filename: str) -> None:
    """Take the exclusive lock of ``fd`` or raise ``FileLockedError`` at once."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:  # pragma: no cover - Windows
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except (BlockingIOError, PermissionError):
        raise FileLockedError(filename) from None
    except OSError as error:  # pragma: no cover - e.g. EDEADLK on Windows
        if error.errno in (11, 13, 33, 35, 36):
            raise FileLockedError(filename) from None
        raise


def unlock_file(fd: int) -> None:
    """Release the lock of ``fd`` (closing ``fd`` releases it as well)."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        else:  # pragma: no cover - Windows
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    except OSError:
        pass
