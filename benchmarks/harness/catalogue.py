"""What is measured: every workload, its sizes at a given scale, and its figures.

Why in one table: the report, the JSON and the README all describe figures the
same way (unit, and whether higher or lower is better), and the ratio
convention depends on that last bit being right for every figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

HIGHER = "higher"
LOWER = "lower"

#: The systems with a PostgreSQL storage, the only ones the ``sql_*`` workloads measure
#: (ours: ``durus.pg_storage.PostgresStorage``; relstorage: RelStorage, history-free).
SQL_SYSTEMS = ("ours", "pure", "relstorage")
#: Why the other systems are unavailable on the ``sql_*`` workloads.
NO_SQL = {
    "durus43": "Durus 4.3 has no SQL storage",
    "zodb": "ZODB on PostgreSQL is the relstorage system",
}


@dataclass(frozen=True)
class Figure:
    key: str
    unit: str
    better: str
    label: str


@dataclass(frozen=True)
class FixtureRef:
    """A database file a workload reads; built once per system and run."""

    kind: str  # "db", "db_packed", "garbage" or "sql_db" (see bench_driver.fixtures)
    params: tuple[tuple[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.params)

    def describe(self) -> str:
        return self.kind + "(" + ", ".join(f"{k}={v}" for k, v in self.params) + ")"


@dataclass(frozen=True)
class Workload:
    name: str
    driver: str  # the bench_driver workload that runs it
    title: str
    figures: tuple[Figure, ...]
    params: dict[str, Any] = field(default_factory=dict)
    fixtures: dict[str, FixtureRef] = field(default_factory=dict)
    durability_matters: bool = False
    # On PostgreSQL: a fresh database per repetition, its fixtures built into it.
    sql: bool = False
    # A figure of the machine, not of a system: run once per repetition, with ours.
    machine: bool = False


def measured(workload: Workload, system: str) -> bool:
    """Whether ``system`` is compared on ``workload`` at all: RelStorage is a peer on the
    ``sql_*`` workloads only, and its cells elsewhere stay empty."""
    if workload.machine:
        return system == "ours"
    return workload.sql or system != "relstorage"


def unavailable_reason(workload: Workload, system: str) -> str | None:
    """Why ``system`` cannot run ``workload``, when the catalogue knows it already."""
    return NO_SQL.get(system) if workload.sql else None


def _scaled(base: int, scale: float, minimum: int) -> int:
    return max(minimum, round(base * scale))


def _rate(key: str, unit: str, label: str) -> Figure:
    return Figure(key, unit, HIGHER, label)


def _cost(key: str, unit: str, label: str) -> Figure:
    return Figure(key, unit, LOWER, label)


def _db(n: int) -> FixtureRef:
    return FixtureRef("db", (("n", n),))


def _db_packed(n: int) -> FixtureRef:
    return FixtureRef("db_packed", (("n", n),))


def build(scale: float) -> list[Workload]:
    """Every workload at ``scale`` (1.0 = the sizes of issue 6)."""
    small = _scaled(100_000, scale, 500)
    large = _scaled(1_000_000, scale, 5_000)
    write_n = _scaled(10_000, scale, 100)
    commits = _scaled(2_000, scale, 20)
    client_commits = _scaled(500, scale, 10)
    loads = min(small, _scaled(20_000, scale, 100))
    live = _scaled(50_000, scale, 500)
    sql_commits = _scaled(300, scale, 10)
    sql_loads = _scaled(20_000, scale, 200)
    lookups = _scaled(100_000, scale, 1_000)
    mix = _scaled(2_000, scale, 20)
    medium = _scaled(200_000, scale, 1_000)
    load_seconds = max(1.0, round(10 * scale, 1))
    rate, cost = _rate, _cost
    latency = (cost("p50_s", "s", "commit latency p50"), cost("p99_s", "s", "commit latency p99"))
    reader_figures = (
        rate("reader_tx_per_s", "tx/s", "reader: read-only transactions completed"),
        cost("reader_conflicts_per_tx", "x", "reader: conflicts per completed transaction"),
        cost("reader_p50_s", "s", "reader: latency p50 (retries included)"),
        cost("reader_p99_s", "s", "reader: latency p99 (retries included)"),
        rate("writer_commits_per_s", "commits/s", "4 writers: commit rate"),
        cost("wrong_totals", "passes", "reader: passes with a wrong total"),
    )
    garbage = FixtureRef("garbage", (("live", live), ("rounds", 9), ("dead", live)))
    return [
        Workload(
            "insert",
            "insert",
            f"{small:,} items into a BTree, a commit every 1000 (default durability)",
            (
                rate("objects_per_s", "objects/s", "insert rate"),
                cost("file_bytes", "B", "file size (data + index)"),
            ),
            {"n": small, "batch": 1000},
            durability_matters=True,
        ),
        Workload(
            "cold_read",
            "cold_read",
            f"fresh process reads {small:,} items through the BTree, unpacked file",
            (rate("objects_per_s", "objects/s", "cold read rate"),),
            {"n": small},
            {"db": _db(small)},
        ),
        Workload(
            "cold_read_packed",
            "cold_read",
            f"fresh process reads {small:,} items through the BTree, packed file",
            (rate("objects_per_s", "objects/s", "cold read rate"),),
            {"n": small},
            {"db": _db_packed(small)},
        ),
        Workload(
            "open_time",
            "open_time",
            f"open the storage alone, fresh process per file: {small:,} vs {large:,} items",
            (
                cost("small_s", "s", f"open, {small:,} items"),
                cost("large_s", "s", f"open, {large:,} items"),
                cost("small_packed_s", "s", f"open, {small:,} items, packed"),
                cost("large_packed_s", "s", f"open, {large:,} items, packed"),
                cost("growth", "x", "open time large / small"),
                cost("growth_packed", "x", "open time large / small, packed"),
            ),
            {},
            {
                "small": _db(small),
                "large": _db(large),
                "small_packed": _db_packed(small),
                "large_packed": _db_packed(large),
            },
        ),
        Workload(
            "warm_read",
            "warm_read",
            f"10 passes reading one attribute of {small:,} cached items",
            (
                rate("first_pass_reads_per_s", "reads/s", "first pass in a transaction"),
                rate("reads_per_s", "reads/s", "later passes"),
                rate("vs_plain", "x", "later passes / plain objects"),
                rate("ten_passes_reads_per_s", "reads/s", "10 passes in one transaction"),
            ),
            {"n": small, "passes": 10},
            {"db": _db(small)},
        ),
        Workload(
            "btree_read",
            "btree_read",
            f"BTree of {small:,} cached items: value iteration, {lookups:,} random lookups",
            (
                rate("first_values_per_s", "values/s", "values, first in a transaction"),
                rate("values_per_s", "values/s", "values, again"),
                rate("lookups_per_s", "lookups/s", "random key lookups"),
            ),
            {"n": small, "lookups": lookups},
            {"db": _db(small)},
        ),
        Workload(
            "request_mix",
            "request_mix",
            f"{mix:,} transactions touch 200 random items of {small:,} 3 times each; "
            "every tenth changes one and commits",
            (
                rate("transactions_per_s", "transactions/s", "transaction rate"),
                cost("p50_s", "s", "transaction latency p50"),
                cost("p99_s", "s", "transaction latency p99"),
            ),
            {"n": small, "transactions": mix},
            {"db": _db(small)},
            durability_matters=True,
        ),
        Workload(
            "warm_write",
            "warm_write",
            f"set one attribute on {write_n:,} cached items and commit, 10 times",
            (rate("objects_per_s", "objects/s", "warm write rate"),),
            {"n": write_n, "rounds": 10},
            {"db": _db(small)},
            durability_matters=True,
        ),
        Workload(
            "small_commits_fsync",
            "small_commits",
            f"{commits:,} one-object commits to a file, fsync per commit",
            (rate("commits_per_s", "commits/s", "commit rate"),),
            {"commits": commits, "fsync": True},
            durability_matters=True,
        ),
        Workload(
            "small_commits_nofsync",
            "small_commits",
            f"{commits:,} one-object commits to a file, no fsync",
            (rate("commits_per_s", "commits/s", "commit rate"),),
            {"commits": commits, "fsync": False},
            durability_matters=True,
        ),
        Workload(
            "server_commits",
            "server_commits",
            f"4 client processes x {client_commits:,} one-object commits through the server,"
            " each system's most durable mode",
            (rate("commits_per_s", "commits/s", "commit rate"), *latency),
            {"clients": 4, "commits": client_commits, "fsync": "strongest"},
            durability_matters=True,
        ),
        Workload(
            "commit_floor",
            "commit_floor",
            f"the machine's floor: 4 client processes x {4 * client_commits:,} durable round"
            " trips through a Python server that only appends and fdatasyncs (no database)",
            (rate("commits_per_s", "commits/s", "round trip rate"), *latency),
            # Four times server_commits' count: a round trip costs so little that
            # shorter runs mostly measure the clients' staggered starts.
            {"clients": 4, "commits": 4 * client_commits},
            machine=True,
        ),
        Workload(
            "server_commits_nofsync",
            "server_commits",
            f"4 client processes x {client_commits:,} one-object commits through the server,"
            " no fsync",
            (rate("commits_per_s", "commits/s", "commit rate"), *latency),
            {"clients": 4, "commits": client_commits, "fsync": False},
            durability_matters=True,
        ),
        Workload(
            "reader_under_load",
            "reader_under_load",
            "a reader (cache 50) sums 200 accounts in read-only transactions for"
            f" {load_seconds:g} s while 4 writer processes move money through the server;"
            " ours reads snapshots (mvcc=True)",
            reader_figures,
            {"mvcc": True, "seconds": load_seconds},
            durability_matters=True,
        ),
        Workload(
            "reader_under_load_classic",
            "reader_under_load",
            "the same, our reader classic (Durus 4.3's semantics, mvcc=False)",
            reader_figures,
            {"mvcc": False, "seconds": load_seconds},
            durability_matters=True,
        ),
        Workload(
            "server_loads",
            "server_loads",
            f"a client with an empty cache loads {loads:,} objects one by one",
            (rate("loads_per_s", "loads/s", "load rate"),),
            {"loads": loads},
            {"db": _db(small)},
        ),
        Workload(
            "pack",
            "pack",
            f"pack a file of {live:,} live items rewritten 9 times plus {live:,} dropped",
            (
                cost("pack_s", "s", "pack time"),
                cost("size_before_bytes", "B", "size before pack"),
                cost("size_after_bytes", "B", "size after pack"),
            ),
            {},
            {"garbage": garbage},
        ),
        Workload(
            "memory_200k",
            "cold_read",
            f"fresh process reads {medium:,} items through the BTree (cache 100,000)",
            (
                cost("peak_rss_bytes", "B", "peak RSS"),
                rate("objects_per_s", "objects/s", "cold read rate"),
            ),
            {"n": medium},
            {"db": _db(medium)},
        ),
        Workload(
            "memory",
            "cold_read",
            f"fresh process reads {large:,} items through the BTree (cache 100,000)",
            (
                cost("peak_rss_bytes", "B", "peak RSS"),
                rate("objects_per_s", "objects/s", "cold read rate"),
            ),
            {"n": large},
            {"db": _db(large)},
        ),
        Workload(
            "sql_commits",
            "sql_commits",
            f"4 writer processes x {sql_commits:,} one-object commits to PostgreSQL,"
            " each writer its own storage",
            (rate("commits_per_s", "commits/s", "commit rate"), *latency),
            {"clients": 4, "commits": sql_commits},
            durability_matters=True,
            sql=True,
        ),
        Workload(
            "sql_cold_loads",
            "sql_cold_loads",
            f"a fresh process with an empty cache loads {sql_loads:,} objects one by one"
            " from PostgreSQL",
            (rate("loads_per_s", "loads/s", "load rate"),),
            {"loads": sql_loads},
            {"db": FixtureRef("sql_db", (("n", sql_loads),))},
            sql=True,
        ),
    ]


def select(workloads: list[Workload], only: str | None) -> list[Workload]:
    """Workloads named in ``only`` (comma-separated names or name prefixes)."""
    if not only:
        return workloads
    chosen = []
    for word in (w.strip() for w in only.split(",") if w.strip()):
        matches = [w for w in workloads if w.name == word or w.name.startswith(word)]
        if not matches:
            names = ", ".join(w.name for w in workloads)
            raise ValueError(f"no workload matches {word!r}; known: {names}")
        chosen.extend(m for m in matches if m not in chosen)
    return [w for w in workloads if w in chosen]
