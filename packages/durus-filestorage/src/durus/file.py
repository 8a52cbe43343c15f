"""``durus.file.File``: Durus 4.3's locked binary file, for code that imports it.

Durus 4.3's storages read and wrote their files through this class, so
applications and Durus's own tests use it too: for a temporary file name
(``File(prefix="x").get_name()``), with ``durus.utils.read``/``write``/
``read_int8`` and friends (which take any object with ``read`` and ``write``),
or as a file that only one writer at a time may change.  Our ``FileStorage``
works on a raw descriptor instead (``durus.shelf``); this module keeps the old
class working on its own.  Its lock is the one ``FileStorage`` takes
(``durus.file_lock``: ``flock``), so a ``File`` and a ``FileStorage`` of the
same path exclude each other, in one process or several, Durus 4.3's included.

Fixed from Durus 4.3 (see CHANGELOG.md): ``fsync()`` also makes a new or
renamed name durable; ``rename()`` replaces its target atomically, keeps the
lock throughout and cannot delete the file it renames; opening never truncates
a file created meanwhile by another process; a temporary file is removed at
exit even if still referenced, and never by a forked child.
"""

from __future__ import annotations

import atexit
import errno
import io
import os
import sys
import tempfile
import weakref
from typing import Any

from durus.error import DurusError
from durus.file_lock import lock_file, unlock_file
from durus.shelf_errors import FileLockedError
from durus.shelf_format import fsync_directory, fsync_file

__all__ = ["File", "FileLockedError", "FileOperationError"]

_TEMPFILE_OPTIONS = frozenset({"prefix", "suffix", "dir", "delete"})


class FileOperationError(DurusError, io.UnsupportedOperation, AssertionError):
    """Not possible on this File: writing or locking a read-only one, renaming a temporary one.

    Durus 4.3 failed an ``assert`` here (gone under ``python -O``): this is still an
    ``AssertionError``, and also what Python's own read-only files raise.
    """


def _open_or_create(path: str, flags: int) -> int:
    # "r+b" plus O_CREAT: creates a missing file, never truncates an existing one.
    return os.open(path, flags | os.O_CREAT, 0o666)


def _sync(fd: int) -> None:
    if sys.platform == "darwin":  # pragma: no cover - F_FULLFSYNC gets past the drive's cache
        fsync_file(fd)
    else:
        os.fsync(fd)


