"""server commits: several client processes making one-object commits through a server.

The clients connect and load their object first, then all start together on a
signal; throughput is total commits over the span from the first start to the
last finish (monotonic clock, shared by every process on the machine).
"""

from __future__ import annotations

import os
from typing import Any

from ..adapters.base import Adapter, Session
from ..common import DEFAULT_CACHE, percentile
from ..protocol import ok
from ..servers import driver_command, run_together, running_server
from .small_commits import resolve_fsync

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


def run_clients(
    system: str, target: list[str], clients: int, commits: int, scratch: str,
    action: str = "client-commits",
) -> dict[str, Any]:
    """Start the clients (``target``: ``--port P`` or ``--dsn D``), let them go together,
    and return the figures: commits/s over the whole span, latency p50 and p99.

    ``action``: the driver action each client runs (``floor-client`` for commit_floor)."""
    commands = []
    for slot in range(clients):
        out_path = os.path.join(scratch, f"client-{slot}.json")
        args = ["--system", system, *target, "--slot", str(slot)]
        args += ["--commits", str(commits), "--out", out_path]
        commands.append((driver_command(action, *args), out_path,
                         os.path.join(scratch, f"client-{slot}.log")))
    results = run_together(commands, "a commit client", CLIENT_TIMEOUT)
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
