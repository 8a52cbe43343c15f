"""Read-only scanners of database files, for ``durus info``, ``verify``, ``census``, ``convert``.

They open the file for reading only and take no lock, so they work on a file a
running server is writing (they see it as it was when the scan began).  They
read the formats straight from the specification (SHELF-1, spec 3.2-3.5;
legacy DFS20, spec 3.8; Durus 4.3's SQLite table, spec 3.9) and never raise on
damage: every problem found is recorded with the offset where it was found,
and the rest of the file is still used when it can be.
"""

from __future__ import annotations

import io
import os
import pathlib
import pickle
import sqlite3
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

__all__ = ["Finding", "ScanResult", "scan_file"]

_int8 = struct.Struct(">Q")
_int4 = struct.Struct(">I")
ROOT_OID = bytes(8)


@dataclass
class Finding:
    """A problem (``severity`` "error") or a remark ("warning") about a file."""

    severity: str
    kind: str
    message: str
    offset: int | None = None

    def __str__(self) -> str:
        where = f" (offset {self.offset})" if self.offset is not None else ""
        return f"{self.severity}: {self.message}{where}"


@dataclass
class ScanResult:
    path: str
    format: str
    size: int
    mtime: float
    #: oid -> file offset of the latest item of that oid
    index: dict[bytes, int] = field(default_factory=dict)
    #: number of items (object versions) in the file
    items: int = 0
    #: committed transactions (an empty one counts; the initial one counts if not empty)
    transactions: int = 0
    #: offset where the last complete transaction starts (None: there is none)
    last_transaction_offset: int | None = None
    #: bytes of framing: headers, offset map or index, transaction markers
    overhead: int = 0
    findings: list[Finding] = field(default_factory=list)
    _file: BinaryIO | None = None
    _db: sqlite3.Connection | None = None

    def error(self, kind: str, message: str, offset: int | None = None) -> None:
        self.findings.append(Finding("error", kind, message, offset))

    def warning(self, kind: str, message: str, offset: int | None = None) -> None:
        self.findings.append(Finding("warning", kind, message, offset))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def read_record(self, oid: bytes) -> bytes:
        """The latest record of ``oid``; ``KeyError`` if absent, ``ValueError`` if damaged."""
        position = self.index[oid]
        if self._db is not None:
            return _read_sqlite_row(self._db, position, oid)
        assert self._file is not None
        if self.format == "SHELF-1":
            return _read_shelf_item(self._file, position, self.size, oid)
        return _read_dfs_item(self._file, position, self.size, oid)

    def item_size(self, oid: bytes) -> int:
        """Bytes the latest item of ``oid`` occupies in the file (framing included)."""
        if self._db is not None:
            return len(self.read_record(oid))
        assert self._file is not None
        position = self.index[oid]
        self._file.seek(position)
        if self.format == "SHELF-1":
            return 8 + _int8.unpack(self._file.read(8))[0]
        return 4 + _int4.unpack(self._file.read(4))[0]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> ScanResult:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ValueError(f"short read: wanted {n} bytes, got {len(data)}")
    return data


def _check_record(record: bytes, oid: bytes) -> bytes:
    if len(record) < 12:
        raise ValueError(f"record of {len(record)} bytes is shorter than its 12-byte header")
    if record[:8] != oid:
        raise ValueError("the record names another oid than its item")
    data_length = _int4.unpack_from(record, 8)[0]
    refs = len(record) - 12 - data_length
    if refs < 0:
        raise ValueError("the record's data length runs past its end")
    if refs % 8:
        raise ValueError("the record's refs trailer is not a whole number of oids")
    return record


def _read_shelf_item(f: BinaryIO, position: int, size: int, oid: bytes) -> bytes:
    f.seek(position)
    length = _int8.unpack(_read_exact(f, 8))[0]
    if length < 8 or position + 8 + length > size:
        raise ValueError(f"item length {length} runs past the end of the file")
    body = _read_exact(f, length)
    if body[:8] != oid:
        raise ValueError("the item names another oid")
    return _check_record(body[8:], oid)


def _read_dfs_item(f: BinaryIO, position: int, size: int, oid: bytes) -> bytes:
    f.seek(position)
    length = _int4.unpack(_read_exact(f, 4))[0]
    if length < 12 or position + 4 + length > size:
        raise ValueError(f"item length {length} runs past the end of the file")
    return _check_record(_read_exact(f, length), oid)


def scan_file(path: str) -> ScanResult:
    """Scan a SHELF-1 or DFS20 file; other formats give a result with only ``format``."""
    stat = os.stat(path)
    f = open(path, "rb")  # noqa: SIM115 - kept open by the result, closed by close()
    head = f.read(20)
    size = stat.st_size
    if head.startswith(b"SHELF-1\n"):
        kind = "SHELF-1"
    elif head.startswith(b"DFS20"):
        kind = "DFS20"
    elif head.startswith(b"SQLite format "):
        kind = "SQLite"
    elif not head:
        kind = "empty"
    else:
        kind = "unknown"
    result = ScanResult(path=path, format=kind, size=size, mtime=stat.st_mtime, _file=f)
    if kind == "SHELF-1":
        _scan_shelf(f, result)
    elif kind == "DFS20":
        _scan_dfs20(f, result)
    elif kind == "SQLite":
        _scan_sqlite(path, result)
    return result


