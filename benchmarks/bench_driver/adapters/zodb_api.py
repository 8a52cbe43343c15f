"""Adapters for ZODB: FileStorage, ZEO and an ``IOBTree`` (ZODB's BTree for int keys);
and for RelStorage, ZODB on PostgreSQL (the ``relstorage`` system).

Why IOBTree: it is what a ZODB user picks for int keys, so the comparison is
against ZODB at its best rather than against a generic ``OOBTree``.

Why RelStorage is its own system: it is the ZODB peer of our SQL storage on the
same PostgreSQL server, measured on the ``sql_*`` workloads only; ZODB's own
FileStorage and ZEO are the ``zodb`` system.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Iterator
from typing import Any

from ..protocol import Unavailable
from .base import Adapter, Session

HOST = "127.0.0.1"

_FEATURE_MODULES = {
    "file": ("ZODB", "ZODB.FileStorage", "BTrees.IOBTree", "persistent", "transaction"),
    "client": ("ZODB", "ZEO.ClientStorage", "BTrees.IOBTree", "persistent", "transaction"),
    "server": ("ZEO.runzeo",),
}

_DISTRIBUTIONS = ("ZODB", "ZEO", "BTrees", "persistent", "transaction", "zodbpickle")
_RELSTORAGE_MODULES = (
    "ZODB",
    "relstorage.storage",
    "relstorage.adapters.postgresql",
    "relstorage.options",
    "psycopg2",
    "BTrees.IOBTree",
    "persistent",
    "transaction",
)
_RELSTORAGE_DISTRIBUTIONS = (
    "RelStorage",
    "psycopg2-binary",
    "ZODB",
    "BTrees",
    "persistent",
    "transaction",
    "zodbpickle",
)
PG_SETTINGS = ("fsync", "synchronous_commit")


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise Unavailable(f"cannot import {name}: {exc}") from exc


class ZodbSession(Session):
    """A ZODB ``DB`` with one connection and a private transaction manager."""

    def __init__(self, storage: Any, cache_size: int) -> None:
        zodb = _import("ZODB")
        transaction = _import("transaction")
        self.db = zodb.DB(storage, cache_size=cache_size)
        self.tm = transaction.TransactionManager()
        self.connection = self.db.open(transaction_manager=self.tm)
        self.root = self.connection.root()

    def commit(self) -> None:
        self.tm.commit()

    def abort(self) -> None:
        self.tm.abort()
        self.connection.cacheGC()

    def get(self, oid: int) -> Any:
        obj = self.connection.get(oid.to_bytes(8, "big"))
        obj._p_activate()
        return obj

    def pack(self) -> None:
        self.tm.abort()
        self.db.pack()

    def close(self) -> None:
        self.tm.abort()
        self.connection.close()
        self.db.close()


class ZodbAdapter(Adapter):
    """ZODB 5/6 with FileStorage, and ZEO for the client/server workloads."""

    def __init__(self, system: str) -> None:
        self.system = system

    def require(self, *features: str) -> None:
        if "sql" in features:
            raise Unavailable("ZODB on PostgreSQL is the relstorage system")
        for feature in features:
            for name in _FEATURE_MODULES[feature]:
                _import(name)
        if "file" in features or "client" in features:
            _import("bench_driver.model_zodb")

    def durability(self, fsync: bool | None) -> str:
        return "fsync per commit (ZODB's FileStorage always fsyncs)"

    def file_storage(self, path: str, *, readonly: bool = False, fsync: bool | None = None) -> Any:
        if fsync is False:
            raise Unavailable("ZODB's FileStorage always fsyncs a commit")
        return _import("ZODB.FileStorage").FileStorage(path, read_only=readonly)

    def session(self, storage: Any, *, cache_size: int = 100_000) -> ZodbSession:
        return ZodbSession(storage, cache_size)

    def reader_kind(self, mvcc: bool) -> str:
        return "snapshot reader (ZODB is always MVCC)"

    def conflict_errors(self) -> tuple[type[BaseException], ...]:
        return (_import("ZODB.POSException").ConflictError,)

    def connect(self, port: int, *, cache_size: int = 100_000, mvcc: bool = False) -> ZodbSession:
        client_storage = _import("ZEO.ClientStorage").ClientStorage
        return ZodbSession(client_storage((HOST, port), wait=True), cache_size)

    def serve(self, path: str, port: int, *, fsync: bool | None) -> None:
        if fsync is False:
            raise Unavailable("ZODB's FileStorage always fsyncs a commit")
        runzeo = _import("ZEO.runzeo")
        runzeo.main(["-a", f"{HOST}:{port}", "-f", path])

    def new_tree(self) -> Any:
        return _import("BTrees.IOBTree").IOBTree()

    def new_item(self, i: int) -> Any:
        from ..model_plain import make_fields
        from ..model_zodb import Item

        return Item(*make_fields(i))

    def tree_values(self, tree: Any) -> Iterator[Any]:
        return iter(tree.values())

    def oid_of(self, obj: Any) -> int:
        return int.from_bytes(obj._p_oid, "big")

    def db_files(self, path: str) -> list[str]:
        return [path, path + ".index"]

    def pack_leftovers(self, path: str) -> list[str]:
        return [path + ".old"]

    def versions(self) -> dict[str, str]:
        return _versions(_DISTRIBUTIONS)


def _versions(names: tuple[str, ...]) -> dict[str, str]:
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "missing"
    return found


class RelStorageAdapter(ZodbAdapter):
    """ZODB over ``relstorage.storage.RelStorage`` on PostgreSQL, history-free.

    History-free (``keep_history=False``) is the comparable mode: our SQL storage
    keeps one state per object, as does a packed FileStorage.  Every other option
    is RelStorage's default (among them a 10 MB in-process object cache, empty in
    a fresh process, and no persistent cache files).
    """

    def require(self, *features: str) -> None:
        if set(features) - {"sql"}:
            raise Unavailable(
                "the relstorage system is measured on the sql_* workloads only "
                "(ZODB's FileStorage and ZEO are the zodb system)"
            )
        for name in _RELSTORAGE_MODULES:
            _import(name)
        _import("bench_driver.model_zodb")

    def sql_storage(self, dsn: str) -> Any:
        storage = _import("relstorage.storage").RelStorage
        adapter = _import("relstorage.adapters.postgresql").PostgreSQLAdapter
        options = _import("relstorage.options").Options(keep_history=False)
        return storage(adapter(dsn=dsn, options=options), options=options)

    def pg_settings(self, dsn: str) -> dict[str, str]:
        psycopg2 = _import("psycopg2")
        connection = psycopg2.connect(dsn)
        try:
            with connection.cursor() as cursor:
                found = {}
                for key in PG_SETTINGS:
                    cursor.execute(f"SHOW {key}")
                    found[key] = cursor.fetchone()[0]
                return found
        finally:
            connection.close()

    def versions(self) -> dict[str, str]:
        return _versions(_RELSTORAGE_DISTRIBUTIONS)
