"""PersistentDict: dict behaviour, Durus 4.3 API and state, change tracking."""

from __future__ import annotations

import pickle
from collections.abc import MutableMapping
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from durus.connection import Connection
from durus.persistent import PersistentObject
from durus.persistent_dict import PersistentDict
from durus.storage import MemoryStorage

# pickle.dumps(obj.__getstate__(), 2) as produced by Durus 4.3.
DURUS43_STATE_PICKLES = {
    "empty": b"\x80\x02}q\x00X\x04\x00\x00\x00dataq\x01}q\x02s.",
    "mixed": (
        b"\x80\x02}q\x00X\x04\x00\x00\x00dataq\x01}q\x02(X\x01\x00\x00\x00aq\x03K\x01X\x01"
        b"\x00\x00\x00bq\x04]q\x05(K\x01K\x02eK\x03X\x01\x00\x00\x00xq\x06X\x01\x00\x00\x00c"
        b"q\x07}q\x08X\x01\x00\x00\x00nq\tNsus."
    ),
}


def outcome(function: Any) -> tuple[str, Any]:
    """What calling ``function`` gives: its value or its exception type."""
    try:
        return ("value", function())
    except Exception as exc:
        return ("raised", type(exc))


notes: list[dict[Any, Any] | None] = []


class SpiedDict(PersistentDict):
    """Records the data as they are when each change is noted."""

    __slots__ = ()

    def _p_note_change(self) -> None:
        data = getattr(self, "data", None)
        notes.append(None if data is None else dict(data))
        super()._p_note_change()


def spied(data: dict[Any, Any]) -> SpiedDict:
    d = SpiedDict(data)
    notes.clear()
    return d


# -- the class ------------------------------------------------------------------


def test_class_shape() -> None:
    assert PersistentDict.__slots__ == ["data"]
    assert issubclass(PersistentDict, PersistentObject)
    assert issubclass(PersistentDict, MutableMapping)
    assert PersistentDict.data_is is dict
    assert PersistentDict.__module__ == "durus.persistent_dict"
    assert PersistentDict.__doc__
    d = PersistentDict()
    assert not hasattr(d, "__dict__")
    with pytest.raises(AttributeError):
        d.other = 1  # type: ignore[attr-defined]
    assert isinstance(d, MutableMapping)


def test_state_is_the_data_dict() -> None:
    d = PersistentDict(a=1)
    state = d.__getstate__()
    assert state == {"data": {"a": 1}}
    assert state["data"] is d.data
    fresh = PersistentDict.__new__(PersistentDict)
    fresh.__setstate__({"data": {"b": 2}})
    assert fresh.data == {"b": 2}


@pytest.mark.parametrize(
    ("name", "contents"),
    [("empty", {}), ("mixed", {"a": 1, "b": [1, 2], 3: "x", "c": {"n": None}})],
)
def test_state_pickle_matches_durus43(name: str, contents: dict[Any, Any]) -> None:
    d = PersistentDict(contents)
    assert pickle.dumps(d.__getstate__(), 2) == DURUS43_STATE_PICKLES[name]


def test_plain_pickle_round_trip() -> None:
    d = PersistentDict({1: "one", "two": [2]})
    copy = pickle.loads(pickle.dumps(d, 2))
    assert copy.__class__ is PersistentDict
    assert copy == d
    assert copy.data is not d.data


# -- construction and reading ----------------------------------------------------


def test_construction() -> None:
    assert PersistentDict().data == {}
    assert PersistentDict({1: 2}).data == {1: 2}
    assert PersistentDict([(1, 2), (3, 4)]).data == {1: 2, 3: 4}
    assert PersistentDict({1: 2}, x=4).data == {1: 2, "x": 4}
    assert PersistentDict(a=1, b=2).data == {"a": 1, "b": 2}
    source = {1: 2}
    assert PersistentDict(source).data is not source
    with pytest.raises(TypeError):
        PersistentDict({1: 2}, {3: 4})


def test_reading_methods() -> None:
    d = PersistentDict([("b", 2), ("a", 1)])
    assert len(d) == 2
    assert d["a"] == 1
    with pytest.raises(KeyError):
        d["zz"]
    assert "a" in d
    assert "zz" not in d
    assert d.has_key("b") is True
    assert d.has_key("zz") is False
    assert d.get("a") == 1
    assert d.get("zz") is None
    assert d.get("zz", 7) == 7
    assert list(d) == ["b", "a"]
    assert d.keys() == ["b", "a"]
    assert d.values() == [2, 1]
    assert d.items() == [("b", 2), ("a", 1)]
    assert type(d.keys()) is list
    assert type(d.values()) is list
    assert type(d.items()) is list
    assert list(d.iterkeys()) == ["b", "a"]
    assert list(d.itervalues()) == [2, 1]
    assert list(d.iteritems()) == [("b", 2), ("a", 1)]
    assert next(d.iteritems()) == ("b", 2)


