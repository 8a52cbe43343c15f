"""Durus's conflict rules (spec 5.6-5.10), with two writers on one database."""

from __future__ import annotations

import pytest

from durus.connection import Connection
from durus.error import ConflictError, ReadConflictError, WriteConflictError
from durus.persistent import GHOST, UNSAVED, Persistent


class Item(Persistent):
    def __init__(self, value):
        self.value = value


@pytest.fixture
def pair(database):
    first = Connection(database.storage())
    root = first.get_root()
    root["a"] = Item(1)
    root["b"] = Item(2)
    first.commit()
    second = Connection(database.storage())
    return first, second


def test_write_write_conflict_then_abort_recovers(pair):
    first, second = pair
    a1 = first.get_root()["a"]
    a2 = second.get_root()["a"]
    assert a2.value == 1
    a1.value = 10
    first.commit()
    a2.value = 20
    with pytest.raises(WriteConflictError) as info:
        second.commit()
    assert info.value.oids == [a2._p_oid]
    # The failed commit leaves the change pending (Durus 4.3 marked it saved).
    assert a2._p_status == UNSAVED
    second.abort()
    assert a2._p_status == GHOST
    assert a2.value == 10
    a2.value = 30
    second.commit()
    first.abort()
    assert a1.value == 30


def test_blind_write_still_conflicts(pair):
    first, second = pair
    a2 = second.get_root()["a"]
    a2.value  # loaded in an earlier transaction
    second.abort()
    first.get_root()["a"].value = 10
    first.commit()
    a2.value = 20  # a write without reading first
    with pytest.raises(WriteConflictError):
        second.commit()


def test_objects_not_used_are_ghosted_silently(pair):
    first, second = pair
    root2 = second.get_root()
    a2 = root2["a"]
    assert a2.value == 1
    second.abort()  # a2 is cached but not used in the next transaction
    first.get_root()["a"].value = 10
    first.commit()
    root2["c"] = Item(3)
    second.commit()
    assert a2._p_status == GHOST
    assert a2.value == 10


def test_commit_without_changes_syncs_without_conflict(pair):
    first, second = pair
    a2 = second.get_root()["a"]
    assert a2.value == 1
    first.get_root()["a"].value = 10
    first.commit()
    second.commit()  # nothing changed: a plain sync
    assert a2.value == 10


def test_read_conflict_when_a_load_reveals_a_used_object_changed(pair):
    first, second = pair
    root2 = second.get_root()
    a2 = root2["a"]
    b2 = root2["b"]
    assert a2.value == 1  # a2 used in this transaction, b2 still a ghost
    assert b2._p_status == GHOST
    root1 = first.get_root()
    root1["a"].value = 10
    root1["b"].value = 20
    first.commit()
    with pytest.raises(ReadConflictError) as info:
        b2.value
    assert info.value.oids == [b2._p_oid]
    # Still conflicted until abort: loads and commits are refused.
    with pytest.raises(ReadConflictError):
        second.get(a2._p_oid)._p_load_state()
    root2["x"] = 1
    with pytest.raises(ConflictError):
        second.commit()
    second.abort()
    assert (a2.value, b2.value) == (10, 20)


def test_loading_a_changed_object_not_used_is_fine(pair):
    first, second = pair
    b2 = second.get_root()["b"]
    first.get_root()["b"].value = 20
    first.commit()
    assert b2.value == 20


def test_changed_but_unread_object_invalidated_during_load(pair):
    # Durus 4.3 failed with AssertionError here (spec 5.9); we raise a conflict.
    first, second = pair
    root2 = second.get_root()
    a2, b2 = root2["a"], root2["b"]
    assert a2.value == 1
    second.abort()
    a2.value = 5  # blind write: changed, not accessed
    root1 = first.get_root()
    root1["a"].value = 10
    root1["b"].value = 20
    first.commit()
    with pytest.raises(ReadConflictError):
        b2.value
    second.abort()
    assert a2.value == 10


def test_new_objects_of_a_failed_commit_are_detached(pair):
    first, second = pair
    a2 = second.get_root()["a"]
    a2.value
    first.get_root()["a"].value = 10
    first.commit()
    fresh = Item(99)
    a2.value = fresh
    with pytest.raises(WriteConflictError):
        second.commit()
    assert fresh._p_oid is None and fresh._p_connection is None
    assert fresh._p_status == UNSAVED
    second.abort()
    root2 = second.get_root()
    root2["fresh"] = fresh
    second.commit()
    assert fresh._p_oid is not None
    first.abort()
    assert first.get_root()["fresh"].value == 99
