"""Conflict resolution: merge a commit's change with another's instead of failing.

A class opts in by defining ``_p_resolve_conflict(old_state, saved_state,
new_state)``: the state this transaction started from, the state committed
meanwhile by someone else, and the state this transaction wants.  It returns
the merged state, or raises ``ConflictError`` to refuse.  When every conflict
of a commit is on changed objects of such classes, the connection merges them
and commits again, without the application seeing a conflict; anything else
conflicts exactly as before.  Without such classes nothing here runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from durus.error import ConflictError, WriteConflictError

if TYPE_CHECKING:
    from durus.connection import Connection

__all__ = ["RESOLVE_ATTEMPTS", "ConflictResolver", "ResolvableConflict", "resolves_conflicts"]

#: Merges one commit may make (others keep committing over it) before it
#: gives up with a plain ``WriteConflictError``.
RESOLVE_ATTEMPTS = 20

_resolving: dict[type, bool] = {}


def resolves_conflicts(cls: type) -> bool:
    """Whether instances of ``cls`` merge conflicting commits (cached per class)."""
    known = _resolving.get(cls)
    if known is None:
        known = _resolving[cls] = callable(getattr(cls, "_p_resolve_conflict", None))
    return known


class ResolvableConflict(WriteConflictError):
    """Every conflict of a commit is on objects that can merge (``oids``).

    Raised from the connection's invalidation handler inside ``end()``, so
    the storage abandons the commit; the connection then merges and commits
    again.  An application sees it only as a ``WriteConflictError`` if a
    resolver refuses or the merges run out.
    """


class ConflictResolver:
    """The states a connection's mergeable objects started from, and the merge.

    ``originals`` maps the oid of every loaded object of a resolving class to
    the data its in-memory state was loaded from (or last committed as): the
    ``old_state`` of a merge.
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.originals: dict[bytes, bytes] = {}

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
        reader = connection.reader
        todo = list(dict.fromkeys(oids))
        while todo:
            oid = todo.pop()
            obj = connection.changed[oid]
            saved_data, reported = connection._current_data(oid)
            todo.extend(o for o in reported if o not in todo and o != oid)
            old_state = reader.get_state(self.originals[oid])
            saved_state = reader.get_state(saved_data)
            cls = type(obj)
            new_state = cls.__getstate__(obj)
            merged = obj._p_resolve_conflict(old_state, saved_state, new_state)
            if merged is None:
                raise ConflictError([oid])
            cls.__setstate__(obj, merged)
            self.originals[oid] = saved_data
            connection.invalid_oids.discard(oid)

    def committed(self, stored: list[tuple[bytes, bytes]]) -> None:
        """The data just committed of mergeable objects: their new starting point."""
        self.originals.update(stored)
