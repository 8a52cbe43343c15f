"""The storage interface every backend implements, and an in-memory storage.

A storage keeps records by oid and applies a commit atomically:
``begin()``, ``store()`` per record, then ``end()``.  ``sync()`` returns the
oids other writers changed (or a pack removed) since the last call, which is
how connections learn what to invalidate.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from durus.error import DurusKeyError, SnapshotsUnsupportedError
from durus.serialize import extract_class_name, split_oids, unpack_record
from durus.utils import int8_to_str

__all__ = [
    "MemoryStorage",
    "Storage",
    "gen_oid_class",
    "gen_reachable_records",
    "gen_referring_oid_record",
    "get_census",
    "get_reference_index",
]

#: The oid of the root object: the one definition (the other modules import it).
ROOT_OID = int8_to_str(0)


class Storage:
    """Base class of storages: subclasses implement the transaction methods."""

    def __init__(self) -> None:
        raise RuntimeError("Storage is abstract: use a concrete storage class")

    def load(self, oid: bytes) -> bytes:
        """The record of ``oid``; ``DurusKeyError`` when there is none."""
        raise NotImplementedError

    def begin(self) -> None:
        raise NotImplementedError

    def store(self, oid: bytes, record: bytes) -> None:
        raise NotImplementedError

    def end(self, handle_invalidations: Callable[[list[bytes]], None] | None = None) -> None:
        raise NotImplementedError

    def sync(self) -> list[bytes]:
        raise NotImplementedError

    def new_oid(self) -> bytes:
        raise NotImplementedError

    def enable_snapshots(self) -> None:
        """Serve this storage's user one consistent snapshot per transaction.

        ``Connection(..., mvcc=True)`` calls it once, before its first load.
        From then on the storage keeps this contract:

        * ``sync()`` starts a new snapshot: the database as it is now.  It
          returns the oids changed since the previous snapshot, as always.
        * ``load()`` returns records as of the current snapshot and never
          raises ``ReadConflictError``; if it can no longer do so it raises
          ``SnapshotExpiredError``.
        * ``end()`` passes ``handle_invalidations`` every oid changed by
          others since the snapshot, so the connection can refuse a commit
          that read something stale (writers stay serializable).  After a
          successful ``end()`` the snapshot is the database just after this
          commit: the next ``sync()`` may return ``[]`` without asking
          anyone.  After a failed one, loads may see the newer state the
          commit was judged against; changes not returned yet come with the
          next ``end()`` or ``sync()``.

        A storage that cannot keep it raises ``SnapshotsUnsupportedError``
        naming the reason (the default).
        """
        raise SnapshotsUnsupportedError(
            f"{type(self).__name__} does not offer snapshot reads (Connection(mvcc=True))"
        )

    def close(self) -> None:
        pass

    def get_packer(self) -> Iterator[Any] | None:
        return None

    def pack(self) -> None:
        return None

    def bulk_load(self, oids: Iterable[bytes]) -> Iterator[bytes]:
        for oid in oids:
            yield self.load(oid)

    def gen_oid_record(
        self, start_oid: bytes | None = None, batch_size: int = 100
    ) -> Iterator[tuple[bytes, bytes]]:
        """``(oid, record)`` of every object reachable from ``start_oid`` (the root)."""
        return gen_reachable_records(self, ROOT_OID if start_oid is None else start_oid, batch_size)

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _OidSet(Protocol):
    def __contains__(self, n: object, /) -> bool: ...
    def add(self, n: int, /) -> None: ...


def gen_reachable_records(
    storage: Storage, start_oid: bytes, batch_size: int = 100, seen: _OidSet | None = None
) -> Iterator[tuple[bytes, bytes]]:
    """``(oid, record)`` of everything reachable from ``start_oid`` through refs.

    A min-heap of oids, loaded ``batch_size`` at a time with ``bulk_load``.
    ``seen`` holds the oid *numbers* to skip and is filled as the walk goes
    (a storage may pass a compact bitmap instead of the default set).
    """
    if seen is None:
        seen = set()
    todo = [start_oid]
    while todo:
        batch: list[bytes] = []
        while todo and len(batch) < batch_size:
            oid = heapq.heappop(todo)
            n = int.from_bytes(oid, "big")
            if n not in seen:
                seen.add(n)
                batch.append(oid)
        for oid, record in zip(batch, storage.bulk_load(batch), strict=True):
            yield oid, record
            for ref in split_oids(unpack_record(record)[2]):
                if int.from_bytes(ref, "big") not in seen:
                    heapq.heappush(todo, ref)


def gen_referring_oid_record(
    storage: Storage, referred_oid: bytes
) -> Iterator[tuple[bytes, bytes]]:
    """``(oid, record)`` of every record whose refs include ``referred_oid``."""
    for oid, record in storage.gen_oid_record():
        if referred_oid in split_oids(unpack_record(record)[2]):
            yield oid, record


def gen_oid_class(storage: Storage, *class_names: bytes) -> Iterator[tuple[bytes, Any]]:
    """``(oid, class name)`` of every record, only the named classes if given."""
    for oid, record in storage.gen_oid_record():
        class_name = extract_class_name(record)
        if not class_names or class_name in class_names:
            yield oid, class_name


def get_census(storage: Storage) -> dict[Any, int]:
    """How many records of each class name the storage holds."""
    census: dict[Any, int] = {}
    for _oid, class_name in gen_oid_class(storage):
        census[class_name] = census.get(class_name, 0) + 1
    return census


def get_reference_index(storage: Storage) -> dict[bytes, list[bytes]]:
    """For every referenced oid, the oids of the records that refer to it."""
    index: dict[bytes, list[bytes]] = {}
    for oid, record in storage.gen_oid_record():
        for ref in split_oids(unpack_record(record)[2]):
            index.setdefault(ref, []).append(oid)
    return index


class MemoryStorage(Storage):
    """Records in a dict: for tests and for data that need not survive the process."""

    def __init__(self) -> None:
        self.records: dict[bytes, bytes] = {}
        self.transaction: dict[bytes, bytes] | None = None
        self.oid = -1
        self._invalid: set[bytes] = set()

    def new_oid(self) -> bytes:
        self.oid += 1
        return int8_to_str(self.oid)

    def enable_snapshots(self) -> None:
        """Nothing to do: one process owns the records, and nobody else commits."""

    def load(self, oid: bytes) -> bytes:
        try:
            return self.records[oid]
        except KeyError:
            raise DurusKeyError(oid) from None

    def begin(self) -> None:
        self.transaction = {}

    def store(self, oid: bytes, record: bytes) -> None:
        if self.transaction is None:
            self.begin()
        assert self.transaction is not None
        self.transaction[oid] = record

    def end(self, handle_invalidations: Callable[[list[bytes]], None] | None = None) -> None:
        if self.transaction:
            self.records.update(self.transaction)
        self.transaction = None

    def sync(self) -> list[bytes]:
        invalid = sorted(self._invalid)
        self._invalid.clear()
        return invalid

    def pack(self) -> None:
        """Drop every record not reachable from the root."""
        if ROOT_OID not in self.records:
            return
        reachable = {oid for oid, _record in self.gen_oid_record()}
        removed = set(self.records) - reachable
        for oid in removed:
            del self.records[oid]
        self._invalid.update(removed)
