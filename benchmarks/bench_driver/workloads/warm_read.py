"""warm read: passes over cached items reading one attribute, against plain objects.

The first pass after a transaction boundary is reported on its own: Durus
records each object's first access in a transaction, later reads are free of it.
All the passes together are one transaction's reads (first touch included).
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from ..adapters.base import Adapter
from ..common import read_pass
from ..model_plain import Plain, make_fields
from ..protocol import ok


def _timed_passes(objects: list[Any], passes: int) -> float:
    start = time.perf_counter()
    for _ in range(passes):
        read_pass(objects)
    return time.perf_counter() - start


def run(adapter: Adapter, params: dict[str, Any], scratch: str) -> dict[str, Any]:
    adapter.require("file")
    n, passes = params["n"], params["passes"]
    session = adapter.open_file(params["fixtures"]["db"], readonly=True, cache_size=2 * n + 1000)
    try:
        values = adapter.tree_values(session.root["tree"])
        objects = list(itertools.islice(values, n))
        read_pass(objects)  # load every state: from here on the objects are cached
        session.abort()  # a new transaction: the next pass is the first in it
        first = _timed_passes(objects, 1)
        rest = _timed_passes(objects, passes - 1)
    finally:
        session.close()
    plain = [Plain(*make_fields(i)) for i in range(n)]
    read_pass(plain)
    plain_seconds = _timed_passes(plain, passes)
    warm_rate = n * (passes - 1) / rest
    plain_rate = n * passes / plain_seconds
    return ok(
        {
            "first_pass_reads_per_s": n / first,
            "reads_per_s": warm_rate,
            "vs_plain": warm_rate / plain_rate,
            "ten_passes_reads_per_s": n * passes / (first + rest),
        },
        {"plain_reads_per_s": plain_rate, "first_pass_s": first, "later_passes_s": rest},
    )
