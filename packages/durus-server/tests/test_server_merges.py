"""Conflict resolution through a real server: merges inside the commit (``Y``).

The server sends the committed records with its review; the client merges
and answers with the merged commit in the same exchange.  A merge that needs
new objects takes the general path (abandon, merge, commit again).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durus.connection import Connection
from durus.error import ConflictError
from durus.persistent import Persistent
from durus.persistent_counter import Counter
from durus.persistent_dict import PersistentDict


class Ceiling(Persistent):
    """Merges to the larger value; refuses negative ones."""

    def __init__(self):
        self.value = 0

    def _p_resolve_conflict(self, old_state, saved_state, new_state):
        if min(saved_state["value"], new_state["value"]) < 0:
            raise ConflictError()
        return {"value": max(saved_state["value"], new_state["value"])}


class Journal(Persistent):
    """Merges by keeping both sides' new entries, and notes the merge in a new
    persistent object (which only the general commit path can store)."""

    def __init__(self):
        self.entries = []
        self.note = None

    def _p_resolve_conflict(self, old_state, saved_state, new_state):
        known = len(old_state["entries"])
        return {"entries": saved_state["entries"] + new_state["entries"][known:],
                "note": PersistentDict(merged=True)}


def _pair(server, **root):
    first = server.connection()
    first.get_root().update(root)
    first.commit()
    return first, server.connection()


def test_a_counter_conflict_merges_inside_the_commit(start_server):
    server = start_server()
    first, second = _pair(server, hits=Counter())
    first.get_root()["hits"].change(2)
    second.get_root()["hits"].change(5)
    first.commit()
    second.commit()
    stats = second.get_storage().get_server_stats()
    assert stats["merges"] == 1 and stats["conflicts"] == 0
    first.abort()
    assert first.get_root()["hits"].value == second.get_root()["hits"].value == 7
    # The merged state is where the next merge starts from.
    first.get_root()["hits"].change(1)
    second.get_root()["hits"].change(1)
    second.commit()
    first.commit()
    second.abort()
    assert second.get_root()["hits"].value == 9


def test_a_refused_merge_is_a_conflict_and_the_client_goes_on(start_server):
    server = start_server()
    first, second = _pair(server, top=Ceiling())
    first.get_root()["top"].value = -1
    second.get_root()["top"].value = 3
    first.commit()
    with pytest.raises(ConflictError):
        second.commit()
    second.abort()
    assert second.get_root()["top"].value == -1
    second.get_root()["top"].value = 4
    second.commit()  # the connection is in step with the server again
    first.abort()
    assert first.get_root()["top"].value == 4


def test_a_merge_that_needs_new_objects_takes_the_general_path(start_server):
    server = start_server()
    first, second = _pair(server, journal=Journal())
    first.get_root()["journal"].entries = [PersistentDict(by="first")]
    second.get_root()["journal"].entries = [PersistentDict(by="second")]
    first.commit()
    second.commit()
    assert second.get_storage().get_server_stats()["merges"] == 0  # abandoned, merged, again
    first.abort()
    journal = first.get_root()["journal"]
    assert [e["by"] for e in journal.entries] == ["first", "second"]
    assert journal.note["merged"] is True


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(-9, 9), st.booleans()), max_size=25))
def test_generated_counter_changes_through_the_server_add_up(start_server, steps):
    """Three clients (one in mvcc) change a counter in any order: the committed
    value is the sum of what they committed, and none of them sees a conflict."""
    server = _example_server(start_server)
    setup = server.connection()
    key = f"hits{len(setup.get_root())}"
    setup.get_root()[key] = Counter()
    setup.commit()
    clients = [server.connection(), server.connection(),
               Connection(server.client(), mvcc=True)]
    pending = [0, 0, 0]
    committed = 0
    for who, delta, commit in steps:
        clients[who].get_root()[key].change(delta)
        pending[who] += delta
        if commit:
            clients[who].commit()
            committed += pending[who]
            pending[who] = 0
    for who, connection in enumerate(clients):
        connection.commit()
        committed += pending[who]
        connection.get_storage().close()
    setup.abort()
    assert setup.get_root()[key].value == committed
    setup.get_storage().close()


_servers: dict[int, object] = {}


def _example_server(start_server):
    """One server for all the examples of a run (the fixture is not renewed
    between examples), each example on a counter of its own."""
    server = _servers.get(id(start_server))
    if server is None or not server.alive():
        _servers.clear()
        server = _servers[id(start_server)] = start_server(storage="memory")
    return server


def test_approving_a_review_that_names_what_it_writes_is_refused(start_server):
    """A client that ignores its review (no handler: it approves everything) cannot
    overwrite a commit it was told about, merging client or not."""
    from durus.error import WriteConflictError

    server = start_server()
    first, second = _pair(server, hits=Counter())
    oid = second.get_root()["hits"]._p_oid
    first.get_root()["hits"].change(1)
    first.commit()
    storage = second.get_storage()
    assert storage._use_merging  # a Y commit: reviews carry records
    storage.begin()
    storage.store(oid, storage.load(oid))  # the stale record, written back blindly
    with pytest.raises(WriteConflictError):
        storage.end(None)
    first.abort()
    assert first.get_root()["hits"].value == 1
