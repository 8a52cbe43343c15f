"""The bank test: concurrent writers and a snapshot reader in real processes.

On a ``durus -s`` server, on one SQLite file and on a real PostgreSQL:

* four writers in ``mvcc=True`` move money between accounts, retrying
  through their conflicts, while a snapshot reader with an 8-object cache
  sums every balance: each of its passes sees the exact total, with no
  conflict at all;
* every acknowledged transfer is in the database exactly once (the
  balances equal the replay of the writers' logs), and the ``transfers``
  Counter counts them exactly;
* four processes, half of them classic, increment one Counter: no conflict
  reaches them, and the count is exact.
"""

from __future__ import annotations

import json
import pathlib
import socket
import subprocess
import sys

import pytest

from durus.connection import Connection
from durus.persistent_counter import Counter
from durus.persistent_dict import PersistentDict
from durus.persistent_list import PersistentList

WORKER = str(pathlib.Path(__file__).resolve().parent / "bank_worker.py")
ACCOUNTS = 20
OPENING_BALANCE = 1000
WRITERS = 4
SECONDS = 2.5
INCREMENTS = 100


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(params=["server", "sqlite", "postgresql"])
def target(request, tmp_path):
    """Where the processes meet: ``server:PORT`` or a storage URL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bank.sqlite'}"
        return
    if request.param == "postgresql":
        cluster = request.getfixturevalue("graph_postgres")
        name = f"bank_{tmp_path.name[-20:].lower().replace('-', '_')}"
        cluster.create_database(name)
        yield cluster.url(name)
        return
    from durus.storage_server import wait_for_server

    port = _free_port()
    log = open(tmp_path / "server.log", "ab")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "durus", "-s", "--file", str(tmp_path / "bank.durus"),
         "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_for_server(port=port, maxtries=600, sleeptime=0.05)
        yield f"server:{port}"
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def _connect(target: str) -> Connection:
    sys.path.insert(0, str(pathlib.Path(WORKER).parent))
    try:
        from bank_worker import open_connection
    finally:
        sys.path.pop(0)
    return open_connection(target, mvcc=False)


def _start(role: str, target: str, **options) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, WORKER, role, target, json.dumps(options)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _results(processes: list[subprocess.Popen]) -> list[dict]:
    results = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_snapshot_reader_and_writers_keep_the_books_exact(target, tmp_path):
    setup = _connect(target)
    root = setup.get_root()
    root["accounts"] = PersistentList(
        PersistentDict(balance=OPENING_BALANCE) for _ in range(ACCOUNTS))
    root["transfers"] = Counter()
    setup.commit()
    logs = [tmp_path / f"writer{n}.log" for n in range(WRITERS)]
    writers = [
        _start("transfer", target, mvcc=True, seed=n, accounts=ACCOUNTS, seconds=SECONDS,
               log=str(logs[n]))
        for n in range(WRITERS)
    ]
    auditor = _start("audit", target, mvcc=True, cache_size=8, seconds=SECONDS)
    written = _results(writers)
    (audit,) = _results([auditor])

    assert audit["conflicts"] == 0, audit
    assert audit["passes"] > 0 and audit["totals"] == [ACCOUNTS * OPENING_BALANCE], audit
    expected = [OPENING_BALANCE] * ACCOUNTS
    acknowledged = 0
    for log in logs:
        for line in log.read_text().splitlines():
            source, target_account, amount = map(int, line.split())
            expected[source] -= amount
            expected[target_account] += amount
            acknowledged += 1
    assert acknowledged == sum(w["transfers"] for w in written) > 0
    setup.abort()
    root = setup.get_root()
    assert [account["balance"] for account in root["accounts"]] == expected
    assert root["transfers"].value == acknowledged
    setup.get_storage().close()


def test_counter_increments_from_four_processes_never_conflict(target):
    setup = _connect(target)
    setup.get_root()["hits"] = Counter()
    setup.commit()
    counters = [_start("count", target, mvcc=bool(n % 2), increments=INCREMENTS)
                for n in range(4)]
    results = _results(counters)
    assert [r["conflicts"] for r in results] == [0, 0, 0, 0], results
    setup.abort()
    assert setup.get_root()["hits"].value == 4 * INCREMENTS
    setup.get_storage().close()
