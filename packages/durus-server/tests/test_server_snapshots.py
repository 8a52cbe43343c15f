"""Snapshot reads through a real server: ``Connection(ClientStorage(...), mvcc=True)``.

The history the server keeps is checked against a model of every version
(generated operation sequences); the rest talks to real server processes.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durus.connection import Connection
from durus.error import ReadConflictError, SnapshotExpiredError, WriteConflictError
from durus.persistent_dict import PersistentDict
from durus.server_snapshots import CURRENT, SnapshotGone, SnapshotHistory

OIDS = [n.to_bytes(8, "big") for n in range(4)]

operations = st.lists(
    st.one_of(
        st.tuples(st.just("commit"), st.sets(st.sampled_from(OIDS), min_size=1),
                  st.integers(0, 300)),
        st.tuples(st.just("open")),
        st.tuples(st.just("close"), st.integers(0, 5)),
    ),
    max_size=50,
)


@settings(max_examples=200, deadline=None)
@given(operations, st.sampled_from([300, 2000, 10**9]))
def test_history_answers_as_a_model_of_every_version(ops, max_bytes):
    """Every open snapshot reads each oid's version as of its seq, or is told it is gone."""
    history = SnapshotHistory(max_bytes)
    versions: dict[bytes, list[tuple[int, bytes | None]]] = {oid: [(0, None)] for oid in OIDS}
    current: dict[bytes, bytes | None] = dict.fromkeys(OIDS)
    seq = 0
    snapshots: list[int] = []
    for op in ops:
        if op[0] == "commit":
            _, oids, size = op
            seq += 1
            history.save(seq, {oid: current[oid] for oid in oids})
            for oid in oids:
                current[oid] = bytes([seq % 256]) * size
                versions[oid].append((seq, current[oid]))
        elif op[0] == "open":
            if not snapshots:
                history.reset(seq)
            snapshots.append(seq)
        elif snapshots:
            snapshots.pop(op[1] % len(snapshots))
            if snapshots:
                history.prune(min(snapshots))
            else:
                history.reset(seq)
        for snapshot in snapshots:
            for oid in OIDS:
                expected = [record for s, record in versions[oid] if s <= snapshot][-1]
                try:
                    answer = history.record_as_of(oid, snapshot)
                except SnapshotGone as gone:
                    assert snapshot < history.floor and "max_snapshot_history" in str(gone)
                    continue
                assert (current[oid] if answer is CURRENT else answer) == expected
    assert history.nbytes <= max_bytes


def _fill(connection, count=5):
    root = connection.get_root()
    for k in range(count):
        root[f"item{k}"] = PersistentDict(value=0, blob="x" * 100)
    connection.commit()


def _change_all(connection, value, count=5, blob=100):
    connection.abort()
    root = connection.get_root()
    for k in range(count):
        root[f"item{k}"]["value"] = value
        root[f"item{k}"]["blob"] = "y" * blob
    connection.commit()


def test_a_snapshot_reader_reads_old_versions_and_never_conflicts(start_server):
    server = start_server()
    writer = server.connection()
    _fill(writer)
    # No read-ahead: every load asks the server.
    reader = Connection(server.client(prefetch=False), mvcc=True)
    classic = server.connection(prefetch=False)
    for connection in (reader, classic):
        assert connection.get_root()["item0"]["value"] == 0
    _change_all(writer, 1)
    # item1 by L, the others in one bulk load: all as of the snapshot.
    assert reader.get_root()["item1"]["value"] == 0
    oids = [reader.get_root()[f"item{k}"]._p_oid for k in range(2, 5)]
    records = list(reader.get_storage().bulk_load(oids))
    assert all(b"'y'" not in record and b"xxxx" in record for record in records)
    assert [reader.get_root()[f"item{k}"]["value"] for k in range(5)] == [0] * 5
    # The classic client, in the same spot, gets Durus 4.3's read conflict.
    with pytest.raises(ReadConflictError):
        classic.get_root()["item1"]["value"]
    reader.commit()  # read-only: never a conflict; the next snapshot
    assert [reader.get_root()[f"item{k}"]["value"] for k in range(5)] == [1] * 5
    stats = writer.get_storage().get_server_stats()
    # item1, the bulk load of three, and the connection's loads of those three.
    assert stats["snapshot_loads"] == 7 and stats["snapshot_clients"] == 1


