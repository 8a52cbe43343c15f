"""The logic both SQL storages share: commits, invalidations, oids, loads.

A subclass supplies the dialect (how to connect, the DDL, how to lock and
number a transaction, how to reserve oids, which driver errors mean a lost
connection).  Everything else, in particular Durus's commit protocol, lives
here once:

* every commit takes the next transaction number under the database's write
  lock (the ``durus_state`` row), so commits are serialised across processes;
* while holding it, the commit reads the oids other writers committed since
  this storage last synced and hands them to the connection, which may raise
  a conflict (the transaction is then rolled back: nothing was written);
* conflicts only on objects that merge (``_p_resolve_conflict``) are merged
  right there, with the rows committed now: nobody else can commit meanwhile;
* then it writes its rows tagged with its number and commits; it returns only
  once the database reports the commit durable.

``sync()`` returns the oids of rows written (or removed by a pack) by others
since the last sync; ``load()`` of a row newer than that raises
``ReadConflictError``, so what a connection reads is one consistent state.

With ``enable_snapshots()`` (``Connection(..., mvcc=True)``) each ``sync()``
also opens a read transaction of the database (SQLite's WAL read
transaction, PostgreSQL's ``REPEATABLE READ``), so loads read the database's
own snapshot of that moment; a commit ends it first and writes in a
transaction of its own, checked as always.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from durus.conflict_resolution import ResolvableConflict
from durus.error import DurusKeyError, ReadConflictError, SnapshotExpiredError
from durus.serialize import check_record, pack_record, unpack_record
from durus.sql_errors import (
    DatabaseUnavailableError,
    ReadOnlyStorageError,
    SchemaVersionError,
    SqlStorageError,
)
from durus.sql_schema import SCHEMA_VERSION
from durus.storage import Storage, gen_reachable_records
from durus.utils import int8_to_str, str_to_int8

__all__ = [
    "DatabaseUnavailableError",
    "ReadOnlyStorageError",
    "SchemaVersionError",
    "SqlStorage",
    "SqlStorageError",
]

logger = logging.getLogger("durus.sql_storage")

#: Rows read or written per statement in bulk operations.
BATCH = 1000
#: The most oids reserved in one round trip (the pool doubles up to this).
MAX_OID_BLOCK = 1024
#: Read-ahead: after two loads of nearby oids, the next miss fetches this many
#: following oids in one statement, doubling up to the maximum while the pattern lasts.
READ_AHEAD_START = 16
READ_AHEAD_MAX = 512
#: Rows kept from read-ahead at most (the oldest are dropped past this).
READ_AHEAD_KEEP = 2048
#: Records larger than this are not kept from read-ahead.
READ_AHEAD_RECORD_LIMIT = 65536


def _split(oid: bytes, record: bytes) -> tuple[int, bytes, bytes]:
    """``(oid number, data, refs)`` of a record, checked against ``oid``."""
    check_record(oid, record)
    _same, data, refs = unpack_record(record)
    return str_to_int8(oid), data, refs


class SqlStorage(Storage):
    """A Durus storage in an SQL database: see the module docstring.

    Subclasses implement the ``_dialect`` hooks below.  Attributes as in
    Durus 4.3's storages: ``pending_records`` (the records of the commit being
    built), ``invalid`` (oids to report at the next ``sync()``).
    """

    #: How driver placeholders are written ("?" or "%s"); SQL here uses "?".
    placeholder = "?"

    def __init__(self, readonly: bool = False) -> None:
        self.readonly = readonly
        self.pending_records: list[tuple[int, bytes, bytes]] = []
        self.invalid: set[bytes] = set()
        #: Durus 4.3's attribute; always None: a pack here tracks commits by tid.
        self.pack_extra: list[bytes] | None = None
        self._oid_pool: list[int] = []
        self._oid_block = 1
        # Rows fetched ahead of use (oid number -> row), and the pattern detector.
        self._ahead: dict[int, tuple[Any, Any, int]] = {}
        self._last_miss = -(1 << 62)
        self._window = READ_AHEAD_START
        # Snapshot mode: whether a read transaction is open, and why a lost
        # one cannot be continued (set when its connection dropped).
        self._snapshots = False
        self._snapshot_open = False
        self._snapshot_lost: str | None = None
        self._db: Any = self._open()
        self._last_tid = self._current_tid()

    # -- dialect hooks -------------------------------------------------------------

    def _connect(self) -> Any:
        """A new driver connection in autocommit mode."""
        raise NotImplementedError

    def _prepare(self, db: Any) -> None:
        """Create or check the schema on a fresh connection (may migrate old files)."""
        raise NotImplementedError

    def _begin_write(self) -> None:
        """Start a transaction that will write (SQLite takes its write lock here)."""
        raise NotImplementedError

    def _next_tid(self) -> int:
        """Inside a write transaction: lock ``durus_state`` and return the next tid."""
        raise NotImplementedError

    def _reserve_oids(self, count: int) -> list[int]:
        """``count`` oid numbers nobody else will ever get."""
        raise NotImplementedError

    def _set_next_oid_at_least(self, number: int) -> None:
        """Make sure oids up to ``number - 1`` are never handed out (restores, migrations)."""
        raise NotImplementedError

    def _is_disconnect(self, error: BaseException) -> bool:
        """Whether a driver error means the connection is gone."""
        raise NotImplementedError

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        raise NotImplementedError

    def _check_snapshots(self) -> None:
        """Raise ``SnapshotsUnsupportedError`` if this database cannot give snapshots."""

    def _begin_snapshot(self) -> None:
        """Start the read transaction whose first statement takes the snapshot."""
        raise NotImplementedError

    def _in_list(self, count: int) -> str:
        """SQL for ``id IN (...)`` with ``count`` values (a dialect may pass one array)."""
        return "IN (" + ",".join("?" * count) + ")"

    def _in_params(self, numbers: list[int]) -> tuple[Any, ...]:
        return tuple(numbers)

    def describe(self) -> str:
        """Where the data is, for messages (never a password)."""
        raise NotImplementedError

    def get_size(self) -> int:
        """Bytes the database takes on disk (tables and indexes)."""
        raise NotImplementedError

    # -- the driver, with errors made clear ------------------------------------------

    def _open(self) -> Any:
        db = self._connect_clearly()
        try:
            self._prepare(db)
        except BaseException:
            with contextlib.suppress(Exception):
                db.close()
            raise
        return db

    def _connect_clearly(self) -> Any:
        try:
            return self._connect()
        except self._driver_errors() as error:
            raise DatabaseUnavailableError(
                f"cannot connect to {self.describe()}: {_first_line(error)}"
            ) from error

    def _ensure_db(self) -> Any:
        if self._db is None:
            self._db = self._open()
            logger.info("reconnected to %s", self.describe())
        return self._db

    def _sql(self, sql: str) -> str:
        if self.placeholder != "?":
            return sql.replace("?", self.placeholder)
        return sql

    def _execute(self, sql: str, params: Iterable[Any] = ()) -> Any:
        """Run one statement; lost connections and other driver errors made clear."""
        db = self._ensure_db()
        try:
            return db.execute(self._sql(sql), tuple(params))
        except self._driver_errors() as error:
            raise self._translate(error) from error

    def _executemany(self, sql: str, rows: Iterable[Any]) -> int:
        """Run one statement per row; returns the rows it changed (-1 if unknown)."""
        db = self._ensure_db()
        try:
            cursor = db.cursor()
            cursor.executemany(self._sql(sql), rows)
        except self._driver_errors() as error:
            raise self._translate(error) from error
        return int(cursor.rowcount)

    def _translate(self, error: BaseException) -> SqlStorageError:
        if self._is_disconnect(error):
            self._drop_connection()
            return DatabaseUnavailableError(
                f"lost the connection to {self.describe()}: {_first_line(error)}"
            )
        return SqlStorageError(f"{self.describe()}: {_first_line(error)}")

    def _drop_connection(self) -> None:
        if self._snapshot_open:
            self._snapshot_open = False
            self._snapshot_lost = f"the connection to {self.describe()} was lost"
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(Exception):
                db.close()

    def _rollback(self) -> None:
        db = self._db
        if db is None:
            return
        try:
            db.execute("ROLLBACK")
        except Exception:  # the connection is unusable: start afresh next time
            self._drop_connection()

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{self.describe()} has schema version {version}, newer than this "
                f"durus-sqlstorage understands ({SCHEMA_VERSION}): upgrade durus-sqlstorage"
            )
        if version < 1:
            raise SchemaVersionError(f"{self.describe()} has an invalid schema version {version}")

    def _current_tid(self) -> int:
        row = self._execute("SELECT tid FROM durus_state").fetchone()
        return int(row[0]) if row else 0

    # -- snapshots -------------------------------------------------------------------

    def enable_snapshots(self) -> None:
        """Read inside one database read transaction per Durus transaction."""
        self._check_snapshots()
        self._snapshots = True

    def _open_snapshot(self) -> list[bytes]:
        """End any read transaction, start a new one; the oids changed since the last."""
        self._end_snapshot()
        self._snapshot_lost = None
        self._begin_snapshot()
        self._snapshot_open = True
        return self._read_changes()

    def _end_snapshot(self) -> None:
        if self._snapshot_open:
            self._snapshot_open = False
            self._rollback()

    def _reading(self) -> None:
        """Before a read in snapshot mode: make sure it reads inside a snapshot.

        Only after a failed commit (or a pack) is none open: a new one is
        taken, its changes queued for the next ``sync()`` or commit.  One
        whose connection dropped cannot be continued: that is an error.
        """
        if self._snapshot_lost is not None:
            raise SnapshotExpiredError(self._snapshot_lost + ": the snapshot is gone")
        if not self._snapshot_open:
            self.invalid.update(self._open_snapshot())

    # -- reading -----------------------------------------------------------------

    def load(self, oid: bytes) -> bytes:
        if self._snapshots:
            self._reading()
        number = str_to_int8(oid)
        row = self._ahead.pop(number, None)
        if row is None:
            row = self._fetch(number)
        return self._row_record(oid, row)

    def _fetch(self, number: int) -> Any:
        """The row of ``number``, reading ahead when loads walk through nearby oids.

        Objects committed together get neighbouring oids and tend to be read
        together (a tree's nodes, a batch of items): like a file system's
        read-ahead, once two misses fall close together the next miss fetches
        a window of following rows in the same round trip.  Rows read ahead
        are served only while no sync reported them changed, so what a
        transaction reads stays one consistent state.
        """
        distance = number - self._last_miss
        self._last_miss = number
        if not 0 < distance <= self._window:
            self._window = READ_AHEAD_START
            return self._execute(
                "SELECT data, refs, tid FROM objects WHERE id = ?", (number,)
            ).fetchone()
        window = self._window
        self._window = min(READ_AHEAD_MAX, window * 2)
        rows = self._execute(
            "SELECT id, data, refs, tid FROM objects WHERE id >= ? AND id < ? ORDER BY id",
            (number, number + window),
        ).fetchall()
        ahead = self._ahead
        if len(ahead) + len(rows) > READ_AHEAD_KEEP:
            ahead.clear()
        found = None
        for row in rows:
            if row[0] == number:
                found = row[1:]
            elif row[1] is not None and len(row[1]) <= READ_AHEAD_RECORD_LIMIT:
                ahead[row[0]] = row[1:]
        self._last_miss = rows[-1][0] if rows else number
        return found

    def _forget(self, oids: Iterable[bytes]) -> None:
        """Drop rows read ahead for ``oids`` (changed or removed since)."""
        ahead = self._ahead
        if ahead:
            for oid in oids:
                ahead.pop(str_to_int8(oid), None)

    def _row_record(self, oid: bytes, row: Any) -> bytes:
        if row is None:
            raise DurusKeyError(oid)
        data, refs, tid = row
        if data is None:  # a tombstone: packed away
            raise DurusKeyError(oid)
        if tid > self._last_tid:
            # Written after this storage's last sync: the caller must sync first.
            raise ReadConflictError([oid])
        return pack_record(oid, bytes(data), bytes(refs or b""))

    def bulk_load(self, oids: Iterable[bytes]) -> Iterator[bytes]:
        """The records of ``oids`` in order, fetched ``BATCH`` per statement."""
        if self._snapshots:
            self._reading()
        pending = list(oids)
        for start in range(0, len(pending), BATCH):
            batch = pending[start:start + BATCH]
            numbers = [str_to_int8(oid) for oid in batch]
            rows = {
                row[0]: row[1:]
                for row in self._execute(
                    "SELECT id, data, refs, tid FROM objects WHERE id "
                    + self._in_list(len(numbers)),
                    self._in_params(numbers),
                ).fetchall()
            }
            for oid, number in zip(batch, numbers, strict=True):
                yield self._row_record(oid, rows.get(number))

    def gen_oid_record(
        self, start_oid: bytes | None = None, batch_size: int = 100, **other: Any
    ) -> Iterator[tuple[bytes, bytes]]:
        """With ``start_oid``, the records reachable from it; without, every stored record.

        The full listing goes by oid order in batches (Durus 4.3's version of
        this was broken SQL); objects changed meanwhile are listed as they are
        when their batch is read.
        """
        if start_oid is not None:
            yield from gen_reachable_records(self, start_oid, batch_size)
            return
        if self._snapshots:
            self._reading()
        after = -1
        while True:
            rows = self._execute(
                "SELECT id, data, refs FROM objects WHERE id > ? AND data IS NOT NULL"
                " ORDER BY id LIMIT ?",
                (after, BATCH),
            ).fetchall()
            if not rows:
                return
            for number, data, refs in rows:
                oid = int8_to_str(number)
                yield oid, pack_record(oid, bytes(data), bytes(refs or b""))
            after = rows[-1][0]

    def sync(self) -> list[bytes]:
        """Oids written or removed by others since the last sync (or commit).

        In snapshot mode it ends the read transaction and starts the next.
        """
        if self._snapshots:
            return self._open_snapshot()
        return self._read_changes()

    def _read_changes(self) -> list[bytes]:
        rows = self._execute(
            "SELECT s.tid, o.id FROM durus_state s"
            " LEFT JOIN objects o ON o.tid > ? AND o.tid <= s.tid",
            (self._last_tid,),
        ).fetchall()
        invalid = self.invalid
        if rows:
            self._last_tid = int(rows[0][0])
            invalid.update(int8_to_str(row[1]) for row in rows if row[1] is not None)
        result = list(invalid)
        invalid.clear()
        self._forget(result)
        return result

    # -- writing -----------------------------------------------------------------

    def _check_writable(self, what: str) -> None:
        if self.readonly:
            raise ReadOnlyStorageError(f"{self.describe()} is open read-only: cannot {what}")

    def new_oid(self) -> bytes:
        pool = self._oid_pool
        if not pool:
            self._check_writable("allocate an oid")
            pool.extend(reversed(self._reserve_oids(self._oid_block)))
            self._oid_block = min(MAX_OID_BLOCK, self._oid_block * 2)
        return int8_to_str(pool.pop())

    def begin(self) -> None:
        self.pending_records.clear()

    def store(self, oid: bytes, record: bytes) -> None:
        self._check_writable("store a record")
        self.pending_records.append(_split(oid, record))

    def end(self, handle_invalidations: Callable[[list[bytes]], None] | None = None) -> None:
        """Commit the stored records; returns once the database has made them durable."""
        rows, self.pending_records = self.pending_records, []
        ahead = self._ahead
        if ahead:  # rows read ahead that this commit replaces
            for row in rows:
                ahead.pop(row[0], None)
        if not rows:
            if handle_invalidations is not None:
                handle_invalidations(self.sync())
            return
        self._check_writable("commit")
        self._end_snapshot()  # the commit is a transaction of its own
        committing = False
        try:
            self._begin_write()
            tid = self._next_tid()
            invalid = self._changed_since(self._last_tid, tid)
            if self._snapshots and self.invalid:
                # Changes queued when a snapshot was taken outside sync().
                invalid = list(set(invalid) | self.invalid)
                self.invalid.clear()
            self._forget(invalid)
            self._last_tid = tid - 1
            if handle_invalidations is None:
                self.invalid.update(invalid)
            else:
                try:
                    handle_invalidations(invalid)
                except ResolvableConflict as conflict:
                    rows = self._merged_rows(conflict, rows)
            self._write_rows(rows, tid)
            committing = True
            self._execute("COMMIT")
        except BaseException as error:
            # A COMMIT sent whose answer was lost: find out what happened.
            if (committing and isinstance(error, DatabaseUnavailableError)
                    and self._committed(tid, rows[0][0])):
                self._last_tid = tid
                return
            self._rollback()
            raise
        self._last_tid = tid

    def _merged_rows(
        self, conflict: ResolvableConflict, rows: list[tuple[int, bytes, bytes]]
    ) -> list[tuple[int, bytes, bytes]]:
        """Under the commit lock: ``rows`` with the conflicting ones merged
        with what is committed now (or the conflict, if they cannot be)."""
        oids = conflict.oids or []
        numbers = [str_to_int8(oid) for oid in oids]
        current = {
            int8_to_str(number): bytes(data)
            for number, data in self._execute(
                "SELECT id, data FROM objects WHERE id " + self._in_list(len(numbers)),
                self._in_params(numbers),
            ).fetchall()
            if data is not None
        }
        merged = None
        if conflict.merge is not None and oids and len(current) == len(oids):
            merged = conflict.merge(current)
        if merged is None:
            raise conflict
        replaced = {number: (number, data, refs)
                    for number, data, refs in (_split(oid, record)
                                               for oid, record in merged.items())}
        return [replaced.pop(row[0], row) for row in rows] + list(replaced.values())

    def _changed_since(self, last: int, tid: int) -> list[bytes]:
        rows = self._execute(
            "SELECT id FROM objects WHERE tid > ? AND tid < ?", (last, tid)
        ).fetchall()
        return [int8_to_str(row[0]) for row in rows]

    def _committed(self, tid: int, number: int) -> bool:
        """After a lost COMMIT: did it reach the database?  (False when unknowable.)"""
        try:
            row = self._execute("SELECT tid FROM objects WHERE id = ?", (number,)).fetchone()
        except SqlStorageError:
            return False
        return row is not None and row[0] == tid

    def _write_rows(self, rows: list[tuple[int, bytes, bytes]], tid: int) -> None:
        """Inside a write transaction: store ``rows`` as written by transaction ``tid``."""
        self._executemany(
            "INSERT INTO objects (id, data, refs, tid) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET"
            " data = excluded.data, refs = excluded.refs, tid = excluded.tid",
            [(number, data, refs, tid) for number, data, refs in rows],
        )

    def create_from_records(self, oid_records: Iterable[tuple[bytes, bytes]]) -> int:
        """Fill an empty database with ``(oid, record)`` pairs, oids kept; returns the count.

        Used by ``durus convert``.  All or nothing: one database transaction,
        written a batch at a time; the oid counter ends past the largest oid.
        """
        self._check_writable("restore records")
        count = 0
        highest = -1
        try:
            self._begin_write()
            tid = self._next_tid()
            if self._execute("SELECT id FROM objects LIMIT 1").fetchone() is not None:
                raise SqlStorageError(f"{self.describe()} is not empty: cannot restore into it")
            batch: list[tuple[int, bytes, bytes]] = []
            for oid, record in oid_records:
                row = _split(oid, record)
                batch.append(row)
                highest = max(highest, row[0])
                if len(batch) >= BATCH:
                    self._write_rows(batch, tid)
                    count += len(batch)
                    batch = []
            self._write_rows(batch, tid)
            count += len(batch)
            self._set_next_oid_at_least(highest + 1)
            self._execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        # The database was empty under the lock: nobody else's commit to report.
        self._last_tid = tid
        self._oid_pool.clear()
        return count

    def remove_every_object(self) -> None:
        """Delete every object: the database holds no Durus objects again.

        For ``durus convert`` when the check of a finished copy fails: the
        copy must not stay behind looking like a database.  The oid counter
        is kept (oids are never reissued).
        """
        self._check_writable("remove objects")
        try:
            self._begin_write()
            self._execute("DELETE FROM objects")
            self._execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    # -- pack --------------------------------------------------------------------

    def get_packer(
        self, progress: Callable[[str, int, int], Any] | None = None
    ) -> Iterator[Any]:
        """The steps of an online pack: see ``durus.sql_packer``."""
        self._check_writable("pack")
        self._end_snapshot()  # the pack runs its own transactions
        from durus.sql_packer import SqlPacker

        return SqlPacker(self, progress).steps()

    def pack(self, progress: Callable[[str, int, int], Any] | None = None) -> None:
        """Remove every object not reachable from the root."""
        for _step in self.get_packer(progress):
            pass

    # -- the rest ------------------------------------------------------------------

    def is_readonly(self) -> bool:
        return self.readonly

    def is_temporary(self) -> bool:
        return False

    def close(self) -> None:
        self._oid_pool.clear()
        self._ahead.clear()
        self._drop_connection()

    def __str__(self) -> str:
        return f"{type(self).__name__}({self.describe()!r})"


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]

