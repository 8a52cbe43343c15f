"""warm write: set one attribute on N cached items and commit, several rounds."""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

from ..adapters.base import Adapter
from ..common import read_pass
from ..protocol import ok


def run(adapter: Adapter, params: dict[str, Any], scratch: str) -> dict[str, Any]:
    adapter.require("file")
    n, rounds = params["n"], params["rounds"]
    path = os.path.join(scratch, "warm_write.db")
    adapter.copy_db(params["fixtures"]["db"], path)
    session = adapter.open_file(path, cache_size=2 * n + 1000)
    try:
        objects = list(itertools.islice(adapter.tree_values(session.root["tree"]), n))
        read_pass(objects)
        session.abort()
        round_seconds = []
        for round_number in range(rounds):
            start = time.perf_counter()
            for obj in objects:
                obj.f = float(round_number)
            session.commit()
            round_seconds.append(time.perf_counter() - start)
    finally:
        session.close()
    return ok(
        {"objects_per_s": n * rounds / sum(round_seconds)},
        {"round_s": round_seconds, "durability": adapter.durability(None)},
    )
