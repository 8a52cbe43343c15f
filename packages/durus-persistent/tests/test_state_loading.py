"""Loading a ghost's state: what ends up in the object, on either path.

The accelerator fills a ghost that never had attributes one attribute at a
time (so that CPython keeps its compact attribute storage) instead of clearing
and updating ``__dict__``; these cases are where the two could differ.
"""

from __future__ import annotations

from typing import Any

from durus.connection import Connection
from durus.persistent import Persistent, PersistentObject
from durus.storage import MemoryStorage


class Shadowed(Persistent):
    """A property named like a key of its stored __dict__."""

    setter_calls = 0

    @property
    def value(self) -> Any:
        return ("property", self.__dict__.get("value"))

    @value.setter
    def value(self, new: Any) -> None:
        type(self).setter_calls += 1
        self.__dict__["value"] = ("via setter", new)


class OwnSetState(Persistent):
    """A __setstate__ that writes first, then leaves the rest to Persistent's."""

    def __setstate__(self, state: Any) -> None:
        # object.__getattribute__: a tracked read would load the ghost again.
        object.__getattribute__(self, "__dict__")["_v_marker"] = "written first"
        super().__setstate__(state)


class Slotted(PersistentObject):
    __slots__ = ("a", "b")


class Plain(Persistent):
    pass


class Bulk(Persistent):
    """Only the bulk-loading test uses it: its objects are first seen as ghosts."""


def _store(obj: Any) -> MemoryStorage:
    storage = MemoryStorage()
    connection = Connection(storage)
    connection.get_root()["obj"] = obj
    connection.commit()
    return storage


def _load(storage: MemoryStorage) -> Any:
    return Connection(storage).get_root()["obj"]


def test_a_data_descriptor_does_not_intercept_a_stored_key() -> None:
    obj = Shadowed()
    obj.__dict__["value"] = 7  # stored as a plain __dict__ entry
    storage = _store(obj)
    Shadowed.setter_calls = 0
    loaded = _load(storage)
    assert loaded.value == ("property", 7)
    assert Shadowed.setter_calls == 0


def test_a_class_with_its_own_setstate_gets_the_general_code() -> None:
    storage = _store(OwnSetState())
    loaded = _load(storage)
    loaded._p_load_state()
    # Persistent.__setstate__ clears __dict__ before it updates it.
    assert "_v_marker" not in loaded.__dict__


def test_keys_that_are_not_attribute_names_still_load() -> None:
    obj = Plain()
    obj.__dict__[1] = "one"
    obj.name = "x"
    storage = _store(obj)
    loaded = _load(storage)
    assert loaded.__dict__ == {1: "one", "name": "x"}


def test_a_reload_after_invalidation_drops_what_the_new_state_lacks() -> None:
    for obj, expected in ((Plain(), {"a": 5}), (Slotted(), {"a": 5})):
        obj.a, obj.b = 1, 2
        storage = _store(obj)
        reader = Connection(storage)
        seen = reader.get_root()["obj"]
        assert (seen.a, seen.b) == (1, 2)
        writer = Connection(storage)
        changed = writer.get_root()["obj"]
        del changed.b
        changed.a = 5
        writer.commit()
        seen._p_set_status_ghost()  # what an invalidation does
        assert seen.a == 5
        assert not hasattr(seen, "b")
        assert seen.__getstate__() == expected


def test_loaded_objects_of_a_class_seen_first_in_bulk_keep_every_attribute() -> None:
    storage = MemoryStorage()
    connection = Connection(storage)
    # Many ghosts of one class are made before any of them is loaded (a
    # container's unpickling), then each is loaded.
    connection.get_root()["items"] = [Bulk() for _ in range(100)]
    for index, item in enumerate(connection.get_root()["items"]):
        item.n, item.s, item.f = index, str(index), index / 2
    connection.commit()
    items = Connection(storage).get_root()["items"]
    assert [(item.n, item.s, item.f) for item in items] == [
        (index, str(index), index / 2) for index in range(100)
    ]
    assert [item.__dict__ for item in items[:2]] == [
        {"n": 0, "s": "0", "f": 0.0},
        {"n": 1, "s": "1", "f": 0.5},
    ]
