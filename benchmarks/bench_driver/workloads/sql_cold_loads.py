"""sql cold loads: a fresh process with an empty cache loads N objects one by one by oid.

The same as server loads with PostgreSQL as the server: the fixture (N items in
a BTree, committed by another process) is in the database; opening the storage
and the connection is not timed.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..adapters.base import Adapter
from ..fixtures import oids_path
from ..protocol import ok


def run(adapter: Adapter, params: dict[str, Any], scratch: str) -> dict[str, Any]:
    adapter.require("sql")
    loads = params["loads"]
    with open(oids_path(params["fixtures"]["db"]), encoding="utf-8") as f:
        oids = json.load(f)[:loads]
    if len(oids) != loads:
        raise AssertionError(f"the fixture has {len(oids)} items, {loads} wanted")
    session = adapter.open_sql(params["dsn"], cache_size=2 * loads + 1000)
    try:
        start = time.perf_counter()
        for oid in oids:
            session.get(oid)
        elapsed = time.perf_counter() - start
    finally:
        session.close()
    return ok({"loads_per_s": loads / elapsed}, {"seconds": elapsed})
