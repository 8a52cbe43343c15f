"""cold read: a fresh process opens a file and reads every item through the BTree.

Also the memory workload (at the large size): the peak RSS of this process is
the cost of scanning that database with a cache of ``DEFAULT_CACHE`` objects.
"""

from __future__ import annotations

import time
from typing import Any

from ..adapters.base import Adapter
from ..common import DEFAULT_CACHE, peak_rss_bytes, scan
from ..protocol import ok


def run(adapter: Adapter, params: dict[str, Any], scratch: str) -> dict[str, Any]:
    adapter.require("file")
    baseline = peak_rss_bytes()
    start = time.perf_counter()
    storage = adapter.file_storage(params["fixtures"]["db"], readonly=True)
    opened = time.perf_counter()
    session = adapter.session(storage, cache_size=DEFAULT_CACHE)
    try:
        count = scan(adapter, session)
        done = time.perf_counter()
    finally:
        session.close()
    if count != params["n"]:
        raise AssertionError(f"read {count} items, the fixture has {params['n']}")
    return ok(
        {"objects_per_s": count / (done - opened), "peak_rss_bytes": peak_rss_bytes()},
        {"open_s": opened - start, "read_s": done - opened, "rss_before_open_bytes": baseline},
    )
