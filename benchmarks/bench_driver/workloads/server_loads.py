"""server loads: a client with an empty cache loads N objects one by one by oid."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ..adapters.base import Adapter
from ..fixtures import oids_path
from ..protocol import ok
from ..servers import running_server


def run(adapter: Adapter, params: dict[str, Any], scratch: str) -> dict[str, Any]:
    adapter.require("file", "client", "server")
    loads = params["loads"]
    source = params["fixtures"]["db"]
    with open(oids_path(source), encoding="utf-8") as f:
        oids = json.load(f)[:loads]
    if len(oids) != loads:
        raise AssertionError(f"the fixture has {len(oids)} items, {loads} wanted")
    path = os.path.join(scratch, "server_loads.db")
    adapter.copy_db(source, path)
    with running_server(adapter.system, path, None, scratch) as port:
        session = adapter.connect(port, cache_size=2 * loads + 1000)
        try:
            start = time.perf_counter()
            for oid in oids:
                session.get(oid)
            elapsed = time.perf_counter() - start
        finally:
            session.close()
    return ok({"loads_per_s": loads / elapsed}, {"seconds": elapsed})
