"""Adapter for the Durus API, shared by "ours" and "durus43".

Why one adapter for both: the new distributions promise Durus 4.3's import
paths and signatures, so the same calls must work on both; where they may not
yet (the ``fsync`` keyword, modules still being written) the gap is reported as
unavailable rather than papered over.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import logging
from collections.abc import Iterator
from typing import Any

from ..protocol import Unavailable
from .base import Adapter, Session

HOST = "127.0.0.1"

_FEATURE_MODULES = {
    "file": ("durus.persistent", "durus.connection", "durus.file_storage", "durus.btree"),
    "client": ("durus.persistent", "durus.connection", "durus.client_storage", "durus.btree"),
    "server": ("durus.file_storage", "durus.storage_server"),
    "sql": ("durus.persistent", "durus.connection", "durus.pg_storage", "durus.btree", "psycopg"),
}
PG_SETTINGS = ("fsync", "synchronous_commit")


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise Unavailable(f"cannot import {name}: {exc}") from exc


class DurusSession(Session):
    """A ``durus.connection.Connection`` over any storage."""

    def __init__(self, storage: Any, cache_size: int, mvcc: bool = False) -> None:
        connection_module = _import("durus.connection")
        self.storage = storage
        options = {"mvcc": True} if mvcc else {}
        self.connection = connection_module.Connection(storage, cache_size=cache_size,
                                                       **options)
        self.root = self.connection.get_root()

    def commit(self) -> None:
        self.connection.commit()

    def abort(self) -> None:
        self.connection.abort()

    def get(self, oid: int) -> Any:
        obj = self.connection.get(oid)
        obj.n  # noqa: B018 -- make sure the state is loaded, whatever get() returned
        return obj

    def pack(self) -> None:
        self.connection.pack()

    def close(self) -> None:
        self.storage.close()


class DurusAdapter(Adapter):
    """The Durus API as documented in the compatibility spec, sections 5 and 6."""

    def __init__(self, system: str) -> None:
        self.system = system

    def require(self, *features: str) -> None:
        if "sql" in features and self.system == "durus43":
            raise Unavailable("Durus 4.3 has no SQL storage")
        for feature in features:
            for name in _FEATURE_MODULES[feature]:
                _import(name)
        # Durus logs one INFO line per commit (and the server one more): that
        # would time the log handler, so every Durus process logs warnings only.
        logging.getLogger("durus").setLevel(logging.WARNING)
        if {"file", "client", "sql"} & set(features):
            _import("bench_driver.model_durus")

    def _storage_kwargs(self, fsync: bool | None) -> dict[str, Any]:
        if fsync is None:
            return {}
        file_storage = _import("durus.file_storage").FileStorage
        params = inspect.signature(file_storage).parameters
        takes_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        if "fsync" in params or takes_kw:
            return {"fsync": fsync}
        if self.system == "durus43":
            if fsync:
                raise Unavailable("Durus 4.3's FileStorage never fsyncs a commit")
            return {}
        raise Unavailable("FileStorage does not take the fsync keyword yet")

    def durability(self, fsync: bool | None) -> str:
        if self.system == "durus43":
            return "no fsync (Durus 4.3 never fsyncs a commit)"
        if fsync is None:
            default = self._fsync_default()
            if default is None:
                return "FileStorage default (no fsync keyword)"
            return f"{'fsync per commit' if default else 'no fsync'} (FileStorage default)"
        return "fsync per commit (fsync=True)" if fsync else "no fsync (fsync=False)"

    def _fsync_default(self) -> bool | None:
        file_storage = _import("durus.file_storage").FileStorage
        param = inspect.signature(file_storage).parameters.get("fsync")
        if param is None or not isinstance(param.default, bool):
            return None
        return param.default

    def file_storage(self, path: str, *, readonly: bool = False, fsync: bool | None = None) -> Any:
        file_storage = _import("durus.file_storage").FileStorage
        kwargs = self._storage_kwargs(fsync)
        if readonly:
            kwargs["readonly"] = True
        return file_storage(path, **kwargs)

    def session(self, storage: Any, *, cache_size: int = 100_000) -> DurusSession:
        return DurusSession(storage, cache_size)

    def strongest_fsync(self) -> bool | None:
        if self.system == "durus43":
            return None
        try:
            return True if self._storage_kwargs(True) else None
        except Unavailable:
            return None

    def connect(self, port: int, *, cache_size: int = 100_000, mvcc: bool = False) -> DurusSession:
        client_storage = _import("durus.client_storage").ClientStorage
        mvcc = mvcc and self._has_snapshot_reads()
        return DurusSession(client_storage(host=HOST, port=port), cache_size, mvcc)

    def _has_snapshot_reads(self) -> bool:
        connection = _import("durus.connection").Connection
        return "mvcc" in inspect.signature(connection).parameters

    def reader_kind(self, mvcc: bool) -> str:
        if mvcc and self._has_snapshot_reads():
            return "snapshot reader (Connection(mvcc=True))"
        return "classic reader (ReadConflictError when others commit)"

    def conflict_errors(self) -> tuple[type[BaseException], ...]:
        return (_import("durus.error").ConflictError,)

    def serve(self, path: str, port: int, *, fsync: bool | None) -> None:
        file_storage = _import("durus.file_storage").FileStorage
        storage_server = _import("durus.storage_server").StorageServer
        storage = file_storage(path, **self._storage_kwargs(fsync))
        storage_server(storage, host=HOST, port=port).serve()

    def pack_leftovers(self, path: str) -> list[str]:
        return [path + ".prepack"]

    def sql_storage(self, dsn: str) -> Any:
        return _import("durus.pg_storage").PostgresStorage(dsn)

    def pg_settings(self, dsn: str) -> dict[str, str]:
        psycopg = _import("psycopg")
        with psycopg.connect(dsn) as connection:
            return {k: connection.execute(f"SHOW {k}").fetchone()[0] for k in PG_SETTINGS}

    def new_tree(self) -> Any:
        return _import("durus.btree").BTree()

    def new_item(self, i: int) -> Any:
        from ..model_durus import Item
        from ..model_plain import make_fields

        return Item(*make_fields(i))

    def tree_values(self, tree: Any) -> Iterator[Any]:
        return tree.itervalues()

    def oid_of(self, obj: Any) -> int:
        return int.from_bytes(obj._p_oid, "big")

    def versions(self) -> dict[str, str]:
        found = {}
        for dist in importlib.metadata.distributions():
            name = dist.metadata["Name"] or ""
            if name.lower().startswith("durus"):
                found[name] = dist.version
        if self.system != "durus43":
            import durus.persistent

            # Which path ran: "pure" sets DURUS_PURE_PYTHON=1, "ours" must be accelerated.
            accelerated = getattr(durus.persistent, "accelerated", False)
            found["durus.persistent.accelerated"] = str(accelerated)
        return dict(sorted(found.items()))
