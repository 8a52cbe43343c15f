"""Snapshot reads (``W``): the records an open snapshot still needs.

A client that syncs with ``W`` (``Connection(..., mvcc=True)``) reads the
database as of that list, its snapshot.  While any such snapshot is open,
each commit first saves the records it replaces, in memory, bounded by
``max_snapshot_history`` bytes.  A snapshot client's load of an oid changed
since its snapshot (one in its invalidation queue) is answered from there;
every other load reads the storage as before.  Saved copies do not depend on
the file, so a pack cannot make a snapshot read a wrong version: a record a
pack removed is marked unknown, and a snapshot that needs it, or that the
bounded history no longer reaches, gets ``H`` and a reason instead.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Iterable
from typing import Any

from durus.error import ReadConflictError
from durus.server_base import ServerBase
from durus.server_session import ClientSession

#: A replaced record that cannot be served (removed by a pack, or changed
#: by a writer outside this server).
UNKNOWN: Any = object()
#: ``record_as_of`` answer: nothing changed since the snapshot; load it.
CURRENT: Any = object()
#: Bookkeeping bytes counted per saved entry, beside the record itself.
_ENTRY_OVERHEAD = 64


class SnapshotGone(Exception):
    """The snapshot can no longer be served; ``str()`` says why."""


class SnapshotHistory:
    """Previous records by commit, for the open snapshots.

    ``save(seq, previous)`` records what commit ``seq`` replaced: oid ->
    the record before it, None (the oid had no record) or ``UNKNOWN``.  The
    history is complete for the commits after ``floor``; ``record_as_of``
    answers for a snapshot at ``floor`` or later.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.floor = 0
        self._commits: deque[tuple[int, list[bytes], int]] = deque()
        self._by_oid: dict[bytes, list[tuple[int, Any]]] = {}

    def __len__(self) -> int:
        return len(self._commits)

    def reset(self, seq: int) -> None:
        """Forget everything: no snapshot older than ``seq`` exists."""
        self._commits.clear()
        self._by_oid.clear()
        self.nbytes = 0
        self.floor = seq

    def save(self, seq: int, previous: dict[bytes, Any]) -> None:
        size = 0
        by_oid = self._by_oid
        for oid, record in previous.items():
            by_oid.setdefault(oid, []).append((seq, record))
            size += _ENTRY_OVERHEAD + (len(record) if isinstance(record, bytes) else 0)
        self._commits.append((seq, list(previous), size))
        self.nbytes += size
        while self.nbytes > self.max_bytes and self._commits:
            self._drop_oldest()

    def prune(self, oldest_snapshot: int) -> None:
        """Drop the commits that no open snapshot (all >= ``oldest_snapshot``) needs."""
        commits = self._commits
        while commits and commits[0][0] <= oldest_snapshot:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        seq, oids, size = self._commits.popleft()
        by_oid = self._by_oid
        for oid in oids:
            entries = by_oid[oid]
            del entries[0]
            if not entries:
                del by_oid[oid]
        self.nbytes -= size
        self.floor = max(self.floor, seq)

    def record_as_of(self, oid: bytes, snapshot: int) -> Any:
        """``oid``'s record for a snapshot taken after commit ``snapshot``.

        ``CURRENT`` (the storage has it), the saved bytes, or None (no such
        object then); raises ``SnapshotGone`` when it cannot be known.
        """
        if snapshot < self.floor:
            raise SnapshotGone(
                f"the server's snapshot history (max_snapshot_history={self.max_bytes} bytes) "
                "no longer reaches back to this snapshot: keep transactions shorter or "
                "raise the limit (durus -s --snapshot-history)"
            )
        entries = self._by_oid.get(oid)
        if not entries:
            return CURRENT
        index = bisect_right(entries, snapshot, key=_seq_of)
        if index == len(entries):
            return CURRENT
        record = entries[index][1]
        if record is UNKNOWN:
            raise SnapshotGone(
                f"oid {int.from_bytes(oid, 'big')} was removed by a pack (or changed outside "
                "this server) after this snapshot was taken"
            )
        return record


def _seq_of(entry: tuple[int, Any]) -> int:
    return entry[0]


class SnapshotReads(ServerBase):
    """``W``, snapshot loads, and keeping the history of the open snapshots."""

    def _on_snapshot_sync(self, client: ClientSession) -> None:
        """``W``: like ``S``, and the client reads as of this list from now on."""
        self.stats["snapshot_syncs"] += 1
        self._sync_storage()
        if not self._has_snapshots():
            self._history.reset(self._seq)
        data, _oids = self._take_list(client)
        client.snapshot = self._seq
        self._prune_history()
        self._reply(client, data)

    def _has_snapshots(self) -> bool:
        return any(client.snapshot is not None for client in self.clients)

    def _prune_history(self) -> None:
        snapshots = [c.snapshot for c in self.clients if c.snapshot is not None]
        if snapshots:
            self._history.prune(min(snapshots))
        else:
            self._history.reset(self._seq)

    def _previous_records(self, oids: Iterable[bytes]) -> dict[bytes, Any] | None:
        """What a commit writing ``oids`` replaces (None: no snapshot is open)."""
        if not self._has_snapshots():
            return None
        load = self.storage.load
        previous: dict[bytes, Any] = {}
        for oid in oids:
            try:
                previous[oid] = load(oid)
            except KeyError:
                previous[oid] = None
            except ReadConflictError:
                previous[oid] = UNKNOWN
        return previous

    def _save_history(self, previous: dict[bytes, Any] | None) -> None:
        """Keep what the commit just applied (``self._seq``) replaced."""
        if previous is not None:
            self._history.save(self._seq, previous)

    def _note_replaced(self, oids: Iterable[bytes]) -> None:
        """Records changed at ``self._seq`` without a copy (a pack, an outside writer)."""
        if self._has_snapshots():
            self._history.save(self._seq, dict.fromkeys(oids, UNKNOWN))

    def _snapshot_record(self, client: ClientSession, oid: bytes) -> bytes:
        """``oid`` as of ``client``'s snapshot; KeyError if it had none then."""
        assert client.snapshot is not None
        record = self._history.record_as_of(oid, client.snapshot)
        self.stats["snapshot_loads"] += 1
        if record is CURRENT:
            record = self.storage.load(oid)
        elif record is None:
            raise KeyError(oid)
        return record
