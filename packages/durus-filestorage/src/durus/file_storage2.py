"""Read-only access to legacy ``DFS20`` files (Durus's FileStorage2 format).

FileStorage opens SHELF-1 files only.  This module reads the older format so
that ``durus convert OLD NEW`` can copy its records into a SHELF-1 file::

    for oid, record in gen_dfs20_records("old.durus"):
        ...

Layout (spec 3.8): ``b"DFS20\\0"``, ``int8`` offset X of a pickled index,
transactions before X (after a pack), the index block at X, transactions
after it.  A transaction is items ``int4 n`` + n record bytes, ended by
``int4 0``.  The index (a pickle) is never unpickled here: every transaction
is scanned instead, so a hostile file cannot run code.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator
from typing import Any

from durus.error import DurusKeyError
from durus.shelf_errors import DamagedFileError, FileFormatError, FileStorageError
from durus.shelf_format import pread_exact
from durus.shelf_index import OidBitmap, PositionIndex
from durus.storage import Storage, gen_reachable_records
from durus.utils import int8_to_str

__all__ = ["FileStorage2", "gen_dfs20_records"]

logger = logging.getLogger("durus.file_storage")

MAGIC = b"DFS20\0"
_HEADER_SIZE = len(MAGIC) + 8
_INT4 = struct.Struct(">I")
_INT8 = struct.Struct(">Q")
_CHUNK = 1 << 20


class _Scanner:
    """Indexes the items of DFS20 transactions with a sliding read buffer."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path
        self.data = b""
        self.start = 0

    def _bytes(self, position: int, size: int, stop: int) -> bytes | None:
        if position + size > stop:
            return None
        offset = position - self.start
        if offset < 0 or offset + size > len(self.data):
            self.data = pread_exact(self.fd, min(max(size, _CHUNK), stop - position), position)
            self.start = position
            offset = 0
        return self.data[offset : offset + size]

    def scan(self, start: int, stop: int, index: PositionIndex) -> int:
        """Index the complete transactions in ``[start, stop)``; return where they end."""
        position = start
        while position < stop:
            transaction_start = position
            items: list[tuple[int, int]] = []
            while True:
                head = self._bytes(position, 4, stop)
                if head is None:
                    return self._stop(transaction_start, stop, "a cut transaction")
                length = _INT4.unpack(head)[0]
                if length == 0:
                    position += 4
                    break
                if length < 12:
                    raise DamagedFileError(
                        f"{self.path!r}: a record of {length} bytes at {position}",
                        self.path,
                        transaction_start,
                    )
                name = self._bytes(position + 4, 8, stop)
                if name is None or position + 4 + length > stop:
                    return self._stop(transaction_start, stop, "a cut record")
                items.append((_INT8.unpack(name)[0], position))
                position += 4 + length
            for n, item in items:
                index.set(n, item)
        return position

    def _stop(self, transaction_start: int, stop: int, what: str) -> int:
        logger.warning(
            "%r: ignoring %s at offset %d (%d bytes to the end of the region)",
            self.path,
            what,
            transaction_start,
            stop - transaction_start,
        )
        return transaction_start


class FileStorage2(Storage):
    """A DFS20 file opened read-only (Durus 4.3's ``FileStorage2`` could also write).

    ``readonly`` and ``repair`` are accepted for signature compatibility; the
    file is never modified.  Writing methods raise ``FileStorageError``.
    """

    MAGIC = MAGIC

    def __init__(self, file: str | os.PathLike[str] | None = None, readonly: bool = True,
                 repair: bool = False) -> None:
        if file is None:
            raise FileStorageError("FileStorage2 only reads existing DFS20 files")
        self.path = os.path.abspath(os.fspath(file))
        if os.path.isdir(self.path):
            raise FileFormatError(f"{self.path!r} is a directory, not a Durus database", self.path)
        self.fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            self._load()
        except BaseException:
            os.close(self.fd)
            raise
        self.pending_records: dict[bytes, bytes] = {}
        self.pack_extra = None
        self.invalid: set[bytes] = set()

    def _load(self) -> None:
        path = self.path
        size = os.fstat(self.fd).st_size
        head = pread_exact(self.fd, _HEADER_SIZE, 0)
        if not head.startswith(MAGIC):
            raise FileFormatError(f"{path!r} is not a DFS20 file", path)
        if len(head) < _HEADER_SIZE:
            raise DamagedFileError(f"{path!r}: the DFS20 header is cut short", path, 0)
        index_offset = _INT8.unpack_from(head, len(MAGIC))[0]
        if not _HEADER_SIZE <= index_offset <= size - 8:
            raise DamagedFileError(
                f"{path!r}: the DFS20 index offset {index_offset} is outside the file",
                path,
                len(MAGIC),
            )
        self.index = PositionIndex()
        scanner = _Scanner(self.fd, path)
        before = scanner.scan(_HEADER_SIZE, index_offset, self.index)
        if before != index_offset:
            raise DamagedFileError(
                f"{path!r}: the transactions before the index end at {before}, "
                f"not at {index_offset}",
                path,
                before,
            )
        index_length = _INT8.unpack(pread_exact(self.fd, 8, index_offset))[0]
        after = index_offset + 8 + index_length
        if after > size:
            raise DamagedFileError(f"{path!r}: the DFS20 index block is cut short", path, after)
        self.end_offset = scanner.scan(after, size, self.index)

    @classmethod
    def has_format(cls, file: Any) -> bool:
        if isinstance(file, (str, bytes, os.PathLike)):
            try:
                with open(file, "rb") as f:
                    return f.read(len(MAGIC)) == MAGIC
            except OSError:
                return False
        file.seek(0)
        return bool(file.read(len(MAGIC)) == MAGIC)

    def get_filename(self) -> str:
        return self.path

    def load(self, oid: bytes) -> bytes:
        position = self.index.get(int.from_bytes(oid, "big")) if len(oid) == 8 else 0
        if not position:
            raise DurusKeyError(oid)
        length = _INT4.unpack(pread_exact(self.fd, 4, position))[0]
        record = pread_exact(self.fd, length, position + 4)
        if len(record) != length or record[:8] != oid:
            raise DamagedFileError(f"{self.path!r}: bad record at {position}", self.path, position)
        return record

    def gen_oid_record(
        self, start_oid: bytes | None = None, batch_size: int = 100, **other: Any
    ) -> Iterator[tuple[bytes, bytes]]:
        """Every record (start_oid None, in oid order) or those reachable from start_oid."""
        if start_oid is None:
            for n, _position in self.index.items():
                oid = int8_to_str(n)
                yield oid, self.load(oid)
            return
        yield from gen_reachable_records(self, start_oid, batch_size=1, seen=OidBitmap())

    def sync(self) -> list[bytes]:
        return []

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise FileStorageError(
            f"{self.path!r} is a legacy DFS20 file, opened read-only: convert it with "
            f"`durus convert {self.path} NEW_FILE` to write to it"
        )

    new_oid = begin = store = end = _read_only

    def get_packer(self) -> Iterator[Any]:
        return iter(())

    def pack(self) -> None:
        self._read_only()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __str__(self) -> str:
        return f"{self.__class__.__name__}({self.path!r})"


def gen_dfs20_records(path: str | os.PathLike[str]) -> Iterator[tuple[bytes, bytes]]:
    """``(oid, record)`` of every current record of a DFS20 file, in oid order."""
    storage = FileStorage2(path)
    try:
        yield from storage.gen_oid_record()
    finally:
        storage.close()
