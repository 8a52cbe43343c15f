"""Read-only checks of SQLite databases of Durus: 4.3's ``SqliteStorage`` and ours.

Used by ``durus info``, ``verify``, ``census`` and ``convert`` (spec 3.9: one
table ``objects(id, data, refs)``, one row per oid holding its latest record).
Our ``SqliteStorage`` adds a ``tid`` column and a ``durus_state`` table
(ignored here), and leaves rows whose ``data`` is NULL as tombstones of packed
objects: they are not objects, and are left out.  The file is read with plain
``sqlite3`` (not the storage) so that a damaged row is reported, not fatal.
"""

from __future__ import annotations

import os
import pathlib
import sqlite3
import struct

from durus.storage_check import ScanResult

__all__ = ["Durus43SqliteFile", "scan_sqlite_file"]

_int4 = struct.Struct(">I")


def scan_sqlite_file(path: str) -> ScanResult:
    """Index the ``objects`` table of an SQLite file of Durus (read-only, no lock)."""
    stat = os.stat(path)
    result = ScanResult(path=path, format="SQLite", size=stat.st_size, mtime=stat.st_mtime)
    _scan_sqlite(path, result)
    return result


def _scan_sqlite(path: str, result: ScanResult) -> None:
    """Index the ``objects`` table: one row per oid, the latest record."""
    try:
        database = Durus43SqliteFile(path)
    except sqlite3.Error as error:
        result.error("structure", f"not a readable Durus SQLite database: {error}")
        return
    result.reader = database.read_record
    result.closer = database.close
    stored = 0
    for number, size in database.rows:
        if not isinstance(number, int) or not 0 <= number < 1 << 64:
            result.error("structure", f"the objects table holds a bad id {number!r}")
            continue
        result.index[number.to_bytes(8, "big")] = number
        stored += size if isinstance(size, int) else 0
    result.items = len(database.rows)
    # Everything that is not a row's record: pages, free space, the table's bookkeeping.
    result.overhead = result.size - stored


class Durus43SqliteFile:
    """An SQLite database of Durus opened read-only (``sqlite3.Error`` if it is not one)."""

    def __init__(self, path: str) -> None:
        uri = pathlib.Path(path).absolute().as_uri() + "?mode=ro"
        self.db = sqlite3.connect(uri, uri=True)
        try:
            #: ``(id, bytes of its record)`` of every row, as stored.
            self.rows: list[tuple[object, object]] = self.db.execute(
                "SELECT id, length(data) + coalesce(length(refs), 0) + 12 FROM objects"
                " WHERE data IS NOT NULL"
            ).fetchall()
        except BaseException:
            self.db.close()
            raise

    def read_record(self, number: int, oid: bytes) -> bytes:
        """The record of row ``number`` (oid ``oid``); ``KeyError`` if absent,
        ``ValueError`` if unreadable.  The record is built, not checked."""
        try:
            row = self.db.execute(
                "SELECT data, refs FROM objects WHERE id = ? AND data IS NOT NULL", (number,)
            ).fetchone()
        except sqlite3.Error as error:
            raise ValueError(f"the row cannot be read: {error}") from None
        if row is None:
            raise KeyError(oid)
        data, refs = (bytes(part or b"") for part in row)
        return oid + _int4.pack(len(data)) + data + refs

    def close(self) -> None:
        self.db.close()
