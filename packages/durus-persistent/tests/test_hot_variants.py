"""Hot variants: on the pure path, after its first read in a transaction an
object runs as a subclass of its class that reads without tracking.

What that must keep, checked on both paths (the C path keeps classes, so
there the same sequences check its tracking against the same model): every
value reads back, a variant never outlives the transaction or reads a ghost,
classes can keep their class, and nothing leaks.
"""

from __future__ import annotations

import gc
import sys
import weakref
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from durus.connection import Connection
from durus.persistent import GHOST, SAVED, Persistent, PersistentObject, accelerated, real_class
from durus.storage import MemoryStorage

NAMES = ("a", "b", "c", "d", "e", "f", "g")
MISSING = object()


class Item(Persistent):
    """A __dict__ object; its attributes come and go."""


class Slotted(PersistentObject):
    __slots__ = ("a", "b", "c", "d", "e", "f", "g")


class Kept(Persistent):
    """Asks to keep its class: Durus 4.3's behaviour."""

    _p_keep_class = True


class Fallback(Persistent):
    """A __getattr__ for missing names, which the variant must keep."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return ("fallback", name)


class Refusing(Persistent):
    """Subclasses cannot be made: the objects keep their class and tracking."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        raise TypeError("no subclasses")


def _is_hot(obj: Any) -> bool:
    """Whether obj reads without tracking (the pure path also has variants
    that track reads and not writes: those are not hot)."""
    return type(obj).__getattribute__ is object.__getattribute__


def _read_many(obj: Any, name: str) -> list[Any]:
    # A loop, so that CPython 3.11+ specializes the read on the variant.
    return [getattr(obj, name, MISSING) for _ in range(40)]


class HotVariantMachine(RuleBasedStateMachine):
    """Reads, writes, deletes, ghosts and transaction ends, against a model."""

    @initialize(count=st.integers(2, 5))
    def make_objects(self, count: int) -> None:
        self.storage = MemoryStorage()
        self.connection = Connection(self.storage, cache_size=3)
        root = self.connection.get_root()
        self.objects: list[Any] = []
        self.committed: list[dict[str, Any]] = []
        for index in range(count):
            obj = Item() if index % 2 == 0 else Slotted()
            obj.a = index
            root[index] = obj
            self.objects.append(obj)
            self.committed.append({"a": index})
        self.connection.commit()
        self.pending = [dict(state) for state in self.committed]

    def _pick(self, data: Any) -> int:
        return data.draw(st.integers(0, len(self.objects) - 1))

    @rule(data=st.data(), name=st.sampled_from(NAMES))
    def read(self, data: Any, name: str) -> None:
        index = self._pick(data)
        expected = self.pending[index].get(name, MISSING)
        assert _read_many(self.objects[index], name) == [expected] * 40

    @rule(data=st.data(), name=st.sampled_from(NAMES), value=st.integers() | st.text(max_size=3))
    def write(self, data: Any, name: str, value: Any) -> None:
        index = self._pick(data)
        setattr(self.objects[index], name, value)
        self.pending[index][name] = value

    @rule(data=st.data(), name=st.sampled_from(NAMES))
    def delete(self, data: Any, name: str) -> None:
        index = self._pick(data)
        obj = self.objects[index]
        if name in self.pending[index]:
            delattr(obj, name)
            del self.pending[index][name]
        else:
            with pytest.raises(AttributeError):
                delattr(obj, name)

    @rule(data=st.data())
    def state(self, data: Any) -> None:
        index = self._pick(data)
        assert self.objects[index].__getstate__() == self.pending[index]
        if isinstance(self.objects[index], Item):
            assert vars(self.objects[index]) == self.pending[index]

    @rule(data=st.data())
    def ghost(self, data: Any) -> None:
        index = self._pick(data)
        obj = self.objects[index]
        if obj._p_status == SAVED:  # an invalidation, as a sync would make it
            obj._p_set_status_ghost()
            assert not _is_hot(obj)

    @rule()
    def commit(self) -> None:
        self.connection.commit()
        self.committed = [dict(state) for state in self.pending]

    @rule()
    def abort(self) -> None:
        self.connection.abort()
        self.pending = [dict(state) for state in self.committed]

    @invariant()
    def hot_only_while_accessed_and_loaded(self) -> None:
        if not hasattr(self, "objects"):
            return
        serial = self.connection.transaction_serial
        for obj in self.objects:
            assert type(obj).__mro__[type(obj) is not real_class(obj)] is real_class(obj)
            if _is_hot(obj):
                assert obj._p_status != GHOST
                assert obj._p_serial == serial

    def teardown(self) -> None:
        if not hasattr(self, "objects"):
            return
        self.connection.commit()
        fresh = Connection(self.storage).get_root()
        for index, state in enumerate(self.pending):
            assert fresh[index].__getstate__() == state


