"""Many clients at once: conflicts, nothing lost, nobody stalls anybody."""

from __future__ import annotations

import threading

import pytest

from durus.error import ConflictError, ReadConflictError, WriteConflictError
from durus.persistent_dict import PersistentDict
from durus.persistent_list import PersistentList


def run_threads(targets):
    errors = []

    def wrap(target):
        try:
            target()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads)


@pytest.mark.parametrize("storage", ["file", "memory"])
def test_concurrent_increments_lose_nothing(start_server, storage):
    server = start_server(storage=storage)
    setup = server.connection()
    root = setup.get_root()
    root["counter"] = PersistentDict(n=0)
    root["logs"] = PersistentList()
    setup.commit()
    clients, rounds = 6, 25
    conflicts = []

    def worker(number):
        def run():
            connection = server.connection(extensions=number % 3 != 0)
            done = 0
            while done < rounds:
                try:
                    counter = connection.get_root()["counter"]
                    counter["n"] += 1
                    connection.get_root()["logs"].append(number)
                    connection.commit()
                    done += 1
                except ConflictError:
                    conflicts.append(number)
                    connection.abort()
            connection.storage.close()

        return run

    run_threads([worker(i) for i in range(clients)])
    check = server.connection()
    assert check.get_root()["counter"]["n"] == clients * rounds
    logs = list(check.get_root()["logs"])
    assert sorted(logs) == sorted(i for i in range(clients) for _ in range(rounds))
    assert conflicts  # they really did conflict
    stats = check.storage.get_server_stats()
    assert stats["commits"] == 2 + clients * rounds  # root creation, setup, the rounds


def record(oid: bytes, data: bytes) -> bytes:
    return oid + len(data).to_bytes(4, "big") + data


def test_a_commit_landing_during_a_review_is_reviewed_again(start_server):
    """Read-write conflicts stay detected although commits overlap (no write skew)."""
    server = start_server(storage="memory")
    setup = server.connection()
    root = setup.get_root()
    root["x"] = PersistentDict()
    root["y"] = PersistentDict()
    root["z"] = PersistentDict()
    setup.commit()
    x, y, z = (root[k]._p_oid for k in "xyz")
    a = server.client()
    b = server.client()
    # Someone commits z, so that A's commit gets a review list.
    setup.get_root()["z"]["n"] = 1
    setup.commit()
    lists = []

    def a_callback(oids):
        lists.append(sorted(oids))
        if len(lists) == 1:
            # While A reviews, B writes x (which A read) and commits.
            b.begin()
            b.store(x, record(x, b"b-wrote-x"))
            b.end(lambda oids: None)
        elif x in oids:
            raise WriteConflictError([x])

    a.begin()
    a.store(y, record(y, b"a-wrote-y"))
    with pytest.raises(WriteConflictError):
        a.end(a_callback)
    assert lists[0] == [z]
    assert lists[1] == [x]  # the commit that landed unseen, sent for review
    assert a.load(y) != record(y, b"a-wrote-y")
    a.close()
    b.close()


def test_protocol_1_commit_windows_are_serialized(start_server):
    server = start_server(storage="memory", commit_lock_timeout=60, commit_lock_idle=60)
    setup = server.connection()
    setup.get_root()["x"] = PersistentDict()
    setup.get_root()["y"] = PersistentDict()
    setup.commit()
    x = setup.get_root()["x"]._p_oid
    y = setup.get_root()["y"]._p_oid
    old = server.client(extensions=False)
    other = server.client()
    seen = []
    other_done = threading.Event()

    def commit_other():
        other.begin()
        other.store(y, record(y, b"other"))
        other.end(lambda oids: seen.append(("other", sorted(oids))))
        other_done.set()

    def old_callback(oids):
        seen.append(("old", sorted(oids)))

    thread = threading.Thread(target=commit_other)
    old.begin()
    old.store(x, record(x, b"old"))
    # Open the window by hand: C, read the list, start the other commit, then send data.
    old.s.sendall(b"C")
    assert old._recv(4) == b"\x00\x00\x00\x00"
    thread.start()
    watcher = server.client()
    while watcher.get_server_stats()["pending_commits"] == 0:
        pass  # until the other commit has arrived and waits for the window
    assert not other_done.is_set()
    rec = record(x, b"old")
    tdata = (8 + len(rec)).to_bytes(4, "big") + x + rec
    old.s.sendall(len(tdata).to_bytes(4, "big") + tdata)
    assert old._recv(1) == b"O"
    thread.join(30)
    assert other_done.is_set()
    # The other commit was applied after the window closed, and reviewed it.
    assert seen == [("other", [x])]
    check = server.client()
    assert check.load(x) == record(x, b"old")
    assert check.load(y) == record(y, b"other")
    old.close()
    other.close()


