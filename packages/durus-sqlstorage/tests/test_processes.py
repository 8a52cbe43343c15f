"""Several real processes on one database, and bad days for PostgreSQL.

Writers are separate Python processes (the storage modules as installed);
the PostgreSQL server is a real one that these tests kill, restart and
replicate.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from durus.connection import Connection
from durus.persistent_dict import PersistentDict
from durus.persistent_list import PersistentList

WRITER = textwrap.dedent("""
    import sys, time
    from durus.connection import Connection
    from durus.error import ConflictError
    from durus.storage_url import open_storage_url

    url, name, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    connection = Connection(open_storage_url(url))
    print("ready", flush=True)
    sys.stdin.read()  # the writers start together, so that they really collide
    done = conflicts = 0
    while done < rounds:
        try:
            root = connection.get_root()
            root["counter"]["n"] += 1          # everyone touches this: conflicts
            root["logs"][name].append(done)    # only this writer touches its log
            connection.commit()
            done += 1
        except ConflictError:
            conflicts += 1
            connection.abort()
    print(conflicts, flush=True)
""")


def _start_writer(url: str, name: str, rounds: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, url, name, str(rounds)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_concurrent_writers_conflict_and_lose_nothing(opener):
    connection = Connection(opener())
    root = connection.get_root()
    root["counter"] = PersistentDict(n=0)
    names = [f"w{i}" for i in range(4)]
    root["logs"] = PersistentDict({name: PersistentList() for name in names})
    connection.commit()

    rounds = 40
    writers = [_start_writer(opener.url, name, rounds) for name in names]
    for writer in writers:
        assert writer.stdout.readline() == "ready\n", writer.stderr.read()
    for writer in writers:
        writer.stdin.close()
    conflicts = 0
    for writer in writers:
        out = writer.stdout.read()
        assert writer.wait(240) == 0, writer.stderr.read()
        conflicts += int(out.split()[-1])

    connection.abort()
    assert root["counter"]["n"] == rounds * len(names)
    for name in names:
        assert list(root["logs"][name]) == list(range(rounds))
    # Four processes hammering one object must have collided at least once.
    assert conflicts > 0


def test_invalidations_reach_another_process(opener):
    connection = Connection(opener())
    connection.get_root()["counter"] = PersistentDict(n=0)
    connection.get_root()["logs"] = PersistentDict(solo=PersistentList())
    connection.commit()
    seen = connection.get_root()["counter"]
    assert seen["n"] == 0
    writer = _start_writer(opener.url, "solo", 3)
    _out, err = writer.communicate(input="", timeout=120)
    assert writer.returncode == 0, err
    connection.abort()
    assert seen["n"] == 3


# -- PostgreSQL: crashes, lost connections, replicas ---------------------------------

CRASH_WRITER = textwrap.dedent("""
    import sys, time
    from durus.connection import Connection
    from durus.error import ConflictError
    from durus.sql_errors import DatabaseUnavailableError
    from durus.pg_storage import PostgresStorage

    dsn, target = sys.argv[1], int(sys.argv[2])
    storage = PostgresStorage(dsn, connect_timeout=2)
    connection = Connection(storage)
    failures = 0
    while True:
        try:
            connection.abort()
            root = connection.get_root()
            n = root["n"]
            if n >= target:
                break
            root["n"] = n + 1
            root["log"].append(n + 1)
            connection.commit()
            print("ack", n + 1, flush=True)
        except (DatabaseUnavailableError, ConflictError) as error:
            failures += 1
            print("error", type(error).__name__, flush=True)
            time.sleep(0.05)
    print("failures", failures, flush=True)
