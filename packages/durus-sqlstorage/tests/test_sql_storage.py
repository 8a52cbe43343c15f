"""Durus's storage semantics on both SQL storages, against real databases.

Each test runs on SQLite (a file in tmp_path) and on PostgreSQL (a fresh
database on the session's server); several storages on one database stand in
for several processes (test_processes.py uses real ones).
"""

from __future__ import annotations

import pytest

from durus.btree import BTree
from durus.connection import Connection
from durus.error import DurusKeyError, ReadConflictError, WriteConflictError
from durus.persistent_dict import PersistentDict
from durus.serialize import pack_record
from durus.sql_errors import ReadOnlyStorageError, SchemaVersionError
from durus.sql_schema import SCHEMA_VERSION


def oid(n: int) -> bytes:
    return n.to_bytes(8, "big")


def tree_of(items: dict) -> BTree:
    tree = BTree()
    tree.update(items)
    return tree


def test_commit_and_reopen(opener):
    connection = Connection(opener())
    root = connection.get_root()
    root["tree"] = tree = BTree()
    for i in range(300):
        tree[i] = PersistentDict(n=i)
    root["text"] = "h\u00e9llo"
    connection.commit()
    connection.storage.close()

    again = Connection(opener()).get_root()
    assert again["text"] == "h\u00e9llo"
    assert [again["tree"][i]["n"] for i in range(300)] == list(range(300))


def test_root_is_oid_zero_and_records_are_byte_identical(opener):
    storage = opener()
    connection = Connection(storage)
    connection.get_root()["x"] = PersistentDict(a=1)
    connection.commit()
    child = connection.get_root()["x"]
    root_record = storage.load(oid(0))
    assert root_record.endswith(child._p_oid)  # the refs trailer names the child
    # Whatever is stored comes back byte for byte, refs trailer included.
    number = storage.new_oid()
    record = pack_record(number, b"\x80\x02any data \x00\xff", oid(0) + child._p_oid)
    storage.begin()
    storage.store(number, record)
    storage.end()
    assert storage.load(number) == record
    assert opener().load(number) == record


def test_missing_oid_is_a_key_error(opener):
    storage = opener()
    Connection(storage)
    with pytest.raises(DurusKeyError):
        storage.load(oid(12345))
    assert Connection(storage).get(12345) is None


def test_other_writers_changes_are_invalidations(opener):
    first, second = Connection(opener()), Connection(opener())
    first.get_root()["d"] = PersistentDict(v=1)
    first.commit()
    second.abort()
    seen = second.get_root()["d"]
    assert seen["v"] == 1

    first.get_root()["d"]["v"] = 2
    first.commit()
    second.abort()  # sync: the cached copy becomes a ghost and reloads
    assert seen["v"] == 2


def test_write_conflict_rolls_back_and_abort_recovers(opener):
    first, second = Connection(opener()), Connection(opener())
    first.get_root()["d"] = PersistentDict(v=0)
    first.commit()
    second.abort()
    theirs = second.get_root()["d"]
    theirs["v"] = 1  # loads, then changes: used in this transaction

    first.get_root()["d"]["v"] = 2
    first.commit()
    with pytest.raises(WriteConflictError):
        second.commit()
    second.abort()
    assert second.get_root()["d"]["v"] == 2
    second.get_root()["d"]["v"] = 3
    second.commit()
    first.abort()
    assert first.get_root()["d"]["v"] == 3


def test_load_of_a_row_newer_than_the_last_sync_is_a_read_conflict(opener):
    first, second = Connection(opener()), Connection(opener())
    first.get_root()["a"] = PersistentDict(v=1)
    first.get_root()["b"] = PersistentDict(v=1)
    first.commit()
    second.abort()
    a, b = second.get_root()["a"], second.get_root()["b"]
    a["v"]  # a is used in this transaction; b stays a ghost
    b._p_set_status_ghost()

    first.get_root()["a"]["v"] = 2
    first.get_root()["b"]["v"] = 2
    first.commit()
    second.storage._ahead.clear()  # rows read ahead: see the next test
    assert second.storage.load(oid(0))  # unchanged rows still load
    with pytest.raises(ReadConflictError):
        second.storage.load(b._p_oid)
    with pytest.raises(ReadConflictError):
        b["v"]  # the connection syncs; a was read in this transaction: conflict
    second.abort()
    assert (a["v"], b["v"]) == (2, 2)


