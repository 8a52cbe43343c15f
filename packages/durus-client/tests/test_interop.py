"""Our ClientStorage against a real Durus 4.3 server (DURUS43_PYTHON, else skipped)."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.error import ConflictError
from durus.persistent_dict import PersistentDict
from durus.wire_protocol import send_stop, wait_for_server

pytestmark = pytest.mark.interop


@pytest.fixture
def durus43_port(tmp_path):
    python = os.environ.get("DURUS43_PYTHON")
    if not python:
        pytest.skip("DURUS43_PYTHON is not set")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [python, "-m", "durus", "-s", "--port", str(port), "--file", str(tmp_path / "db")],
            stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        wait_for_server(port=port, maxtries=600, sleeptime=0.05)
        yield port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def test_round_trip_conflict_and_stop(durus43_port):
    first = Connection(ClientStorage(port=durus43_port, timeout=30))
    first.get_root()["d"] = PersistentDict(n=1)
    first.commit()
    second = Connection(ClientStorage(port=durus43_port, timeout=30))
    assert second.get_root()["d"]["n"] == 1
    first.get_root()["d"]["n"] = 2
    first.commit()
    second.get_root()["d"]["n"] = 3
    with pytest.raises(ConflictError):
        second.commit()
    second.abort()
    assert second.get_root()["d"]["n"] == 2
    oid = first.get_root()["d"]._p_oid
    assert list(second.storage.bulk_load([oid, oid])) == [second.storage.load(oid)] * 2
    first.storage.close()
    second.storage.close()
    assert send_stop(("127.0.0.1", durus43_port))