""")


@pytest.fixture
def own_cluster():
    """A PostgreSQL server of this test alone (it gets killed)."""
    from durus.pg_cluster import PostgresCluster, find_postgres_bin

    if find_postgres_bin() is None:
        pytest.skip("no PostgreSQL binaries")
    pytest.importorskip("psycopg")
    cluster = PostgresCluster()
    cluster.start()
    yield cluster
    cluster.cleanup()


def test_killing_the_database_server_mid_commit_loses_nothing_acknowledged(own_cluster):
    from durus.pg_storage import PostgresStorage

    dsn = own_cluster.create_database("crash")
    connection = Connection(PostgresStorage(dsn))
    connection.get_root()["n"] = 0
    connection.get_root()["log"] = PersistentList()
    connection.commit()
    connection.storage.close()

    target = 400
    writer = subprocess.Popen([sys.executable, "-c", CRASH_WRITER, dsn, str(target)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    acked: list[int] = []
    kills = 0
    deadline = time.monotonic() + 180
    for line in writer.stdout:
        if line.startswith("ack"):
            acked.append(int(line.split()[1]))
            if len(acked) in (60, 180, 300):
                own_cluster.kill()  # SIGKILL: mid-commit for the writer, at some byte
                kills += 1
                time.sleep(0.3)
                own_cluster.restart()
        if line.startswith("failures") or time.monotonic() > deadline:
            break
    writer.wait(timeout=60)
    assert writer.returncode == 0, writer.stderr.read() if writer.stderr else ""
    assert kills == 3

    check = Connection(PostgresStorage(dsn))
    log = list(check.get_root()["log"])
    assert check.get_root()["n"] == target
    assert log == list(range(1, target + 1))  # no gap, no duplicate, nothing half-applied
    assert set(acked) <= set(log)


def test_a_dropped_connection_is_a_clear_error_then_reconnects(pg_dsn, postgres_cluster):
    from durus.pg_storage import PostgresStorage
    from durus.sql_errors import DatabaseUnavailableError

    storage = PostgresStorage(pg_dsn)
    connection = Connection(storage)
    connection.get_root()["x"] = 1
    connection.commit()
    pid = storage._db.info.backend_pid
    postgres_cluster.psql(f"SELECT pg_terminate_backend({pid})")
    connection.get_root()["x"] = 2
    with pytest.raises(DatabaseUnavailableError, match="lost the connection"):
        connection.commit()
    connection.abort()
    connection.get_root()["x"] = 3
    connection.commit()
    assert Connection(PostgresStorage(pg_dsn)).get_root()["x"] == 3


def test_an_unreachable_server_is_a_clear_error():
    pytest.importorskip("psycopg")
    from durus.pg_storage import PostgresStorage
    from durus.sql_errors import DatabaseUnavailableError

    with pytest.raises(DatabaseUnavailableError, match="cannot connect"):
        PostgresStorage("host=127.0.0.1 port=1 user=nobody dbname=none", connect_timeout=2)


def test_readonly_storage_on_a_streaming_replica(own_cluster):
    from durus.pg_storage import PostgresStorage

    dsn = own_cluster.create_database("replicated")
    writer = Connection(PostgresStorage(dsn))
    writer.get_root()["v"] = 1
    writer.commit()
    replica = own_cluster.make_replica()
    try:
        reader = Connection(PostgresStorage(replica.dsn("replicated"), readonly=True))
        assert reader.get_root()["v"] == 1
        writer.get_root()["v"] = 2
        writer.commit()
        deadline = time.monotonic() + 30
        while True:
            reader.abort()  # sync: picks up what the replica has replayed
            if reader.get_root()["v"] == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert reader.get_root()["v"] == 2
    finally:
        replica.cleanup()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork for the file size limit")
def test_sqlite_disk_full_leaves_the_database_as_it_was(tmp_path):
    from durus.sqlite_storage import SqliteStorage

    path = tmp_path / "full.sqlite"
    connection = Connection(SqliteStorage(path))
    connection.get_root()["small"] = "ok"
    connection.commit()
    connection.storage.close()
    script = textwrap.dedent("""
        import os, resource, signal, sys
        from durus.connection import Connection
        from durus.sql_errors import SqlStorageError
        from durus.sqlite_storage import SqliteStorage
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        connection = Connection(SqliteStorage(sys.argv[1]))
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))
        connection.get_root()["big"] = os.urandom(5_000_000)  # incompressible
        try:
            connection.commit()
        except SqlStorageError as error:
            print("refused:", error)
            connection.abort()
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        connection.get_root()["after"] = "space is back"
        connection.commit()
    """)
    result = subprocess.run([sys.executable, "-c", script, str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "refused:" in result.stdout
    root = Connection(SqliteStorage(path)).get_root()
    assert root["small"] == "ok"
    assert "big" not in root
    assert root["after"] == "space is back"


OID_DRAWER = textwrap.dedent("""
    import sys
    from durus.storage_url import open_storage_url
    storage = open_storage_url(sys.argv[1])
    print(" ".join(str(int.from_bytes(storage.new_oid(), "big")) for _ in range(int(sys.argv[2]))))
