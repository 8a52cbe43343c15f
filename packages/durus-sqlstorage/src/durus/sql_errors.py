"""The errors of the SQL storages, all ``DurusError``s so one ``except`` catches them.

Each says what happened to the commit in flight: applied, or not applied at all
(the database's transaction guarantees there is no third case we report).
"""

from __future__ import annotations

from durus.error import DurusError

__all__ = [
    "DatabaseUnavailableError",
    "ReadOnlyStorageError",
    "SchemaVersionError",
    "SqlStorageError",
]


class SqlStorageError(DurusError):
    """Base class of the SQL storages' errors."""


class SchemaVersionError(SqlStorageError):
    """The database was made by a newer (or unknown) version of durus-sqlstorage."""


class DatabaseUnavailableError(SqlStorageError):
    """The database server could not be reached or the connection was lost.

    Nothing of the commit in flight was applied (a commit whose outcome was
    unknown is checked after reconnecting before this is raised).  The storage
    reconnects on its next use, so ``abort()`` and a retry work once the
    database is back.
    """


class ReadOnlyStorageError(SqlStorageError):
    """A write (commit, new oid, pack) on a storage opened read-only."""
