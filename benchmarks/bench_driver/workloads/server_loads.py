"""server loads: a client with an empty cache loads N objects one by one by oid."""

from __future__ import annotations

import os
from typing import Any

from ..adapters.base import Adapter
from ..common import time_loads
from ..fixtures import fixture_oids
from ..protocol import ok
from ..servers import running_server


def run(adapter: Adapter, params: dict[str, Any], scratch: str) -> dict[str, Any]:
    adapter.require("file", "client", "server")
    loads = params["loads"]
    oids = fixture_oids(params, loads)
    source = params["fixtures"]["db"]
    path = os.path.join(scratch, "server_loads.db")
    adapter.copy_db(source, path)
    with running_server(adapter.system, path, None, scratch) as port:
        elapsed = time_loads(adapter.connect(port, cache_size=2 * loads + 1000), oids)
    return ok({"loads_per_s": loads / elapsed}, {"seconds": elapsed})
