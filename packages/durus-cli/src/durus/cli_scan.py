"""Which check reads a database, for ``durus info``, ``verify``, ``census``, ``convert``.

The formats are read by the distributions that own them: durus-filestorage's
``durus.shelf_check`` (SHELF-1, legacy DFS20) and durus-sqlstorage's
``durus.sqlite_check`` (SQLite files of Durus 4.3 and ours); a storage reached
by URL is read through the Storage API (``durus.storage_check.scan_storage``).
The tools only call them and print what they found.
"""

from __future__ import annotations

from durus.shelf_check import scan_file as scan_shelf_file
from durus.sqlite_check import scan_sqlite_file
from durus.storage_check import Finding, ScanResult, StorageScan, scan_storage

__all__ = ["Finding", "ScanResult", "StorageScan", "scan_file", "scan_storage"]


def scan_file(path: str) -> ScanResult:
    """Scan a SHELF-1, DFS20 or SQLite file; other formats give a result with only ``format``."""
    result = scan_shelf_file(path)
    if result.format == "SQLite":
        result = scan_sqlite_file(path)
    return result
