"""What a read-only check of a database found: the index of its records, and findings.

Why here: the file formats are read by the distributions that own them
(``durus.shelf_check`` for SHELF-1 and DFS20 files, ``durus.sqlite_check`` for
SQLite files), and a storage of any kind can be read through the Storage API
(``scan_storage``); the command line only calls them and prints.  A scan
never raises on damage: each problem is a ``Finding``, with the offset where
it was found, and the rest is still used when it can be.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from durus.serialize import check_record

__all__ = ["Finding", "ScanResult", "StorageScan", "checked_record", "scan_storage"]


@dataclass
class Finding:
    """A problem (``severity`` "error") or a remark ("warning") about a database."""

    severity: str
    kind: str
    message: str
    offset: int | None = None

    def __str__(self) -> str:
        where = f" (offset {self.offset})" if self.offset is not None else ""
        return f"{self.severity}: {self.message}{where}"


def checked_record(record: bytes, oid: bytes) -> bytes:
    """``record``, once ``check_record`` found it a well-formed record of ``oid``."""
    check_record(oid, record)
    return record


@dataclass
class ScanResult:
    """A scanned database: its format, an index of its latest records, findings."""

    path: str
    format: str
    size: int
    mtime: float
    #: oid -> where the latest record of that oid is (a file offset, a row id)
    index: dict[bytes, int] = field(default_factory=dict)
    #: number of items (object versions) in the database
    items: int = 0
    #: committed transactions (an empty one counts; the initial one counts if not empty)
    transactions: int = 0
    #: offset where the last complete transaction starts (None: there is none)
    last_transaction_offset: int | None = None
    #: bytes of framing: headers, offset map or index, transaction markers
    overhead: int = 0
    #: bytes an item occupies besides its record
    framing: int = 0
    findings: list[Finding] = field(default_factory=list)
    #: Damaged files: the regions in which no item could be read (each has
    #: ``start``, ``end`` and ``reason``), the index then holding what was readable
    unreadable: list[Any] = field(default_factory=list)
    #: Damaged files: oid -> a damaged item naming it, passed over for an
    #: intact one (an earlier version, or the real item if the name is what was hit)
    passed_over: dict[bytes, int] = field(default_factory=dict)
    #: How the format reads the record at a position (set by the scanner).
    reader: Callable[[int, bytes], bytes] | None = None
    #: What releases the file or connection the reader uses.
    closer: Callable[[], None] | None = None

    def error(self, kind: str, message: str, offset: int | None = None) -> None:
        self.findings.append(Finding("error", kind, message, offset))

    def warning(self, kind: str, message: str, offset: int | None = None) -> None:
        self.findings.append(Finding("warning", kind, message, offset))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def damaged(self) -> bool:
        """Was damage found in the structure (the index may then miss objects)?"""
        return any(f.severity == "error" for f in self.findings)

    def read_record(self, oid: bytes) -> bytes:
        """The latest record of ``oid``; ``KeyError`` if absent, ``ValueError`` if damaged."""
        position = self.index[oid]
        if self.reader is None:
            raise KeyError(oid)
        return checked_record(self.reader(position, oid), oid)

    def close(self) -> None:
        closer, self.closer, self.reader = self.closer, None, None
        if closer is not None:
            closer()

    def __enter__(self) -> ScanResult:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class StorageScan(ScanResult):
    """A ``ScanResult`` over an open storage (a PostgreSQL database, say).

    ``index`` holds every live oid (its value is the oid number); records are
    loaded through the storage.  Closing the scan closes the storage.
    """

    storage: Any = None

    def read_record(self, oid: bytes) -> bytes:
        if oid not in self.index:
            raise KeyError(oid)
        return checked_record(self.storage.load(oid), oid)

    def close(self) -> None:
        if self.storage is not None:
            self.storage.close()
            self.storage = None


def scan_storage(name: str, storage: Any, kind: str) -> StorageScan:
    """Index every live record of ``storage`` (read through ``gen_oid_record()``).

    ``name`` is what messages call it; ``kind`` its format ("PostgreSQL").  The
    storage is closed with the scan (also when indexing fails).
    """
    result = StorageScan(path=name, format=kind, size=0, mtime=time.time(), storage=storage)
    try:
        stored = 0
        for oid, record in storage.gen_oid_record():
            result.index[oid] = int.from_bytes(oid, "big")
            stored += len(record)
        result.items = len(result.index)
        result.size = int(storage.get_size())
        result.overhead = max(0, result.size - stored)
    except BaseException:
        result.close()
        raise
    return result
