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

The read-only primitives below (``read_dfs20_header``, ``dfs20_index_end``,
``scan_dfs20_transactions``, ``read_dfs20_record``) take a file descriptor and
report damage (an exception with the offset, a ``ScanProblem``) instead of
giving up on the whole file, so tools such as ``durus verify`` inspect damaged
files with them.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable, Iterator
from typing import Any

from durus.error import DurusKeyError
from durus.shelf_errors import DamagedFileError, FileFormatError, FileStorageError
from durus.shelf_format import INT8, ScanProblem, pread_exact
from durus.shelf_index import OidBitmap, PositionIndex
from durus.storage import Storage, gen_reachable_records
from durus.utils import int8_to_str

__all__ = [
    "HEADER_SIZE",
    "FileStorage2",
    "dfs20_index_end",
    "gen_dfs20_records",
    "read_dfs20_header",
    "read_dfs20_record",
    "scan_dfs20_transactions",
]

logger = logging.getLogger("durus.file_storage")

MAGIC = b"DFS20\0"
#: The magic and the ``int8`` offset of the index: the first transaction starts here.
HEADER_SIZE = len(MAGIC) + 8
_INT4 = struct.Struct(">I")
_CHUNK = 1 << 20


def read_dfs20_header(fd: int, path: str) -> int:
    """The offset of the index block of a DFS20 file (after it, more transactions).

    The transactions lie in ``[HEADER_SIZE, index_offset)`` and after the
    index block (see ``dfs20_index_end``).  ``FileFormatError`` if the file is
    not DFS20, ``DamagedFileError`` (with the offset) if its header is damaged.
    """
    size = os.fstat(fd).st_size
    head = pread_exact(fd, HEADER_SIZE, 0)
    if not head.startswith(MAGIC):
        raise FileFormatError(f"{path!r} is not a DFS20 file", path)
    if len(head) < HEADER_SIZE:
        raise DamagedFileError(f"{path!r}: the DFS20 header is cut short", path, 0)
    index_offset = INT8.unpack_from(head, len(MAGIC))[0]
    if not HEADER_SIZE <= index_offset <= size - 8:
        raise DamagedFileError(
            f"{path!r}: the DFS20 index offset {index_offset} is outside the file",
            path,
            len(MAGIC),
        )
    return index_offset


def dfs20_index_end(fd: int, path: str, index_offset: int) -> int:
    """Where the index block at ``index_offset`` ends (its ``int8`` length, then a
    zlib-compressed pickle, never unpickled here); ``DamagedFileError`` if the
    block runs past the end of the file."""
    index_length = INT8.unpack(pread_exact(fd, 8, index_offset))[0]
    index_end = index_offset + 8 + index_length
    if index_end > os.fstat(fd).st_size:
        raise DamagedFileError(
            f"{path!r}: the DFS20 index block is cut short", path, index_offset
        )
    return index_end


def read_dfs20_record(fd: int, position: int) -> bytes:
    """The record of the DFS20 item at ``position`` (its ``int4`` length, then the record).

    ``ValueError`` if the length is impossible or the record is cut short by
    the end of the file.  The record itself is not checked.
    """
    head = pread_exact(fd, 4, position)
    if len(head) < 4:
        raise ValueError(f"the item at {position} is cut short by the end of the file")
    length = _INT4.unpack(head)[0]
    if length < 12:
        raise ValueError(f"the item at {position} claims an impossible length {length}")
    record = pread_exact(fd, length, position + 4)
    if len(record) != length:
        raise ValueError(f"item length {length} runs past the end of the file")
    return record


def scan_dfs20_transactions(
    fd: int,
    start: int,
    stop: int,
    on_transaction: Callable[[int, list[int]], None],
) -> tuple[int, ScanProblem | None]:
    """Walk the DFS20 transactions in ``[start, stop)``; never raises for the content.

    For each complete transaction (an empty one too)
    ``on_transaction(transaction_start, flat)`` is called, ``flat`` alternating
    oid numbers and item positions.  Returns ``(end, problem)``: ``end`` is the
    end of the last complete transaction, ``problem`` None when the walk
    reached ``stop`` cleanly, else a ``ScanProblem`` at the start of the
    transaction where it stopped: "incomplete" (cut short by ``stop``) or
    "malformed" (a record shorter than its 12-byte header).
    """
    data = b""
    data_start = 0

    def read(position: int, size: int) -> bytes | None:
        nonlocal data, data_start
        if position + size > stop:
            return None
        offset = position - data_start
        if offset < 0 or offset + size > len(data):
            data = pread_exact(fd, min(max(size, _CHUNK), stop - position), position)
            data_start = position
            offset = 0
        return data[offset : offset + size]

    position = start
    while position < stop:
        transaction_start = position
        flat: list[int] = []
        while True:
            head = read(position, 4)
            if head is None:
                return transaction_start, ScanProblem(
                    "incomplete", transaction_start, f"a cut transaction at {transaction_start}"
                )
            length = _INT4.unpack(head)[0]
            if length == 0:
                position += 4
                break
            if length < 12:
                return transaction_start, ScanProblem(
                    "malformed", transaction_start, f"a record of {length} bytes at {position}"
                )
            name = read(position + 4, 8)
            if name is None or position + 4 + length > stop:
                return transaction_start, ScanProblem(
                    "incomplete", transaction_start, f"a cut record at {position}"
                )
            flat.append(INT8.unpack(name)[0])
            flat.append(position)
            position += 4 + length
        on_transaction(transaction_start, flat)
    return position, None


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
        index_offset = read_dfs20_header(self.fd, path)
        self.index = PositionIndex()
        before = self._scan(HEADER_SIZE, index_offset)
        if before != index_offset:
            raise DamagedFileError(
                f"{path!r}: the transactions before the index end at {before}, "
                f"not at {index_offset}",
                path,
                before,
            )
        self.end_offset = self._scan(dfs20_index_end(self.fd, path, index_offset), size)

    def _scan(self, start: int, stop: int) -> int:
        """Index the complete transactions in ``[start, stop)``; return where they end."""
        index_set = self.index.set

        def apply(_transaction_start: int, flat: list[int]) -> None:
            for i in range(0, len(flat), 2):
                index_set(flat[i], flat[i + 1])

        end, problem = scan_dfs20_transactions(self.fd, start, stop, apply)
        if problem is not None and problem.kind == "malformed":
            raise DamagedFileError(f"{self.path!r}: {problem.detail}", self.path, problem.offset)
        if problem is not None:
            logger.warning(
                "%r: ignoring %s (%d bytes to the end of the region)",
                self.path,
                problem.detail,
                stop - problem.offset,
            )
        return end

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
        try:
            record = read_dfs20_record(self.fd, position)
        except ValueError as error:
            raise DamagedFileError(
                f"{self.path!r}: bad record at {position} ({error})", self.path, position
            ) from None
        if record[:8] != oid:
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

    def enable_snapshots(self) -> None:
        """Nothing to do: a DFS20 file is only read, never changed."""

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
