"""Interoperability with a real Durus 4.3, in both directions.

Durus 4.3 runs in its own interpreter, named by the DURUS43_PYTHON environment
variable (the tox interop environments set it; elsewhere these tests skip).
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from durus.error import ConflictError
from durus.persistent_dict import PersistentDict
from durus.persistent_list import PersistentList
from durus.wire_protocol import send_stop, wait_for_server

pytestmark = pytest.mark.interop

DURUS43 = os.environ.get("DURUS43_PYTHON")

CLIENT_SCRIPT = r"""
import json, sys
from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.error import ConflictError
from durus.persistent_dict import PersistentDict
from durus.persistent_list import PersistentList
from durus.logger import logger
logger.setLevel(40)
port = int(sys.argv[1])
out = {}
c1 = Connection(ClientStorage(port=port))
root = c1.get_root()
out["root_oid"] = root._p_oid.hex()
root["from43"] = PersistentDict(n=1)
root["items"] = PersistentList([PersistentDict(i=i) for i in range(50)])
c1.commit()
c2 = Connection(ClientStorage(port=port))
out["seen_by_c2"] = c2.get_root()["from43"]["n"]
c1.get_root()["from43"]["n"] = 2
c1.commit()
c2.get_root()["from43"]["n"] = 3   # c2 read n=1 earlier: conflict
try:
    c2.commit()
    out["conflict"] = False
except ConflictError:
    out["conflict"] = True
    c2.abort()
out["after_abort"] = c2.get_root()["from43"]["n"]
oids = [item._p_oid for item in c1.get_root()["items"]]
out["bulk"] = len(list(c1.storage.bulk_load(oids)))
out["crawl"] = sum(1 for _ in c1.storage.gen_oid_record())
ours = c1.get_root().get("from_ours")
out["from_ours"] = None if ours is None else ours["n"]
garbage = c1.get_root()["items"]
c1.get_root()["items"] = PersistentList()
c1.commit()
c1.pack()
out["packed"] = True
print(json.dumps(out))
"""


def need_durus43():
    if not DURUS43:
        pytest.skip("DURUS43_PYTHON is not set")


def run43(*args, **kwargs):
    return subprocess.run([DURUS43, *args], capture_output=True, text=True, timeout=120,
                          **kwargs)


def test_durus_4_3_clients_against_our_server(start_server):
    need_durus43()
    server = start_server()
    ours = server.connection()
    # Durus 4.3 creates the root, commits, conflicts, bulk-loads and packs.
    result = run43("-c", CLIENT_SCRIPT, str(server.port))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["root_oid"] == "00" * 8
    assert out["seen_by_c2"] == 1
    assert out["conflict"] is True
    assert out["after_abort"] == 2
    assert out["bulk"] == 50
    assert out["crawl"] >= 53
    assert out["packed"]
    # What it wrote, we read, and our commits reach it.
    ours.abort()
    root = ours.get_root()
    assert root["from43"]["n"] == 2
    root["from_ours"] = PersistentDict(n=7)
    ours.commit()
    again = json.loads(run43("-c", CLIENT_SCRIPT.replace(
        'root["from43"] = PersistentDict(n=1)', 'root["from43"]["n"] = 1'), str(server.port)
    ).stdout)
    assert again["from_ours"] == 7
    # And its stop command stops us (from loopback).
    stop = run43("-m", "durus", "-s", "--stop", "--port", str(server.port))
    assert stop.returncode == 0, stop.stderr
    assert server.proc.wait(30) == 0


@pytest.fixture
def durus43_server(tmp_path, request):
    need_durus43()
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(tmp_path / "durus43.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [DURUS43, "-m", "durus", "-s", "--port", str(port), "--file", str(tmp_path / "43.durus")],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_for_server(port=port, maxtries=600, sleeptime=0.05)
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        log.close()


def test_our_client_against_a_durus_4_3_server(durus43_server):
    port, proc = durus43_server
    from durus.client_storage import ClientStorage
    from durus.connection import Connection

    c1 = Connection(ClientStorage(port=port, timeout=30))
    assert c1.storage.server_info is None  # plain protocol 1
    root = c1.get_root()
    assert root._p_oid == b"\x00" * 8
    root["ours"] = PersistentDict(n=1)
    root["items"] = PersistentList([PersistentDict(i=i) for i in range(40)])
    c1.commit()
    c2 = Connection(ClientStorage(port=port, timeout=30))
    assert c2.get_root()["ours"]["n"] == 1
    # Invalidations and conflicts.
    root["ours"]["n"] = 2
    c1.commit()
    c2.get_root()["ours"]["n"] = 3
    with pytest.raises(ConflictError):
        c2.commit()
    c2.abort()
    assert c2.get_root()["ours"]["n"] == 2
    # Bulk loads, including a failing one that must not desynchronise us.
    storage = c2.storage
    oids = [item._p_oid for item in root["items"]]
    assert len(list(storage.bulk_load(oids))) == 40
    with pytest.raises(KeyError):
        list(storage.bulk_load([oids[0], (10**9).to_bytes(8, "big"), oids[1]]))
    assert storage.load(oids[2])
    assert sum(1 for _ in storage.gen_oid_record()) >= 43
    # A Durus 4.3 client sees our data.
    script = ("import sys\nfrom durus.client_storage import ClientStorage\n"
              "from durus.connection import Connection\n"
              "c = Connection(ClientStorage(port=int(sys.argv[1])))\n"
              "print(c.get_root()['ours']['n'], len(c.get_root()['items']))")
    shown = run43("-c", script, str(port))
    assert shown.stdout.split() == ["2", "40"], shown.stderr
    # Pack, then stop.
    root["items"] = PersistentList()
    c1.commit()
    c1.pack()
    c1.abort()
    assert c1.get_root()["ours"]["n"] == 2
    c1.storage.close()
    c2.storage.close()
    assert send_stop(("127.0.0.1", port))
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is not None


def test_durus_4_3_clients_unchanged_beside_a_snapshot_client(start_server):
    """A snapshot (mvcc) client holding an old snapshot changes nothing for Durus 4.3."""
    need_durus43()
    from durus.connection import Connection

    server = start_server()
    reader = Connection(server.client(), mvcc=True)
    assert "from43" not in reader.get_root()
    result = run43("-c", CLIENT_SCRIPT, str(server.port))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert (out["seen_by_c2"], out["conflict"], out["after_abort"], out["bulk"]) == (
        1, True, 2, 50)
    assert "from43" not in reader.get_root()  # still its snapshot, no conflict
    reader.abort()
    assert reader.get_root()["from43"]["n"] == 2
    stats = reader.get_storage().get_server_stats()
    assert stats["snapshot_clients"] == 1 and stats["snapshots_expired"] == 0


def test_our_snapshot_client_on_a_durus_4_3_server_is_refused_at_once(durus43_server):
    port, _proc = durus43_server
    from durus.client_storage import ClientStorage
    from durus.connection import Connection
    from durus.error import SnapshotsUnsupportedError

    # A short timeout: the refusal must come from what the hello showed, not a wait.
    storage = ClientStorage(port=port, timeout=2)
    with pytest.raises(SnapshotsUnsupportedError, match=r"a Durus 4\.3 server"):
        Connection(storage, mvcc=True)
    assert Connection(storage).get_root() is not None  # still usable without mvcc
    storage.close()
