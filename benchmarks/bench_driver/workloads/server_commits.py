"""server commits: several client processes making one-object commits through a server.

The clients connect and load their object first, then all start together on a
signal; throughput is total commits over the span from the first start to the
last finish (monotonic clock, shared by every process on the machine).
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

from ..adapters.base import Adapter, Session
from ..common import DEFAULT_CACHE, percentile
from ..protocol import ok
from ..servers import child_outcome, driver_command, running_server, stop
from .small_commits import resolve_fsync

READY = "BENCH-READY"
CLIENT_TIMEOUT = 900.0


def _make_database(adapter: Adapter, path: str, clients: int, fsync: bool | None) -> None:
    """One item per client, so that clients never conflict."""
    session = adapter.open_file(path, cache_size=DEFAULT_CACHE, fsync=fsync)
    try:
        fill_slots(adapter, session, clients)
    finally:
        session.close()


def fill_slots(adapter: Adapter, session: Session, clients: int) -> None:
    """One item per client at ``root["slots"]``, so that clients never conflict."""
    slots = adapter.new_tree()
    for slot in range(clients):
        slots[slot] = adapter.new_item(slot)
    session.root["slots"] = slots
    session.commit()


def _start_client(
    system: str, target: list[str], slot: int, commits: int, scratch: str, action: str
) -> tuple:
    """Start one client process; it says READY on stdout and waits for a line on stdin."""
    out_path = os.path.join(scratch, f"client-{slot}.json")
    args = ["--system", system, *target, "--slot", str(slot)]
    args += ["--commits", str(commits), "--out", out_path]
    log_path = os.path.join(scratch, f"client-{slot}.log")
    log = open(log_path, "wb")  # noqa: SIM115 -- closed by run() once the client is done
    proc = subprocess.Popen(
        driver_command(action, *args),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    return proc, out_path, log, log_path


def _wait_ready(proc: subprocess.Popen) -> None:
    for line in proc.stdout:
        if line.strip() == READY:
            return
    proc.wait()


def run_clients(
    system: str, target: list[str], clients: int, commits: int, scratch: str,
    action: str = "client-commits",
) -> dict[str, Any]:
    """Start the clients (``target``: ``--port P`` or ``--dsn D``), let them go together,
    and return the figures: commits/s over the whole span, latency p50 and p99.

    ``action``: the driver action each client runs (``floor-client`` for commit_floor)."""
    started = []
    try:
        started = [
            _start_client(system, target, slot, commits, scratch, action)
            for slot in range(clients)
        ]
        for proc, *_ in started:
            _wait_ready(proc)
        for proc, *_ in started:
            if proc.poll() is None:
                proc.stdin.write("go\n")
                proc.stdin.close()
        results = []
        for proc, out_path, _, log_path in started:
            proc.wait(timeout=CLIENT_TIMEOUT)
            results.append(child_outcome(proc, out_path, "a commit client", log_path))
    finally:
        for proc, _, log, _ in started:
            stop(proc)
            log.close()
    latencies = [x for r in results for x in r["latencies"]]
    span = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {
        "commits_per_s": len(latencies) / span,
        "p50_s": percentile(latencies, 0.5),
        "p99_s": percentile(latencies, 0.99),
        "span_s": span,
    }


def run(adapter: Adapter, params: dict[str, Any], scratch: str) -> dict[str, Any]:
    adapter.require("file", "client", "server")
    fsync = resolve_fsync(adapter, params["fsync"])
    clients, commits = params["clients"], params["commits"]
    path = os.path.join(scratch, "server_commits.db")
    _make_database(adapter, path, clients, fsync)
    with running_server(adapter.system, path, fsync, scratch) as port:
        figures = run_clients(adapter.system, ["--port", str(port)], clients, commits, scratch)
    span = figures.pop("span_s")
    return ok(figures, {"durability": adapter.durability(fsync), "span_s": span})