# -- SHELF-1 ----------------------------------------------------------------


def _walk_shelf_items(
    f: BinaryIO, start: int, end: int, size: int
) -> Iterator[tuple[bytes, int]]:
    """``(oid, position)`` of the items tiling ``[start, end)``; ``ValueError`` if they don't."""
    position = start
    while position < end:
        f.seek(position)
        header = f.read(16)
        if len(header) < 16:
            raise ValueError(f"item header cut short at offset {position}")
        length = _int8.unpack_from(header, 0)[0]
        if length < 20:
            raise ValueError(f"item at offset {position} claims an impossible length {length}")
        yield header[8:16], position
        position += 8 + length
    if position != end:
        raise ValueError(f"the last item runs {position - end} bytes past its transaction")


def _scan_shelf(f: BinaryIO, result: ScanResult) -> None:
    size = result.size
    index = result.index
    if size < 40:
        result.error("structure", f"the file is {size} bytes, shorter than an empty shelf")
        return
    f.seek(8)
    initial_length = _int8.unpack(f.read(8))[0]
    start = 16 + initial_length
    if start + 24 > size:
        result.error("structure", "the initial transaction runs past the end of the file", 8)
        return
    initial: dict[bytes, int] = {}
    try:
        for oid, position in _walk_shelf_items(f, 16, start, size):
            initial[oid] = position
            result.items += 1
    except ValueError as error:
        result.error("structure", f"initial transaction: {error}", 8)
    if initial_length:
        result.transactions += 1
        result.last_transaction_offset = 8
    # The offset map (spec 3.3).
    f.seek(start)
    map_bytes, word, count = struct.unpack(">QQQ", f.read(24))
    map_end = start + 8 + map_bytes
    if not 1 <= word <= 8 or map_bytes != 16 + word * count or map_end > size:
        result.error("structure", "the offset map header is inconsistent "
                     f"(B={map_bytes}, W={word}, N={count})", start)
        return
    result.overhead = 16 + 8 + map_bytes
    _check_offset_map(f, result, start, word, count, initial)
    index.update(initial)
    # The transactions appended after the map (spec 3.5).
    position = map_end
    while position < size:
        if size - position < 8:
            result.warning(
                "incomplete-tail",
                f"{size - position} stray bytes after the last transaction (a commit cut "
                "short); they are not part of the database", position)
            break
        f.seek(position)
        length = _int8.unpack(f.read(8))[0]
        end = position + 8 + length
        if end > size:
            result.warning(
                "incomplete-tail",
                f"the last transaction is incomplete ({size - position} of {8 + length} "
                "bytes: a commit cut short by a crash); it is not part of the database",
                position)
            break
        found: list[tuple[bytes, int]] = []
        try:
            found.extend(_walk_shelf_items(f, position + 8, end, size))
        except ValueError as error:
            result.error("structure", f"malformed transaction: {error}; the "
                         f"{size - position} bytes from here on cannot be read", position)
            break
        for oid, item_position in found:
            index[oid] = item_position
        result.items += len(found)
        result.transactions += 1
        result.overhead += 8
        result.last_transaction_offset = position
        position = end


def _check_offset_map(
    f: BinaryIO, result: ScanResult, start: int, word: int, count: int,
    initial: dict[bytes, int],
) -> None:
    if count == 0:
        if initial:
            result.error("structure", "the initial transaction has items but the offset "
                         "map is empty", start)
        return
    f.seek(start + 24)
    raw = f.read(word * count)
    if len(raw) != word * count:
        result.error("structure", "the offset map is cut short", start)
        return
    slots = [int.from_bytes(raw[i * word:(i + 1) * word], "big") for i in range(count)]
    positions = set(initial.values())
    for oid, position in initial.items():
        number = int.from_bytes(oid, "big")
        if number >= count or slots[number] != position:
            result.error("structure", f"the offset map does not point at the item of oid "
                         f"{number}", start)
    blank = (1 << (8 * word)) - 1
    holes = []
    for number, value in enumerate(slots):
        if value < start:
            if value not in positions:
                result.error("structure", f"offset map slot {number} points at {value}, "
                             "where no item of the initial transaction starts", start)
        elif value != blank:
            holes.append(number)
    # The hole list (spec 3.3.2): from slot N-1 it visits every hole once.
    if count - 1 not in holes:
        result.error("structure", "the last offset map slot is not a hole: Durus 4.3 "
                     "cannot allocate new oids in this file", start)
        return
    visited = 0
    current = count - 1
    seen = set()
    while True:
        target = slots[current] - start
        if not 0 <= target < count or target in seen or target not in holes:
            result.error("structure", "the offset map's hole list is broken: Durus 4.3 "
                         "would allocate wrong oids", start)
            return
        seen.add(target)
        visited += 1
        if target == count - 1:
            break
        current = target
    if visited != len(holes):
        result.error("structure", "the offset map's hole list misses holes", start)


