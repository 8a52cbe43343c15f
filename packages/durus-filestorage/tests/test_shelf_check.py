"""durus.shelf_check: the read-only scan the tools use, on real files."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent import Persistent
from durus.shelf_check import ScanResult, scan_file


class Note(Persistent):
    def __init__(self, text: str) -> None:
        self.text = text


def _database(path: Path, notes: int = 5) -> None:
    storage = FileStorage(str(path))
    connection = Connection(storage)
    for number in range(notes):
        connection.get_root()[number] = Note(f"note {number}")
        connection.commit()
    storage.close()


def test_a_sound_file_is_indexed_and_its_records_read_back(tmp_path):
    path = tmp_path / "notes.durus"
    _database(path)
    storage = FileStorage(str(path), readonly=True)
    expected = dict(storage.gen_oid_record())
    storage.close()
    with scan_file(str(path)) as scan:
        assert isinstance(scan, ScanResult)
        assert (scan.format, scan.damaged, scan.framing) == ("SHELF-1", False, 16)
        assert set(scan.index) == set(expected)
        assert {oid: scan.read_record(oid) for oid in scan.index} == expected
        assert scan.transactions == 6 and scan.items >= 6  # the root's commit, then 5


def test_a_tail_cut_by_a_crash_is_a_warning_and_damage_an_error(tmp_path):
    path = tmp_path / "notes.durus"
    _database(path)
    size = path.stat().st_size
    with open(path, "r+b") as file:
        file.truncate(size - 3)  # the last commit, cut short
    with scan_file(str(path)) as scan:
        assert not scan.damaged
        assert [finding.kind for finding in scan.findings] == ["incomplete-tail"]
    with open(path, "r+b") as file:
        file.seek(3)
        file.write(b"x")  # a damaged byte in the file's prefix
    with scan_file(str(path)) as scan:
        assert scan.damaged
        assert scan.errors[0].offset == 0
        # Salvaged: every object of the complete commits (the root and 4 notes:
        # the last commit was cut) is still indexed, and reads back.
        assert len(scan.index) == 5
        assert all(scan.read_record(oid)[:8] == oid for oid in scan.index)


def test_other_formats_give_only_their_name_and_release_the_file(tmp_path):
    sqlite_file = tmp_path / "data.sqlite"
    sqlite3.connect(sqlite_file).execute("CREATE TABLE t (x)").connection.commit()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    other = tmp_path / "other"
    other.write_bytes(b"not a database at all")
    before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    for path, kind in ((sqlite_file, "SQLite"), (empty, "empty"), (other, "unknown")):
        scan = scan_file(str(path))
        assert (scan.format, scan.index, scan.reader) == (kind, {}, None)
        scan.close()
    if before is not None:
        assert len(os.listdir("/proc/self/fd")) == before


def test_last_transactions_lists_the_newest_first_with_their_oids(tmp_path):
    from durus.persistent_dict import PersistentDict
    from durus.shelf_check import last_transactions

    path = tmp_path / "t.durus"
    connection = Connection(FileStorage(str(path)))
    root = connection.get_root()
    for n in range(4):
        root[n] = PersistentDict(n=n)
        connection.commit()
    oids = [int.from_bytes(root[n]._p_oid, "big") for n in range(4)]
    connection.get_storage().close()
    found = last_transactions(str(path), 3)
    assert [sorted(written) for _number, written in found] == [
        sorted([0, oids[3]]), sorted([0, oids[2]]), sorted([0, oids[1]])]
    numbers = [number for number, _written in found]
    assert numbers == sorted(numbers, reverse=True) and len(set(numbers)) == 3
    (tmp_path / "foreign").write_bytes(b"not a shelf at all" * 10)
    assert last_transactions(str(tmp_path / "foreign"), 3) == []
