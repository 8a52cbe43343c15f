"""PersistentSet: set behaviour, Durus 4.3 API and state, change tracking."""

from __future__ import annotations

import pickle
from collections.abc import MutableSet
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from durus.connection import Connection
from durus.persistent import PersistentObject
from durus.persistent_set import PersistentSet
from durus.storage import MemoryStorage

# pickle.dumps(obj.__getstate__(), 2) as produced by Durus 4.3: the set is
# written as __builtin__.set applied to a list.
DURUS43_STATE_PICKLES = {
    "empty": (
        b"\x80\x02}q\x00X\x01\x00\x00\x00sq\x01c__builtin__\nset\nq\x02]q\x03\x85q\x04Rq\x05s."
    ),
    "ints": (
        b"\x80\x02}q\x00X\x01\x00\x00\x00sq\x01c__builtin__\nset\nq\x02]q\x03(M\xe8\x03K\x01"
        b"K\x02K\x03e\x85q\x04Rq\x05s."
    ),
}


def outcome(function: Any) -> tuple[str, Any]:
    """What calling ``function`` gives: its value or its exception type."""
    try:
        return ("value", function())
    except Exception as exc:
        return ("raised", type(exc))


notes: list[set[Any] | None] = []


class SpiedSet(PersistentSet):
    """Records the elements as they are when each change is noted."""

    __slots__ = ()

    def _p_note_change(self) -> None:
        s = getattr(self, "s", None)
        notes.append(None if s is None else set(s))
        super()._p_note_change()


def spied(elements: set[Any]) -> SpiedSet:
    ps = SpiedSet(elements)
    notes.clear()
    return ps


# -- the class ------------------------------------------------------------------


def test_class_shape() -> None:
    assert PersistentSet.__slots__ == ["s"]
    assert issubclass(PersistentSet, PersistentObject)
    assert issubclass(PersistentSet, MutableSet)
    assert PersistentSet.s_is is set
    assert PersistentSet.__module__ == "durus.persistent_set"
    assert PersistentSet.__doc__
    ps = PersistentSet()
    assert not hasattr(ps, "__dict__")
    with pytest.raises(AttributeError):
        ps.other = 1  # type: ignore[attr-defined]


def test_state_is_the_set() -> None:
    ps = PersistentSet([1])
    assert ps.__getstate__() == {"s": {1}}
    assert ps.__getstate__()["s"] is ps.s


@pytest.mark.parametrize(("name", "contents"), [("empty", []), ("ints", [1, 2, 3, 1000])])
def test_state_pickle_matches_durus43(name: str, contents: list[int]) -> None:
    assert pickle.dumps(PersistentSet(contents).__getstate__(), 2) == DURUS43_STATE_PICKLES[name]


def test_plain_pickle_round_trip() -> None:
    ps = PersistentSet(["a", 1, (2, 3)])
    copy = pickle.loads(pickle.dumps(ps, 2))
    assert copy.__class__ is PersistentSet
    assert copy == ps


# -- construction, reading, operators -------------------------------------------------


def test_construction() -> None:
    assert PersistentSet().s == set()
    assert PersistentSet([1, 1, 2]).s == {1, 2}
    assert PersistentSet(PersistentSet([3])).s == {3}
    source = {1}
    assert PersistentSet(source).s is not source
    with pytest.raises(TypeError):
        PersistentSet([1], [2])


def test_reading() -> None:
    ps = PersistentSet([1, 2])
    assert len(ps) == 2
    assert 1 in ps and 3 not in ps
    assert sorted(ps) == [1, 2]
    assert ps.issubset([1, 2, 3]) and not ps.issubset([1])
    assert ps.issubset(PersistentSet([1, 2]))
    assert ps.issuperset([1]) and ps.issuperset(PersistentSet([2]))
    assert ps.isdisjoint([3]) and not ps.isdisjoint(PersistentSet([2]))


def test_repr() -> None:
    ps = PersistentSet([1, 2])
    assert repr(ps) == f"<PersistentSet @{id(ps):x} [1, 2]>"
    empty = PersistentSet()
    assert repr(empty) == f"<PersistentSet @{id(empty):x} []>"


def test_repr_of_a_stored_set_shows_the_oid() -> None:
    connection = Connection(MemoryStorage())
    connection.get_root()["s"] = ps = PersistentSet([3])
    connection.commit()
    assert repr(ps) == f"<PersistentSet {ps._p_format_oid()} [3]>"
    assert ps._p_format_oid() == "1"


def test_equality_and_ordering() -> None:
    ps = PersistentSet([1, 2])
    assert ps == PersistentSet([2, 1])
    assert ps != PersistentSet([1])
    # Only another PersistentSet can be equal.
    assert ps != {1, 2}
    assert not ps == {1, 2}  # noqa: SIM201
    assert {1, 2} != ps
    assert ps != [1, 2]
    assert ps < PersistentSet([1, 2, 3]) and ps <= PersistentSet([1, 2])
    assert ps > PersistentSet([1]) and ps >= PersistentSet([1, 2])
    assert not ps < PersistentSet([1, 2])
    for op in ("__lt__", "__le__", "__gt__", "__ge__"):
        with pytest.raises(TypeError, match="can only compare to a PersistentSet"):
            getattr(ps, op)({1, 2, 3})
    with pytest.raises(TypeError):
        hash(ps)


