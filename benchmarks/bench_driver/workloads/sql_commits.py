"""sql commits: several writer processes making one-object commits to PostgreSQL.

The same as server commits with PostgreSQL as the server: each writer opens its
own storage on the database (ours: ``PostgresStorage``; RelStorage history-free),
loads its own object, and all start together on a signal; throughput is total
commits over the span from the first start to the last finish.
"""

from __future__ import annotations

from typing import Any

from ..adapters.base import Adapter
from ..common import DEFAULT_CACHE
from ..protocol import ok
from .server_commits import fill_slots, run_clients


def run(adapter: Adapter, params: dict[str, Any], scratch: str) -> dict[str, Any]:
    adapter.require("sql")
    dsn, clients, commits = params["dsn"], params["clients"], params["commits"]
    session = adapter.open_sql(dsn, cache_size=DEFAULT_CACHE)
    try:
        fill_slots(adapter, session, clients)
    finally:
        session.close()
    figures = run_clients(adapter.system, ["--dsn", dsn], clients, commits, scratch)
    span = figures.pop("span_s")
    return ok(figures, {"durability": adapter.sql_durability(dsn), "span_s": span})
