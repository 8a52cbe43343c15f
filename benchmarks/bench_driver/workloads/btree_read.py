"""BTree reads of cached items: value iteration and key lookups.

The tree and its items are loaded first, so what is timed is the BTree code
(node search and iteration, the first touch of each node in a transaction),
not the storage.
"""

from __future__ import annotations

import random
import time
from typing import Any

from ..adapters.base import Adapter
from ..common import read_pass
from ..protocol import ok


def _iterate(adapter: Adapter, tree: Any) -> float:
    start = time.perf_counter()
    for _value in adapter.tree_values(tree):
        pass
    return time.perf_counter() - start


def run(adapter: Adapter, params: dict[str, Any], scratch: str) -> dict[str, Any]:
    adapter.require("file")
    n, lookups = params["n"], params["lookups"]
    keys = [random.Random(14).randrange(n) for _ in range(lookups)]
    session = adapter.open_file(params["fixtures"]["db"], readonly=True, cache_size=2 * n + 1000)
    try:
        tree = session.root["tree"]
        read_pass(adapter.tree_values(tree))  # every node and item loaded
        session.abort()
        first = _iterate(adapter, tree)  # the first touch of every node
        later = _iterate(adapter, tree)
        start = time.perf_counter()
        for key in keys:
            tree[key]
        lookup_seconds = time.perf_counter() - start
    finally:
        session.close()
    return ok(
        {
            "first_values_per_s": n / first,
            "values_per_s": n / later,
            "lookups_per_s": lookups / lookup_seconds,
        },
        {"first_s": first, "later_s": later, "lookup_s": lookup_seconds},
    )
