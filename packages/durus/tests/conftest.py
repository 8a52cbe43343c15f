"""Fixtures of the whole-system tests: fresh databases on every kind of storage.

``storage_kind`` (module scope, one parameter per kind) makes ``Db`` objects with
``fresh()``: MemoryStorage, FileStorage, ClientStorage through a real ``durus -s`` process
on a loopback port and on a Unix socket, SqliteStorage, PostgresStorage on a real
PostgreSQL.  The server and PostgreSQL kinds reuse one server (one database) per module and
give each ``fresh()`` a separate place in it (``root[key]``, the previous places dropped), so
a Hypothesis example costs no process start; the others get a new database each time.

This folder is put on ``sys.path``: ``graph_spec`` and ``graph_strategies`` are imported
from there (test modules cannot import each other under ``--import-mode=importlib``).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

STORAGE_KINDS = ("memory", "file", "server-tcp", "server-unix", "sqlite", "postgresql")


class Db:
    """One fresh database (or place in a shared one) of some kind of storage.

    ``connect()`` opens a new storage and a Connection on it; ``place(connection)`` is the
    PersistentDict the test uses as its root; ``read()`` describes the graph there as a
    fresh connection on a storage of its own sees it (committed state only).
    ``close()`` closes every storage opened, so ``connect()`` afterwards is a reopening.
    """

    def __init__(
        self,
        kind: Kind,
        open_storage: Callable[[], Any],
        open_reader: Callable[[], Any],
        key: str | None,
    ) -> None:
        self.kind = kind
        self.name = kind.name
        self._open_storage = open_storage
        self._open_reader = open_reader
        self.key = key
        self.opened: list[Any] = []

    @property
    def two_writers(self) -> bool:
        """Can two connections commit to it at once (server, SQLite, PostgreSQL)?"""
        return self.kind.two_writers

    def connect(self, **options: Any) -> Any:
        from durus.connection import Connection

        storage = self._open_storage()
        self.opened.append(storage)
        return Connection(storage, **options)

    def reader(self, **options: Any) -> Any:
        """A connection for reading only, next to the writers (FileStorage: read-only)."""
        from durus.connection import Connection

        storage = self._open_reader()
        self.opened.append(storage)
        return Connection(storage, **options)

    def place(self, connection: Any) -> Any:
        root = connection.get_root()
        return root if self.key is None else root[self.key]

    def read(self, describe: Callable[[Any], Any]) -> Any:
        connection = self.reader()
        try:
            return describe(self.place(connection))
        finally:
            self._close(connection.get_storage())

    def pack(self, connection: Any) -> None:
        """``connection.pack()``, and for a server wait until its pack has finished."""
        storage = connection.get_storage()
        stats = getattr(storage, "get_server_stats", None)
        before = stats()["packs"] if stats else 0
        connection.pack()
        if stats is None:
            return
        deadline = time.monotonic() + 60
        while True:
            now = stats()
            assert not now.get("last_pack_error"), now["last_pack_error"]
            if now["packs"] > before and not now["pack_running"]:
                return
            assert time.monotonic() < deadline, f"the server's pack did not end: {now}"
            time.sleep(0.005)

    def _close(self, storage: Any) -> None:
        if storage in self.opened:
            self.opened.remove(storage)
        if not self.kind.keeps_storage:
            storage.close()

    def close(self) -> None:
        while self.opened:
            self._close(self.opened[-1])

    def __enter__(self) -> Db:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Kind:
    """A kind of storage: makes fresh ``Db`` objects, owns its server if any."""

    def __init__(self, name: str, folder: pathlib.Path) -> None:
        self.name = name
        self.folder = folder
        self.count = 0
        self.two_writers = name not in ("memory", "file")
        self.keeps_storage = name == "memory"  # a MemoryStorage closed is gone
        self.shared = name.startswith("server") or name == "postgresql"
        self.server: subprocess.Popen[bytes] | None = None
        self.address: Any = None
        self.dsn: str | None = None

    def fresh(self) -> Db:
        self.count += 1
        n = self.count
        opener, reader = self._openers(n)
        db = Db(self, opener, reader, f"example{n}" if self.shared else None)
        if self.shared:
            from durus.persistent_dict import PersistentDict

            connection = db.connect()
            root = connection.get_root()
            root.clear()  # earlier places become garbage for the next pack
            root[db.key] = PersistentDict()
            connection.commit()
        else:
            db.connect()  # creates the database and its root
        db.close()
        return db

    def _openers(self, n: int) -> tuple[Callable[[], Any], Callable[[], Any]]:
        name = self.name
        if name == "memory":
            from durus.storage import MemoryStorage

            memory = MemoryStorage()
            return (lambda: memory), (lambda: memory)
        if name == "file":
            from durus.file_storage import FileStorage

            path = self.folder / f"db{n}.durus"
            # fsync=False: durability is not under test here, and fsyncs cost 10 ms each.
            return (lambda: FileStorage(path, fsync=False)), (
                lambda: FileStorage(path, readonly=True)
            )
        if name == "sqlite":
            from durus.sqlite_storage import SqliteStorage

            path = self.folder / f"db{n}.sqlite"
            return (lambda: SqliteStorage(path, fsync=False)), (lambda: SqliteStorage(path))
        if name == "postgresql":
            from durus.pg_storage import PostgresStorage

            dsn = self.dsn
            return (lambda: PostgresStorage(dsn)), (lambda: PostgresStorage(dsn))
        from durus.client_storage import ClientStorage

        def client() -> Any:
            return ClientStorage(address=self.address, timeout=30)  # restart may move it

        return client, client

    # -- servers ------------------------------------------------------------------------

    def start_server(self) -> None:
        """``durus -s`` on a file of this kind's folder (TCP or a Unix socket)."""
        from durus.storage_server import wait_for_server

        if self.name == "server-tcp":
            import socket

            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            self.address = ("127.0.0.1", port)
            where = ["--port", str(port)]
        else:
            # A short path: a Unix socket's name is limited to 107 bytes.
            self.address = tempfile.mkdtemp(prefix="durus-") + "/server.sock"
            where = ["--address", self.address]
        self._log = open(self.folder / "server.log", "ab")  # noqa: SIM115
        self.server = subprocess.Popen(
            [sys.executable, "-m", "durus", "-s", "--file", str(self.folder / "server.durus"),
             *where], stdout=self._log, stderr=subprocess.STDOUT,
        )
        try:
            wait_for_server(address=self.address, maxtries=600, sleeptime=0.05)
        except SystemExit:
            self.stop_server()
            pytest.fail(f"the server did not start: {self.server_log()}")
        assert self.server.poll() is None, self.server_log()

    def restart_server(self) -> None:
        """Stop the server (SIGTERM, a clean stop) and start it again on the same file."""
        self.stop_server()
        self.start_server()

    def server_log(self) -> str:
        return (self.folder / "server.log").read_text(errors="replace")

    def stop_server(self) -> None:
        server = self.server
        if server is None:
            return
        self.server = None
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(30)
        self._log.close()
        if isinstance(self.address, str):
            shutil.rmtree(os.path.dirname(self.address), ignore_errors=True)


