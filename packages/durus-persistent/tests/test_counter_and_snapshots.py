"""Conflict resolution (``_p_resolve_conflict``, ``Counter``) and the ``mvcc`` switch.

The multi-writer cases run on the ``database`` fixture (writers that learn of
each other's commits as a server's clients do); the server, SQL and
multi-process cases are in packages/durus/tests.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durus.connection import Connection
from durus.error import (
    ConflictError,
    ReadConflictError,
    SnapshotExpiredError,
    SnapshotsUnsupportedError,
    WriteConflictError,
)
from durus.persistent import Persistent
from durus.persistent_counter import Counter
from durus.serialize import unpack_record
from durus.storage import MemoryStorage, Storage


class Item(Persistent):
    def __init__(self, value):
        self.value = value


class MaxRegister(Persistent):
    """Merges by keeping the larger value; refuses to merge negative values."""

    def __init__(self, value=0):
        self.value = value

    def _p_resolve_conflict(self, old_state, saved_state, new_state):
        if new_state["value"] < 0 or saved_state["value"] < 0:
            raise ConflictError()
        return {"value": max(saved_state["value"], new_state["value"])}


def _writers(database, count, **root):
    first = Connection(database.storage())
    first.get_root().update(root)
    first.commit()
    return [first] + [Connection(database.storage()) for _ in range(count - 1)]


def test_counter_behaves_as_an_integer():
    counter = Counter(5)
    counter.change(3)
    counter.change(-1)
    assert counter.value == counter() == int(counter) == 7
    assert [10, 20, 30, 40, 50, 60, 70, 80][counter] == 80  # __index__
    assert "value=7" in repr(counter)


def test_counter_record_names_its_class():
    connection = Connection(MemoryStorage())
    connection.get_root()["hits"] = Counter(1)
    connection.commit()
    oid = connection.get_root()["hits"]._p_oid
    data = unpack_record(connection.get_storage().load(oid))[1]
    assert b"durus.persistent_counter" in data and b"Counter" in data


def test_concurrent_counter_changes_merge(database):
    first, second = _writers(database, 2, hits=Counter())
    first.get_root()["hits"].change(2)
    second.get_root()["hits"].change(5)
    first.commit()
    second.commit()  # conflicts on "hits", which merges: no error
    first.abort()
    assert first.get_root()["hits"].value == 7
    assert second.get_root()["hits"].value == 7


def test_a_merge_is_repeated_when_others_keep_committing(database):
    writers = _writers(database, 3, hits=Counter())
    for round_ in range(3):
        for delta, connection in enumerate(writers, start=1):
            connection.get_root()["hits"].change(delta * 10**round_)
        for connection in writers:
            connection.commit()
    writers[0].abort()
    assert writers[0].get_root()["hits"].value == 6 + 60 + 600


def test_a_refusing_resolver_leaves_the_conflict(database):
    first, second = _writers(database, 2, top=MaxRegister(1))
    first.get_root()["top"].value = -5
    second.get_root()["top"].value = 3
    first.commit()
    with pytest.raises(ConflictError):
        second.commit()
    second.abort()
    assert second.get_root()["top"].value == -5


def test_resolver_merge_keeps_the_larger_value(database):
    first, second = _writers(database, 2, top=MaxRegister(1))
    first.get_root()["top"].value = 9
    second.get_root()["top"].value = 4
    first.commit()
    second.commit()
    first.abort()
    assert first.get_root()["top"].value == 9


def test_a_conflict_on_an_object_that_cannot_merge_is_not_merged(database):
    first, second = _writers(database, 2, hits=Counter(), item=Item(1))
    first.get_root()["hits"].change(1)
    first.get_root()["item"].value = 2
    second.get_root()["hits"].change(1)
    second.get_root()["item"].value = 3
    first.commit()
    with pytest.raises(WriteConflictError) as info:
        second.commit()
    assert second.get_root()["item"]._p_oid in info.value.oids
    second.abort()
    assert second.get_root()["hits"].value == 1
    assert second.get_root()["item"].value == 2


def test_a_counter_only_read_still_conflicts(database):
    """Merging is for changes: a transaction that read a changed counter and
    wrote something else is not serializable, so it conflicts as before."""
    first, second = _writers(database, 2, hits=Counter(), item=Item(1))
    seen = second.get_root()["hits"].value
    first.get_root()["hits"].change(1)
    first.commit()
    second.get_root()["item"].value = seen
    with pytest.raises(WriteConflictError):
        second.commit()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(-50, 50), st.booleans()), max_size=40))
def test_generated_counter_changes_add_up(database, steps):
    """Any interleaving of changes and commits by three writers: the committed
    value is the sum of every committed change, and nobody sees a conflict."""
    writers = _writers(type(database)(), 3, hits=Counter())
    pending = [0, 0, 0]
    committed = 0
    for who, delta, commit in steps:
        writers[who].get_root()["hits"].change(delta)
        pending[who] += delta
        if commit:
            writers[who].commit()
            committed += pending[who]
            pending[who] = 0
    for who, connection in enumerate(writers):
        connection.commit()
        committed += pending[who]
    writers[0].abort()
    assert writers[0].get_root()["hits"].value == committed


def test_mvcc_on_a_memory_storage():
    connection = Connection(MemoryStorage(), mvcc=True)
    assert connection.mvcc
    connection.get_root()["item"] = Item(1)
    connection.commit()
    connection.get_root()["item"].value = 2
    connection.abort()
    assert connection.get_root()["item"].value == 1


def test_mvcc_needs_a_storage_with_snapshots(database):
    with pytest.raises(SnapshotsUnsupportedError, match="SharedStorage"):
        Connection(database.storage(), mvcc=True)
    assert not Connection(database.storage()).mvcc


def test_the_default_storage_offers_no_snapshots():
    class Plain(MemoryStorage):
        enable_snapshots = Storage.enable_snapshots

    with pytest.raises(SnapshotsUnsupportedError, match="Plain does not offer snapshot reads"):
        Connection(Plain(), mvcc=True)


def test_snapshot_expired_error_is_a_conflict_with_a_reason():
    error = SnapshotExpiredError("the history window was exceeded", [b"\0" * 7 + b"\5"])
    assert isinstance(error, ConflictError) and not isinstance(error, ReadConflictError)
    assert error.reason == "the history window was exceeded"
    assert str(error) == "snapshot expired: the history window was exceeded (oids=[5])"
