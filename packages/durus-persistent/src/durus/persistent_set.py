"""PersistentSet: a set whose changes Durus notices.

A plain ``set`` stored in a persistent object is pickled inside that object's
record, and Durus cannot see a mutation made to it.  ``PersistentSet`` keeps its
elements in the slot ``s`` (its whole state, ``{'s': set}``, exactly as Durus 4.3
writes it) and calls ``_p_note_change()`` before every mutation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableSet
from typing import Any

from durus.persistent import PersistentObject

__all__ = ["PersistentSet"]


def _as_set(other: Any) -> Any:
    """The set inside a PersistentSet, anything else unchanged."""
    if isinstance(other, PersistentSet):
        return other.s
    return other


def _only_persistent_set(other: object) -> PersistentSet:
    if not isinstance(other, PersistentSet):
        raise TypeError("can only compare to a PersistentSet")
    return other


class PersistentSet(PersistentObject, MutableSet):
    """A persistent set: a ``set`` stored as its own record, with change tracking.

    Operators and non-mutating methods return new PersistentSets; the in-place
    forms and the mutating methods change this one.
    """

    __slots__ = ["s"]

    s_is = set  # what the ``s`` slot holds, for type-checking tools

    s: set[Any]

    def __init__(self, *args: Iterable[Any]) -> None:
        self.s = set(*args)

    def __repr__(self) -> str:
        # "<PersistentSet 5 [1, 2]>", or "<PersistentSet @7f.. [1, 2]>" when unsaved.
        return f"{super().__repr__()[:-1]} {list(self.s)!r}>"

    # -- reading ----------------------------------------------------------------

    def __contains__(self, item: object) -> bool:
        return item in self.s

    def __iter__(self) -> Iterator[Any]:
        return iter(self.s)

    def __len__(self) -> int:
        return len(self.s)

    # Equality only with another PersistentSet; ordering with anything else is an error.
    def __eq__(self, other: object) -> bool:
        return isinstance(other, PersistentSet) and self.s == other.s

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __lt__(self, other: Any) -> bool:
        return self.s < _only_persistent_set(other).s

    def __le__(self, other: Any) -> bool:
        return self.s <= _only_persistent_set(other).s

    def __gt__(self, other: Any) -> bool:
        return self.s > _only_persistent_set(other).s

    def __ge__(self, other: Any) -> bool:
        return self.s >= _only_persistent_set(other).s

    # -- operators giving a new PersistentSet ------------------------------------

    def __and__(self, other: Any) -> PersistentSet:
        return self.__class__(self.s & _as_set(other))

    def __or__(self, other: Any) -> PersistentSet:
        return self.__class__(self.s | _as_set(other))

    def __xor__(self, other: Any) -> PersistentSet:
        return self.__class__(self.s ^ _as_set(other))

    def __sub__(self, other: Any) -> PersistentSet:
        return self.__class__(self.s - _as_set(other))

    def __rand__(self, other: Any) -> PersistentSet:
        return self.__class__(_as_set(other) & self.s)

    def __ror__(self, other: Any) -> PersistentSet:
        return self.__class__(_as_set(other) | self.s)

    def __rxor__(self, other: Any) -> PersistentSet:
        return self.__class__(_as_set(other) ^ self.s)

    def __rsub__(self, other: Any) -> PersistentSet:
        return self.__class__(_as_set(other) - self.s)

    def copy(self) -> PersistentSet:
        """A new, unsaved instance of the same class holding a shallow copy."""
        return self.__class__(self.s)

    def difference(self, *others: Iterable[Any]) -> PersistentSet:
        return self.__class__(self.s.difference(*map(_as_set, others)))

    def intersection(self, *others: Iterable[Any]) -> PersistentSet:
        return self.__class__(self.s.intersection(*map(_as_set, others)))

    def symmetric_difference(self, other: Iterable[Any]) -> PersistentSet:
        return self.__class__(self.s.symmetric_difference(_as_set(other)))

    def union(self, *others: Iterable[Any]) -> PersistentSet:
        return self.__class__(self.s.union(*map(_as_set, others)))

    def issubset(self, other: Iterable[Any]) -> bool:
        return self.s.issubset(_as_set(other))

    def issuperset(self, other: Iterable[Any]) -> bool:
        return self.s.issuperset(_as_set(other))

    def isdisjoint(self, other: Iterable[Any]) -> bool:
        return self.s.isdisjoint(_as_set(other))

    # -- mutating: note the change first ---------------------------------------

    def __iand__(self, other: Any) -> PersistentSet:
        self._p_note_change()
        s = self.s
        s &= _as_set(other)
        return self

    def __ior__(self, other: Any) -> PersistentSet:
        self._p_note_change()
        s = self.s
        s |= _as_set(other)
        return self

    def __ixor__(self, other: Any) -> PersistentSet:
        self._p_note_change()
        s = self.s
        s ^= _as_set(other)
        return self

    def __isub__(self, other: Any) -> PersistentSet:
        self._p_note_change()
        s = self.s
        s -= _as_set(other)
        return self

    def add(self, item: Any) -> None:
        self._p_note_change()
        self.s.add(item)

    def clear(self) -> None:
        self._p_note_change()
        self.s.clear()

    def discard(self, item: Any) -> None:
        self._p_note_change()
        self.s.discard(item)

    def pop(self) -> Any:
        self._p_note_change()
        return self.s.pop()

    def remove(self, item: Any) -> None:
        self._p_note_change()
        self.s.remove(item)

    def difference_update(self, *others: Iterable[Any]) -> None:
        self._p_note_change()
        self.s.difference_update(*map(_as_set, others))

    def intersection_update(self, *others: Iterable[Any]) -> None:
        self._p_note_change()
        self.s.intersection_update(*map(_as_set, others))

    def symmetric_difference_update(self, other: Iterable[Any]) -> None:
        self._p_note_change()
        self.s.symmetric_difference_update(_as_set(other))

    def update(self, *others: Iterable[Any]) -> None:
        self._p_note_change()
        self.s.update(*map(_as_set, others))