""")


def test_processes_never_get_the_same_oid(opener):
    Connection(opener()).commit()
    drawers = [subprocess.Popen([sys.executable, "-c", OID_DRAWER, opener.url, "300"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _i in range(4)]
    drawn: list[int] = []
    for drawer in drawers:
        out, err = drawer.communicate(timeout=120)
        assert drawer.returncode == 0, err
        drawn += [int(n) for n in out.split()]
    assert len(drawn) == 1200 and len(set(drawn)) == 1200
    assert 0 not in drawn  # the root's
    # Dense: the processes together used a compact range (blocks of at most 1024 each).
    assert max(drawn) < 4 * 1024 + 1200


GROWER = textwrap.dedent("""
    import sys
    from durus.connection import Connection
    from durus.error import ConflictError
    from durus.persistent_dict import PersistentDict
    from durus.storage_url import open_storage_url

    url, name, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    connection = Connection(open_storage_url(url))
    done = 0
    while done < rounds:
        try:
            root = connection.get_root()
            keep = root["keep"][name]
            keep.append(PersistentDict(n=done))             # new and kept
            root["scratch"][name] = PersistentDict(n=done)   # replaced: garbage
            connection.commit()
            done += 1
        except ConflictError:
            connection.abort()
""")


def test_pack_under_load_from_other_processes(opener):
    connection = Connection(opener())
    root = connection.get_root()
    names = ["g0", "g1", "g2"]
    root["keep"] = PersistentDict({name: PersistentList() for name in names})
    root["scratch"] = PersistentDict()
    connection.commit()

    rounds = 150
    growers = [subprocess.Popen([sys.executable, "-c", GROWER, opener.url, name, str(rounds)],
                                stderr=subprocess.PIPE, text=True) for name in names]
    packs = 0
    packer_storage = opener()
    while any(grower.poll() is None for grower in growers) or packs < 2:
        packer_storage.pack()
        packs += 1
    for grower in growers:
        _out, err = grower.communicate(timeout=240)
        assert grower.returncode == 0, err
    packer_storage.pack()

    check = Connection(opener()).get_root()
    for name in names:
        assert [item["n"] for item in check["keep"][name]] == list(range(rounds))
        assert check["scratch"][name]["n"] == rounds - 1
    # Garbage went: what is left is what the root reaches (plus nothing else).
    storage = opener()
    reachable = {oid for oid, _record in storage.gen_oid_record(b"\0" * 8)}
    assert {oid for oid, _record in storage.gen_oid_record()} == reachable
    assert packs >= 2


def test_postgresql_out_of_space_refuses_the_commit_and_keeps_the_rest():
    """The server's files may not grow past a limit (RLIMIT_FSIZE, which PostgreSQL
    meets as a failed write, like a full disk): the big commit is refused whole, the
    database stays as it was and keeps serving; with the limit gone it goes through."""
    import resource

    from durus.pg_cluster import PostgresCluster, find_postgres_bin

    if find_postgres_bin() is None:
        pytest.skip("no PostgreSQL binaries")
    pytest.importorskip("psycopg")
    from durus.pg_storage import PostgresStorage
    from durus.sql_errors import SqlStorageError

    cluster = PostgresCluster()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    limit = 40 * 1024 * 1024  # above a WAL segment (16 MB), below the big object
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        cluster.start()  # the server inherits the limit
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    try:
        dsn = cluster.create_database("full")
        connection = Connection(PostgresStorage(dsn))
        connection.get_root()["small"] = "kept"
        connection.commit()
        connection.get_root()["big"] = os.urandom(60 * 1024 * 1024)  # incompressible
        with pytest.raises(SqlStorageError) as refused:
            connection.commit()
        assert "lost the connection" not in str(refused.value)
        connection.abort()
        connection.get_root()["after"] = "still serving"
        connection.commit()
        connection.storage.close()

        cluster.stop()
        cluster.start()  # space is back: this process has no limit
        connection = Connection(PostgresStorage(dsn))
        root = connection.get_root()
        assert (root["small"], root["after"], "big" in root) == ("kept", "still serving", False)
        root["big"] = b"x" * 10
        connection.commit()
    finally:
        cluster.cleanup()


def test_a_stalled_commit_lock_holder_is_ended_by_the_server(pg_dsn):
    """A process that took the commit lock and stalls cannot stop the others for long."""
    from durus.pg_storage import PostgresStorage
    from durus.sql_errors import DatabaseUnavailableError

    stalled = PostgresStorage(pg_dsn, idle_in_transaction_timeout=1)
    Connection(stalled).commit()
    stalled._begin_write()
    stalled._next_tid()  # holds the durus_state row lock, then does nothing

    other = Connection(PostgresStorage(pg_dsn))
    other.get_root()["x"] = 1
    started = time.monotonic()
    other.commit()  # waits for the lock until the server ends the stalled session
    waited = time.monotonic() - started
    assert 0.5 < waited < 30
    with pytest.raises(DatabaseUnavailableError):
        stalled._execute("COMMIT")
    assert Connection(stalled).get_root()["x"] == 1  # reconnected
