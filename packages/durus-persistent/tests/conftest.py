"""Shared fixtures: a small multi-writer storage to exercise the conflict rules.

``SharedDatabase`` holds committed records; each ``SharedStorage`` is one
writer's view of it and, like a client of the Durus server, learns from
``sync()`` and ``end()`` which oids other writers changed since it last
asked, and gets a read conflict when loading such an oid.
"""

from __future__ import annotations

import pytest

from durus.error import DurusKeyError, ReadConflictError
from durus.storage import Storage
from durus.utils import int8_to_str


class SharedDatabase:
    def __init__(self) -> None:
        self.records: dict[bytes, bytes] = {}
        self.next_oid = 0
        self.writers: list[SharedStorage] = []

    def storage(self) -> SharedStorage:
        return SharedStorage(self)


class SharedStorage(Storage):
    def __init__(self, database: SharedDatabase) -> None:
        self.database = database
        self.invalid: set[bytes] = set()
        self.pending: dict[bytes, bytes] = {}
        database.writers.append(self)

    def new_oid(self) -> bytes:
        oid = int8_to_str(self.database.next_oid)
        self.database.next_oid += 1
        return oid

    def load(self, oid: bytes) -> bytes:
        if oid in self.invalid:
            raise ReadConflictError([oid])
        try:
            return self.database.records[oid]
        except KeyError:
            raise DurusKeyError(oid) from None

    def begin(self) -> None:
        self.pending = {}

    def store(self, oid: bytes, record: bytes) -> None:
        self.pending[oid] = record

    def end(self, handle_invalidations=None) -> None:
        invalid = sorted(self.invalid)
        self.invalid.clear()
        if invalid and handle_invalidations is not None:
            handle_invalidations(invalid)
        self.database.records.update(self.pending)
        for other in self.database.writers:
            if other is not self:
                other.invalid.update(self.pending)
        self.pending = {}

    def sync(self) -> list[bytes]:
        invalid = sorted(self.invalid)
        self.invalid.clear()
        return invalid


@pytest.fixture
def database() -> SharedDatabase:
    return SharedDatabase()
