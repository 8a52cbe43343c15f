"""PersistentList: list behaviour, Durus 4.3 API and state, change tracking."""

from __future__ import annotations

import pickle
from collections.abc import MutableSequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from durus.connection import Connection
from durus.persistent import PersistentObject
from durus.persistent_list import PersistentList
from durus.storage import MemoryStorage

# pickle.dumps(obj.__getstate__(), 2) as produced by Durus 4.3.
DURUS43_STATE_PICKLES = {
    "empty": b"\x80\x02}q\x00X\x04\x00\x00\x00dataq\x01]q\x02s.",
    "mixed": (
        b"\x80\x02}q\x00X\x04\x00\x00\x00dataq\x01]q\x02(K\x01X\x03\x00\x00\x00twoq\x03G@\x0c"
        b"\x00\x00\x00\x00\x00\x00NK\x04K\x05\x86q\x04]q\x05(\x88\x89eM,\x01Jp\x11\x01\x00\x8a"
        b"\x06\x00\x00\x00\x00\x00\x01es."
    ),
}
MIXED = [1, "two", 3.5, None, (4, 5), [True, False], 300, 70000, 2**40]


def outcome(function: Any) -> tuple[str, Any]:
    """What calling ``function`` gives: its value or its exception type."""
    try:
        return ("value", function())
    except Exception as exc:
        return ("raised", type(exc))


notes: list[list[Any] | None] = []


class SpiedList(PersistentList):
    """Records the data as they are when each change is noted."""

    __slots__ = ()

    def _p_note_change(self) -> None:
        data = getattr(self, "data", None)
        notes.append(None if data is None else list(data))
        super()._p_note_change()


def spied(data: list[Any]) -> SpiedList:
    pl = SpiedList(data)
    notes.clear()
    return pl


# -- the class ------------------------------------------------------------------


def test_class_shape() -> None:
    assert PersistentList.__slots__ == ["data"]
    assert issubclass(PersistentList, PersistentObject)
    assert issubclass(PersistentList, MutableSequence)
    assert PersistentList.data_is is list
    assert PersistentList.__module__ == "durus.persistent_list"
    assert PersistentList.__doc__
    pl = PersistentList()
    assert not hasattr(pl, "__dict__")
    with pytest.raises(AttributeError):
        pl.other = 1  # type: ignore[attr-defined]


def test_state_is_the_data_list() -> None:
    pl = PersistentList([1])
    assert pl.__getstate__() == {"data": [1]}
    assert pl.__getstate__()["data"] is pl.data


@pytest.mark.parametrize(("name", "contents"), [("empty", []), ("mixed", MIXED)])
def test_state_pickle_matches_durus43(name: str, contents: list[Any]) -> None:
    assert pickle.dumps(PersistentList(contents).__getstate__(), 2) == DURUS43_STATE_PICKLES[name]


def test_plain_pickle_round_trip() -> None:
    pl = PersistentList(MIXED)
    copy = pickle.loads(pickle.dumps(pl, 2))
    assert copy.__class__ is PersistentList
    assert copy == pl


# -- construction and reading ----------------------------------------------------


def test_construction() -> None:
    assert PersistentList().data == []
    assert PersistentList((1, 2)).data == [1, 2]
    assert PersistentList(PersistentList([3])).data == [3]
    assert PersistentList(iter("ab")).data == ["a", "b"]
    source = [1]
    assert PersistentList(source).data is not source
    with pytest.raises(TypeError):
        PersistentList([1], [2])


def test_reading_methods() -> None:
    pl = PersistentList([3, 1, 2, 1])
    assert len(pl) == 4
    assert pl[0] == 3
    assert pl[-1] == 1
    with pytest.raises(IndexError):
        pl[4]
    assert 2 in pl and 9 not in pl
    assert pl.count(1) == 2
    assert pl.index(1) == 1
    assert pl.index(1, 2) == 3
    assert pl.index(3, 0, 1) == 0
    with pytest.raises(ValueError):
        pl.index(3, 1)
    assert list(pl) == [3, 1, 2, 1]
    assert list(reversed(pl)) == [1, 2, 1, 3]