# -- DFS20 (legacy FileStorage2) --------------------------------------------


class _IndexUnpickler(pickle.Unpickler):
    """Unpickles the DFS20 index (a dict of oids to offsets) without importing anything."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"the DFS20 index refers to {module}.{name}")


def _walk_dfs_transactions(
    f: BinaryIO, result: ScanResult, start: int, end: int, *, tail: bool
) -> None:
    """Add the items of the transactions in ``[start, end)`` to the result."""
    position = start
    while position < end:
        transaction_start = position
        found: list[tuple[bytes, int]] = []
        problem = None
        f.seek(position)
        while True:
            header = f.read(4)
            if len(header) < 4:
                problem = "cut short"
                break
            length = _int4.unpack(header)[0]
            if length == 0:
                position += 4
                break
            if length < 12:
                problem = f"an item claims an impossible length {length}"
                break
            oid = f.read(8)
            if len(oid) < 8 or position + 4 + length > end:
                problem = "cut short"
                break
            found.append((oid, position))
            position += 4 + length
            f.seek(position)
        if problem is not None:
            if problem == "cut short" and tail:
                result.warning("incomplete-tail", "the last transaction is incomplete (a "
                               "commit cut short by a crash); it is not part of the database",
                               transaction_start)
            else:
                result.error("structure", f"malformed transaction: {problem}",
                             transaction_start)
            return
        for oid, item_position in found:
            result.index[oid] = item_position
        result.items += len(found)
        result.transactions += 1
        result.overhead += 4
        result.last_transaction_offset = transaction_start


def _scan_dfs20(f: BinaryIO, result: ScanResult) -> None:
    size = result.size
    f.seek(0)
    header = f.read(14)
    if len(header) < 14 or header[:6] != b"DFS20\0":
        result.error("structure", "the DFS20 header is damaged", 0)
        return
    index_offset = _int8.unpack_from(header, 6)[0]
    if not 14 <= index_offset <= size - 8:
        result.error("structure", f"the index offset {index_offset} is outside the file", 6)
        return
    _walk_dfs_transactions(f, result, 14, index_offset, tail=False)
    f.seek(index_offset)
    length = _int8.unpack(f.read(8))[0]
    index_end = index_offset + 8 + length
    result.overhead += 14 + 8 + length  # header and index
    if index_end > size:
        result.error("structure", "the index runs past the end of the file", index_offset)
        return
    try:
        table = _IndexUnpickler(
            io.BytesIO(zlib.decompress(f.read(length))), encoding="latin-1"
        ).load()
        if not isinstance(table, dict):
            raise ValueError("the index is not a dict")
    except Exception as error:
        result.error("structure", f"the index cannot be read: {error}", index_offset)
        return
    for key, position in table.items():
        oid = key.encode("latin-1") if isinstance(key, str) else bytes(key)
        if len(oid) != 8 or not isinstance(position, int) or not 14 <= position < size:
            result.error("structure", f"the index holds a bad entry {key!r}: {position!r}",
                         index_offset)
            continue
        if result.index.get(oid, position) != position:
            result.error("structure", f"the index disagrees with the file about oid "
                         f"{int.from_bytes(oid, 'big')}", index_offset)
        result.index[oid] = position
    _walk_dfs_transactions(f, result, index_end, size, tail=True)


# -- SQLite (Durus 4.3's experimental SqliteStorage) -------------------------


def _read_sqlite_row(db: sqlite3.Connection, number: int, oid: bytes) -> bytes:
    try:
        row = db.execute("SELECT data, refs FROM objects WHERE id = ?", (number,)).fetchone()
    except sqlite3.Error as error:
        raise ValueError(f"the row cannot be read: {error}") from None
    if row is None:
        raise KeyError(oid)
    data, refs = (bytes(part or b"") for part in row)
    return _check_record(oid + _int4.pack(len(data)) + data + refs, oid)


def _scan_sqlite(path: str, result: ScanResult) -> None:
    """Index the ``objects`` table: one row per oid, the latest record."""
    try:
        uri = pathlib.Path(path).absolute().as_uri() + "?mode=ro"
        db = sqlite3.connect(uri, uri=True)
        rows = db.execute("SELECT id, length(data) + length(refs) + 12 FROM objects").fetchall()
    except sqlite3.Error as error:
        result.error("structure", f"not a readable Durus SQLite database: {error}")
        return
    result._db = db
    stored = 0
    for number, size in rows:
        if not isinstance(number, int) or not 0 <= number < 1 << 64:
            result.error("structure", f"the objects table holds a bad id {number!r}")
            continue
        result.index[number.to_bytes(8, "big")] = number
        stored += size or 0
    result.items = len(rows)
    # Everything that is not a row's record: pages, free space, the table's bookkeeping.
    result.overhead = result.size - stored
