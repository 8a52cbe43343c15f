"""The exceptions of the SHELF file storage.

Each one is a ``DurusError`` (catch them all with one clause) and also the
built-in exception Durus 4.3 raised in the same situation, so code written for
Durus 4.3 keeps catching them: ``OSError``/``BlockingIOError`` for a locked
file, ``ShortRead`` (an ``OSError``) for a damaged file, ``ValueError`` for a
file that is not a SHELF database at all.
"""

from __future__ import annotations

import errno

from durus.error import DurusError
from durus.utils import ShortRead

__all__ = [
    "DamagedFileError",
    "DiskWriteError",
    "FileFormatError",
    "FileLockedError",
    "FileStorageError",
    "LegacyFormatError",
    "StorageClosedError",
]


class FileStorageError(DurusError):
    """Base class of the errors raised by ``durus.file_storage``."""


class StorageClosedError(FileStorageError, ValueError):
    """The storage was closed (Durus 4.3 raised ``ValueError`` from its closed file)."""


class FileFormatError(FileStorageError, ValueError, AssertionError):
    """The path is not a SHELF-1 database (a directory, another format).

    Also an ``AssertionError``, which Durus 4.3 raised for a wrong magic
    number: code written for it keeps catching these.
    """

    def __init__(self, message: str, filename: str | None = None) -> None:
        super().__init__(message)
        self.filename = filename


class LegacyFormatError(FileFormatError):
    """The file is in the legacy ``DFS20`` format: convert it first."""


class DamagedFileError(FileFormatError, ShortRead):
    """The file holds bytes that are not a well-formed SHELF-1 structure.

    An incomplete last transaction (a crash while committing) is *not* an
    error: it is moved aside and the file opens.  This is raised for damage
    elsewhere; ``repair=True`` cuts the file at ``offset``.
    """

    def __init__(self, message: str, filename: str | None = None, offset: int | None = None):
        super().__init__(message, filename)
        self.offset = offset

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "damaged file"


class FileLockedError(FileStorageError, BlockingIOError):
    """Another writer (in this process or another) holds the file's lock."""

    def __init__(self, filename: str, message: str | None = None) -> None:
        if message is None:
            message = (
                f"{filename!r} is already open for writing by another FileStorage "
                "(in this process or another one); only one writer at a time: close it, "
                "or open this one with readonly=True"
            )
        super().__init__(errno.EAGAIN, message, filename)

    def __str__(self) -> str:
        return str(self.strerror)


class DiskWriteError(FileStorageError, OSError):
    """Writing or syncing a commit failed; the file was rolled back.

    ``errno`` is the one of the underlying error (``ENOSPC``, ``EIO``, ...).
    Unless ``usable`` is false the storage can be used again, for example
    once disk space has been freed.
    """

    def __init__(self, err: int | None, message: str, filename: str, usable: bool = True):
        super().__init__(err, message, filename)
        self.usable = usable

    def __str__(self) -> str:
        return str(self.strerror)
