"""The small interface every workload is written against.

Why an interface: workloads must read the same for every system so that the
timed loops are identical; only opening, committing and the container types
differ between the Durus API and ZODB.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any


class Session:
    """An open database: a connection, its root mapping and its storage."""

    root: Any

    def commit(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """End the transaction without changes (this is where caches shrink)."""
        raise NotImplementedError

    def get(self, oid: int) -> Any:
        """The object with integer ``oid``, its state loaded."""
        raise NotImplementedError

    def pack(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class Adapter:
    """How one system opens files, servers and containers."""

    system: str

    def require(self, *features: str) -> None:
        """Import what ``features`` need or raise ``Unavailable``.

        Features: ``file`` (FileStorage, Connection, BTree, Persistent),
        ``client`` (ClientStorage), ``server`` (the storage server) and ``sql``
        (a storage in a PostgreSQL database, with Connection, BTree, Persistent).
        """
        raise NotImplementedError

    def sql_storage(self, dsn: str) -> Any:
        """Open the storage kept in the PostgreSQL database ``dsn`` (a libpq DSN)."""
        raise NotImplementedError

    def open_sql(self, dsn: str, *, cache_size: int = 100_000) -> Session:
        """Storage in PostgreSQL and connection in one step."""
        return self.session(self.sql_storage(dsn), cache_size=cache_size)

    def sql_durability(self, dsn: str) -> str:
        """Say in words whether PostgreSQL makes commits durable (its live settings)."""
        settings = self.pg_settings(dsn)
        durable = settings["fsync"] == "on" and settings["synchronous_commit"] != "off"
        said = ", ".join(f"{k}={v}" for k, v in settings.items())
        return f"PostgreSQL {'durable' if durable else 'NOT durable'} commit ({said})"

    def pg_settings(self, dsn: str) -> dict[str, str]:
        """``fsync`` and ``synchronous_commit`` of the server, read with the system's driver."""
        raise NotImplementedError

    def file_storage(self, path: str, *, readonly: bool = False, fsync: bool | None = None) -> Any:
        """Open (creating if needed) the storage alone; ``fsync=None`` is the default.

        Raises ``Unavailable`` when the system cannot honour ``fsync``.
        """
        raise NotImplementedError

    def session(self, storage: Any, *, cache_size: int = 100_000) -> Session:
        """A connection (with its root) over an open storage."""
        raise NotImplementedError

    def open_file(
        self,
        path: str,
        *,
        readonly: bool = False,
        cache_size: int = 100_000,
        fsync: bool | None = None,
    ) -> Session:
        """Storage and connection in one step, for workloads that do not time the open."""
        storage = self.file_storage(path, readonly=readonly, fsync=fsync)
        return self.session(storage, cache_size=cache_size)

    def strongest_fsync(self) -> bool | None:
        """The ``fsync`` argument for the most durable commits the system offers."""
        return None

    def connect(self, port: int, *, cache_size: int = 100_000, mvcc: bool = False) -> Session:
        """Open a connection through the server on loopback ``port``.

        ``mvcc``: a snapshot reader where the system has both kinds (ours).
        """
        raise NotImplementedError

    def reader_kind(self, mvcc: bool) -> str:
        """Which reader ``connect(mvcc=...)`` gives, in words."""
        raise NotImplementedError

    def conflict_errors(self) -> tuple[type[BaseException], ...]:
        """What a transaction retries after (``abort()`` first)."""
        raise NotImplementedError

    def serve(self, path: str, port: int, *, fsync: bool | None) -> None:
        """Serve ``path`` on loopback ``port`` until killed."""
        raise NotImplementedError

    def durability(self, fsync: bool | None) -> str:
        """Say in words whether commits reach the disk in this mode."""
        raise NotImplementedError

    def new_tree(self) -> Any:
        """An empty BTree keyed by int."""
        raise NotImplementedError

    def new_item(self, i: int) -> Any:
        raise NotImplementedError

    def tree_values(self, tree: Any) -> Iterator[Any]:
        raise NotImplementedError

    def oid_of(self, obj: Any) -> int:
        raise NotImplementedError

    def versions(self) -> dict[str, str]:
        """Installed versions of the distributions that make up the system."""
        raise NotImplementedError

    def db_files(self, path: str) -> list[str]:
        """The files that make up the database at ``path`` (data and index)."""
        return [path]

    def pack_leftovers(self, path: str) -> list[str]:
        """Files a pack leaves beside ``path`` (the previous generation)."""
        return []

    def db_size(self, path: str) -> int:
        """Bytes on disk of the database at ``path``, index files included."""
        return sum(os.path.getsize(p) for p in self.db_files(path) if os.path.exists(p))

    def copy_db(self, source: str, target: str) -> None:
        """Copy a closed database so a workload may change it."""
        for src in self.db_files(source):
            if os.path.exists(src):
                shutil.copyfile(src, target + src[len(source) :])
