"""Command line of the driver: one action per process, result written to ``--out``.

Actions:
  info            python and package versions of the system
  prepare NAME    build fixture NAME at --path (see fixtures.FIXTURES)
  run NAME        run workload NAME (see workloads.WORKLOADS)
  open            open the storage at --path alone, read-only, and time it
  serve           serve --path on loopback --port until terminated
  client-commits  one client of the server_commits (--port) or sql_commits (--dsn) workload
  floor-serve     the no-database server of the commit_floor workload (--port, --path)
  floor-client    one client of the commit_floor workload (--port, --commits)
  load-client     a writer or the reader of the reader_under_load workload (--port, --params)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from typing import Any

from .adapters import get_adapter
from .adapters.base import Adapter
from .protocol import EXIT_UNAVAILABLE, Unavailable, ok, unavailable, write_result
from .servers import READY


def _info(adapter: Adapter, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "status": "ok",
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "packages": adapter.versions(),
    }


def _prepare(adapter: Adapter, args: argparse.Namespace) -> dict[str, Any]:
    from .fixtures import FIXTURES

    return ok({}, FIXTURES[args.name](adapter, args.path, json.loads(args.params)))


def _run(adapter: Adapter, args: argparse.Namespace) -> dict[str, Any]:
    from .workloads import WORKLOADS

    return WORKLOADS[args.name](adapter, json.loads(args.params), args.scratch)


def _open(adapter: Adapter, args: argparse.Namespace) -> dict[str, Any]:
    adapter.require("file")
    start = time.perf_counter()
    storage = adapter.file_storage(args.path, readonly=True)
    seconds = time.perf_counter() - start
    storage.close()
    return {"status": "ok", "seconds": seconds}


def _serve(adapter: Adapter, args: argparse.Namespace) -> dict[str, Any]:
    adapter.require("server")
    adapter.serve(args.path, args.port, fsync=json.loads(args.fsync))
    return {"status": "ok"}


def _client_commits(adapter: Adapter, args: argparse.Namespace) -> dict[str, Any]:
    """Connect, load our slot's item, say ready, wait for "go", then commit and time.

    Through the storage server on ``--port``, or straight to PostgreSQL at ``--dsn``.
    """
    if args.dsn:
        adapter.require("sql")
        session = adapter.open_sql(args.dsn)
    else:
        adapter.require("client")
        session = adapter.connect(args.port)
    try:
        item = session.root["slots"][args.slot]
        item.n  # noqa: B018 -- load it before the clock starts
        print(READY, flush=True)
        sys.stdin.readline()
        latencies = []
        start = time.monotonic()
        for i in range(args.commits):
            before = time.perf_counter()
            item.n = i
            session.commit()
            latencies.append(time.perf_counter() - before)
        end = time.monotonic()
    finally:
        session.close()
    return {
        "status": "ok",
        "start": start,
        "end": end,
        "latencies": latencies,
    }


def _floor_serve(adapter: Adapter, args: argparse.Namespace) -> dict[str, Any]:
    from .workloads.commit_floor import serve

    serve(args.port, args.path)
    return {"status": "ok"}


def _floor_client(adapter: Adapter, args: argparse.Namespace) -> dict[str, Any]:
    from .workloads.commit_floor import client

    return client(args.port, args.commits)


def _load_client(adapter: Adapter, args: argparse.Namespace) -> dict[str, Any]:
    from .workloads.reader_under_load import client

    return client(adapter, args.port, json.loads(args.params))


ACTIONS = {
    "info": _info,
    "prepare": _prepare,
    "run": _run,
    "open": _open,
    "serve": _serve,
    "client-commits": _client_commits,
    "floor-serve": _floor_serve,
    "floor-client": _floor_client,
    "load-client": _load_client,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench_driver", description=__doc__)
    parser.add_argument("action", choices=sorted(ACTIONS))
    parser.add_argument("name", nargs="?")
    parser.add_argument("--system", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--path")
    parser.add_argument("--params", default="{}")
    parser.add_argument("--scratch")
    parser.add_argument("--port", type=int)
    parser.add_argument("--dsn")
    parser.add_argument("--fsync", default="null")
    parser.add_argument("--slot", type=int)
    parser.add_argument("--commits", type=int)
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        result = ACTIONS[args.action](get_adapter(args.system), args)
    except Unavailable as exc:
        write_result(args.out, unavailable(str(exc)))
        return EXIT_UNAVAILABLE
    except Exception:
        traceback.print_exc()
        return 1
    if result.get("status") == "unavailable":
        write_result(args.out, result)
        return EXIT_UNAVAILABLE
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
