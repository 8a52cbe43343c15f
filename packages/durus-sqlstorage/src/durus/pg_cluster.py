"""A throwaway PostgreSQL server for tests and benchmarks, from the standard library only.

The durus-sqlstorage tests run against a real server, never a mock: ``PostgresCluster``
initialises a data directory in a fresh temporary folder, runs ``postgres`` on a free loopback
port (its Unix socket in that folder too, so clusters never meet in ``/tmp``), and can stop,
crash (``kill``), restart and replicate it.

Servers refuse to run as root, so under euid 0 every server-side program runs as the existing
unprivileged account ``nobody``, in a data directory private to it (the tests never add system
users).  Nothing outlives the process: an ``atexit`` hook stops every cluster still running, and
each postmaster has a small watchdog process that shuts it down if this process dies without
running ``atexit`` (SIGKILL, a crash).

No pytest and no psycopg here (the tests of durus-sqlstorage, of the CLI and
of the meta-distribution use it, and ``benchmarks/`` loads it from the source
tree).  Your own tests can use it too: ``cluster_for_tests(pytest.skip,
pytest.fail)`` in a session fixture, then ``create_database(name)`` and
``url(name)``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

from durus import pg_cluster_process
from durus.pg_cluster_process import (
    _BASE_SETTINGS,
    _HBA_REPLICATION,
    CLIENT_TIMEOUT,
    INITDB_TIMEOUT,
    START_TIMEOUT,
    STOP_TIMEOUT,
    SUPERUSER,
    PostgresError,
    _check_reachable,
    _children,
    _chown_tree,
    _clean_env,
    _conninfo_value,
    _free_port,
    _has_server_binaries,
    _pid_alive,
    _server_account,
    _tail,
    find_postgres_bin,
)

__all__ = ["PostgresCluster", "PostgresError", "cluster_for_tests", "find_postgres_bin"]

# ---------------------------------------------------------------------------------------------
# Every live cluster, stopped at exit

_live_lock = threading.Lock()
_live: list[PostgresCluster] = []


def _cleanup_all() -> None:
    with _live_lock:
        clusters = list(reversed(_live))
    for cluster in clusters:
        with contextlib.suppress(Exception):
            cluster.cleanup()


atexit.register(_cleanup_all)


# ---------------------------------------------------------------------------------------------
# The cluster


class PostgresCluster:
    """One PostgreSQL server with its data in a folder of its own.

    ``base_dir`` holds ``data/`` (PGDATA), ``postgres.log`` and the Unix socket.  When None, a
    fresh folder is made under the temporary directory; ``cleanup()`` removes a folder this
    object created, and only its own entries from a folder that already existed.
    """

    def __init__(
        self,
        base_dir: str | None = None,
        *,
        settings: Mapping[str, str] | None = None,
        bin_dir: str | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        found = bin_dir if bin_dir is not None else find_postgres_bin()
        if found is None or not _has_server_binaries(found):
            raise PostgresError(
                "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found; install them "
                "(Debian: apt-get install postgresql) or set DURUS_PG_BIN to their folder"
            )
        self.bin_dir: str = found
        if base_dir is None:
            self.base_dir = tempfile.mkdtemp(prefix="durus-pg-")
            self._owns_base_dir = True
        else:
            self.base_dir = os.path.abspath(base_dir)
            self._owns_base_dir = not os.path.exists(self.base_dir)
            os.makedirs(self.base_dir, exist_ok=True)
        self.data_dir: str = os.path.join(self.base_dir, "data")
        self.log_path: str = os.path.join(self.base_dir, "postgres.log")
        self.settings: dict[str, str] = dict(settings or {})
        self.start_timeout = start_timeout
        self._account = _server_account()
        # A Unix socket path is limited to ~107 bytes; fall back to a short folder in /tmp.
        if len(os.path.join(self.base_dir, ".s.PGSQL.65535.lock")) < 100:
            self.socket_dir: str = self.base_dir
            self._own_socket_dir = False
        else:
            self.socket_dir = tempfile.mkdtemp(prefix="durus-pgs-", dir="/tmp")
            self._own_socket_dir = True
        if self._account is not None:
            _, uid, gid = self._account
            try:
                _check_reachable(self.base_dir, uid, gid)
                _chown_tree(self.base_dir, uid, gid)
                if self._own_socket_dir:
                    os.chown(self.socket_dir, uid, gid)
            except BaseException:
                if self._owns_base_dir:
                    shutil.rmtree(self.base_dir, ignore_errors=True)
                if self._own_socket_dir:
                    shutil.rmtree(self.socket_dir, ignore_errors=True)
                raise
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._replicas: list[PostgresCluster] = []
        self._removed = False
        self.primary: PostgresCluster | None = None
        """The cluster this one streams from, when made by ``make_replica``."""
        self.last_start_seconds: float | None = None
        """How long the last ``start()`` took (initdb included), for the curious."""
        with _live_lock:
            _live.append(self)

    # -- facts ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port, fixed by the first ``start()`` and kept by every restart."""
        if self._port is None:
            raise PostgresError("the cluster has never been started, so it has no port yet")
        return self._port

    @property
    def pid(self) -> int | None:
        """The postmaster's PID while it runs."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def os_user(self) -> str:
        """The OS account the server runs as."""
        if self._account is not None:
            return self._account[0]
        return pwd.getpwuid(os.geteuid()).pw_name

    @property
    def initialized(self) -> bool:
        return os.path.exists(os.path.join(self.data_dir, "PG_VERSION"))

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq key=value DSN for ``dbname`` over TCP on 127.0.0.1."""
        return (
            f"host=127.0.0.1 port={self.port} user={SUPERUSER} "
            f"dbname={_conninfo_value(dbname)}"
        )

    def url(self, dbname: str = "postgres") -> str:
        """The same as ``dsn`` as a postgresql:// URL."""
        return (
            f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/"
            f"{urllib.parse.quote(dbname, safe='')}"
        )

    def program(self, name: str) -> str:
        """The path of a PostgreSQL program of this cluster's version (psql, createdb ...)."""
        path = os.path.join(self.bin_dir, name)
        if os.access(path, os.X_OK):
            return path
        found = shutil.which(name)
        if found is None:
            raise PostgresError(f"no {name} in {self.bin_dir} or on PATH")
        return found

    # -- running programs -------------------------------------------------------------------

    def _server_kwargs(self) -> dict[str, Any]:
        """Popen arguments that run a program as the server account."""
        kwargs: dict[str, Any] = {"cwd": self.base_dir, "env": _clean_env(self.base_dir)}
        if self._account is not None:
            _, uid, gid = self._account
            kwargs.update(user=uid, group=gid, extra_groups=[])
        return kwargs

    def _run(
        self,
        argv: Sequence[str],
        *,
        as_server: bool = False,
        timeout: float = CLIENT_TIMEOUT,
        what: str | None = None,
    ) -> str:
        kwargs: dict[str, Any] = self._server_kwargs() if as_server else {"env": _clean_env()}
        try:
            result: subprocess.CompletedProcess[bytes] = subprocess.run(
                list(argv),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
                **kwargs,
            )
        except subprocess.TimeoutExpired as exc:
            raise PostgresError(f"{what or argv[0]} did not finish within {timeout} s") from exc
        output = (result.stdout + result.stderr).decode("utf-8", "replace")
        if result.returncode != 0:
            raise PostgresError(
                f"{what or os.path.basename(argv[0])} failed (exit {result.returncode}): "
                f"{' '.join(argv)}\n{output.strip()}"
            )
        stdout: bytes = result.stdout
        return stdout.decode("utf-8", "replace")

    # -- life cycle -------------------------------------------------------------------------

    def _initdb(self) -> None:
        self._run(
            [
                self.program("initdb"),
                "-D",
                self.data_dir,
                "--auth=trust",
                "-U",
                SUPERUSER,
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            as_server=True,
            timeout=INITDB_TIMEOUT,
            what="initdb",
        )
        lines = ["", "# durus-sqlstorage test cluster"]
        for key, value in {**_BASE_SETTINGS, **self.settings}.items():
            lines.append(f"{key} = '{value.replace(chr(39), chr(39) * 2)}'")
        with open(os.path.join(self.data_dir, "postgresql.conf"), "a") as conf:
            conf.write("\n".join(lines) + "\n")
        hba_path = os.path.join(self.data_dir, "pg_hba.conf")
        with open(hba_path) as hba:
            present = _HBA_REPLICATION in hba.read()
        if not present:
            with open(hba_path, "a") as hba:
                hba.write(_HBA_REPLICATION + "\n")

    def start(self) -> None:
        """Start the server (initdb first if the data folder is new) and wait until it serves.

        The first start picks a free port (and another one if it was taken meanwhile); later
        starts reuse it.  Raises ``PostgresError`` with the tail of the server log when the
        server does not accept connections within ``start_timeout`` seconds.
        """
        if self._removed:
            raise PostgresError("this cluster was cleaned up; make a new one")
        if self.running:
            return
        began = time.monotonic()
        if not self.initialized:
            self._initdb()
        first = self._port is None
        attempts = 5
        for attempt in range(attempts):
            if self._port is None:
                self._port = _free_port()
            log_offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
            try:
                self._launch()
                self._wait_ready(log_offset)
            except PostgresError:
                log = _tail(self.log_path, log_offset)
                if "Address already in use" in log and attempt < attempts - 1:
                    self._reap()
                    if first:
                        self._port = None  # someone took it between bind(0) and postgres
                    else:
                        time.sleep(1.0)  # a restart must keep its port: wait for it
                    continue
                self._hard_stop()
                raise
            break
        self.last_start_seconds = time.monotonic() - began

    def _launch(self) -> None:
        argv = [
            self.program("postgres"),
            "-D",
            self.data_dir,
            "-c",
            f"port={self.port}",
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={self.socket_dir}",
        ]
        with open(self.log_path, "ab") as log:
            if self._account is not None:
                os.chown(self.log_path, self._account[1], self._account[2])
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C on the terminal must not reach it
                **self._server_kwargs(),
            )
        remove = [self.base_dir] if self._owns_base_dir else []
        if self._own_socket_dir:
            remove.append(self.socket_dir)
        self._watchdog = subprocess.Popen(
            [sys.executable, os.path.abspath(pg_cluster_process.__file__), "--watchdog",
             str(self._proc.pid),
             *remove],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _wait_ready(self, log_offset: int) -> None:
        assert self._proc is not None
        pg_isready = self.program("pg_isready")
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise PostgresError(
                    f"postgres exited with status {code} while starting "
                    f"(data {self.data_dir}); end of {self.log_path}:\n"
                    f"{_tail(self.log_path, log_offset)}"
                )
            ready = False
            if self._pidfile_ready():
                ready = self._pg_isready(pg_isready)
            if ready:
                return
            if time.monotonic() > deadline:
                raise PostgresError(
                    f"postgres did not accept connections on 127.0.0.1:{self.port} within "
                    f"{self.start_timeout} s; end of {self.log_path}:\n"
                    f"{_tail(self.log_path, log_offset)}"
                )
            time.sleep(0.05)

    def _pidfile_ready(self) -> bool:
        """True once postmaster.pid names our postmaster and says "ready" or "standby".

        Checked before pg_isready so that another server that took the port meanwhile is
        never mistaken for ours.
        """
        assert self._proc is not None
        try:
            with open(os.path.join(self.data_dir, "postmaster.pid")) as handle:
                lines = handle.read().splitlines()
        except OSError:
            return False
        return (
            len(lines) >= 8
            and lines[0].strip() == str(self._proc.pid)
            and lines[7].strip() in ("ready", "standby")
        )

    def _pg_isready(self, pg_isready: str) -> bool:
        argv = [pg_isready, "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER,
                "-d", "postgres", "-t", "2"]
        try:
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=_clean_env(),
                timeout=10,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0

    def _release_watchdog(self) -> None:
        """Tell the watchdog all is well (one byte), and reap it."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is None:
            return
        if watchdog.stdin is not None:
            with contextlib.suppress(OSError):
                watchdog.stdin.write(b"x")
                watchdog.stdin.flush()
            with contextlib.suppress(OSError):
                watchdog.stdin.close()
        try:
            watchdog.wait(timeout=10)
        except subprocess.TimeoutExpired:
            watchdog.kill()
            watchdog.wait(timeout=10)

    def _reap(self) -> None:
        """After the postmaster has exited: collect it and its watchdog."""
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=STOP_TIMEOUT)
        self._release_watchdog()

    def stop(self, mode: str = "fast") -> None:
        """Shut the server down cleanly: mode "smart", "fast" or "immediate", as pg_ctl has.

        Sends the postmaster the signal pg_ctl would (pg_ctl itself refuses to run as root);
        if it is not gone within a minute it is killed.
        """
        signals = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
        if mode not in signals:
            raise ValueError(f"mode must be one of {sorted(signals)}, not {mode!r}")
        if self._proc is None:
            return
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signals[mode])
            try:
                self._proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._hard_stop()
                return
        self._reap()

    def kill(self) -> None:
        """Crash the server: SIGKILL the postmaster and every backend, as a power cut would.

        Backends are postmaster children in sessions of their own, so they are found in /proc
        and killed too; a backend left alone could finish a commit after the "crash".  Returns
        once all are gone (zombies that PID 1 never reaps count as gone).
        """
        self._hard_stop()

    def _hard_stop(self) -> None:
        proc = self._proc
        if proc is None:
            self._release_watchdog()
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGSTOP)  # freeze it: no new backends while we look
            children: list[int] = []
            for _ in range(5):  # again, in case a fork was in flight when it stopped
                fresh = [pid for pid in _children(proc.pid) if _pid_alive(pid)]
                if not fresh:
                    break
                for pid in fresh:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                children.extend(pid for pid in fresh if pid not in children)
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired as exc:
                raise PostgresError(f"postmaster {proc.pid} survived SIGKILL") from exc
            deadline = time.monotonic() + STOP_TIMEOUT
            while any(_pid_alive(pid) for pid in children):
                if time.monotonic() > deadline:
                    raise PostgresError(f"backends {children} survived SIGKILL")
                time.sleep(0.02)
        self._reap()

    def restart(self) -> None:
        """Start again after ``stop()`` or ``kill()``: same data, same port (stops first if up)."""
        if self.running:
            self.stop()
        self.start()

    # -- databases and SQL ------------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """Create database ``name`` with ``createdb`` and return its DSN."""
        self._run(
            [self.program("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER,
             "--", name],
            what="createdb",
        )
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, disconnecting its sessions first."""
        self._run(
            [self.program("dropdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER,
             "--if-exists", "--force", "--", name],
            what="dropdb",
        )

    def psql(self, sql: str, dbname: str = "postgres", *, timeout: float = CLIENT_TIMEOUT) -> str:
        """Run ``sql`` with psql (unaligned, tuples only, stop on error); return its output."""
        return self._run(
            [self.program("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-d", self.dsn(dbname), "-c", sql],
            timeout=timeout,
            what="psql",
        ).strip()

    # -- replication ------------------------------------------------------------------------

    def make_replica(self, base_dir: str | None = None) -> PostgresCluster:
        """A hot standby streaming from this (running) cluster, started on its own port.

        Made with ``pg_basebackup -R`` (which writes standby.signal and primary_conninfo);
        read-only connections work as soon as this returns.  ``cleanup()`` of the primary
        cleans its replicas too.
        """
        if not self.running:
            raise PostgresError("start the primary before making a replica")
        replica = PostgresCluster(
            base_dir, settings=self.settings, bin_dir=self.bin_dir,
            start_timeout=self.start_timeout,
        )
        try:
            replica._run(
                [self.program("pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.port),
                 "-U", SUPERUSER, "-D", replica.data_dir, "-R", "-X", "stream",
                 "--checkpoint=fast", "--no-sync"],
                as_server=True,
                timeout=INITDB_TIMEOUT,
                what="pg_basebackup",
            )
            replica.primary = self
            replica.start()
        except BaseException:
            replica.cleanup()
            raise
        self._replicas.append(replica)
        return replica

    # -- teardown ---------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Stop the server (and its replicas) and remove what this object created on disk."""
        for replica in self._replicas:
            replica.cleanup()
        self._replicas.clear()
        try:
            if self.running:
                try:
                    self.stop("fast")
                except PostgresError:
                    self._hard_stop()
            else:
                self._reap()
        finally:
            if not self._removed:
                self._removed = True
                if self._owns_base_dir:
                    shutil.rmtree(self.base_dir, ignore_errors=True)
                else:
                    shutil.rmtree(self.data_dir, ignore_errors=True)
                    with contextlib.suppress(OSError):
                        os.unlink(self.log_path)
                if self._own_socket_dir:
                    shutil.rmtree(self.socket_dir, ignore_errors=True)
            with _live_lock:
                if self in _live:
                    _live.remove(self)

    def __enter__(self) -> PostgresCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<PostgresCluster {self.base_dir} port={self._port} {state}>"


def cluster_for_tests(skip: Callable[[str], Any], fail: Callable[[str], Any]) -> PostgresCluster:
    """A started cluster for a test session, or ``skip(reason)`` when there are no binaries.

    ``fail(reason)`` instead when ``DURUS_REQUIRE_POSTGRES=1`` (CI): there a missing
    PostgreSQL must never pass as skipped tests.  The caller cleans the cluster up.
    """
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        forced = os.environ.get("DURUS_PG_BIN")
        if forced:
            reason = f"DURUS_PG_BIN={forced!r} does not hold initdb, pg_ctl and postgres"
        else:
            reason = (
                "no PostgreSQL server binaries found (DURUS_PG_BIN, pg_config --bindir, "
                "/usr/lib/postgresql/*/bin, PATH); install them, e.g. apt-get install postgresql"
            )
        if os.environ.get("DURUS_REQUIRE_POSTGRES") == "1":
            fail(f"DURUS_REQUIRE_POSTGRES=1 but {reason}")
        skip(reason)
        raise PostgresError(reason)  # skip() raises; this is for callers whose skip returns
    cluster = PostgresCluster(bin_dir=bin_dir)
    cluster.start()
    return cluster