def test_slicing() -> None:
    pl = PersistentList(range(6))
    # Under Python 3 a slice of a PersistentList is a plain list (Durus 4.3).
    assert pl[1:3] == [1, 2]
    assert type(pl[1:3]) is list
    assert pl[::2] == [0, 2, 4]
    # The legacy hook builds a PersistentList; bounds are taken as given.
    legacy = pl.__getslice__(1, 3)
    assert legacy.__class__ is PersistentList
    assert legacy.data == [1, 2]
    assert pl.__getslice__(-2, 5).data == [4]
    assert pl.__getslice__(2, -1).data == [2, 3, 4]


def test_legacy_slice_setters() -> None:
    pl = PersistentList(range(6))
    pl.__setslice__(-2, 1, "xy")
    assert pl.data == [0, 1, 2, 3, "x", "y", 4, 5]
    pl.__delslice__(-3, 2)  # an empty range: nothing removed
    assert pl.data == [0, 1, 2, 3, "x", "y", 4, 5]
    pl.__delslice__(4, 6)
    assert pl.data == [0, 1, 2, 3, 4, 5]
    pl.__setslice__(4, -1, PersistentList([7]))
    assert pl.data == [0, 1, 2, 3, 7, 5]


def test_comparisons() -> None:
    pl = PersistentList([1, 2])
    assert pl == [1, 2]
    assert [1, 2] == pl  # noqa: SIM300
    assert pl == PersistentList([1, 2])
    assert pl != [1, 3]
    assert pl != (1, 2)
    assert not pl == 3  # noqa: SIM201
    assert pl == pl and not pl != pl  # noqa: SIM202
    assert pl < [1, 3] and pl <= [1, 2] and pl > [1] and pl >= [1, 2]
    assert pl < PersistentList([2])
    assert [0] < pl  # noqa: SIM300
    assert not pl < pl
    with pytest.raises(TypeError):
        pl < (1, 3)  # noqa: B015
    with pytest.raises(TypeError):
        pl < 3  # noqa: B015
    with pytest.raises(TypeError):
        hash(pl)
    nan = float("nan")
    same = PersistentList([nan])
    assert same == same


def test_arithmetic() -> None:
    pl = PersistentList([1, 2])
    for result, expected in [
        (pl + [3], [1, 2, 3]),
        (pl + (3,), [1, 2, 3]),
        (pl + "ab", [1, 2, "a", "b"]),
        (pl + PersistentList([3]), [1, 2, 3]),
        ([0] + pl, [0, 1, 2]),
        ((0,) + pl, [0, 1, 2]),
        (pl * 2, [1, 2, 1, 2]),
        (2 * pl, [1, 2, 1, 2]),
        (pl * 0, []),
    ]:
        assert result.__class__ is PersistentList
        assert result.data == expected
        assert result is not pl
    assert pl.data == [1, 2]


def test_in_place_arithmetic_keeps_identity() -> None:
    pl = PersistentList([1])
    original = pl
    pl += (2,)
    pl += PersistentList([3])
    pl += iter([4])
    assert pl is original
    assert pl.data == [1, 2, 3, 4]
    pl *= 2
    assert pl is original
    assert pl.data == [1, 2, 3, 4, 1, 2, 3, 4]
    pl += pl
    assert len(pl) == 16


def test_repr() -> None:
    pl = PersistentList()
    assert repr(pl) == f"<PersistentList @{id(pl):x}>"


def test_copy() -> None:
    pl = PersistentList([[1]])
    c = pl.copy()
    assert c.__class__ is PersistentList
    assert c == pl and c.data is not pl.data and c[0] is pl[0]


class SubList(PersistentList):
    __slots__ = ()


def test_subclass_results() -> None:
    s = SubList([1])
    assert (s + [2]).__class__ is SubList
    assert s.__getslice__(0, 1).__class__ is SubList
    assert (s * 2).__class__ is SubList
    assert s.copy().__class__ is SubList


# -- mutating methods ------------------------------------------------------------


