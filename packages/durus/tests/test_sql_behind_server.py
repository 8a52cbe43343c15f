"""A PostgreSQL database served by ``durus -s`` to classic clients, while an
embedded process writes to the same database directly: both see each other's
commits.  Real processes, a real PostgreSQL server, a real Durus server."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from durus.connection import Connection
from durus.persistent_dict import PersistentDict


@pytest.fixture(scope="module")
def pg_url():
    pytest.importorskip("psycopg")
    from durus.pg_cluster import cluster_for_tests

    cluster = cluster_for_tests(pytest.skip, pytest.fail)
    cluster.create_database("served")
    yield cluster.url("served")
    cluster.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_durus_server_on_postgresql_with_a_direct_writer(pg_url):
    from durus.client_storage import ClientStorage
    from durus.pg_storage import PostgresStorage
    from durus.storage_server import wait_for_server

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "durus", "-s", "--file", pg_url, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_for_server(port=port, maxtries=100, sleeptime=0.1)
        client = Connection(ClientStorage(port=port))
        client.get_root()["shared"] = PersistentDict(v=1)
        client.commit()

        direct = Connection(PostgresStorage(pg_url))
        assert direct.get_root()["shared"]["v"] == 1
        direct.get_root()["shared"]["v"] = 2
        direct.commit()

        client.abort()  # the server syncs its storage and invalidates
        assert client.get_root()["shared"]["v"] == 2
        client.get_root()["shared"]["v"] = 3
        client.commit()
        direct.abort()
        assert direct.get_root()["shared"]["v"] == 3
        client.storage.close()
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert server.returncode == 0, output
