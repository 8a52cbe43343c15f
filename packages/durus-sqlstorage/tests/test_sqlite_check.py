"""durus.sqlite_check: the read-only scan of SQLite files the tools use."""

from __future__ import annotations

import sqlite3

from durus.connection import Connection
from durus.persistent import Persistent
from durus.sqlite_check import scan_sqlite_file
from durus.sqlite_storage import SqliteStorage


class Note(Persistent):
    def __init__(self, text: str) -> None:
        self.text = text


def test_an_sqlite_storage_file_is_indexed_and_read_back(tmp_path):
    path = tmp_path / "notes.sqlite"
    storage = SqliteStorage(str(path))
    connection = Connection(storage)
    for number in range(3):
        connection.get_root()[number] = Note(f"note {number}")
        connection.commit()
    expected = dict(storage.gen_oid_record())
    storage.close()
    with scan_sqlite_file(str(path)) as scan:
        assert (scan.format, scan.damaged) == ("SQLite", False)
        assert set(scan.index) == set(expected)
        assert {oid: scan.read_record(oid) for oid in scan.index} == expected


def test_a_file_that_is_not_a_durus_database_is_a_finding(tmp_path):
    path = tmp_path / "other.sqlite"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()
    with scan_sqlite_file(str(path)) as scan:
        assert scan.damaged and scan.index == {}
        assert "not a readable Durus SQLite database" in scan.errors[0].message
