"""Conflict resolution: merge a commit's change with another's instead of failing.

A class opts in by defining ``_p_resolve_conflict(old_state, saved_state,
new_state)``: the state this transaction started from, the state committed
meanwhile by someone else, and the state this transaction wants.  It returns
the merged state, or raises ``ConflictError`` to refuse.  When every conflict
of a commit is on changed objects of such classes, the connection merges them
and commits again, without the application seeing a conflict; anything else
conflicts exactly as before.  Without such classes nothing here runs.

Where the storage can, the merge happens inside the commit: the storage hands
``ResolvableConflict.merge`` the records committed now (the server sends them
with its review, an SQL storage reads them under its commit lock) and commits
the merged records in the same exchange, so a busy counter never starves.
Otherwise the commit is abandoned, merged and sent again.
"""

from __future__ import annotations

import io
import pickle
import random
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from durus.error import ConflictError, WriteConflictError
from durus.persistent import PersistentBase
from durus.serialize import ObjectWriter, pack_record

if TYPE_CHECKING:
    from durus.connection import Connection

__all__ = [
    "RESOLVE_ATTEMPTS",
    "ConflictResolver",
    "ResolvableConflict",
    "pause_before_merge",
    "resolves_conflicts",
]

#: Merges one commit may make (others keep committing over it) before it
#: gives up with a plain ``WriteConflictError``.
RESOLVE_ATTEMPTS = 20
#: The longest pause between two merges of one commit, in seconds.
_MAX_PAUSE = 0.05


def pause_before_merge(attempt: int) -> None:
    """Wait a random moment, growing with ``attempt``, before merging again.

    Under heavy contention (every process bumping one counter) commits that
    merge collide with each other's next commits; random, growing pauses
    spread them out, as in any optimistic retry loop.
    """
    if attempt > 1:
        time.sleep(random.uniform(0, min(_MAX_PAUSE, 0.0005 * 2**attempt)))

_resolving: dict[type, bool] = {}


def resolves_conflicts(cls: type) -> bool:
    """Whether instances of ``cls`` merge conflicting commits (cached per class)."""
    known = _resolving.get(cls)
    if known is None:
        known = _resolving[cls] = callable(getattr(cls, "_p_resolve_conflict", None))
    return known


#: ``merge(current)``: oid -> committed data in, oid -> merged record out
#: (None: these merges need new objects; abandon and merge outside).
Merge = Callable[[dict[bytes, bytes]], "dict[bytes, bytes] | None"]


class ResolvableConflict(WriteConflictError):
    """Every conflict of a commit is on objects that can merge (``oids``).

    Raised from the connection's invalidation handler inside ``end()``.  A
    storage that can read what is committed now, inside the commit, calls
    ``merge`` with it and commits the merged records instead; any other
    storage lets it propagate, and the connection merges and commits again.
    An application sees it only as a ``WriteConflictError`` if a resolver
    refuses or the merges run out.
    """

    def __init__(self, oids: Iterable[bytes], merge: Merge | None = None) -> None:
        super().__init__(oids)
        self.merge = merge


class ConflictResolver:
    """The states a connection's mergeable objects started from, and the merge.

    ``originals`` maps the oid of every loaded object of a resolving class to
    the data its in-memory state was loaded from (or last committed as): the
    ``old_state`` of a merge.
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.originals: dict[bytes, bytes] = {}
        #: what merges inside the commit being made stored (oid -> data)
        self.merged_data: dict[bytes, bytes] = {}

    def is_resolvable(self, oids: Iterable[bytes]) -> bool:
        """Whether each of ``oids`` is a changed object that can merge."""
        changed = self.connection.changed
        originals = self.originals
        for oid in oids:
            obj = changed.get(oid)
            if obj is None or oid not in originals or not resolves_conflicts(type(obj)):
                return False
        return True

    def resolve(self, oids: Iterable[bytes]) -> None:
        """Merge each object of ``oids`` with its committed state.

        Reading a committed state may report further changes (a classic
        connection syncs to read it): objects changed and mergeable are
        merged too, anything else raises the conflict.
        """
        connection = self.connection
        todo = list(dict.fromkeys(oids))
        while todo:
            oid = todo.pop()
            saved_data, reported = connection._current_data(oid, self.originals[oid])
            todo.extend(o for o in reported if o not in todo and o != oid)
            self._adopt(oid, self._merged_state(oid, saved_data), saved_data)

    def _merged_state(self, oid: bytes, saved_data: bytes) -> Any:
        """What the resolver of changed object ``oid`` makes of the committed data."""
        obj = self.connection.changed[oid]
        reader = self.connection.reader
        merged = obj._p_resolve_conflict(
            reader.get_state(self.originals[oid]), reader.get_state(saved_data),
            type(obj).__getstate__(obj))
        if merged is None:
            raise ConflictError([oid])
        return merged

    def _adopt(self, oid: bytes, merged: Any, saved_data: bytes) -> None:
        """``oid`` takes the merged state; ``saved_data`` is its new starting point."""
        obj = self.connection.changed[oid]
        type(obj).__setstate__(obj, merged)
        self.originals[oid] = saved_data
        self.connection.invalid_oids.discard(oid)

    def merge_now(self, current: dict[bytes, bytes]) -> dict[bytes, bytes] | None:
        """Merge with ``current`` (oid -> committed data); the merged records.

        None when a merged state refers to an object without an oid: storing
        it needs the general commit path.  The objects keep the merged state;
        the commit's ``committed()`` makes it their new starting point.
        """
        writer = ObjectWriter(self.connection)  # the commit's own is in use
        records: dict[bytes, bytes] = {}
        for oid, saved_data in current.items():
            merged = self._merged_state(oid, saved_data)
            if _refers_to_new_objects(merged):
                return None
            self._adopt(oid, merged, saved_data)
            data, refs = writer.get_state(self.connection.changed[oid])
            records[oid] = pack_record(oid, data, refs)
            self.merged_data[oid] = data
        return records

    def committed(self, stored: list[tuple[bytes, bytes]]) -> None:
        """The data just committed of mergeable objects: their new starting point."""
        self.originals.update(stored)
        self.originals.update(self.merged_data)
        self.merged_data.clear()


class _NewObject(Exception):
    pass


class _ReferenceCheck(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, PersistentBase):
            if obj._p_oid is None:
                raise _NewObject
            return obj._p_oid
        return None


def _refers_to_new_objects(state: Any) -> bool:
    try:
        _ReferenceCheck(io.BytesIO(), 2).dump(state)
    except _NewObject:
        return True
    return False
