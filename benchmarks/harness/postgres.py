"""The PostgreSQL server of a run: one cluster, a fresh database per SQL repetition.

Why the test suite's cluster helper, imported by its path: durus-sqlstorage's
tests already know how to start a private, throwaway PostgreSQL (including as
root, where the server must run as another user); the harness uses the same
code rather than a copy that could drift.  Ours and RelStorage then talk to the
very same server, so only the storages differ.

Missing PostgreSQL binaries (or a helper not written yet) make the ``sql_*``
workloads unavailable, never an error; a server that is there but will not
start is an error.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from .envs import PACKAGES, ROOT
from .outcome import ERROR, OK, UNAVAILABLE

CLUSTER_MODULE = PACKAGES / "durus-sqlstorage" / "tests" / "postgres_cluster.py"


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_postgres_cluster", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and the like look themselves up there
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[spec.name]
        raise
    return module


def _version(bindir: Any) -> str:
    try:
        out = subprocess.run(
            [str(Path(str(bindir)) / "postgres"), "--version"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


class Postgres:
    """One ``PostgresCluster`` for the whole run, or the reason there is none.

    ``status`` is ``ok``, ``unavailable`` (no binaries, no helper) or ``error``
    (it would not start); ``reason`` says why when it is not ``ok``.
    """

    def __init__(self) -> None:
        self.status = UNAVAILABLE
        self.reason = "not started"
        self.cluster: Any = None
        self.info: dict[str, Any] = {}
        self.databases: list[str] = []

    def start(self) -> None:
        where = CLUSTER_MODULE.relative_to(ROOT)
        if not CLUSTER_MODULE.exists():
            self.reason = f"{where} not found (the PostgreSQL cluster helper)"
            return
        try:
            module = _load(CLUSTER_MODULE)
        except Exception as exc:
            self.status, self.reason = ERROR, f"cannot import {where}: {exc!r}"
            return
        try:
            bindir = module.find_postgres_bin()
        except Exception as exc:
            bindir, missing = None, str(exc)
        else:
            missing = "none found (install PostgreSQL, or set DURUS_PG_BIN to its bin folder)"
        if not bindir:
            self.reason = f"no PostgreSQL server binaries (initdb, pg_ctl): {missing}"
            return
        self.info = {"bin": str(bindir), "version": _version(bindir)}
        try:
            # In a fresh temporary folder of the helper's (the server's OS account
            # must reach it, which it may not under benchmarks/.work when root).
            self.cluster = module.PostgresCluster(bin_dir=str(bindir))
            self.cluster.start()
        except Exception as exc:
            self.status, self.reason = ERROR, f"the PostgreSQL cluster did not start: {exc!r}"
            self._cleanup()
            return
        self.status, self.reason = OK, ""

    def create_database(self, name: str) -> str:
        """A new, empty database named after ``name``; its libpq DSN."""
        name = re.sub(r"[^a-z0-9_]", "_", name.lower())[:63]
        dsn = self.cluster.create_database(name)
        self.databases.append(name)
        return dsn

    def stop(self) -> None:
        if self.cluster is None:
            return
        self._cleanup()

    def _cleanup(self) -> None:
        """Stop the server and remove its folder (the helper would at exit anyway)."""
        try:
            if self.cluster is not None:
                self.cluster.cleanup()
        except Exception as exc:  # the results matter more than a leftover folder
            print(f"warning: PostgreSQL cleanup failed: {exc!r}", file=sys.stderr)
        self.cluster = None

    def describe(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, **self.info}