TestHotVariants = HotVariantMachine.TestCase
TestHotVariants.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


@pytest.fixture
def connection() -> Connection:
    return Connection(MemoryStorage())


def _stored(connection: Connection, obj: Any) -> Any:
    obj.x = 1
    connection.get_root()["obj"] = obj
    connection.commit()
    return obj


def test_a_first_read_switches_and_the_end_of_the_transaction_switches_back(connection):
    obj = _stored(connection, Item())
    assert type(obj) is Item
    assert obj.x == 1
    assert _is_hot(obj) is not accelerated  # the C path keeps classes
    assert isinstance(obj, Item) and obj.__class__ is Item
    connection.abort()
    assert type(obj) is Item
    obj.x
    connection.commit()
    assert type(obj) is Item


def test_a_class_can_keep_its_class(connection):
    obj = _stored(connection, Kept())
    assert obj.x == 1
    assert type(obj) is Kept
    assert obj._p_serial == connection.transaction_serial


def test_getattr_fallback_works_while_hot(connection):
    obj = _stored(connection, Fallback())
    assert obj.x == 1
    assert _is_hot(obj) is not accelerated
    assert obj.missing == ("fallback", "missing")


def test_a_class_that_refuses_subclasses_keeps_its_class_and_tracking(connection):
    obj = _stored(connection, Refusing())
    connection.abort()
    assert obj.x == 1
    assert type(obj) is Refusing
    assert obj._p_serial == connection.transaction_serial


def test_new_attribute_names_while_hot_are_seen_by_the_class(connection):
    # Names added through a variant must read back through the class, and
    # the other way round.
    first = _stored(connection, Item())
    first.x
    first.fresh_name = "hot"
    connection.commit()
    second = Item()
    second.fresh_name = "cold"
    second.other = 2
    connection.get_root()["second"] = second
    connection.commit()
    first.other = 3
    assert (first.fresh_name, first.other, second.fresh_name, second.other) == ("hot", 3, "cold", 2)
    connection.commit()
    fresh = Connection(connection.get_storage()).get_root()
    assert fresh["obj"].__getstate__() == {"x": 1, "fresh_name": "hot", "other": 3}
    assert fresh["second"].__getstate__() == {"fresh_name": "cold", "other": 2}


def test_switched_objects_are_released_when_the_transaction_ends():
    connection = Connection(MemoryStorage(), cache_size=1)
    root = connection.get_root()
    for index in range(20):
        root[index] = Item()
    connection.commit()
    objects = [root[index] for index in range(20)]
    refs = [weakref.ref(obj) for obj in objects]
    for obj in objects:
        obj.__dict__
    connection.abort()
    baseline = [sys.getrefcount(obj) for obj in objects]
    for _ in range(50):
        for obj in objects:
            obj.__dict__
        connection.abort()
    # Without the end of each transaction dropping its switched objects,
    # every count would be 50 higher.
    counts = [sys.getrefcount(obj) for obj in objects]
    assert all(now <= then for now, then in zip(counts, baseline, strict=True))
    del obj, objects
    root.clear()
    connection.commit()
    connection.abort()
    connection.abort()
    gc.collect()
    assert sum(ref() is not None for ref in refs) <= 1
