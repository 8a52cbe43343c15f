"""A request mix: each transaction touches 200 random cached objects 3 times each.

Every tenth transaction also changes one of them and commits; the others end
with an abort.  Durus records each object's first access in a transaction, so
this is where first-touch bookkeeping meets commits, as in a web application.
"""

from __future__ import annotations

import itertools
import os
import random
import time
from typing import Any

from ..adapters.base import Adapter
from ..common import percentile, read_pass
from ..protocol import ok

TOUCHED = 200
READS = 3
COMMIT_EVERY = 10


def run(adapter: Adapter, params: dict[str, Any], scratch: str) -> dict[str, Any]:
    adapter.require("file")
    n, transactions = params["n"], params["transactions"]
    path = os.path.join(scratch, "request_mix.db")
    adapter.copy_db(params["fixtures"]["db"], path)
    rng = random.Random(14)
    picks = [[rng.randrange(n) for _ in range(TOUCHED)] for _ in range(transactions)]
    session = adapter.open_file(path, cache_size=2 * n + 1000)
    try:
        objects = list(itertools.islice(adapter.tree_values(session.root["tree"]), n))
        read_pass(objects)
        session.abort()
        latencies = []
        for number, chosen in enumerate(picks):
            start = time.perf_counter()
            for index in chosen:
                obj = objects[index]
                for _ in range(READS):
                    obj.n  # noqa: B018 -- the read is the point
            if number % COMMIT_EVERY == COMMIT_EVERY - 1:
                objects[chosen[0]].f = float(number)
                session.commit()
            else:
                session.abort()
            latencies.append(time.perf_counter() - start)
    finally:
        session.close()
    return ok(
        {
            "transactions_per_s": transactions / sum(latencies),
            "p50_s": percentile(latencies, 0.50),
            "p99_s": percentile(latencies, 0.99),
        },
        {"durability": adapter.durability(None)},
    )