def test_lists_are_copies() -> None:
    d = PersistentDict(a=1)
    keys = d.keys()
    keys.append("z")
    assert d.keys() == ["a"]


def test_equality() -> None:
    d = PersistentDict(a=1)
    assert d == PersistentDict(a=1)
    assert not d != PersistentDict(a=1)  # noqa: SIM202
    assert d != PersistentDict(a=2)
    # Durus compares only with another PersistentDict.
    assert d != {"a": 1}
    assert not d == {"a": 1}  # noqa: SIM201
    assert {"a": 1} != d  # noqa: SIM300
    assert d != 3
    with pytest.raises(TypeError):
        hash(d)


def test_repr() -> None:
    d = PersistentDict()
    assert repr(d) == f"<PersistentDict @{id(d):x}>"


def test_copy() -> None:
    d = PersistentDict(a=[1])
    c = d.copy()
    assert c.__class__ is PersistentDict
    assert c == d
    assert c is not d and c.data is not d.data
    assert c["a"] is d["a"]  # shallow
    assert c._p_is_unsaved() and c._p_oid is None


def test_fromkeys() -> None:
    d = PersistentDict.fromkeys([1, 2], 5)
    assert d.__class__ is PersistentDict
    assert d.data == {1: 5, 2: 5}
    assert PersistentDict.fromkeys("ab").data == {"a": None, "b": None}


class SubDict(PersistentDict):
    __slots__ = ["extra"]


def test_subclass_copy_fromkeys_and_state() -> None:
    s = SubDict(a=1)
    assert s.copy().__class__ is SubDict
    assert SubDict.fromkeys([1]).__class__ is SubDict
    s.extra = 5
    assert s.__getstate__() == {"extra": 5, "data": {"a": 1}}


# -- mutating methods ------------------------------------------------------------


def test_mutators_against_dict() -> None:
    d = PersistentDict()
    d[1] = "a"
    d.update({2: "b"}, three=3)
    d.update([(4, "d")])
    d.update()
    assert d.data == {1: "a", 2: "b", "three": 3, 4: "d"}
    with pytest.raises(TypeError):
        d.update({}, {})
    assert d.setdefault(1, "zz") == "a"
    assert d.setdefault(5) is None
    assert d.setdefault(6, "f") == "f"
    assert d.pop(6) == "f"
    assert d.pop(6, "gone") == "gone"
    with pytest.raises(KeyError):
        d.pop(6)
    with pytest.raises(TypeError):
        d.pop(6, 1, 2)
    del d[5]
    with pytest.raises(KeyError):
        del d[5]
    assert d.popitem() == (4, "d")
    d.clear()
    assert d.data == {}
    with pytest.raises(KeyError):
        d.popitem()


MUTATIONS = [
    ("__setitem__", ("new", 1)),
    ("__setitem__", ("a", 9)),
    ("__delitem__", ("a",)),
    ("clear", ()),
    ("update", ({"new": 1},)),
    ("setdefault", ("new", 1)),
    ("pop", ("a",)),
    ("popitem", ()),
]


@pytest.mark.parametrize(("method", "args"), MUTATIONS)
def test_mutators_note_the_change_first(method: str, args: tuple[Any, ...]) -> None:
    d = spied({"a": 1, "b": 2})
    before = dict(d.data)
    getattr(d, method)(*args)
    assert notes, f"{method} did not note a change"
    assert notes[0] == before, f"{method} noted the change after mutating"
    assert d.data != before


READERS = [
    ("__getitem__", ("a",)),
    ("__contains__", ("a",)),
    ("__len__", ()),
    ("__iter__", ()),
    ("get", ("a",)),
    ("has_key", ("a",)),
    ("keys", ()),
    ("values", ()),
    ("items", ()),
    ("iterkeys", ()),
    ("itervalues", ()),
    ("iteritems", ()),
    ("copy", ()),
    ("setdefault", ("a", 5)),
    ("__eq__", (PersistentDict(),)),
]


@pytest.mark.parametrize(("method", "args"), READERS)
def test_readers_note_no_change(method: str, args: tuple[Any, ...]) -> None:
    d = spied({"a": 1, "b": 2})
    getattr(d, method)(*args)
    assert notes == []


# -- through a connection ----------------------------------------------------------


