"""SqliteStorage: a Durus database in one SQLite file (standard library only).

Durus 4.3's import path and constructor.  Its databases open and read as they
are; the first writable open adds what this version needs (a ``tid`` column,
an index and the ``durus_state`` row: Durus 4.3 still reads the file after
that).  Fixed against 4.3: oids are never handed out twice (4.3 re-issued the
highest one after a reopen), an existing empty file is a new database,
``gen_oid_record()`` works, read-only opens work, several processes may use
one file (writers take SQLite's write lock in turn; readers see commits after
``sync()``), and commits are durable (WAL with ``synchronous=FULL``;
``fsync=False`` for ``NORMAL``).
"""

from __future__ import annotations

import logging
import os
import pathlib
import sqlite3
from typing import Any

from durus.error import SnapshotsUnsupportedError
from durus.sql_errors import SqlStorageError
from durus.sql_schema import SCHEMA_VERSION, sqlite_schema
from durus.sql_storage import SqlStorage

__all__ = ["SqliteStorage"]

logger = logging.getLogger("durus.sql_storage")

MAGIC = b"SQLite format 3\0"
#: RETURNING needs SQLite 3.35 (2021); older libraries take two statements.
_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)


class SqliteStorage(SqlStorage):
    """A storage in the SQLite file ``filename`` (created if missing).

    ``readonly``: no writes, and Durus 4.3 files are read without being
    upgraded.  ``repair`` is accepted for Durus 4.3's signature and ignored
    (SQLite recovers its own journal).  ``fsync``: commits survive a power
    loss; ``False`` trades that for speed (they still survive a crash of the
    process).  ``timeout``: seconds to wait for another process's write lock.
    """

    def __init__(
        self,
        filename: str | os.PathLike[str],
        readonly: bool = False,
        repair: bool = False,
        *,
        fsync: bool = True,
        timeout: float = 30.0,
    ) -> None:
        self.filename = os.path.abspath(os.fspath(filename))
        self.fsync = fsync
        self.timeout = timeout
        if os.path.isdir(self.filename):
            raise SqlStorageError(f"{self.filename} is a directory, not an SQLite database")
        if readonly and not os.path.exists(self.filename):
            raise SqlStorageError(f"{self.filename}: no such file (read-only cannot create one)")
        self._side_db: Any = None
        super().__init__(readonly)

    @classmethod
    def has_format(cls, file: Any) -> bool:
        """Whether the open binary file (or path) starts like an SQLite database."""
        if isinstance(file, (str, os.PathLike)):
            with open(file, "rb") as f:
                return f.read(len(MAGIC)) == MAGIC
        file.seek(0)
        return bool(file.read(len(MAGIC)) == MAGIC)

    def get_filename(self) -> str:
        return self.filename

    def describe(self) -> str:
        return self.filename

    def get_size(self) -> int:
        """Bytes of the database file (its write-ahead log not counted)."""
        return os.path.getsize(self.filename)

    # -- dialect -------------------------------------------------------------------

    def _connect(self) -> Any:
        if self.readonly:
            uri = pathlib.Path(self.filename).as_uri() + "?mode=ro"
            return sqlite3.connect(uri, uri=True, timeout=self.timeout, isolation_level=None)
        return sqlite3.connect(self.filename, timeout=self.timeout, isolation_level=None)

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.Error,)

    def _is_disconnect(self, error: BaseException) -> bool:
        return False  # a local file: there is no connection to lose

    def _check_snapshots(self) -> None:
        mode = str(self._execute("PRAGMA journal_mode").fetchone()[0]).lower()
        if mode != "wal":
            raise SnapshotsUnsupportedError(
                f"{self.filename} is in journal mode {mode!r}, not WAL: a read transaction "
                "would block its writers (open it once writable with SqliteStorage, which "
                "switches it to WAL)"
            )

    def _begin_snapshot(self) -> None:
        # Deferred: the snapshot is taken by the first read (the sync query).
        self._execute("BEGIN")

    def _prepare(self, db: Any) -> None:
        try:
            tables = {row[0] for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
            )}
        except sqlite3.DatabaseError as error:
            raise SqlStorageError(
                f"{self.filename} is not an SQLite database ({error})"
            ) from None
        if not self.readonly:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
        if "durus_state" in tables:
            row = db.execute("SELECT schema_version FROM durus_state").fetchone()
            self._check_version(int(row[0]) if row else 0)
        elif "objects" in tables:
            columns = {row[1] for row in db.execute("PRAGMA table_info(objects)")}
            if not {"id", "data", "refs"} <= columns:
                raise SqlStorageError(f"{self.filename} is an SQLite database, not a Durus one")
            if self.readonly:
                self._read_durus43(db)
            else:
                self._upgrade_durus43(db)
        elif tables:
            raise SqlStorageError(f"{self.filename} is an SQLite database, not a Durus one")
        elif self.readonly:
            raise SqlStorageError(f"{self.filename} holds no Durus database yet")
        else:
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in sqlite_schema():
                    db.execute(statement)
                db.execute(
                    "INSERT OR IGNORE INTO durus_state VALUES (1, ?, 0, 0, 0)", (SCHEMA_VERSION,)
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _upgrade_durus43(self, db: Any) -> None:
        """Add this version's column, index and state row to a Durus 4.3 database."""
        db.execute("BEGIN IMMEDIATE")
        try:
            columns = {row[1] for row in db.execute("PRAGMA table_info(objects)")}
            if "tid" not in columns:
                db.execute("ALTER TABLE objects ADD COLUMN tid integer NOT NULL DEFAULT 0")
            for statement in sqlite_schema():
                db.execute(statement)
            highest = db.execute("SELECT max(id) FROM objects").fetchone()[0]
            # Past the highest oid in use: 4.3 handed that one out again.
            db.execute(
                "INSERT OR IGNORE INTO durus_state VALUES (1, ?, 0, ?, 0)",
                (SCHEMA_VERSION, 0 if highest is None else int(highest) + 1),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        logger.info("%s: upgraded a Durus 4.3 SqliteStorage database (added column tid, "
                    "index objects_tid, table durus_state)", self.filename)

    def _read_durus43(self, db: Any) -> None:
        """Read a Durus 4.3 file without changing it: temporary views supply the new columns."""
        db.execute("CREATE TEMP VIEW objects AS SELECT id, data, refs, 0 AS tid FROM main.objects")
        db.execute("CREATE TEMP TABLE durus_state AS SELECT 1 AS one, ? AS schema_version,"
                   " 0 AS tid, 0 AS next_oid, 0 AS pack_tid", (SCHEMA_VERSION,))

    def _begin_write(self) -> None:
        self._execute("BEGIN IMMEDIATE")

    def _next_tid(self) -> int:
        if _RETURNING:
            row = self._execute("UPDATE durus_state SET tid = tid + 1 RETURNING tid").fetchone()
        else:  # pragma: no cover - SQLite < 3.35
            self._execute("UPDATE durus_state SET tid = tid + 1")
            row = self._execute("SELECT tid FROM durus_state").fetchone()
        return int(row[0])

    def _reserve_oids(self, count: int) -> list[int]:
        if self._snapshot_open:
            return self._reserve_oids_beside_snapshot(count)
        self._begin_write()
        try:
            self._execute("UPDATE durus_state SET next_oid = next_oid + ?", (count,))
            end = int(self._execute("SELECT next_oid FROM durus_state").fetchone()[0])
            self._execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return list(range(end - count, end))

    def _reserve_oids_beside_snapshot(self, count: int) -> list[int]:
        """Reserve oids on a second connection: the first holds a read transaction."""
        side = self._side_db
        try:
            if side is None:
                side = self._side_db = self._connect()
            side.execute("BEGIN IMMEDIATE")
            try:
                side.execute("UPDATE durus_state SET next_oid = next_oid + ?", (count,))
                end = int(side.execute("SELECT next_oid FROM durus_state").fetchone()[0])
                side.execute("COMMIT")
            except BaseException:
                side.execute("ROLLBACK")
                raise
        except sqlite3.Error as error:
            raise self._translate(error) from error
        return list(range(end - count, end))

    def close(self) -> None:
        side, self._side_db = self._side_db, None
        if side is not None:
            side.close()
        super().close()

    def _set_next_oid_at_least(self, number: int) -> None:
        self._execute("UPDATE durus_state SET next_oid = max(next_oid, ?)", (number,))
