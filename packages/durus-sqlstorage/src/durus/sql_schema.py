"""The one schema both SQL storages use, and its version.

``objects`` keeps Durus 4.3's ``SqliteStorage`` columns (``id``, ``data``,
``refs``: a record is ``id + len(data) + data + refs``, byte for byte a SHELF-1
record) plus ``tid``, the number of the transaction that wrote the row, which
is how ``sync()`` finds what other writers changed.  A row whose ``data`` is
NULL is a tombstone left by a pack, so that other processes learn about the
removal; the next pack deletes it.  ``durus_state`` is a single row: the
schema version, the last transaction number (its row lock serialises commits)
and, for SQLite, the next oid (PostgreSQL uses a sequence).
"""

from __future__ import annotations

__all__ = ["SCHEMA_VERSION", "postgres_schema", "sqlite_schema"]

#: Bumped when the tables change; a storage refuses a database with a larger one.
SCHEMA_VERSION = 1


def sqlite_schema() -> list[str]:
    """DDL of a new SQLite database (``id integer primary key`` is the rowid, as in 4.3)."""
    return [
        "CREATE TABLE IF NOT EXISTS objects ("
        " id integer primary key, data blob, refs blob, tid integer NOT NULL DEFAULT 0)",
        "CREATE INDEX IF NOT EXISTS objects_tid ON objects (tid)",
        "CREATE TABLE IF NOT EXISTS durus_state ("
        " one integer PRIMARY KEY CHECK (one = 1),"
        " schema_version integer NOT NULL, tid integer NOT NULL,"
        " next_oid integer NOT NULL, pack_tid integer NOT NULL)",
    ]


def postgres_schema() -> list[str]:
    """DDL of a new PostgreSQL database (the oid sequence starts at 0: the root)."""
    return [
        "CREATE TABLE IF NOT EXISTS objects ("
        " id bigint PRIMARY KEY, data bytea, refs bytea, tid bigint NOT NULL DEFAULT 0)",
        "CREATE INDEX IF NOT EXISTS objects_tid ON objects (tid)",
        "CREATE TABLE IF NOT EXISTS durus_state ("
        " one integer PRIMARY KEY CHECK (one = 1),"
        " schema_version integer NOT NULL, tid bigint NOT NULL,"
        " next_oid bigint NOT NULL, pack_tid bigint NOT NULL)",
        "CREATE SEQUENCE IF NOT EXISTS durus_oid_seq MINVALUE 0 START 0",
    ]
