"""SQLite files: Durus 4.3's open and read, bad files are refused clearly.

``data/durus43-sqlite.durus`` was written by a real Durus 4.3 SqliteStorage;
``data/expected.json`` (``sqlite_root``) says what it holds.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import textwrap
from pathlib import Path

import fixture_classes
import pytest

from durus.connection import Connection
from durus.persistent_dict import PersistentDict
from durus.sql_errors import SqlStorageError
from durus.sqlite_storage import SqliteStorage

DATA = Path(__file__).resolve().parent / "data"
FIXTURE = DATA / "durus43-sqlite.durus"


@pytest.fixture
def expected() -> dict:
    return json.loads((DATA / "expected.json").read_text())["sqlite_root"]


def check(root, expected: dict) -> None:
    alice = root["alice"]
    assert isinstance(alice, fixture_classes.Account)
    assert (alice.owner, alice.balance, alice.history) == ("alice", 100, [])
    assert dict(root["pdict"]) == {"x": 1, "y": [1, 2, 3]}
    assert root["str"] == expected["str"]
    tree = root["tree"]
    assert len(tree) == expected["tree_len"]
    for key, value in expected["tree_sample"].items():
        assert tree[int(key)] == value


def test_readonly_open_reads_the_durus43_file_without_changing_it(expected):
    before = FIXTURE.read_bytes()
    storage = SqliteStorage(FIXTURE, readonly=True)
    check(Connection(storage).get_root(), expected)
    assert storage.sync() == []
    storage.close()
    assert FIXTURE.read_bytes() == before


def test_writable_open_upgrades_and_never_reissues_the_highest_oid(tmp_path, expected):
    path = tmp_path / "old.sqlite"
    shutil.copy(FIXTURE, path)
    highest = sqlite3.connect(path).execute("SELECT max(id) FROM objects").fetchone()[0]
    storage = SqliteStorage(path)
    connection = Connection(storage)
    check(connection.get_root(), expected)
    connection.get_root()["new"] = PersistentDict(v=1)
    connection.commit()
    # Durus 4.3 handed out max(id) again here and overwrote that object.
    assert int.from_bytes(connection.get_root()["new"]._p_oid, "big") > highest
    storage.close()
    again = Connection(SqliteStorage(path)).get_root()
    check(again, expected)
    assert again["new"]["v"] == 1


def test_an_existing_empty_file_is_a_new_database(tmp_path):
    path = tmp_path / "empty.sqlite"
    path.write_bytes(b"")
    connection = Connection(SqliteStorage(path))
    connection.get_root()["x"] = 1
    connection.commit()
    assert Connection(SqliteStorage(path)).get_root()["x"] == 1


def test_a_file_that_is_not_sqlite_is_refused_and_kept(tmp_path):
    path = tmp_path / "text.durus"
    path.write_bytes(b"SHELF-1\n" + b"\0" * 100)
    with pytest.raises(SqlStorageError, match="not an SQLite database"):
        SqliteStorage(path)
    assert path.read_bytes() == b"SHELF-1\n" + b"\0" * 100


def test_another_applications_sqlite_database_is_refused(tmp_path):
    path = tmp_path / "other.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE customers (name text)")
    db.commit()
    db.close()
    with pytest.raises(SqlStorageError, match="not a Durus one"):
        SqliteStorage(path)


def test_a_directory_and_a_missing_readonly_file_are_refused(tmp_path):
    with pytest.raises(SqlStorageError, match="directory"):
        SqliteStorage(tmp_path)
    with pytest.raises(SqlStorageError, match="no such file"):
        SqliteStorage(tmp_path / "missing.sqlite", readonly=True)


def test_has_format(tmp_path):
    assert SqliteStorage.has_format(str(FIXTURE))
    (tmp_path / "x").write_bytes(b"SHELF-1\n")
    assert not SqliteStorage.has_format(str(tmp_path / "x"))


def test_storage_urls_open_sqlite_files(tmp_path):
    from durus.storage_url import is_storage_url, open_storage_url, sqlite_path

    assert sqlite_path("sqlite:////abs/file.db") == "/abs/file.db"
    assert sqlite_path("sqlite:///rel/file.db") == "rel/file.db"
    assert is_storage_url("postgresql://u@h/db") and not is_storage_url("/a/file.durus")
    with pytest.raises(ValueError, match="local file"):
        sqlite_path("sqlite://host/file.db")
    storage = open_storage_url(f"sqlite:///{tmp_path}/u.sqlite")
    assert isinstance(storage, SqliteStorage)
    assert storage.get_filename() == str(tmp_path / "u.sqlite")
    storage.close()


@pytest.mark.interop
def test_durus43_reads_a_file_we_wrote(tmp_path):
    """A real Durus 4.3 SqliteStorage opens our (unpacked) file and reads it."""
    import os

    python = os.environ.get("DURUS43_PYTHON")
    if not python or not os.path.exists(python):
        pytest.skip("DURUS43_PYTHON (a Durus 4.3 interpreter) is not set")
    path = tmp_path / "ours.sqlite"
    connection = Connection(SqliteStorage(path))
    connection.get_root()["d"] = PersistentDict(greeting="hello", n=[1, 2])
    connection.commit()
    connection.storage.close()
    script = textwrap.dedent("""
        import sys
        from durus.connection import Connection
        from durus.sqlite_storage import SqliteStorage
        root = Connection(SqliteStorage(sys.argv[1])).get_root()
        print(root["d"]["greeting"], root["d"]["n"])
    """)
    result = subprocess.run([python, "-c", script, str(path)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["hello", "[1,", "2]"]

