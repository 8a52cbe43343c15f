"""Database files that workloads read, built once per system and run (never timed).

Why separate from the workloads: a cold read needs a file that some *other*
process wrote, and building the 1M-object file is the slowest step of a run, so
the harness builds each fixture once and hands its path to every repetition.
"""

from __future__ import annotations

import json
from typing import Any

from .adapters.base import Adapter
from .common import DEFAULT_CACHE, collect_oids, fill_tree, remove_files

BATCH = 1000


def oids_path(path: str) -> str:
    """Where the item oids of a ``db`` fixture are kept, in key order."""
    return path + ".oids.json"


def fixture_oids(params: dict[str, Any], count: int) -> list[int]:
    """The first ``count`` item oids of the workload's ``db`` fixture, in key order."""
    with open(oids_path(params["fixtures"]["db"]), encoding="utf-8") as f:
        oids = json.load(f)[:count]
    if len(oids) != count:
        raise AssertionError(f"the fixture has {len(oids)} items, {count} wanted")
    return list(oids)


def _fill_and_record(adapter: Adapter, session: Any, n: int, path: str) -> int:
    """Fill ``session`` with ``n`` items, keep their oids beside ``path``; return the count."""
    try:
        fill_tree(adapter, session, n, BATCH)
        oids = collect_oids(adapter, session)
    finally:
        session.close()
    with open(oids_path(path), "w", encoding="utf-8") as f:
        json.dump(oids, f)
    return len(oids)


def build_db(adapter: Adapter, path: str, params: dict[str, Any]) -> dict[str, Any]:
    """N items in a BTree at ``root["tree"]``, committed every 1000: the insert workload's file."""
    adapter.require("file")
    session = adapter.open_file(path, cache_size=DEFAULT_CACHE)
    count = _fill_and_record(adapter, session, params["n"], path)
    return {"bytes": adapter.db_size(path), "objects": count}


def build_packed(adapter: Adapter, path: str, params: dict[str, Any]) -> dict[str, Any]:
    """A packed copy of a ``db`` fixture: same objects, no superseded records."""
    adapter.require("file")
    adapter.copy_db(params["source"], path)
    session = adapter.open_file(path, cache_size=DEFAULT_CACHE)
    try:
        session.pack()
    finally:
        session.close()
    remove_files(adapter.pack_leftovers(path))
    return {"bytes": adapter.db_size(path)}


def build_garbage(adapter: Adapter, path: str, params: dict[str, Any]) -> dict[str, Any]:
    """A file whose records are mostly garbage, for the pack workload.

    ``live`` items are rewritten ``rounds`` times (superseded records), and
    ``dead`` more items are added in a second tree that is then dropped
    (unreachable records).
    """
    adapter.require("file")
    live, rounds, dead = params["live"], params["rounds"], params["dead"]
    session = adapter.open_file(path, cache_size=DEFAULT_CACHE)
    try:
        fill_tree(adapter, session, live, BATCH)
        items = list(adapter.tree_values(session.root["tree"]))
        for round_number in range(rounds):
            for start in range(0, live, BATCH):
                for item in items[start : start + BATCH]:
                    item.f = float(round_number)
                session.commit()
        fill_tree(adapter, session, dead, BATCH, key="dropped")
        del session.root["dropped"]
        session.commit()
    finally:
        session.close()
    return {"bytes": adapter.db_size(path)}


def build_sql_db(adapter: Adapter, path: str, params: dict[str, Any]) -> dict[str, Any]:
    """The ``db`` fixture in the PostgreSQL database ``params["dsn"]``; the oids go
    beside ``path`` (which names no database file)."""
    adapter.require("sql")
    session = adapter.open_sql(params["dsn"], cache_size=DEFAULT_CACHE)
    return {"objects": _fill_and_record(adapter, session, params["n"], path)}


FIXTURES = {
    "db": build_db,
    "db_packed": build_packed,
    "garbage": build_garbage,
    "sql_db": build_sql_db,
}