def test_a_snapshot_writer_stays_serializable(start_server):
    server = start_server()
    writer = server.connection()
    _fill(writer)
    snapshot_writer = Connection(server.client(), mvcc=True)
    seen = snapshot_writer.get_root()["item0"]["value"]
    _change_all(writer, 5)
    snapshot_writer.get_root()["item1"]  # still the snapshot's root
    snapshot_writer.get_root()["total"] = seen
    with pytest.raises(WriteConflictError):
        snapshot_writer.commit()  # it read item0 and the root, both changed since
    snapshot_writer.abort()
    snapshot_writer.get_root()["total"] = snapshot_writer.get_root()["item0"]["value"]
    snapshot_writer.commit()
    writer.abort()
    assert writer.get_root()["total"] == 5


def test_objects_created_after_the_snapshot_are_not_there(start_server):
    server = start_server()
    writer = server.connection()
    _fill(writer, 1)
    reader = Connection(server.client(), mvcc=True)
    writer.get_root()["late"] = PersistentDict(value=1)
    writer.commit()
    assert "late" not in reader.get_root()
    reader.abort()
    assert reader.get_root()["late"]["value"] == 1


def test_a_snapshot_beyond_the_history_window_expires_clearly(start_server):
    server = start_server(max_snapshot_history=4000)
    writer = server.connection()
    _fill(writer)
    # (Records read ahead with the root would be the snapshot's: none here.)
    reader = Connection(server.client(prefetch=False), mvcc=True)
    reader.get_root()
    for value in range(1, 6):
        _change_all(writer, value, blob=1000)
    with pytest.raises(SnapshotExpiredError) as info:
        reader.get_root()["item0"]["value"]
    assert "max_snapshot_history=4000" in info.value.reason
    reader.abort()
    assert reader.get_root()["item0"]["value"] == 5
    assert writer.get_storage().get_server_stats()["snapshots_expired"] == 1


def _pack_and_wait(connection):
    storage = connection.get_storage()
    before = storage.get_server_stats()["packs"]
    connection.pack()
    deadline = time.monotonic() + 60
    while True:
        stats = storage.get_server_stats()
        if stats["packs"] > before and not stats["pack_running"]:
            return
        assert time.monotonic() < deadline, stats
        time.sleep(0.01)


def test_pack_with_open_snapshots_serves_no_wrong_data(start_server):
    server = start_server()
    writer = server.connection()
    _fill(writer, 3)
    reader = Connection(server.client(prefetch=False), mvcc=True)
    root = reader.get_root()
    assert sorted(root) == ["item0", "item1", "item2"]
    # item0 becomes garbage and is packed away; item1 changes; item2 stays.
    del writer.get_root()["item0"]
    writer.get_root()["item1"]["value"] = 9
    writer.commit()
    _pack_and_wait(writer)
    with pytest.raises(SnapshotExpiredError) as info:
        root["item0"]["value"]
    assert "removed by a pack" in info.value.reason
    assert root["item1"]["value"] == 0  # its old version, kept by the server
    assert root["item2"]["value"] == 0
    reader.abort()
    assert sorted(reader.get_root()) == ["item1", "item2"]
    assert reader.get_root()["item1"]["value"] == 9
    # A snapshot taken after the pack is not bothered by it.
    writer.get_root()["item2"]["value"] = 3
    writer.commit()
    assert reader.get_root()["item2"]["value"] == 0
    reader.abort()
    assert reader.get_root()["item2"]["value"] == 3


def test_commit_moves_the_snapshot_without_a_round_trip(start_server):
    server = start_server()
    writer = server.connection()
    _fill(writer, 2)
    snapshot_writer = Connection(server.client(), mvcc=True)
    storage = snapshot_writer.get_storage()
    snapshot_writer.get_root()["item0"]["value"] = 1
    snapshot_writer.commit()
    # One W, when the connection opened; the commit's sync was answered locally.
    assert storage.get_server_stats()["snapshot_syncs"] == 1
    _change_all(writer, 7, count=2)
    assert snapshot_writer.get_root()["item1"]["value"] == 0  # as of its own commit
    snapshot_writer.abort()
    assert snapshot_writer.get_root()["item1"]["value"] == 7


def test_history_is_kept_only_while_a_snapshot_needs_it(start_server):
    server = start_server()
    writer = server.connection()
    _fill(writer)
    stats = writer.get_storage().get_server_stats
    reader = Connection(server.client(), mvcc=True)
    _change_all(writer, 1)
    assert stats()["snapshot_history_bytes"] > 0  # the reader's snapshot predates it
    reader.abort()  # a new snapshot: nothing older is needed
    assert stats()["snapshot_history_bytes"] == 0
    _change_all(writer, 2)
    assert stats()["snapshot_history_bytes"] > 0
    reader.get_storage().close()
    deadline = time.monotonic() + 30
    while stats()["snapshot_clients"]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert stats()["snapshot_history_bytes"] == 0
    _change_all(writer, 3)  # no snapshot open: nothing is kept
    assert stats()["snapshot_history_bytes"] == 0