def test_operators_give_new_persistent_sets() -> None:
    ps = PersistentSet([1, 2])
    for result, expected in [
        (ps & {2, 3}, {2}),
        (ps | {3}, {1, 2, 3}),
        (ps ^ {2, 3}, {1, 3}),
        (ps - {2}, {1}),
        (ps | frozenset([3]), {1, 2, 3}),
        (ps & PersistentSet([1]), {1}),
        ({2, 3} & ps, {2}),
        ({3} | ps, {1, 2, 3}),
        ({2, 3} ^ ps, {1, 3}),
        ({1, 5} - ps, {5}),
        (frozenset([3]) | ps, {1, 2, 3}),
        (ps.copy(), {1, 2}),
        (ps.union([3], (4,)), {1, 2, 3, 4}),
        (ps.union(PersistentSet([5])), {1, 2, 5}),
        (ps.intersection([1, 3]), {1}),
        (ps.intersection([1, 2], [2]), {2}),
        (ps.difference([1]), {2}),
        (ps.difference([1], PersistentSet([2])), set()),
        (ps.symmetric_difference([2, 3]), {1, 3}),
        (ps.symmetric_difference(PersistentSet([1])), {2}),
    ]:
        assert result.__class__ is PersistentSet
        assert result.s == expected
        assert result is not ps
    assert ps.s == {1, 2}
    with pytest.raises(TypeError):
        ps | [3]
    with pytest.raises(TypeError):
        [3] - ps


class SubSet(PersistentSet):
    __slots__ = ()


def test_subclass_results() -> None:
    s = SubSet([1])
    assert (s | {2}).__class__ is SubSet
    assert ({2} | s).__class__ is SubSet
    assert s.copy().__class__ is SubSet
    assert s.union([3]).__class__ is SubSet


def test_in_place_operators_keep_identity() -> None:
    ps = PersistentSet([1, 2])
    original = ps
    ps |= {3}
    ps &= PersistentSet([1, 3, 4])
    ps ^= {4}
    ps -= {1}
    assert ps is original
    assert ps.s == {3, 4}
    with pytest.raises(TypeError):
        ps |= [5]  # type: ignore[misc]


def test_mutating_methods() -> None:
    ps = PersistentSet([1, 2])
    ps.add(3)
    ps.discard(9)
    ps.discard(1)
    ps.remove(2)
    with pytest.raises(KeyError):
        ps.remove(2)
    assert ps.s == {3}
    ps.update([4], PersistentSet([5]))
    ps.difference_update([4], [5])
    assert ps.s == {3}
    ps.update(range(6))
    ps.intersection_update([1, 2, 3], PersistentSet([2, 3]))
    assert ps.s == {2, 3}
    ps.symmetric_difference_update([3, 4])
    assert ps.s == {2, 4}
    assert ps.pop() in {2, 4}
    ps.clear()
    assert ps.s == set()
    with pytest.raises(KeyError):
        ps.pop()


MUTATIONS = [
    ("__iand__", ({1},)),
    ("__ior__", ({9},)),
    ("__ixor__", ({1},)),
    ("__isub__", ({1},)),
    ("add", (9,)),
    ("clear", ()),
    ("discard", (1,)),
    ("pop", ()),
    ("remove", (1,)),
    ("difference_update", ([1],)),
    ("intersection_update", ([1],)),
    ("symmetric_difference_update", ([1],)),
    ("update", ([9],)),
]


@pytest.mark.parametrize(("method", "args"), MUTATIONS)
def test_mutators_note_the_change_first(method: str, args: tuple[Any, ...]) -> None:
    ps = spied({1, 2})
    before = set(ps.s)
    getattr(ps, method)(*args)
    assert notes, f"{method} did not note a change"
    assert notes[0] == before, f"{method} noted the change after mutating"
    assert ps.s != before


READERS = [
    ("__contains__", (1,)),
    ("__len__", ()),
    ("__iter__", ()),
    ("__repr__", ()),
    ("__eq__", (PersistentSet(),)),
    ("__lt__", (PersistentSet(),)),
    ("__and__", ({1},)),
    ("__or__", ({1},)),
    ("__xor__", ({1},)),
    ("__sub__", ({1},)),
    ("__rand__", ({1},)),
    ("__ror__", ({1},)),
    ("__rxor__", ({1},)),
    ("__rsub__", ({1},)),
    ("copy", ()),
    ("difference", ([1],)),
    ("intersection", ([1],)),
    ("symmetric_difference", ([1],)),
    ("union", ([1],)),
    ("issubset", ([1],)),
    ("issuperset", ([1],)),
    ("isdisjoint", ([1],)),
]


@pytest.mark.parametrize(("method", "args"), READERS)
def test_readers_note_no_change(method: str, args: tuple[Any, ...]) -> None:
    ps = spied({1, 2})
    getattr(ps, method)(*args)
    assert notes == []


# -- through a connection ----------------------------------------------------------


