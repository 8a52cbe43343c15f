"""Online pack of an SQL storage: mark and sweep inside the database.

The set of reachable oids lives in a temporary table, not in Python, so memory
stays bounded by one batch whatever the size of the database.  Each step
handles one batch and yields, so a server keeps serving commits meanwhile.

1. Mark: from the root, follow the ``refs`` of unscanned marked rows, a batch
   at a time, until none is left.
2. Catch up: rows committed since the pack began are marked (and their refs
   followed) too; the last catch-up runs under the commit lock, so after it no
   row the pack has not seen can refer to an unmarked one.  (An object dropped
   from the graph can come back only if a connection still holds it in
   memory and links it again: the same rule as in Durus 4.3.)
3. Sweep: in id ranges, each its own short transaction, unmarked rows written
   before the pack began become tombstones (``data`` NULL) with a new
   transaction number, so that every process's ``sync()`` reports them; the
   tombstones of the previous pack are deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from durus.serialize import split_oids

if TYPE_CHECKING:
    from durus.sql_storage import SqlStorage

__all__ = ["SqlPacker"]

logger = logging.getLogger("durus.sql_storage")

#: ``progress(phase, done, total)``: phase is "mark", "sweep" or "finish"; total 0 if unknown.
ProgressCallback = Callable[[str, int, int], Any]

#: Rows scanned or swept per step.
STEP = 1000
#: Catch-ups outside the lock before the final one under it.
MAX_LOOSE_CATCH_UPS = 3

_MARK = "durus_pack_mark"


class SqlPacker:
    """One pack of ``storage``; ``steps()`` is the generator a server drives."""

    def __init__(self, storage: SqlStorage, progress: ProgressCallback | None = None) -> None:
        self.storage = storage
        self.progress = progress
        self.marked = 0
        self.removed = 0

    def _report(self, phase: str, done: int, total: int = 0) -> None:
        if self.progress is not None:
            self.progress(phase, done, total)

    def steps(self) -> Iterator[Any]:
        storage = self.storage
        execute = storage._execute
        start_tid = storage._current_tid()
        if execute("SELECT id FROM objects WHERE id = 0 AND data IS NOT NULL").fetchone() is None:
            yield "nothing to pack: the database has no root object"
            return
        logger.info("pack of %s started at transaction %d", storage.describe(), start_tid)
        yield f"pack started at transaction {start_tid}"
        execute(f"DROP TABLE IF EXISTS {_MARK}")
        execute(f"CREATE TEMPORARY TABLE {_MARK} (id bigint PRIMARY KEY, scanned integer NOT NULL)")
        execute(f"CREATE INDEX {_MARK}_todo ON {_MARK} (id) WHERE scanned = 0")
        try:
            execute(f"INSERT INTO {_MARK} (id, scanned) VALUES (0, 0)")
            self.marked = 1
            yield from self._mark()
            seen_tid = start_tid
            for _round in range(MAX_LOOSE_CATCH_UPS):
                now = storage._current_tid()
                if now == seen_tid:
                    break
                self._catch_up(seen_tid)
                seen_tid = now
                yield from self._mark()
            storage._begin_write()
            try:
                storage._next_tid()
                self._catch_up(seen_tid)
                for _step in self._mark():
                    pass
                execute("COMMIT")
            except BaseException:
                storage._rollback()
                raise
            yield "marked"
            yield from self._sweep(start_tid)
        finally:
            if storage._db is not None:
                storage._execute(f"DROP TABLE IF EXISTS {_MARK}")
        message = f"pack finished: {self.marked} reachable, {self.removed} removed"
        logger.info("%s (%s)", message, storage.describe())
        self._report("finish", self.removed, self.removed)
        yield message

    def _mark(self) -> Iterator[None]:
        """Scan marked, unscanned rows a batch at a time until none is left."""
        storage = self.storage
        execute = storage._execute
        while True:
            ids = [row[0] for row in execute(
                f"SELECT id FROM {_MARK} WHERE scanned = 0 ORDER BY id LIMIT ?", (STEP,)
            ).fetchall()]
            if not ids:
                return
            refs: set[int] = set()
            for (data,) in execute(
                "SELECT refs FROM objects WHERE data IS NOT NULL AND id "
                + storage._in_list(len(ids)),
                storage._in_params(ids),
            ).fetchall():
                if data:
                    refs.update(int.from_bytes(oid, "big") for oid in split_oids(bytes(data)))
            execute(
                f"UPDATE {_MARK} SET scanned = 1 WHERE id " + storage._in_list(len(ids)),
                storage._in_params(ids),
            )
            if refs:
                # The rows inserted are the newly marked ones (a count(*) here
                # would cost the whole table on every batch).
                self.marked += max(0, storage._executemany(
                    f"INSERT INTO {_MARK} (id, scanned) VALUES (?, 0) ON CONFLICT (id) DO NOTHING",
                    [(number,) for number in sorted(refs)],
                ))
            self._report("mark", self.marked)
            yield None

    def _count(self) -> int:
        return int(self.storage._execute(f"SELECT count(*) FROM {_MARK}").fetchone()[0])

    def _catch_up(self, since_tid: int) -> None:
        """Mark (again, to rescan) every live row committed after ``since_tid``."""
        before = self._count()
        self.storage._execute(
            f"INSERT INTO {_MARK} (id, scanned)"
            " SELECT id, 0 FROM objects WHERE tid > ? AND data IS NOT NULL"
            " ON CONFLICT (id) DO UPDATE SET scanned = 0",
            (since_tid,),
        )
        self.marked += self._count() - before

    def _sweep(self, start_tid: int) -> Iterator[Any]:
        storage = self.storage
        execute = storage._execute
        previous_pack = int(execute("SELECT pack_tid FROM durus_state").fetchone()[0])
        after = -1
        while True:
            row = execute(
                "SELECT max(id) FROM (SELECT id FROM objects WHERE id > ? ORDER BY id LIMIT ?) r",
                (after, STEP),
            ).fetchone()
            if row is None or row[0] is None:
                break
            upto = int(row[0])
            storage._begin_write()
            try:
                tid = storage._next_tid()
                execute(
                    "DELETE FROM objects WHERE id > ? AND id <= ? AND data IS NULL AND tid <= ?",
                    (after, upto, previous_pack),
                )
                cursor = execute(
                    "UPDATE objects SET data = NULL, refs = NULL, tid = ?"
                    " WHERE id > ? AND id <= ? AND data IS NOT NULL AND tid <= ?"
                    f" AND id NOT IN (SELECT id FROM {_MARK} WHERE id > ? AND id <= ?)",
                    (tid, after, upto, start_tid, after, upto),
                )
                removed = max(cursor.rowcount, 0)
                execute("UPDATE durus_state SET pack_tid = ?", (tid,))
                execute("COMMIT")
            except BaseException:
                storage._rollback()
                raise
            self.removed += removed
            after = upto
            self._report("sweep", self.removed)
            yield None
