"""Generated runs of a snapshot reader beside a writer, on every storage that has two.

A writer changes items and commits; a reader in ``mvcc=True`` (with a cache
so small that most reads load) reads items and ends transactions, and reads
are interleaved with the writer's commits in every order.  The model is the
committed state when the reader's transaction began: every read must give
exactly that, never a ``ReadConflictError``, never a newer value.  Packs by
the writer (on the storages that serve them beside a snapshot) must not
change what the reader sees either, or must say the snapshot expired.
"""

from __future__ import annotations

import graph_strategies as gs
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from durus.error import SnapshotExpiredError
from durus.persistent_dict import PersistentDict
from durus.persistent_list import PersistentList

pytestmark = pytest.mark.timeout(7200 if gs.LARGE else 900)
ITEMS = 6


class SnapshotReads(RuleBasedStateMachine):
    kind = None  # set per storage kind

    @initialize()
    def open(self):
        self.db = self.kind.fresh()
        self.writer = self.db.connect()
        self.db.place(self.writer)["items"] = PersistentList(
            PersistentDict(v=0, n=k) for k in range(ITEMS))
        self.db.place(self.writer)["extra"] = PersistentDict(v=0)
        self.writer.commit()
        self.committed = [0] * ITEMS
        self.reader = self.db.reader(mvcc=True, cache_size=3)
        self.snapshot = list(self.committed)

    def teardown(self):
        self.db.close()

    @rule(k=st.integers(0, ITEMS - 1), value=st.integers(1, 10**6))
    def write(self, k, value):
        self.writer.abort()
        self.db.place(self.writer)["items"][k]["v"] = value
        self.writer.commit()
        self.committed[k] = value

    @rule(value=st.integers(1, 10**6))
    def replace_extra(self, value):
        """A new object replaces an old one: garbage for the next pack."""
        self.writer.abort()
        self.db.place(self.writer)["extra"] = PersistentDict(v=value)
        self.writer.commit()

    @rule(k=st.integers(0, ITEMS - 1))
    def read(self, k):
        try:
            seen = self.db.place(self.reader)["items"][k]["v"]
        except SnapshotExpiredError as expired:
            assert "pack" in expired.reason, expired.reason
            self.end_transaction()
            return
        assert seen == self.snapshot[k]

    @rule()
    def end_transaction(self):
        self.reader.commit()  # read-only: never a conflict
        self.snapshot = list(self.committed)

    @rule()
    def pack(self):
        if self.kind.name != "file":  # a FileStorage pack needs no reader beside it
            self.db.pack(self.writer)


@pytest.mark.parametrize("storage_kind", ["file", "server-tcp", "server-unix", "sqlite",
                                          "postgresql"], indirect=True)
def test_generated_snapshot_reads(storage_kind):
    machine = type(f"SnapshotReads_{storage_kind.name}", (SnapshotReads,),
                   {"kind": storage_kind})
    run_state_machine_as_test(machine, settings=gs.example_settings(10, stateful_step_count=25))