def test_round_trip_commit_and_abort() -> None:
    storage = MemoryStorage()
    connection = Connection(storage)
    root = connection.get_root()
    root["s"] = PersistentSet([1, "a", (2, 3)])
    connection.commit()
    ps = root["s"]
    other = Connection(storage).get_root()["s"]
    assert isinstance(other, PersistentSet)
    assert other is not ps and other == ps

    ps.add(4)
    assert ps._p_is_unsaved() and ps._p_oid in connection.changed
    ps -= {1}
    connection.abort()
    assert ps.s == {1, "a", (2, 3)}

    ps.discard("a")
    connection.commit()
    assert Connection(storage).get_root()["s"].s == {1, (2, 3)}


# -- random operation sequences against set -----------------------------------------

elements = st.integers(-4, 4)
small_sets = st.sets(elements, max_size=4)


class SetAgainstBuiltin(RuleBasedStateMachine):
    """The same operations on a stored PersistentSet and on a set agree.

    Commits, aborts and fresh connections are mixed in.
    """

    def __init__(self) -> None:
        super().__init__()
        self.storage = MemoryStorage()
        self.connection = Connection(self.storage)
        self.ps = PersistentSet()
        self.connection.get_root()["s"] = self.ps
        self.connection.commit()
        self.model: set[Any] = set()
        self.committed: set[Any] = set()

    def both(self, method: str, *args: Any) -> None:
        expected = outcome(lambda: getattr(self.model, method)(*args))
        got = outcome(lambda: getattr(self.ps, method)(*args))
        if got[0] == "value" and isinstance(got[1], PersistentSet):
            got = ("value", got[1].s)
        assert got == expected, (method, args)

    @rule(x=elements)
    def add(self, x: int) -> None:
        self.both("add", x)

    @rule(x=elements)
    def discard(self, x: int) -> None:
        self.both("discard", x)

    @rule(x=elements)
    def remove(self, x: int) -> None:
        self.both("remove", x)

    @rule()
    def pop(self) -> None:
        if self.model:
            x = self.ps.pop()
            self.model.remove(x)
        else:
            with pytest.raises(KeyError):
                self.ps.pop()

    @rule()
    def clear(self) -> None:
        self.both("clear")

    @rule(
        method=st.sampled_from(
            ["update", "difference_update", "intersection_update", "symmetric_difference_update"]
        ),
        other=small_sets,
        wrap=st.booleans(),
    )
    def update_method(self, method: str, other: set[int], wrap: bool) -> None:
        argument: Any = PersistentSet(other) if wrap else other
        getattr(self.ps, method)(argument)
        getattr(self.model, method)(other)

    @rule(
        method=st.sampled_from(["__iand__", "__ior__", "__ixor__", "__isub__"]),
        other=small_sets,
    )
    def in_place(self, method: str, other: set[int]) -> None:
        assert getattr(self.ps, method)(other) is self.ps
        getattr(self.model, method)(other)

    @rule(
        method=st.sampled_from(
            [
                "__and__",
                "__or__",
                "__xor__",
                "__sub__",
                "__rand__",
                "__ror__",
                "__rxor__",
                "__rsub__",
                "union",
                "intersection",
                "difference",
                "symmetric_difference",
                "issubset",
                "issuperset",
                "isdisjoint",
            ]
        ),
        other=small_sets,
    )
    def non_mutating(self, method: str, other: set[int]) -> None:
        self.both(method, other)

    @rule(other=small_sets)
    def compare(self, other: set[int]) -> None:
        wrapped = PersistentSet(other)
        for op in ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__"):
            assert getattr(self.ps, op)(wrapped) == getattr(self.model, op)(other)

    @rule()
    def commit(self) -> None:
        self.connection.commit()
        self.committed = set(self.model)

    @rule()
    def abort(self) -> None:
        self.connection.abort()
        self.model = set(self.committed)

    @rule()
    def fresh_connection_sees_committed(self) -> None:
        assert Connection(self.storage).get_root()["s"].s == self.committed

    @invariant()
    def agrees(self) -> None:
        assert self.ps.s == self.model
        assert set(self.ps) == self.model
        assert len(self.ps) == len(self.model)
        for x in (-1, 0, 1):
            assert (x in self.ps) == (x in self.model)
        if self.ps._p_is_unsaved():
            assert self.ps._p_oid in self.connection.changed


SetAgainstBuiltin.TestCase.settings = settings(
    max_examples=100, stateful_step_count=40, deadline=None
)
TestSetAgainstBuiltin = SetAgainstBuiltin.TestCase


@settings(max_examples=150, deadline=None)
@given(small_sets, small_sets)
def test_binary_operators_agree_with_set(a: set[int], b: set[int]) -> None:
    pa, pb = PersistentSet(a), PersistentSet(b)
    assert (pa & pb).s == a & b
    assert (pa | b).s == a | b
    assert (a ^ pb).s == a ^ b
    assert (pa - pb).s == a - b
    assert (a - pb).s == a - b
    assert (pa <= pb) == (a <= b)
    assert (pa < pb) == (a < b)
    assert (pa == pb) == (a == b)