MUTATIONS = [
    ("__setitem__", (0, "x")),
    ("__setitem__", (slice(0, 2), ["x"])),
    ("__delitem__", (0,)),
    ("__delitem__", (slice(1, None),)),
    ("__setslice__", (0, 1, ["x", "y"])),
    ("__delslice__", (0, 1)),
    ("__iadd__", ([9],)),
    ("__imul__", (2,)),
    ("append", (9,)),
    ("insert", (1, 9)),
    ("pop", ()),
    ("pop", (0,)),
    ("remove", (2,)),
    ("reverse", ()),
    ("sort", ()),
    ("extend", ([9],)),
    ("clear", ()),
]


@pytest.mark.parametrize(("method", "args"), MUTATIONS)
def test_mutators_note_the_change_first(method: str, args: tuple[Any, ...]) -> None:
    pl = spied([3, 1, 2])
    before = list(pl.data)
    getattr(pl, method)(*args)
    assert notes, f"{method} did not note a change"
    assert notes[0] == before, f"{method} noted the change after mutating"
    assert pl.data != before


def test_sort_arguments() -> None:
    pl = PersistentList([1, 3, 2])
    pl.sort(reverse=True)
    assert pl.data == [3, 2, 1]
    pl.sort(key=lambda x: (x - 2) ** 2)
    assert pl.data == [2, 3, 1]


READERS = [
    ("__getitem__", (0,)),
    ("__getitem__", (slice(0, 2),)),
    ("__getslice__", (0, 2)),
    ("__contains__", (1,)),
    ("__len__", ()),
    ("__iter__", ()),
    ("__reversed__", ()),
    ("__add__", ([1],)),
    ("__radd__", ([1],)),
    ("__mul__", (2,)),
    ("__rmul__", (2,)),
    ("__eq__", ([1],)),
    ("__lt__", ([1],)),
    ("count", (1,)),
    ("index", (1,)),
    ("copy", ()),
]


@pytest.mark.parametrize(("method", "args"), READERS)
def test_readers_note_no_change(method: str, args: tuple[Any, ...]) -> None:
    pl = spied([3, 1, 2])
    getattr(pl, method)(*args)
    assert notes == []


# -- through a connection ----------------------------------------------------------


def test_round_trip_commit_and_abort() -> None:
    storage = MemoryStorage()
    connection = Connection(storage)
    root = connection.get_root()
    root["l"] = PersistentList([1, "a", (2, 3)])
    connection.commit()
    pl = root["l"]
    other = Connection(storage).get_root()["l"]
    assert isinstance(other, PersistentList)
    assert other is not pl
    assert other == pl
    assert other.data == [1, "a", (2, 3)]

    pl.append(4)
    assert pl._p_is_unsaved() and pl._p_oid in connection.changed
    pl.reverse()
    connection.abort()
    assert pl.data == [1, "a", (2, 3)]

    pl[0] = 0
    pl += [5]
    connection.commit()
    assert Connection(storage).get_root()["l"].data == [0, "a", (2, 3), 5]


# -- random operation sequences against list ----------------------------------------

items = st.integers(-3, 3)
indexes = st.integers(-5, 5)
small_lists = st.lists(items, max_size=4)
slices = st.builds(
    slice, st.none() | indexes, st.none() | indexes, st.none() | st.sampled_from([-2, -1, 1, 2])
)


