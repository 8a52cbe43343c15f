"""PersistentDict: a dict whose changes Durus notices.

A plain ``dict`` stored in a persistent object is pickled inside that object's
record, and Durus cannot see a mutation made to it.  ``PersistentDict`` keeps its
items in the slot ``data`` (its whole state, ``{'data': dict}``, exactly as
Durus 4.3 writes it) and calls ``_p_note_change()`` before every mutation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any

from durus.persistent import PersistentObject

__all__ = ["PersistentDict"]

_MISSING: Any = object()


class PersistentDict(PersistentObject, MutableMapping):
    """A persistent mapping: a ``dict`` stored as its own record, with change tracking.

    Use it instead of a plain ``dict`` for mappings that change after they are
    committed, or that are too large to rewrite with their owner.
    """

    __slots__ = ["data"]

    data_is = dict  # what the ``data`` slot holds, for type-checking tools

    data: dict[Any, Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.data = dict(*args, **kwargs)

    # -- comparisons (only with another PersistentDict, as Durus 4.3) ---------

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PersistentDict) and self.data == other.data

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    # -- reading ----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: Any) -> Any:
        return self.data[key]

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def __iter__(self) -> Iterator[Any]:
        return iter(self.data)

    def has_key(self, key: Any) -> bool:
        """Whether ``key`` is present (the Python 2 spelling of ``key in d``)."""
        return key in self.data

    def get(self, key: Any, failobj: Any = None) -> Any:
        return self.data.get(key, failobj)

    def keys(self) -> list[Any]:  # type: ignore[override]
        """A new list of the keys (Durus returns lists, not views)."""
        return list(self.data.keys())

    def items(self) -> list[tuple[Any, Any]]:  # type: ignore[override]
        """A new list of the ``(key, value)`` pairs."""
        return list(self.data.items())

    def values(self) -> list[Any]:  # type: ignore[override]
        """A new list of the values."""
        return list(self.data.values())

    def iterkeys(self) -> Iterator[Any]:
        return iter(self.data.keys())

    def itervalues(self) -> Iterator[Any]:
        return iter(self.data.values())

    def iteritems(self) -> Iterator[tuple[Any, Any]]:
        return iter(self.data.items())

    def copy(self) -> PersistentDict:
        """A new, unsaved instance of the same class holding a shallow copy."""
        duplicate = self.__class__()
        duplicate.data = self.data.copy()
        return duplicate

    @classmethod
    def fromkeys(cls, iterable: Iterable[Any], value: Any = None) -> PersistentDict:
        """A new instance mapping every key of ``iterable`` to ``value``."""
        instance = cls()
        instance.data = dict.fromkeys(iterable, value)
        return instance

    # -- mutating: note the change first ---------------------------------------

    def __setitem__(self, key: Any, value: Any) -> None:
        self._p_note_change()
        self.data[key] = value

    def __delitem__(self, key: Any) -> None:
        self._p_note_change()
        del self.data[key]

    def clear(self) -> None:
        self._p_note_change()
        self.data.clear()

    def update(self, *others: Any, **kwargs: Any) -> None:
        """Like ``dict.update``: at most one mapping or iterable of pairs, plus keywords."""
        if len(others) > 1:
            raise TypeError(f"update expected at most 1 argument, got {len(others)}")
        self._p_note_change()
        self.data.update(*others, **kwargs)

    def setdefault(self, key: Any, failobj: Any = None) -> Any:
        """``self[key]``, first setting it to ``failobj`` (a change) when absent."""
        data = self.data
        if key not in data:
            self._p_note_change()
            data[key] = failobj
        return data[key]

    def pop(self, key: Any, *default: Any) -> Any:
        if len(default) > 1:
            raise TypeError(f"pop expected at most 2 arguments, got {1 + len(default)}")
        self._p_note_change()
        return self.data.pop(key, *default)

    def popitem(self) -> tuple[Any, Any]:
        self._p_note_change()
        return self.data.popitem()