def test_rows_read_ahead_are_the_snapshot_until_sync(opener):
    writer, reader = Connection(opener()), Connection(opener())
    writer.get_root()["items"] = [PersistentDict(v=i) for i in range(40)]
    writer.commit()
    reader.abort()
    items = reader.get_root()["items"]
    assert [item["v"] for item in items[:5]] == list(range(5))  # sequential: reads ahead
    storage = reader.storage
    assert items[30]._p_oid is not None and storage._ahead

    for item in writer.get_root()["items"]:
        item["v"] += 100
    writer.commit()
    # Before a sync, a row read ahead is the state as of the last sync ...
    assert items[6]["v"] == 6
    # ... and a sync drops what changed, so the new state loads.
    reader.abort()
    assert not storage._ahead
    assert [item["v"] for item in items] == [i + 100 for i in range(40)]


def test_oids_are_never_handed_out_twice_across_reopens(opener):
    seen: set[bytes] = set()
    for _round in range(3):
        storage = opener()
        connection = Connection(storage)
        for _i in range(5):
            new = PersistentDict()
            connection.get_root()[len(seen)] = new
            connection.commit()
            assert new._p_oid not in seen
            seen.add(new._p_oid)
        extra = {storage.new_oid() for _i in range(40)}
        assert not extra & seen
        seen |= extra
        storage.close()
    assert oid(0) not in seen


def test_storages_on_one_database_get_distinct_oids(opener):
    one, two = opener(), opener()
    Connection(one)
    drawn = [one.new_oid() for _i in range(50)] + [two.new_oid() for _i in range(50)]
    assert len(set(drawn)) == 100


def test_sync_reports_commits_once_and_not_ones_own(opener):
    one, two = opener(), opener()
    connection = Connection(one)
    two.sync()
    connection.get_root()["x"] = 1
    connection.commit()
    assert one.sync() == []
    assert two.sync() == [oid(0)]
    assert two.sync() == []


def test_commit_without_handler_keeps_invalidations_for_sync(opener):
    one, two = opener(), opener()
    Connection(one).commit()
    connection = Connection(two)
    connection.get_root()["x"] = PersistentDict()
    connection.commit()
    one.begin()
    one.store(oid(0), two.load(oid(0)))
    one.end()  # no handler: the root changed by `two` is reported at the next sync
    assert oid(0) in one.sync()


def test_readonly_storage_reads_and_follows_but_never_writes(opener):
    writer = Connection(opener())
    writer.get_root()["n"] = 1
    writer.commit()
    reader_storage = opener(readonly=True)
    reader = Connection(reader_storage)
    assert reader.get_root()["n"] == 1
    writer.get_root()["n"] = 2
    writer.commit()
    reader.abort()
    assert reader.get_root()["n"] == 2
    reader.get_root()["n"] = 3
    with pytest.raises(ReadOnlyStorageError):
        reader.commit()
    with pytest.raises(ReadOnlyStorageError):
        reader_storage.new_oid()


def test_gen_oid_record_lists_everything_or_the_reachable(opener):
    storage = opener()
    connection = Connection(storage)
    root = connection.get_root()
    root["keep"] = PersistentDict(v=1)
    root["drop"] = PersistentDict(v=2)
    connection.commit()
    dropped = root["drop"]._p_oid
    del root["drop"]
    connection.commit()
    everything = dict(storage.gen_oid_record())
    reachable = dict(storage.gen_oid_record(oid(0)))
    assert set(everything) == set(reachable) | {dropped}
    assert all(storage.load(o) == record for o, record in everything.items())


def test_create_from_records_restores_oids_and_moves_the_counter(opener):
    source = opener()
    connection = Connection(source)
    connection.get_root()["t"] = tree_of({i: PersistentDict(i=i) for i in range(50)})
    connection.commit()
    records = list(source.gen_oid_record(oid(0)))
    source.close()

    target = opener.other()()
    assert target.create_from_records(iter(records)) == len(records)
    assert dict(target.gen_oid_record()) == dict(records)
    highest = max(int.from_bytes(o, "big") for o, _r in records)
    assert int.from_bytes(target.new_oid(), "big") > highest
    tree = Connection(target).get_root()["t"]
    assert [tree[i]["i"] for i in range(50)] == list(range(50))
    with pytest.raises(Exception, match="not empty"):
        target.create_from_records(iter(records))


