"""sql cold loads: a fresh process with an empty cache loads N objects one by one by oid.

The same as server loads with PostgreSQL as the server: the fixture (N items in
a BTree, committed by another process) is in the database; opening the storage
and the connection is not timed.
"""

from __future__ import annotations

from typing import Any

from ..adapters.base import Adapter
from ..common import time_loads
from ..fixtures import fixture_oids
from ..protocol import ok


def run(adapter: Adapter, params: dict[str, Any], scratch: str) -> dict[str, Any]:
    adapter.require("sql")
    loads = params["loads"]
    oids = fixture_oids(params, loads)
    elapsed = time_loads(adapter.open_sql(params["dsn"], cache_size=2 * loads + 1000), oids)
    return ok({"loads_per_s": loads / elapsed}, {"seconds": elapsed})