class File:
    """A binary file, opened for reading and writing unless ``readonly``.

    ``name``: the path; a missing file is created (``readonly=True`` needs it to
    exist).  None gives a new temporary file, removed at ``close()`` (or exit):
    ``prefix``, ``suffix`` and ``dir`` choose its name as in ``tempfile``,
    ``delete=False`` keeps it.  Writing takes the exclusive lock first
    (``FileLockedError``, a ``BlockingIOError``, when another writer holds it).
    """

    def __init__(
        self, name: str | os.PathLike[str] | None = None, readonly: bool = False, **options: Any
    ) -> None:
        unknown = sorted(set(options) - _TEMPFILE_OPTIONS)
        if unknown:
            raise TypeError(f"File() got an unexpected keyword argument {unknown[0]!r}")
        self.has_lock = False
        self._readonly = bool(readonly)
        self._owner = os.getpid()
        self._delete = False
        self._unsynced_dirs: set[str] = set()
        self.file: io.BufferedIOBase
        if name is None:
            if readonly:
                raise FileOperationError("a temporary File cannot be read-only")
            self._delete = bool(options.pop("delete", True))
            fd, self._name = tempfile.mkstemp(**options)
            self._temporary = True
            self.file = open(self._name, "r+b", opener=lambda _path, _flags: fd)  # noqa: SIM115
            _temporaries.add(self)
            return
        self._name = os.fsdecode(name)
        self._temporary = False
        if readonly:
            self.file = open(self._name, "rb")  # noqa: SIM115
        else:
            self.file = open(self._name, "r+b", opener=_open_or_create)  # noqa: SIM115
            self._unsynced_dirs.add(os.path.dirname(os.path.abspath(self._name)))

    # -- questions ---------------------------------------------------------------------------

    def get_name(self) -> str:
        return self._name

    name = property(get_name)

    def is_temporary(self) -> bool:
        return self._temporary

    def is_readonly(self) -> bool:
        return self._readonly

    readonly = property(is_readonly)

    @property
    def closed(self) -> bool:
        return bool(self.file.closed)

    def fileno(self) -> int:
        return self.file.fileno()

    def stat(self) -> os.stat_result:
        """The open file's status (after ``close()``: whatever its name now names)."""
        if self.file.closed:
            return os.stat(self._name)
        return os.fstat(self.file.fileno())

    def __len__(self) -> int:
        return self.stat().st_size

    # -- reading and writing -----------------------------------------------------------------

    def seek(self, n: int, whence: int = 0) -> None:
        self.file.seek(n, whence)

    def seek_end(self) -> None:
        self.file.seek(0, 2)

    def tell(self) -> int:
        return self.file.tell()

    def read(self, n: int | None = None) -> bytes:
        """``n`` bytes or fewer at the end of the file; everything left when ``n`` is None."""
        return self.file.read(n)

    def write(self, s: bytes | bytearray | memoryview) -> None:
        """Lock, write all of ``s`` at the current position and flush it to the OS."""
        self.obtain_lock()
        self.file.write(s)
        self.file.flush()

    def truncate(self, size: int | None = None) -> None:
        """Lock and cut (or extend) the file to ``size``, by default the current position."""
        self.obtain_lock()
        self.file.truncate(size)

    def flush(self) -> None:
        self.file.flush()

    def fsync(self) -> None:
        """Put the contents on stable storage, and the name too if it is new or renamed."""
        self.file.flush()
        _sync(self.file.fileno())
        while self._unsynced_dirs:
            fsync_directory(self._unsynced_dirs.pop())

    # -- locking -----------------------------------------------------------------------------

    def obtain_lock(self) -> None:
        """Take the exclusive writer lock if not held yet; ``FileLockedError`` if taken."""
        if self._readonly:
            raise FileOperationError(f"{self._name!r} is open read-only: it cannot be changed")
        if not self.has_lock:
            try:
                lock_file(self.file.fileno(), self._name)
            except FileLockedError:
                raise FileLockedError(
                    self._name,
                    f"{self._name!r} is locked by another writer (a File or a FileStorage, "
                    "in this process or another one): wait until it closes, or open this "
                    "one with readonly=True",
                ) from None
            self.has_lock = True

    def release_lock(self) -> None:
        if self.has_lock:
            unlock_file(self.file.fileno())
            self.has_lock = False

    # -- renaming and closing ----------------------------------------------------------------

    def rename(self, name: str | os.PathLike[str]) -> None:
        """Give the file the path ``name`` (replacing what was there); the lock is kept.

        As in Durus 4.3 the file is locked first, then positioned at its start.
        """
        new = os.fsdecode(name)
        old = self._name
        if new == old:
            return
        if self._temporary:
            raise FileOperationError(f"the temporary file {old!r} cannot be renamed")
        self.obtain_lock()
        self.file.flush()
        mine, named = os.fstat(self.file.fileno()), _lstat(old)
        if named is None or (named.st_dev, named.st_ino) != (mine.st_dev, mine.st_ino):
            raise FileNotFoundError(errno.ENOENT, "no longer the name of this file", old)
        os.replace(old, new)  # does nothing when new already names this file
        self._name = new
        self._unsynced_dirs.update(os.path.dirname(os.path.abspath(p)) for p in (old, new))
        self.file.seek(0)

    def close(self) -> None:
        """Release the lock and close; a temporary file is removed (once, by its creator)."""
        if self.file.closed:
            return
        if os.getpid() == self._owner:
            self.release_lock()
        self.has_lock = False  # a forked child's close leaves its parent's lock alone
        self.file.close()
        self._remove()

    def _remove(self) -> None:
        if self._delete and os.getpid() == self._owner:
            self._delete = False
            _temporaries.discard(self)
            try:
                os.unlink(self._name)
            except FileNotFoundError:
                pass

    def __enter__(self) -> File:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "file", None) is not None:
            try:
                self.close()
            except Exception:  # pragma: no cover - e.g. at interpreter shutdown
                pass

    def __repr__(self) -> str:
        mode = " read-only" if self._readonly else ""
        state = " closed" if self.file.closed else ""
        return f"<durus.file.File {self._name!r}{mode}{state}>"


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


#: Temporary files still open, removed at exit even if a daemon thread holds them.
_temporaries: weakref.WeakSet[File] = weakref.WeakSet()


@atexit.register
def _remove_temporaries() -> None:
    for file in list(_temporaries):
        file._remove()
