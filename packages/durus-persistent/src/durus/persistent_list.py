"""PersistentList: a list whose changes Durus notices.

A plain ``list`` stored in a persistent object is pickled inside that object's
record, and Durus cannot see a mutation made to it.  ``PersistentList`` keeps its
elements in the slot ``data`` (its whole state, ``{'data': list}``, exactly as
Durus 4.3 writes it) and calls ``_p_note_change()`` before every mutation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableSequence
from typing import Any, SupportsIndex

from durus.persistent import PersistentObject

__all__ = ["PersistentList"]


def _as_list(other: Any) -> Any:
    """The list inside a PersistentList, anything else unchanged."""
    if isinstance(other, PersistentList):
        return other.data
    return other


class PersistentList(PersistentObject, MutableSequence):
    """A persistent sequence: a ``list`` stored as its own record, with change tracking.

    Use it instead of a plain ``list`` for sequences that change after they are
    committed, or that are too large to rewrite with their owner.
    """

    __slots__ = ["data"]

    data_is = list  # what the ``data`` slot holds, for type-checking tools

    data: list[Any]

    def __init__(self, *args: Iterable[Any]) -> None:
        self.data = list(*args)

    # -- comparisons: with the data of a PersistentList or with the sequence -----

    def __eq__(self, other: object) -> bool:
        return other is self or self.data == _as_list(other)

    def __ne__(self, other: object) -> bool:
        return other is not self and self.data != _as_list(other)

    def __lt__(self, other: Any) -> bool:
        return self.data < _as_list(other)

    def __le__(self, other: Any) -> bool:
        return self.data <= _as_list(other)

    def __gt__(self, other: Any) -> bool:
        return self.data > _as_list(other)

    def __ge__(self, other: Any) -> bool:
        return self.data >= _as_list(other)

    # -- reading ----------------------------------------------------------------

    def __contains__(self, item: object) -> bool:
        return item in self.data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: Any) -> Any:
        # A slice gives a plain list, as in Durus 4.3 under Python 3.
        return self.data[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.data)

    def __reversed__(self) -> Iterator[Any]:
        return reversed(self.data)

    def __getslice__(self, i: int, j: int) -> PersistentList:
        """``self[i:j]`` as a new PersistentList (the Python 2 slice hook)."""
        return self.__class__(self.data[i:j])

    def count(self, item: Any) -> int:
        return self.data.count(item)

    def index(self, item: Any, *args: Any) -> int:
        """Like ``list.index(item[, start[, stop]])``."""
        return self.data.index(item, *args)

    def copy(self) -> PersistentList:
        """A new, unsaved instance of the same class holding a shallow copy."""
        return self.__class__(self.data)

    def __add__(self, other: Iterable[Any]) -> PersistentList:
        if isinstance(other, PersistentList):
            return self.__class__(self.data + other.data)
        if isinstance(other, list):
            return self.__class__(self.data + other)
        return self.__class__(self.data + list(other))

    def __radd__(self, other: Iterable[Any]) -> PersistentList:
        if isinstance(other, PersistentList):
            return self.__class__(other.data + self.data)
        if isinstance(other, list):
            return self.__class__(other + self.data)
        return self.__class__(list(other) + self.data)

    def __mul__(self, n: SupportsIndex) -> PersistentList:
        return self.__class__(self.data * n)

    __rmul__ = __mul__

    # -- mutating: note the change first ---------------------------------------

    def __setitem__(self, index: Any, item: Any) -> None:
        self._p_note_change()
        self.data[index] = item

    def __delitem__(self, index: Any) -> None:
        self._p_note_change()
        del self.data[index]

    def __setslice__(self, i: int, j: int, other: Iterable[Any]) -> None:
        """``self[i:j] = other`` (the Python 2 slice hook)."""
        self._p_note_change()
        self.data[i:j] = _as_list(other)

    def __delslice__(self, i: int, j: int) -> None:
        """``del self[i:j]`` (the Python 2 slice hook)."""
        self._p_note_change()
        del self.data[i:j]

    def __iadd__(self, other: Iterable[Any]) -> PersistentList:
        self._p_note_change()
        self.data.extend(_as_list(other))
        return self

    def __imul__(self, n: SupportsIndex) -> PersistentList:
        self._p_note_change()
        data = self.data
        data *= n
        return self

    def append(self, item: Any) -> None:
        self._p_note_change()
        self.data.append(item)

    def insert(self, i: SupportsIndex, item: Any) -> None:
        self._p_note_change()
        self.data.insert(i, item)

    def pop(self, i: SupportsIndex = -1) -> Any:
        self._p_note_change()
        return self.data.pop(i)

    def remove(self, item: Any) -> None:
        self._p_note_change()
        self.data.remove(item)

    def clear(self) -> None:
        self._p_note_change()
        self.data.clear()

    def reverse(self) -> None:
        self._p_note_change()
        self.data.reverse()

    def sort(self, *args: Any, **kwargs: Any) -> None:
        """Like ``list.sort(*, key=None, reverse=False)``."""
        self._p_note_change()
        self.data.sort(*args, **kwargs)

    def extend(self, other: Iterable[Any]) -> None:
        self._p_note_change()
        self.data.extend(_as_list(other))
