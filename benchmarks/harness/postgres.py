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

import importlib
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from .envs import PACKAGES, ROOT
from .outcome import ERROR, OK, UNAVAILABLE

#: durus-sqlstorage's throwaway-cluster helper, loaded from the source tree (the
#: harness runs on a bare Python, with no Durus installed).
CLUSTER_SOURCE = PACKAGES / "durus-sqlstorage" / "src"
CLUSTER_MODULE = CLUSTER_SOURCE / "durus" / "pg_cluster.py"


def _load(path: Path) -> ModuleType:
    """``durus.pg_cluster`` (standard library only) from the source folder of ``path``."""
    source = str(path.parents[1])
    if source not in sys.path:
        sys.path.insert(0, source)
    return importlib.import_module("durus.pg_cluster")


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
