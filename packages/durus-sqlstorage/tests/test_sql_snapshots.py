"""Snapshot reads (``Connection(..., mvcc=True)``) on SQLite and PostgreSQL.

Each storage's snapshot is the database's own read transaction; several
storages on one database stand in for processes (the bank test in
packages/durus/tests uses real ones).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from durus.connection import Connection
from durus.error import SnapshotExpiredError, SnapshotsUnsupportedError, WriteConflictError
from durus.persistent_counter import Counter
from durus.persistent_dict import PersistentDict

DATA = Path(__file__).resolve().parent / "data"


def _fill(connection, count=4):
    root = connection.get_root()
    for k in range(count):
        root[f"item{k}"] = PersistentDict(value=0)
    connection.commit()


def _change_all(connection, value, count=4):
    connection.abort()
    for k in range(count):
        connection.get_root()[f"item{k}"]["value"] = value
    connection.commit()


def test_a_snapshot_reader_reads_its_snapshot_and_never_conflicts(opener):
    writer = Connection(opener())
    _fill(writer)
    reader = Connection(opener(), mvcc=True)
    assert reader.get_root()["item0"]["value"] == 0
    _change_all(writer, 1)
    writer.get_root()["late"] = PersistentDict()
    writer.commit()
    # Never loaded before the change, read now: the snapshot's versions.
    assert [reader.get_root()[f"item{k}"]["value"] for k in range(4)] == [0] * 4
    assert "late" not in reader.get_root()
    reader.commit()  # read-only: never a conflict, and the next snapshot
    assert [reader.get_root()[f"item{k}"]["value"] for k in range(4)] == [1] * 4
    assert "late" in reader.get_root()


def test_a_snapshot_writer_allocates_oids_and_stays_serializable(opener):
    writer = Connection(opener())
    _fill(writer)
    snapshot_writer = Connection(opener(), mvcc=True)
    seen = snapshot_writer.get_root()["item0"]["value"]
    _change_all(writer, 5)
    snapshot_writer.get_root()["copy"] = PersistentDict(seen=seen)  # a new oid
    with pytest.raises(WriteConflictError):
        snapshot_writer.commit()  # it read item0 and the root, changed since
    snapshot_writer.abort()
    root = snapshot_writer.get_root()
    root["copy"] = PersistentDict(seen=root["item0"]["value"])
    snapshot_writer.commit()
    writer.abort()
    assert writer.get_root()["copy"]["seen"] == 5


def test_a_pack_never_shows_a_snapshot_wrong_data(opener):
    writer = Connection(opener())
    _fill(writer, 2)
    reader = Connection(opener(), mvcc=True)
    root = reader.get_root()
    assert sorted(root) == ["item0", "item1"]
    del writer.get_root()["item0"]
    writer.get_root()["item1"]["value"] = 9
    writer.commit()
    writer.get_storage().pack()
    # The database's own snapshot still holds the rows the pack removed.
    assert root["item0"]["value"] == 0
    assert root["item1"]["value"] == 0
    reader.abort()
    assert sorted(reader.get_root()) == ["item1"]
    assert reader.get_root()["item1"]["value"] == 9


def test_a_pack_through_the_snapshot_storage_takes_a_new_snapshot(opener):
    connection = Connection(opener(), mvcc=True)
    _fill(connection, 2)
    del connection.get_root()["item0"]
    connection.commit()
    connection.pack()
    other = Connection(opener())
    other.get_root()["item1"]["value"] = 4
    other.commit()
    assert connection.get_root()["item1"]["value"] == 0  # the snapshot of pack()
    connection.abort()
    assert connection.get_root()["item1"]["value"] == 4


def test_counters_merge_between_snapshot_writers(opener):
    first = Connection(opener(), mvcc=True)
    first.get_root()["hits"] = Counter()
    first.commit()
    second = Connection(opener(), mvcc=True)
    for _round in range(3):
        first.get_root()["hits"].change(1)
        second.get_root()["hits"].change(10)
        first.commit()
        second.commit()
    first.abort()
    assert first.get_root()["hits"].value == 33


def test_sqlite_needs_wal_for_snapshots(tmp_path):
    from durus.sqlite_storage import SqliteStorage

    copy = tmp_path / "durus43.sqlite"
    shutil.copy(DATA / "durus43-sqlite.durus", copy)
    before = copy.read_bytes()
    storage = SqliteStorage(copy, readonly=True)  # a Durus 4.3 file, read as it is
    with pytest.raises(SnapshotsUnsupportedError, match="not WAL"):
        Connection(storage, mvcc=True)
    storage.close()
    assert copy.read_bytes() == before


def test_postgresql_snapshot_outlives_the_idle_in_transaction_timeout(pg_dsn):
    from durus.pg_storage import PostgresStorage

    writer = Connection(PostgresStorage(pg_dsn))
    _fill(writer, 1)
    reader = Connection(PostgresStorage(pg_dsn, idle_in_transaction_timeout=1), mvcc=True)
    reader.get_root()
    _change_all(writer, 2, count=1)
    time.sleep(2.5)  # idle inside its read transaction, past the timeout
    assert reader.get_root()["item0"]["value"] == 0
    reader.abort()
    assert reader.get_root()["item0"]["value"] == 2


def test_postgresql_snapshot_whose_session_ended_expires_clearly(pg_dsn):
    import psycopg

    from durus.pg_storage import PostgresStorage

    writer = Connection(PostgresStorage(pg_dsn))
    _fill(writer, 1)
    reader_storage = PostgresStorage(pg_dsn)
    reader = Connection(reader_storage, mvcc=True)
    reader.get_root()
    pid = reader_storage._db.info.backend_pid
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(SnapshotExpiredError) as info:
        for _attempt in range(2):  # the first may only notice the lost connection
            try:
                reader.get_root()["item0"]["value"]
            except SnapshotExpiredError:
                raise
            except Exception:
                continue
    assert "connection" in info.value.reason
    reader.abort()
    assert reader.get_root()["item0"]["value"] == 0
