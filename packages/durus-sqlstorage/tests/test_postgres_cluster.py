"""The PostgreSQL test helper itself: start, databases, crash and restart, replicas.

Checked with psql only (no psycopg), so that a failure here points at the helper rather
than at the storage under test.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from durus.pg_cluster import PostgresCluster, PostgresError, find_postgres_bin


def psql(cluster: PostgresCluster, conninfo: str, sql: str) -> str:
    """Run ``sql`` through the psql binary on a DSN or URL, as a user of the helper would."""
    bin_psql = os.path.join(cluster.bin_dir, "psql")
    program = bin_psql if os.access(bin_psql, os.X_OK) else "/usr/bin/psql"
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    result = subprocess.run(
        [program, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", sql],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def accepts_tcp(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def own_cluster() -> Iterator[PostgresCluster]:
    """A cluster of the test's own, for tests that stop or crash it."""
    if find_postgres_bin() is None:
        pytest.skip("no PostgreSQL server binaries")
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()
    assert not os.path.exists(cluster.base_dir)


def test_fresh_database_answers_select_1(
    postgres_cluster: PostgresCluster, pg_dsn: str, pg_url: str, pg_database: str
) -> None:
    assert pg_dsn == (
        f"host=127.0.0.1 port={postgres_cluster.port} user=durus dbname={pg_database}"
    )
    assert pg_url == f"postgresql://durus@127.0.0.1:{postgres_cluster.port}/{pg_database}"
    assert psql(postgres_cluster, pg_dsn, "select 1") == "1"
    assert psql(postgres_cluster, pg_url, "select current_database()") == pg_database
    # fsync must stay on: the crash tests of the storages rely on it.
    assert psql(postgres_cluster, pg_dsn, "show fsync") == "on"
    assert psql(postgres_cluster, pg_dsn, "show max_connections") == "100"


def test_each_test_gets_an_empty_database(postgres_cluster: PostgresCluster, pg_dsn: str) -> None:
    tables = "select count(*) from pg_tables where schemaname = 'public'"
    assert psql(postgres_cluster, pg_dsn, tables) == "0"
    psql(postgres_cluster, pg_dsn, "create table leftover (a int)")


def test_create_database_quotes_odd_names(postgres_cluster: PostgresCluster) -> None:
    name = "with space's"
    dsn = postgres_cluster.create_database(name)
    try:
        assert psql(postgres_cluster, dsn, "select current_database()") == name
        url = postgres_cluster.url(name)
        assert psql(postgres_cluster, url, "select current_database()") == name
    finally:
        postgres_cluster.drop_database(name)


def test_kill_then_restart_keeps_committed_data(own_cluster: PostgresCluster) -> None:
    dsn = own_cluster.create_database("crash")
    psql(own_cluster, dsn, "create table t (a int); insert into t values (42)")
    port, pid = own_cluster.port, own_cluster.pid
    assert pid is not None

    own_cluster.kill()
    assert not own_cluster.running
    assert own_cluster.pid is None
    assert not accepts_tcp(port)

    own_cluster.restart()
    assert own_cluster.port == port
    assert own_cluster.pid != pid
    assert psql(own_cluster, dsn, "select a from t") == "42"
    # The restart went through crash recovery, not a clean start.
    with open(own_cluster.log_path) as log:
        assert "not properly shut down" in log.read()


def test_stop_then_restart(own_cluster: PostgresCluster) -> None:
    dsn = own_cluster.create_database("clean")
    psql(own_cluster, dsn, "create table t (a text); insert into t values ('kept')")
    port = own_cluster.port
    own_cluster.stop()
    assert not own_cluster.running
    assert not accepts_tcp(port)
    own_cluster.restart()
    assert own_cluster.port == port
    assert psql(own_cluster, dsn, "select a from t") == "kept"


