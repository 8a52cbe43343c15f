"""The timed workloads; each module has ``run(adapter, params, scratch) -> result``.

Why one module per workload: each states what it times in a few lines, and a
reader comparing two systems' figures can check exactly what was measured.
"""

from __future__ import annotations

from . import (
    btree_read,
    cold_read,
    commit_floor,
    insert,
    open_time,
    pack,
    reader_under_load,
    request_mix,
    server_commits,
    server_loads,
    small_commits,
    sql_cold_loads,
    sql_commits,
    warm_read,
    warm_write,
)

WORKLOADS = {
    "insert": insert.run,
    "cold_read": cold_read.run,
    "open_time": open_time.run,
    "warm_read": warm_read.run,
    "warm_write": warm_write.run,
    "btree_read": btree_read.run,
    "request_mix": request_mix.run,
    "small_commits": small_commits.run,
    "server_commits": server_commits.run,
    "commit_floor": commit_floor.run,
    "server_loads": server_loads.run,
    "reader_under_load": reader_under_load.run,
    "pack": pack.run,
    "sql_commits": sql_commits.run,
    "sql_cold_loads": sql_cold_loads.run,
}
