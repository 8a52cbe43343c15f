"""Processes of a throwaway PostgreSQL server: binaries, accounts, pids, the watchdog.

The half of ``durus.pg_cluster`` that deals with the operating system.  Standard
library only, and it imports nothing of Durus: the watchdog runs this file as
a script (``python pg_cluster_process.py --watchdog PID DIR...``), and
``benchmarks/`` loads these modules from the source tree.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

__all__ = ["PostgresError", "find_postgres_bin"]

SUPERUSER = "durus"
"""The database superuser that ``initdb`` creates; every DSN connects as it."""

SERVER_ACCOUNT = "nobody"
"""The OS account that runs server programs when this process is root (it must exist)."""

START_TIMEOUT = 30.0
INITDB_TIMEOUT = 180.0
CLIENT_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0

_REQUIRED = ("initdb", "pg_ctl", "postgres")

# Settings of every cluster.  fsync stays on: crash tests rely on committed data surviving a
# SIGKILL.  wal_level and max_wal_senders let ``make_replica`` stream from any cluster.
_BASE_SETTINGS: dict[str, str] = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "max_connections": "100",
    "wal_level": "replica",
    "max_wal_senders": "10",
    "wal_keep_size": "128MB",
    "hot_standby": "on",
    "logging_collector": "off",
    "log_min_messages": "warning",
}

_HBA_REPLICATION = "host replication all 127.0.0.1/32 trust"


class PostgresError(RuntimeError):
    """A PostgreSQL program failed or the server did not come up; the message says why."""


# ---------------------------------------------------------------------------------------------
# Finding the binaries


def _has_server_binaries(directory: str) -> bool:
    return all(os.access(os.path.join(directory, name), os.X_OK) for name in _REQUIRED)


def _version_key(path: str) -> tuple[int, ...]:
    match = re.search(r"/postgresql/([0-9.]+)/bin$", path)
    if match is None:
        return (0,)
    return tuple(int(part) for part in match.group(1).split(".") if part)


def find_postgres_bin() -> str | None:
    """The folder holding initdb, pg_ctl and postgres, or None when there is none.

    Looks, in order, at ``$DURUS_PG_BIN`` (if set it is the only answer: a wrong value must not
    be silently replaced), ``pg_config --bindir``, the highest ``/usr/lib/postgresql/*/bin``
    (Debian keeps server binaries off PATH), then ``initdb`` on PATH.
    """
    forced = os.environ.get("DURUS_PG_BIN")
    if forced:
        return os.path.abspath(forced) if _has_server_binaries(forced) else None
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        try:
            result = subprocess.run(
                [pg_config, "--bindir"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            result = None
        if result is not None and result.returncode == 0:
            bindir = result.stdout.strip()
            if bindir and _has_server_binaries(bindir):
                return bindir
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True):
        if _has_server_binaries(candidate):
            return candidate
    initdb = shutil.which("initdb")
    if initdb is not None:
        bindir = os.path.dirname(os.path.realpath(initdb))
        if _has_server_binaries(bindir):
            return bindir
        bindir = os.path.dirname(initdb)
        if _has_server_binaries(bindir):
            return bindir
    return None


# ---------------------------------------------------------------------------------------------
# The OS account of the server

_account_lock = threading.Lock()
_account: tuple[str, int, int] | None = None


def _server_account() -> tuple[str, int, int] | None:
    """(name, uid, gid) to run server programs as, or None to run them as ourselves.

    Only root needs another account (initdb and postgres refuse euid 0).  It is an
    unprivileged account that already exists (``nobody``): the tests never add users to the
    system.  The data directory it runs in is private to it (mode 0700, a fresh temporary
    folder per cluster).
    """
    global _account
    if os.geteuid() != 0:
        return None
    with _account_lock:
        if _account is None:
            _account = _lookup_account(SERVER_ACCOUNT)
        if _account is None:
            raise PostgresError(
                f"running as root, and there is no {SERVER_ACCOUNT!r} account to run postgres "
                "as (PostgreSQL refuses to run as root): run the tests as another user"
            )
        return _account


def _lookup_account(name: str) -> tuple[str, int, int] | None:
    """The account ``name`` if it exists and its uid maps back to it."""
    try:
        entry = pwd.getpwnam(name)
        if pwd.getpwuid(entry.pw_uid).pw_name != name:
            return None
    except KeyError:
        return None
    return (entry.pw_name, entry.pw_uid, entry.pw_gid)


def _check_reachable(path: str, uid: int, gid: int) -> None:
    """Fail clearly when ``uid`` cannot reach ``path`` (e.g. a folder under /root)."""
    current = os.path.dirname(os.path.abspath(path))
    while True:
        info = os.stat(current)
        if info.st_uid == uid:
            ok = bool(info.st_mode & stat.S_IXUSR)
        elif info.st_gid == gid:
            ok = bool(info.st_mode & stat.S_IXGRP)
        else:
            ok = bool(info.st_mode & stat.S_IXOTH)
        if not ok:
            raise PostgresError(
                f"the server account (uid {uid}) cannot enter {current!r}, so it cannot reach "
                f"{path!r}; put the cluster under a world-searchable folder such as /tmp"
            )
        parent = os.path.dirname(current)
        if parent == current:
            return
        current = parent


def _chown_tree(path: str, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


# ---------------------------------------------------------------------------------------------
# Small helpers


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _conninfo_value(value: str) -> str:
    """Quote a libpq conninfo value when it needs it."""
    if value and not re.search(r"[\s'\\]", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _clean_env(home: str | None = None) -> dict[str, str]:
    """Our environment without PG* variables (a stray PGHOST or PGDATABASE would redirect us)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    env["PGCONNECT_TIMEOUT"] = "10"
    if home is not None:
        env["HOME"] = home
    return env


def _proc_state(pid: int) -> str | None:
    """The state letter of ``pid`` from /proc (None: gone or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; zombies count as gone (PID 1 may never reap them here)."""
    state = _proc_state(pid)
    if state is not None:
        return state not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not os.path.isdir("/proc")


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc; empty elsewhere)."""
    found: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry))
    return found


def _tail(path: str, start: int = 0, limit: int = 4000) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            end = handle.tell()
            handle.seek(max(start, end - limit))
            return handle.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(no server log: {exc})"


def _watch(pid: int, remove: Sequence[str]) -> None:
    """The watchdog of postmaster ``pid``, run in its own process (``--watchdog``).

    It blocks on its stdin: a byte means all is well, exit; end-of-file without a byte
    means the owning process died, so it shuts the postmaster down (SIGQUIT, then
    SIGKILL) and removes the folders the owner would have removed.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.stdin.buffer.read(1):
        return
    for sig, wait in ((signal.SIGQUIT, 15.0), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except OSError:
            break
        end = time.monotonic() + wait
        while _pid_alive(pid) and time.monotonic() < end:
            time.sleep(0.05)
        if not _pid_alive(pid):
            break
    time.sleep(0.5)
    for path in remove:
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__" and sys.argv[1:2] == ["--watchdog"]:
    _watch(int(sys.argv[2]), sys.argv[3:])
