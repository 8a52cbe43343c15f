"""Loops shared by the workloads and the fixtures, so both do exactly the same work."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterable
from typing import Any

from .adapters.base import Adapter, Session

#: Connection cache target for workloads that do not need every object cached.
#: Durus's default; ZODB is given the same so that both keep the same objects.
DEFAULT_CACHE = 100_000

#: Objects read between two transaction boundaries in a long scan: a scan of a
#: large database must let the cache shrink, and both systems shrink only there.
SCAN_BATCH = 10_000


def fill_tree(adapter: Adapter, session: Session, n: int, batch: int, *, key: str = "tree") -> None:
    """Insert items 0..n-1 into a new BTree at ``root[key]``, committing every ``batch``."""
    tree = adapter.new_tree()
    session.root[key] = tree
    session.commit()
    for start in range(0, n, batch):
        for i in range(start, min(n, start + batch)):
            tree[i] = adapter.new_item(i)
        session.commit()


def time_loads(session: Session, oids: list[int]) -> float:
    """Seconds to load ``oids`` one by one through ``session`` (then closed)."""
    try:
        start = time.perf_counter()
        for oid in oids:
            session.get(oid)
        return time.perf_counter() - start
    finally:
        session.close()


def collect_oids(adapter: Adapter, session: Session, *, key: str = "tree") -> list[int]:
    """The item oids in key order (fixtures only: it is never timed)."""
    return [adapter.oid_of(item) for item in adapter.tree_values(session.root[key])]


def scan(adapter: Adapter, session: Session) -> int:
    """Read one attribute of every item through the BTree; return how many."""
    count = 0
    for item in adapter.tree_values(session.root["tree"]):
        item.n  # noqa: B018 -- the read is the point
        count += 1
        if count % SCAN_BATCH == 0:
            session.abort()
    return count


def read_pass(objects: Iterable[Any]) -> int:
    """One warm-read pass; the same function times persistent and plain objects."""
    total = 0
    for obj in objects:
        total += obj.n
    return total


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; enough for latency summaries of hundreds of samples."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))
    return ordered[rank]


def remove_files(paths: Iterable[str]) -> None:
    for path in paths:
        if os.path.exists(path):
            os.remove(path)