def test_round_trip_commit_and_abort() -> None:
    storage = MemoryStorage()
    connection = Connection(storage)
    root = connection.get_root()
    root["d"] = PersistentDict({"k": [1, 2], 3: None})
    connection.commit()
    d = root["d"]
    assert d._p_oid is not None and d._p_is_saved()

    other = Connection(storage).get_root()["d"]
    assert isinstance(other, PersistentDict)
    assert other is not d
    assert other == d
    assert other.items() == [("k", [1, 2]), (3, None)]

    d["new"] = 1
    assert d._p_is_unsaved()
    assert d._p_oid in connection.changed
    del d["k"]
    connection.abort()
    assert d.items() == [("k", [1, 2]), (3, None)]

    d.setdefault("k", "ignored")
    assert d._p_is_saved()  # setdefault of a present key changes nothing
    d.update(more=2)
    connection.commit()
    assert Connection(storage).get_root()["d"].data == {"k": [1, 2], 3: None, "more": 2}


def test_copy_of_a_stored_dict_is_new() -> None:
    connection = Connection(MemoryStorage())
    root = connection.get_root()
    root["d"] = PersistentDict(a=1)
    connection.commit()
    c = root["d"].copy()
    assert c.__class__ is PersistentDict
    assert c._p_oid is None and c._p_connection is None


# -- random operation sequences against dict ---------------------------------------

keys = st.one_of(st.integers(-4, 4), st.sampled_from(["a", "b", "c"]))
values = st.one_of(st.none(), st.integers(), st.text(max_size=3))


class DictAgainstBuiltin(RuleBasedStateMachine):
    """The same operations on a stored PersistentDict and on a dict agree.

    Commits, aborts and fresh connections are mixed in: a fresh connection
    sees the last committed contents and an abort returns to them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.storage = MemoryStorage()
        self.connection = Connection(self.storage)
        self.pd = PersistentDict()
        self.connection.get_root()["d"] = self.pd
        self.connection.commit()
        self.model: dict[Any, Any] = {}
        self.committed: dict[Any, Any] = {}

    def both(self, method: str, *args: Any) -> None:
        expected = outcome(lambda: getattr(self.model, method)(*args))
        got = outcome(lambda: getattr(self.pd, method)(*args))
        assert got == expected, (method, args)

    @rule(key=keys, value=values)
    def setitem(self, key: Any, value: Any) -> None:
        self.both("__setitem__", key, value)

    @rule(key=keys)
    def delitem(self, key: Any) -> None:
        self.both("__delitem__", key)

    @rule(key=keys)
    def getitem(self, key: Any) -> None:
        self.both("__getitem__", key)

    @rule(key=keys, default=values)
    def get(self, key: Any, default: Any) -> None:
        self.both("get", key, default)

    @rule(key=keys, default=values)
    def setdefault(self, key: Any, default: Any) -> None:
        self.both("setdefault", key, default)

    @rule(key=keys)
    def pop(self, key: Any) -> None:
        self.both("pop", key)

    @rule(key=keys, default=values)
    def pop_default(self, key: Any, default: Any) -> None:
        self.both("pop", key, default)

    @rule()
    def popitem(self) -> None:
        self.both("popitem")

    @rule(other=st.dictionaries(keys, values, max_size=4))
    def update(self, other: dict[Any, Any]) -> None:
        self.both("update", other)

    @rule(pairs=st.lists(st.tuples(keys, values), max_size=4))
    def update_pairs(self, pairs: list[tuple[Any, Any]]) -> None:
        self.both("update", pairs)

    @rule()
    def clear(self) -> None:
        self.both("clear")

    @rule()
    def commit(self) -> None:
        self.connection.commit()
        self.committed = dict(self.model)
        assert self.pd._p_is_saved()

    @rule()
    def abort(self) -> None:
        self.connection.abort()
        self.model = dict(self.committed)

    @rule()
    def fresh_connection_sees_committed(self) -> None:
        fresh = Connection(self.storage).get_root()["d"]
        assert fresh.items() == list(self.committed.items())

    @invariant()
    def agrees(self) -> None:
        pd, model = self.pd, self.model
        assert pd.items() == list(model.items())
        assert pd.keys() == list(model)
        assert pd.values() == list(model.values())
        assert len(pd) == len(model)
        assert list(pd) == list(model)
        for key in (0, "a"):
            assert (key in pd) == (key in model)
            assert pd.has_key(key) == (key in model)
        if pd._p_is_unsaved():
            assert pd._p_oid in self.connection.changed


DictAgainstBuiltin.TestCase.settings = settings(
    max_examples=100, stateful_step_count=40, deadline=None
)
TestDictAgainstBuiltin = DictAgainstBuiltin.TestCase
