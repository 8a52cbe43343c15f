"""The object cache of a connection: every object weakly, recent ones strongly.

Kept apart from ``Connection`` because it is the part that decides memory:
which objects stay loaded and which become ghosts when a transaction ends.
"""

from __future__ import annotations

import heapq
import logging
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from durus.persistent import PersistentBase, _accel, new_ghost, real_class

__all__ = ["Cache", "ObjectDictionary", "ReferenceContainer"]

logger = logging.getLogger("durus.connection")

_serial_of = PersistentBase.__dict__["_p_serial"].__get__
_status_of = PersistentBase.__dict__["_p_status"].__get__
_oid_of = PersistentBase.__dict__["_p_oid"].__get__


class _KeyedRef(weakref.ref):
    """A weak reference that knows its key, built without Python-level code
    (``weakref.KeyedRef`` runs a Python ``__new__`` and ``__init__``)."""

    __slots__ = ("key",)
    key: bytes


class ObjectDictionary:
    """oid -> object, holding objects weakly; freed entries are purged lazily."""

    def __init__(self) -> None:
        self.mapping: dict[bytes, _KeyedRef] = {}
        self.dead: set[bytes] = set()

        def callback(ref: _KeyedRef, dead: set[bytes] = self.dead) -> None:
            dead.add(ref.key)

        self.callback = callback

    def get(self, key: bytes, default: Any = None) -> Any:
        ref = self.mapping.get(key)
        if ref is None:
            return default
        obj = ref()
        if obj is None:
            return default
        return obj

    def __setitem__(self, key: bytes, value: Any) -> None:
        ref = _KeyedRef(value, self.callback)
        ref.key = key
        self.mapping[key] = ref
        self.dead.discard(key)

    def update(self, items: dict[bytes, Any]) -> None:
        """``self[key] = value`` for every item (one call for a whole commit)."""
        mapping = self.mapping
        callback = self.callback
        keyed_ref = _KeyedRef
        for key, value in items.items():
            ref = keyed_ref(value, callback)
            ref.key = key
            mapping[key] = ref
        if self.dead:
            self.dead.difference_update(items)

    def __delitem__(self, key: bytes) -> None:
        # At once: iteration works on a copy of the keys, and get() does not
        # look at ``dead`` (it is on every load's path).
        self.mapping.pop(key, None)
        self.dead.discard(key)

    def __contains__(self, key: bytes) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        return len(self.mapping) - len(self.dead)

    def clear_dead(self) -> None:
        mapping = self.mapping
        for key in self.dead:
            ref = mapping.get(key)
            if ref is not None and ref() is None:
                del mapping[key]
            elif ref is not None:
                # Explicitly deleted while still alive.
                del mapping[key]
        self.dead.clear()

    def __iter__(self) -> Iterator[bytes]:
        self.clear_dead()
        return iter(list(self.mapping))


class ReferenceContainer:
    """Strong references, by identity, least recently (re)added first.

    The accelerator's ``RecentObjects`` has the same methods (a linked list
    through the objects' C fields instead of ``map``).
    """

    def __init__(self) -> None:
        self.map: OrderedDict[int, Any] = OrderedDict()

    def add(self, x: Any) -> None:
        key = id(x)
        self.map[key] = x
        self.map.move_to_end(key)

    def discard(self, x: Any) -> None:
        self.map.pop(id(x), None)

    def pop_oldest(self) -> Any:
        return self.map.popitem(last=False)[1]

    def push_oldest(self, x: Any) -> None:
        key = id(x)
        self.map[key] = x
        self.map.move_to_end(key, last=False)

    def list(self) -> list[Any]:
        return list(self.map.values())

    def __iter__(self) -> Iterator[Any]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self.map)

    def __contains__(self, x: Any) -> bool:
        return id(x) in self.map


_Recent: Any = ReferenceContainer if _accel is None else _accel.RecentObjects


