"""small commits: many one-object commits to a file, with or without fsync.

``params["fsync"]`` is true (fsync required: Durus 4.3 is unavailable), false
(no fsync: ZODB is unavailable) or "strongest" (each system's most durable mode).
"""

from __future__ import annotations

import os
import time
from typing import Any

from ..adapters.base import Adapter
from ..common import DEFAULT_CACHE, percentile
from ..protocol import ok


def resolve_fsync(adapter: Adapter, wanted: Any) -> bool | None:
    """The ``fsync`` argument for a workload's durability parameter."""
    return adapter.strongest_fsync() if wanted == "strongest" else bool(wanted)


def run(adapter: Adapter, params: dict[str, Any], scratch: str) -> dict[str, Any]:
    adapter.require("file")
    fsync = resolve_fsync(adapter, params["fsync"])
    commits = params["commits"]
    path = os.path.join(scratch, "small_commits.db")
    session = adapter.open_file(path, cache_size=DEFAULT_CACHE, fsync=fsync)
    try:
        item = adapter.new_item(0)
        session.root["item"] = item
        session.commit()
        latencies = []
        start = time.perf_counter()
        for i in range(commits):
            before = time.perf_counter()
            item.n = i
            session.commit()
            latencies.append(time.perf_counter() - before)
        elapsed = time.perf_counter() - start
    finally:
        session.close()
    return ok(
        {"commits_per_s": commits / elapsed},
        {
            "p50_s": percentile(latencies, 0.5),
            "p99_s": percentile(latencies, 0.99),
            "durability": adapter.durability(fsync),
        },
    )
