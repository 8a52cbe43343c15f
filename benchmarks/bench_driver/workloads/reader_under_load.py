"""reader under write load: read-only transactions while 4 writers commit.

A server serves a tree of accounts.  Four writer processes move one unit
between two random accounts per commit, retrying through conflicts; one
reader process with a small cache sums every balance in read-only
transactions, retrying a pass that conflicts.  All start together on a
signal and run for the same time.  The reader's figures are completed passes
per second and the latency of a completed pass, retries included (what a
report or a web page waits); the writers' is their commit rate.  A pass that
sums to anything but the exact total is counted too (it must never happen).

``mvcc``: our reader uses ``Connection(..., mvcc=True)``; without it, it is
a classic Durus reader (today's baseline).  Durus 4.3 has only the classic
one; ZODB's is always a snapshot reader.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from typing import Any

from ..adapters.base import Adapter, Session
from ..common import percentile
from ..protocol import ok
from ..servers import READY, driver_command, run_together, running_server

ACCOUNTS = 200
WRITERS = 4
READER_CACHE = 50


def _make_database(adapter: Adapter, path: str) -> int:
    """The accounts, item i holding i; returns the total every pass must see."""
    session = adapter.open_file(path)
    try:
        tree = adapter.new_tree()
        for i in range(ACCOUNTS):
            tree[i] = adapter.new_item(i)
        session.root["accounts"] = tree
        session.commit()
    finally:
        session.close()
    return sum(range(ACCOUNTS))


def run(adapter: Adapter, params: dict[str, Any], scratch: str) -> dict[str, Any]:
    adapter.require("file", "client", "server")
    mvcc = bool(params["mvcc"])
    path = os.path.join(scratch, "reader_under_load.db")
    total = _make_database(adapter, path)
    seconds = params["seconds"]
    with running_server(adapter.system, path, None, scratch) as port:
        roles = [("writer", n) for n in range(WRITERS)] + [("reader", WRITERS)]
        results = _run_clients(adapter.system, port, roles, seconds, mvcc, total, scratch)
    writers, (reader,) = results[:WRITERS], results[WRITERS:]
    span = max(r["end"] for r in results) - min(r["start"] for r in results)
    passes = reader["latencies"]
    commits = sum(len(w["latencies"]) for w in writers)
    return ok(
        {
            "reader_tx_per_s": len(passes) / (reader["end"] - reader["start"]),
            "reader_conflicts_per_tx": reader["conflicts"] / max(1, len(passes)),
            "reader_p50_s": percentile(passes, 0.5) if passes else float("nan"),
            "reader_p99_s": percentile(passes, 0.99) if passes else float("nan"),
            "writer_commits_per_s": commits / span,
            "wrong_totals": float(reader["wrong"]),
        },
        {
            "durability": adapter.durability(None),
            "reader": adapter.reader_kind(mvcc),
            "span_s": span,
            "writer_conflicts": sum(w["conflicts"] for w in writers),
        },
    )


def _run_clients(system: str, port: int, roles: list[tuple[str, int]], seconds: float,
                 mvcc: bool, total: int, scratch: str) -> list[dict[str, Any]]:
    commands = []
    for role, slot in roles:
        out_path = os.path.join(scratch, f"{role}-{slot}.json")
        options = json.dumps({"role": role, "slot": slot, "seconds": seconds,
                              "mvcc": mvcc, "total": total})
        command = driver_command("load-client", "--system", system, "--port", str(port),
                                 "--params", options, "--out", out_path)
        commands.append((command, out_path, os.path.join(scratch, f"{role}-{slot}.log")))
    return run_together(commands, "a load client", seconds + 600)


def client(adapter: Adapter, port: int, options: dict[str, Any]) -> dict[str, Any]:
    """One writer or the reader: connect, say ready, wait for "go", run ``seconds``."""
    reader = options["role"] == "reader"
    session = adapter.connect(port, cache_size=READER_CACHE if reader else 100_000,
                              mvcc=reader and options["mvcc"])
    conflicts = adapter.conflict_errors()
    try:
        session.root["accounts"]  # connected and loaded before the clock
        print(READY, flush=True)
        sys.stdin.readline()
        start = time.monotonic()
        if reader:
            figures = _read(adapter, session, conflicts, start + options["seconds"],
                            options["total"])
        else:
            figures = _write(session, conflicts, start + options["seconds"], options["slot"])
        end = time.monotonic()
    finally:
        session.close()
    return {"status": "ok", "start": start, "end": end, **figures}


def _read(adapter: Adapter, session: Session, conflicts: tuple[type, ...], deadline: float,
          total: int) -> dict[str, Any]:
    latencies: list[float] = []
    failed = wrong = 0
    while time.monotonic() < deadline:
        began = time.perf_counter()
        while True:
            try:
                seen = sum(item.n for item in adapter.tree_values(session.root["accounts"]))
                session.commit()  # read-only
                break
            except conflicts:
                failed += 1
                session.abort()
        latencies.append(time.perf_counter() - began)
        wrong += seen != total
    return {"latencies": latencies, "conflicts": failed, "wrong": wrong}


def _write(session: Session, conflicts: tuple[type, ...], deadline: float,
           seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    latencies: list[float] = []
    failed = 0
    while time.monotonic() < deadline:
        source, target = rng.sample(range(ACCOUNTS), 2)
        began = time.perf_counter()
        try:
            accounts = session.root["accounts"]
            accounts[source].n -= 1
            accounts[target].n += 1
            session.commit()
        except conflicts:
            failed += 1
            session.abort()
            continue
        latencies.append(time.perf_counter() - began)
    return {"latencies": latencies, "conflicts": failed}