class Cache:
    """The objects of one connection: all weakly, recently accessed ones strongly.

    Accessed objects stay strongly referenced until a shrink considers them,
    so a conflict on an object read in this transaction is always detected
    even if the application dropped it.  Shrinking ghosts the least recently
    accessed objects until at most ``size`` objects remain alive.
    """

    def __init__(self, size: int) -> None:
        self.objects = ObjectDictionary()
        self.recent_objects = _Recent()
        self.finger = 0
        self.size = 0
        self._count_after_scan = 0
        self.set_size(size)

    def get_size(self) -> int:
        return self.size

    def set_size(self, size: int) -> None:
        if size <= 0:
            raise ValueError(f"cache size must be positive, not {size!r}")
        self.size = size

    def get_count(self) -> int:
        return len(self.objects)

    def get(self, oid: bytes) -> Any:
        return self.objects.get(oid)

    def __setitem__(self, oid: bytes, obj: Any) -> None:
        self.objects[oid] = obj

    def update(self, objects: dict[bytes, Any]) -> None:
        """Add ``oid -> object`` for every item."""
        self.objects.update(objects)

    def __delitem__(self, oid: bytes) -> None:
        obj = self.objects.get(oid)
        if obj is not None and _oid_of(obj) is not None:
            raise ValueError("only objects whose oid was reset may be removed from the cache")
        del self.objects[oid]

    def __iter__(self) -> Iterator[Any]:
        for oid in self.objects:
            obj = self.objects.get(oid)
            if obj is not None:
                yield obj

    def get_instance(self, oid: bytes, klass: Any, connection: Any) -> Any:
        """The cached object of ``oid`` if its class is ``klass``, else a new ghost."""
        # Every reference a loaded state holds comes here: inlined lookups.
        objects = self.objects
        ref = objects.mapping.get(oid)
        if ref is not None:
            obj = ref()
            if obj is not None and real_class(obj) is klass:
                return obj
        obj = new_ghost(klass, oid, connection)
        ref = _KeyedRef(obj, objects.callback)
        ref.key = oid
        objects.mapping[oid] = ref
        if objects.dead:
            objects.dead.discard(oid)
        return obj

    def _build_heap(self, serial: int) -> list[tuple[int, bytes]]:
        """``(serial, oid)`` candidates not accessed at ``serial``, oldest first."""
        objects = self.objects
        keys = list(objects)
        count = len(keys)
        if count == 0:
            return []
        wanted = 2 * max(count - self.size, 0)
        heap: list[tuple[int, bytes]] = []
        start = self.finger % count
        visited = 0
        for index in range(count):
            oid = keys[(start + index) % count]
            visited += 1
            obj = objects.get(oid)
            if obj is None:
                continue
            obj_serial = _serial_of(obj)
            if obj_serial == serial:
                continue
            heap.append((obj_serial, oid))
            if len(heap) >= wanted:
                break
        self.finger = (start + visited) % count
        heapq.heapify(heap)
        return heap

    def shrink(self, connection: Any) -> None:
        """Ghost the least recently accessed objects while over ``size``.

        The recently accessed objects are kept in access order, so the usual
        shrink costs what it evicts; only when that is not enough (objects
        loaded but never accessed) does it scan the cache as Durus 4.3 did.
        """
        objects = self.objects
        if len(objects) <= self.size:
            self._purge_dead()
            return
        serial = connection.transaction_serial
        recent = self.recent_objects
        obj = None
        while recent and len(objects) > self.size:
            obj = recent.pop_oldest()
            if _serial_of(obj) == serial:
                # Everything from here on was used in the transaction ending.
                recent.push_oldest(obj)
                break
            if _status_of(obj) == 0:  # SAVED
                obj._p_set_status_ghost()
        del obj
        # What remains alive is referenced from elsewhere (the application,
        # or loaded objects), or was loaded without being accessed.  Scanning
        # for the latter costs the whole cache: do it only when the cache has
        # grown by a tenth of its size since the last scan.
        count = len(objects)
        if count > self.size and count > self._count_after_scan + self.size // 10:
            self._shrink_by_scan(serial)
            self._count_after_scan = len(objects)
        self._purge_dead()

    def _purge_dead(self) -> None:
        """Drop the entries of freed objects once they are many (amortized O(1))."""
        objects = self.objects
        if len(objects.dead) > max(1024, len(objects.mapping) >> 1):
            objects.clear_dead()
        logger.debug("cache shrunk to %d objects (target %d)", len(objects), self.size)

    def _shrink_by_scan(self, serial: int) -> None:
        objects = self.objects
        recent = self.recent_objects
        heap = self._build_heap(serial)
        while heap and len(objects) > self.size:
            _serial, oid = heapq.heappop(heap)
            obj = objects.get(oid)
            if obj is None:
                continue
            if _status_of(obj) == 0:  # SAVED
                obj._p_set_status_ghost()
            recent.discard(obj)