def test_replica_streams_from_primary(own_cluster: PostgresCluster) -> None:
    dsn = own_cluster.create_database("repl")
    psql(own_cluster, dsn, "create table t (a int)")
    replica = own_cluster.make_replica()
    assert replica.port != own_cluster.port
    assert replica.primary is own_cluster
    replica_dsn = replica.dsn("repl")
    assert psql(replica, replica_dsn, "select pg_is_in_recovery()") == "t"

    psql(own_cluster, dsn, "insert into t values (7)")
    deadline = time.monotonic() + 10
    while psql(replica, replica_dsn, "select count(*) from t") != "1":
        assert time.monotonic() < deadline, "the replica did not see the row within 10 s"
        time.sleep(0.05)
    assert psql(replica, replica_dsn, "select a from t") == "7"
    # A standby is read-only.
    result = subprocess.run(
        [replica.program("psql"), "-X", "-v", "ON_ERROR_STOP=1", "-d", replica_dsn,
         "-c", "insert into t values (8)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "read-only transaction" in result.stderr

    own_cluster.cleanup()  # cleans its replicas too
    assert not replica.running
    assert not os.path.exists(replica.base_dir)


def test_context_manager_cleans_up() -> None:
    if find_postgres_bin() is None:
        pytest.skip("no PostgreSQL server binaries")
    with PostgresCluster() as cluster:
        assert cluster.running
        assert psql(cluster, cluster.dsn(), "select 2") == "2"
        port = cluster.port
    assert not cluster.running
    assert not accepts_tcp(port)
    assert not os.path.exists(cluster.base_dir)


def test_the_watchdog_stops_the_server_of_an_owner_killed_by_sigkill() -> None:
    # The owner never runs its atexit hook: its watchdog process must shut the
    # postmaster down and remove the cluster's folder.
    if find_postgres_bin() is None:
        pytest.skip("no PostgreSQL server binaries")
    code = (
        "import sys\n"
        "from durus.pg_cluster import PostgresCluster\n"
        "cluster = PostgresCluster()\n"
        "cluster.start()\n"
        "print(cluster.port, cluster.base_dir, flush=True)\n"
        "sys.stdin.readline()\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        port_text, base_dir = owner.stdout.readline().split()  # type: ignore[union-attr]
        port = int(port_text)
        assert accepts_tcp(port)
    finally:
        owner.kill()
        owner.wait()
    deadline = time.monotonic() + 60
    while (accepts_tcp(port) or os.path.exists(base_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not accepts_tcp(port)
    assert not os.path.exists(base_dir)


def test_a_server_that_cannot_start_reports_its_log() -> None:
    if find_postgres_bin() is None:
        pytest.skip("no PostgreSQL server binaries")
    cluster = PostgresCluster(settings={"shared_buffers": "nonsense"})
    try:
        with pytest.raises(PostgresError, match="shared_buffers") as info:
            cluster.start()
        assert "postgres.log" in str(info.value)
        assert not cluster.running
    finally:
        cluster.cleanup()


def test_a_wrong_durus_pg_bin_is_not_silently_replaced(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.setenv("DURUS_PG_BIN", str(tmp_path))
    assert find_postgres_bin() is None


def test_as_root_the_server_runs_as_an_existing_account_in_a_private_folder() -> None:
    # PostgreSQL refuses to run as root; the helper used to add a system user
    # (durus-pg) to /etc/passwd for it.  It must never change the system.
    if os.geteuid() != 0:
        pytest.skip("only root needs another account for the server")
    if find_postgres_bin() is None:
        pytest.skip("no PostgreSQL server binaries")
    import pwd

    passwd_before = pathlib.Path("/etc/passwd").read_bytes()
    with PostgresCluster() as cluster:
        assert psql(cluster, cluster.dsn(), "select 3") == "3"
        assert os.stat(f"/proc/{cluster.pid}").st_uid == pwd.getpwnam("nobody").pw_uid
        data = os.stat(cluster.data_dir)
        assert data.st_uid == pwd.getpwnam("nobody").pw_uid
        assert data.st_mode & 0o077 == 0  # private to the server's account
    assert pathlib.Path("/etc/passwd").read_bytes() == passwd_before