@pytest.mark.parametrize("extensions", [True, False])
def test_server_refuses_a_blind_overwrite(start_server, extensions):
    server = start_server(storage="memory")
    setup = server.connection()
    setup.get_root()["x"] = PersistentDict()
    setup.commit()
    x = setup.get_root()["x"]._p_oid
    buggy = server.client(extensions=extensions)
    assert buggy.load(x)
    writer = server.connection()
    writer.get_root()["x"]["n"] = 1
    writer.commit()
    buggy.begin()
    buggy.store(x, record(x, b"overwrite"))
    with pytest.raises(WriteConflictError):
        buggy.end(None)  # a client that ignores the invalidation list
    assert server.client().load(x) != record(x, b"overwrite")
    assert buggy.sync() == [] or True
    buggy.close()


def test_overflowing_invalidation_queue_forces_a_resync(start_server):
    server = start_server(storage="memory", max_invalidations=5)
    writer = server.connection()
    root = writer.get_root()
    root["items"] = PersistentList([PersistentDict(n=i) for i in range(12)])
    writer.commit()
    idle = server.connection()
    items = idle.get_root()["items"]
    values = [item["n"] for item in items]
    assert values == list(range(12))
    for item in root["items"]:
        item["n"] += 100
    writer.commit()
    with pytest.raises(ReadConflictError):
        idle.storage.load(root["items"][0]._p_oid)  # every load: I, until it syncs
    idle.abort()  # the resync list names every oid it may hold: all ghosted
    assert [item["n"] for item in idle.get_root()["items"]] == [i + 100 for i in range(12)]
    assert writer.storage.get_server_stats()["overflows"] == 1


def test_a_stalled_client_does_not_delay_commits(start_server, raw_session):
    server = start_server(storage="memory", message_timeout=1)
    stalled = raw_session(server.address)
    stalled.sendall(b"L\x00\x00")  # three bytes of a nine-byte request, then silence
    half_commit = raw_session(server.address)
    half_commit.sendall(b"C")  # a protocol-1 commit window left open
    writer = server.connection()
    for i in range(30):
        writer.get_root()["n"] = i
        writer.commit()
    assert stalled.recv(10) == b""  # dropped after the timeout
    assert half_commit.recv(10) == b"\x00\x00\x00\x00"  # its list
    assert half_commit.recv(10) == b""  # then dropped too
    assert "stalled" in server.log_text()


def test_a_client_that_never_reads_does_not_block_others(start_server, raw_session):
    server = start_server(storage="memory")
    writer = server.connection()
    writer.get_root()["big"] = PersistentList(range(50000))
    writer.commit()
    oid = writer.get_root()["big"]._p_oid
    greedy = raw_session(server.address)
    request = b"B" + (1000).to_bytes(4, "big") + oid * 1000
    for _ in range(40):
        greedy.sendall(request)  # replies pile up unread
    reader = server.connection()
    for _ in range(20):
        assert len(reader.get_root()["big"]) == 50000
        reader.abort()
        writer.get_root()["n"] = 1
        writer.commit()
    greedy.close()


def test_prefetched_records_are_never_stale_after_a_sync(start_server):
    server = start_server(storage="memory")
    writer = server.connection()
    root = writer.get_root()
    root["items"] = PersistentList([PersistentDict(n=i) for i in range(50)])
    writer.commit()
    reader = server.connection()
    items = reader.get_root()["items"]
    assert len(items) == 50  # loads the list: the server sends the items ahead
    assert len(reader.storage._prefetched) >= 40
    for item in root["items"]:
        item["n"] = -1
    writer.commit()
    reader.abort()  # the sync names every item: their buffered records go
    assert [item["n"] for item in reader.get_root()["items"]] == [-1] * 50


@pytest.mark.parametrize("mvcc", [False, True])
def test_a_reader_gets_reloaded_records_sent_ahead(start_server, mvcc):
    """Records a reader must load again (changed by others) come in batches, not one
    round trip each: the server does not hold back what it sent before, and a
    snapshot reader is sent them in its snapshot's version."""
    from durus.connection import Connection

    server = start_server(storage="memory")
    writer = server.connection()
    writer.get_root()["items"] = PersistentList([PersistentDict(n=i) for i in range(200)])
    writer.commit()

    def bump():
        writer.abort()
        for item in writer.get_root()["items"]:
            item["n"] += 1000
        writer.commit()

    reader = Connection(server.client(), mvcc=mvcc)
    stats = reader.get_storage().get_server_stats
    assert sum(item["n"] for item in reader.get_root()["items"]) == sum(range(200))
    bump()
    reader.abort()  # every item was changed: all are ghosts now
    if mvcc:
        bump()  # changed again after the new snapshot: it reads the previous version
    before = stats()["load_requests"]
    total = sum(item["n"] for item in reader.get_root()["items"])
    assert total == sum(range(200)) + 200 * 1000
    assert stats()["load_requests"] - before < 30  # not one request per item