def test_create_from_records_is_all_or_nothing(opener):
    source = opener()
    connection = Connection(source)
    connection.get_root()["items"] = [PersistentDict(i=i) for i in range(2500)]
    connection.commit()
    records = list(source.gen_oid_record(oid(0)))

    def failing() -> object:
        yield from records[:2000]  # two batches written, then the source fails
        raise OSError("the source went away")

    target = opener.other()()
    with pytest.raises(OSError, match="went away"):
        target.create_from_records(failing())
    assert list(target.gen_oid_record()) == []
    assert target.create_from_records(iter(records)) == len(records)


def test_remove_every_object_empties_the_database_and_keeps_the_oid_counter(opener):
    storage = opener()
    connection = Connection(storage)
    connection.get_root()["items"] = [PersistentDict(i=i) for i in range(20)]
    connection.commit()
    records = list(storage.gen_oid_record())
    highest = max(int.from_bytes(o, "big") for o, _r in records)
    readonly = opener(readonly=True)
    with pytest.raises(ReadOnlyStorageError):
        readonly.remove_every_object()
    storage.remove_every_object()
    assert list(storage.gen_oid_record()) == []
    assert int.from_bytes(storage.new_oid(), "big") > highest
    # Empty again: a copy can be restored into it.
    assert storage.create_from_records(iter(records)) == len(records)


def test_pack_removes_garbage_and_reports_it(opener):
    storage = opener()
    connection = Connection(storage)
    root = connection.get_root()
    root["keep"] = PersistentDict(v=1)
    root["drop"] = PersistentDict(inner=PersistentDict())
    connection.commit()
    dropped = [root["drop"]._p_oid, root["drop"]["inner"]._p_oid]
    del root["drop"]
    connection.commit()
    other = opener()
    other.sync()
    assert list(storage.get_packer())[-1] == "pack finished: 2 reachable, 2 removed"
    for number in dropped:
        with pytest.raises(DurusKeyError):
            storage.load(number)
    assert set(dropped) <= set(other.sync())
    assert Connection(opener()).get_root()["keep"]["v"] == 1
    storage.pack()  # the second pack deletes the first one's tombstones
    assert set(dict(storage.gen_oid_record())) == {oid(0), root["keep"]._p_oid}


def test_commits_during_a_pack_survive_it(opener):
    storage = opener()
    connection = Connection(storage)
    root = connection.get_root()
    root["tree"] = tree_of({i: PersistentDict(i=i) for i in range(3000)})
    root["garbage"] = [PersistentDict(g=i) for i in range(500)]
    connection.commit()
    del root["garbage"]
    connection.commit()

    writer = Connection(opener())
    packer = storage.get_packer()
    moved = None
    for step, _message in enumerate(packer):
        if step == 2:
            # Move an object from the old tree into a new one mid-pack.
            wroot = writer.get_root()
            moved = wroot["tree"][1234]
            wroot["fresh"] = tree_of({"moved": moved, "new": PersistentDict(n=1)})
            del wroot["tree"][1234]
            writer.commit()
    assert moved is not None
    check = Connection(opener()).get_root()
    assert check["fresh"]["moved"]["i"] == 1234
    assert check["fresh"]["new"]["n"] == 1
    assert len(check["tree"]) == 2999
    assert sum(1 for _ in check["tree"].items()) == 2999


def test_pack_without_a_root_removes_nothing(opener):
    # With no root nothing is known reachable: packing must not sweep everything.
    storage = opener()
    assert storage.new_oid() == oid(0)  # the root's, left unused
    number = storage.new_oid()
    record = pack_record(number, b"orphan", b"")
    storage.begin()
    storage.store(number, record)
    storage.end()
    storage.pack()
    assert dict(storage.gen_oid_record()) == {number: record}


def test_newer_schema_is_refused_clearly(opener):
    storage = opener()
    storage._execute("UPDATE durus_state SET schema_version = ?", (SCHEMA_VERSION + 1,))
    storage.close()
    with pytest.raises(SchemaVersionError, match="upgrade durus-sqlstorage"):
        opener()


def test_str_names_the_database(opener):
    text = str(opener())
    assert text.startswith(("SqliteStorage(", "PostgresStorage("))


def test_a_password_is_never_shown(pg_dsn):
    from durus.pg_storage import PostgresStorage

    storage = PostgresStorage(pg_dsn + " password=hunter2")  # trust auth ignores it
    assert "hunter2" not in str(storage)
    assert "dbname=" in str(storage)
    storage.close()
