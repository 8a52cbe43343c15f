"""pack: collect a file whose records are mostly garbage; time and sizes."""

from __future__ import annotations

import os
import time
from typing import Any

from ..adapters.base import Adapter
from ..common import DEFAULT_CACHE, remove_files
from ..protocol import ok


def run(adapter: Adapter, params: dict[str, Any], scratch: str) -> dict[str, Any]:
    adapter.require("file")
    path = os.path.join(scratch, "pack.db")
    adapter.copy_db(params["fixtures"]["garbage"], path)
    before = adapter.db_size(path)
    session = adapter.open_file(path, cache_size=DEFAULT_CACHE)
    try:
        start = time.perf_counter()
        session.pack()
        elapsed = time.perf_counter() - start
    finally:
        session.close()
    after = adapter.db_size(path)
    remove_files(adapter.pack_leftovers(path))
    return ok(
        {"pack_s": elapsed, "size_before_bytes": before, "size_after_bytes": after},
        {"kept_fraction": after / before},
    )