@pytest.fixture(scope="session")
def graph_postgres() -> Iterator[Any]:
    """One PostgreSQL server for these tests (skipped, or failed under
    DURUS_REQUIRE_POSTGRES=1, without binaries or psycopg)."""
    if os.environ.get("DURUS_REQUIRE_POSTGRES") != "1":
        pytest.importorskip("psycopg", reason="PostgresStorage needs psycopg 3")
    from durus.pg_cluster import cluster_for_tests

    cluster = cluster_for_tests(pytest.skip, lambda reason: pytest.fail(reason, pytrace=False))
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture(scope="module", params=STORAGE_KINDS)
def storage_kind(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Kind]:
    """A kind of storage, for a whole module: ``storage_kind.fresh()`` gives a ``Db``."""
    kind = Kind(request.param, tmp_path_factory.mktemp(request.param))
    if kind.name.startswith("server"):
        kind.start_server()
    elif kind.name == "postgresql":
        cluster = request.getfixturevalue("graph_postgres")
        if not cluster.running:
            cluster.restart()
        name = f"graphs_{uuid.uuid4().hex[:12]}"
        cluster.create_database(name)
        kind.dsn = cluster.dsn(name)
    try:
        yield kind
    finally:
        kind.stop_server()


@pytest.fixture
def db(storage_kind: Kind) -> Iterator[Db]:
    """A fresh database (or place) of the module's storage kind, closed afterwards."""
    with storage_kind.fresh() as fresh:
        yield fresh
