"""insert: N small items into a BTree keyed by int, one commit every 1000 items."""

from __future__ import annotations

import os
import time
from typing import Any

from ..adapters.base import Adapter
from ..common import DEFAULT_CACHE, fill_tree
from ..protocol import ok


def run(adapter: Adapter, params: dict[str, Any], scratch: str) -> dict[str, Any]:
    adapter.require("file")
    n = params["n"]
    path = os.path.join(scratch, "insert.db")
    session = adapter.open_file(path, cache_size=DEFAULT_CACHE)
    try:
        start = time.perf_counter()
        fill_tree(adapter, session, n, params["batch"])
        elapsed = time.perf_counter() - start
    finally:
        session.close()
    size = adapter.db_size(path)
    return ok(
        {"objects_per_s": n / elapsed, "file_bytes": size},
        {"seconds": elapsed, "durability": adapter.durability(None)},
    )
