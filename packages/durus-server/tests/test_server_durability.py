"""Durability and packing: kill -9 mid-commit, group commit, gcbytes under load."""

from __future__ import annotations

import threading

from durus.error import ConflictError
from durus.persistent_dict import PersistentDict
from durus.persistent_list import PersistentList
from durus.wire_protocol import DurusConnectionError


def test_kill_9_loses_nothing_acknowledged(start_server):
    server = start_server(fsync=True)
    setup = server.connection()
    setup.get_root()["counters"] = PersistentList([PersistentDict(n=0) for _ in range(4)])
    setup.commit()
    setup.storage.close()
    acknowledged = [0] * 4
    started = threading.Barrier(5)

    def writer(slot):
        connection = server.connection()
        counter = connection.get_root()["counters"][slot]
        counter["n"]
        started.wait()
        try:
            for i in range(1, 100000):
                counter["n"] = i
                connection.commit()
                acknowledged[slot] = i
        except (DurusConnectionError, ConflictError):
            pass

    threads = [threading.Thread(target=writer, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    started.wait()
    # Let every writer get some commits acknowledged, then kill the server mid-stream.
    while min(acknowledged) < 20 and all(thread.is_alive() for thread in threads):
        threads[0].join(0.01)
    assert min(acknowledged) >= 20, "a writer stopped before the kill"
    server.kill()
    for thread in threads:
        thread.join(60)
    restarted = start_server(file=server.file, fsync=True)
    counters = restarted.connection().get_root()["counters"]
    for slot in range(4):
        # Everything acknowledged is there; at most the commit in flight is more.
        assert counters[slot]["n"] in (acknowledged[slot], acknowledged[slot] + 1)
    stats = restarted.client().get_server_stats()
    assert stats["commits"] == 0


def test_concurrent_commits_share_flushes(start_server):
    server = start_server(fsync=True)
    setup = server.connection()
    setup.get_root()["slots"] = PersistentList([PersistentDict(n=0) for _ in range(4)])
    setup.commit()
    barrier = threading.Barrier(4)

    def writer(slot):
        connection = server.connection()
        item = connection.get_root()["slots"][slot]
        item["n"]
        barrier.wait()
        for i in range(60):
            item["n"] = i
            connection.commit()
        connection.storage.close()

    threads = [threading.Thread(target=writer, args=(s,)) for s in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    stats = setup.storage.get_server_stats()
    assert stats["commits"] == 2 + 4 * 60
    assert stats["group_commits"] > 0  # some flushes covered several commits
    assert stats["flushes"] < stats["commits"]
    setup.abort()
    assert [slot["n"] for slot in setup.get_root()["slots"]] == [59] * 4


def test_gcbytes_packs_while_serving(start_server):
    server = start_server(gcbytes=20000, fsync=False, pack_slice=0)
    connection = server.connection()
    root = connection.get_root()
    root["live"] = PersistentDict()
    root["bulk"] = PersistentList([PersistentDict(i=i) for i in range(500)])
    connection.commit()
    other = server.connection()
    n = 0
    packs = 0
    saw_running = False
    for round_number in range(3000):
        # Garbage: a fresh list replaced every round; live data: one entry per round.
        root["scratch"] = PersistentList([PersistentDict(x=i) for i in range(10)])
        root["live"][round_number] = round_number
        connection.commit()
        n += 1
        other.abort()
        assert len(other.get_root()["live"]) == n
        stats = connection.storage.get_server_stats()
        packs = stats["packs"]
        saw_running = saw_running or stats["pack_running"]
        if packs >= 2 and saw_running:
            break
    assert packs >= 2
    assert saw_running  # commits were made while a pack was running
    assert server.alive()
    assert "Pack completed" in server.log_text()
    check = server.connection()
    assert sorted(check.get_root()["live"].keys()) == list(range(n))
    assert len(check.get_root()["scratch"]) == 10
    assert [d["i"] for d in check.get_root()["bulk"]] == list(range(500))


def test_automatic_pack_that_cannot_start_waits_for_another_gcbytes(start_server):
    # A database without a root cannot be packed: the server says so once per
    # gcbytes committed, instead of retrying (and logging) on every loop round.
    from durus.serialize import pack_record

    server = start_server(gcbytes=200, fsync=False, pack_slice=0)
    storage = server.client()
    storage.new_oid()  # oid 0, the root's: never stored here
    oid = storage.new_oid()
    commits = 6
    for i in range(commits):
        storage.begin()
        storage.store(oid, pack_record(oid, b"\x80\x02N." + bytes(300) + bytes([i]), b""))
        storage.end()
    assert storage.load(oid).endswith(bytes([commits - 1]))
    assert server.alive()
    warnings = server.log_text().count("automatic pack not started")
    assert 1 <= warnings <= commits
    storage.close()
