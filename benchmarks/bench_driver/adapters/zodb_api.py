"""Adapter for ZODB: FileStorage, ZEO and an ``IOBTree`` (ZODB's BTree for int keys).

Why IOBTree: it is what a ZODB user picks for int keys, so the comparison is
against ZODB at its best rather than against a generic ``OOBTree``.
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

    def connect(self, port: int, *, cache_size: int = 100_000) -> ZodbSession:
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
        found = {}
        for name in _DISTRIBUTIONS:
            try:
                found[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                found[name] = "missing"
        return found