class ListAgainstBuiltin(RuleBasedStateMachine):
    """The same operations on a stored PersistentList and on a list agree.

    Commits, aborts and fresh connections are mixed in.
    """

    def __init__(self) -> None:
        super().__init__()
        self.storage = MemoryStorage()
        self.connection = Connection(self.storage)
        self.pl = PersistentList()
        self.connection.get_root()["l"] = self.pl
        self.connection.commit()
        self.model: list[Any] = []
        self.committed: list[Any] = []

    def both(self, method: str, *args: Any) -> None:
        expected = outcome(lambda: getattr(self.model, method)(*args))
        got = outcome(lambda: getattr(self.pl, method)(*args))
        if got[0] == "value" and got[1] is self.pl:
            got = ("value", self.model)  # __iadd__ / __imul__ return self
        assert got == expected, (method, args)

    @rule(item=items)
    def append(self, item: int) -> None:
        self.both("append", item)

    @rule(index=indexes, item=items)
    def insert(self, index: int, item: int) -> None:
        self.both("insert", index, item)

    @rule(index=indexes, item=items)
    def setitem(self, index: int, item: int) -> None:
        self.both("__setitem__", index, item)

    @rule(where=slices, other=small_lists)
    def setitem_slice(self, where: slice, other: list[int]) -> None:
        self.both("__setitem__", where, other)

    @rule(index=indexes)
    def delitem(self, index: int) -> None:
        self.both("__delitem__", index)

    @rule(where=slices)
    def delitem_slice(self, where: slice) -> None:
        self.both("__delitem__", where)

    @rule(index=indexes)
    def getitem(self, index: int) -> None:
        self.both("__getitem__", index)

    @rule(where=slices)
    def getitem_slice(self, where: slice) -> None:
        self.both("__getitem__", where)

    @rule(i=indexes, j=indexes, other=small_lists)
    def setslice(self, i: int, j: int, other: list[int]) -> None:
        self.pl.__setslice__(i, j, other)
        self.model[i:j] = other

    @rule(i=indexes, j=indexes)
    def delslice(self, i: int, j: int) -> None:
        self.pl.__delslice__(i, j)
        del self.model[i:j]

    @rule(i=indexes, j=indexes)
    def getslice(self, i: int, j: int) -> None:
        assert self.pl.__getslice__(i, j).data == self.model[i:j]

    @rule(index=st.none() | indexes)
    def pop(self, index: int | None) -> None:
        if index is None:
            self.both("pop")
        else:
            self.both("pop", index)

    @rule(item=items)
    def remove(self, item: int) -> None:
        self.both("remove", item)

    @rule(item=items)
    def index(self, item: int) -> None:
        self.both("index", item)

    @rule(item=items)
    def count(self, item: int) -> None:
        self.both("count", item)

    @rule(other=small_lists)
    def extend(self, other: list[int]) -> None:
        self.both("extend", other)

    @rule(other=small_lists)
    def iadd(self, other: list[int]) -> None:
        self.both("__iadd__", other)

    @rule(n=st.integers(-1, 2))
    def imul(self, n: int) -> None:
        if len(self.model) <= 8:
            self.both("__imul__", n)

    @rule(other=small_lists)
    def add(self, other: list[int]) -> None:
        assert (self.pl + other).data == self.model + other
        assert (other + self.pl).data == other + self.model

    @rule()
    def reverse(self) -> None:
        self.both("reverse")

    @rule(reverse=st.booleans())
    def sort(self, reverse: bool) -> None:
        self.pl.sort(reverse=reverse)
        self.model.sort(reverse=reverse)

    @rule()
    def clear(self) -> None:
        self.both("clear")

    @rule(other=small_lists)
    def compare(self, other: list[int]) -> None:
        for op in ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__"):
            assert getattr(self.pl, op)(other) == getattr(self.model, op)(other)
            assert getattr(self.pl, op)(PersistentList(other)) == getattr(self.model, op)(other)

    @rule()
    def commit(self) -> None:
        self.connection.commit()
        self.committed = list(self.model)

    @rule()
    def abort(self) -> None:
        self.connection.abort()
        self.model = list(self.committed)

    @rule()
    def fresh_connection_sees_committed(self) -> None:
        assert Connection(self.storage).get_root()["l"].data == self.committed

    @invariant()
    def agrees(self) -> None:
        assert self.pl.data == self.model
        assert list(self.pl) == self.model
        assert len(self.pl) == len(self.model)
        assert self.pl == self.model
        if self.pl._p_is_unsaved():
            assert self.pl._p_oid in self.connection.changed


ListAgainstBuiltin.TestCase.settings = settings(
    max_examples=100, stateful_step_count=40, deadline=None
)
TestListAgainstBuiltin = ListAgainstBuiltin.TestCase


@settings(max_examples=150, deadline=None)
@given(st.lists(items, max_size=6), st.lists(items, max_size=6))
def test_comparisons_agree_with_list(a: list[int], b: list[int]) -> None:
    pa, pb = PersistentList(a), PersistentList(b)
    assert (pa == pb) == (a == b)
    assert (pa != pb) == (a != b)
    assert (pa < pb) == (a < b)
    assert (pa <= b) == (a <= b)
    assert (a > pb) == (a > b)
    assert (pa >= pb) == (a >= b)
