"""The Storage base and MemoryStorage, and the record-walking helpers."""

from __future__ import annotations

import pytest

from durus.connection import Connection
from durus.error import DurusKeyError
from durus.persistent import Persistent
from durus.storage import (
    MemoryStorage,
    Storage,
    gen_oid_class,
    gen_referring_oid_record,
    get_census,
    get_reference_index,
)
from durus.utils import int8_to_str


class Thing(Persistent):
    pass


def test_storage_is_abstract():
    with pytest.raises(RuntimeError):
        Storage()


def test_memory_storage_basics():
    storage = MemoryStorage()
    assert [storage.new_oid() for _ in range(3)] == [int8_to_str(i) for i in range(3)]
    with pytest.raises(DurusKeyError) as info:
        storage.load(int8_to_str(7))
    assert isinstance(info.value, KeyError)
    assert str(info.value) == "no object with oid 7"
    storage.begin()
    storage.store(int8_to_str(0), b"record")
    with pytest.raises(KeyError):
        storage.load(int8_to_str(0))  # not visible before end()
    storage.end()
    assert storage.load(int8_to_str(0)) == b"record"
    assert storage.sync() == []
    assert list(storage.bulk_load([int8_to_str(0)])) == [b"record"]
    assert storage.get_packer() is None


@pytest.fixture
def populated():
    storage = MemoryStorage()
    connection = Connection(storage)
    root = connection.get_root()
    a, b = Thing(), Thing()
    a.peer = b
    root["a"] = a
    root["b"] = b
    connection.commit()
    return storage, a._p_oid, b._p_oid


def test_gen_oid_record_walks_from_the_root(populated):
    storage, a, b = populated
    assert [oid for oid, _ in storage.gen_oid_record()] == [int8_to_str(0), a, b]
    assert [oid for oid, _ in storage.gen_oid_record(start_oid=a, batch_size=1)] == [a, b]


def test_census_and_reference_helpers(populated):
    storage, a, b = populated
    assert get_census(storage) == {b"PersistentDict": 1, b"Thing": 2}
    assert list(gen_oid_class(storage, b"Thing")) == [(a, b"Thing"), (b, b"Thing")]
    index = get_reference_index(storage)
    assert index[a] == [int8_to_str(0)]
    assert sorted(index[b]) == [int8_to_str(0), a]
    assert [oid for oid, _ in gen_referring_oid_record(storage, b)] == [int8_to_str(0), a]


def test_memory_storage_pack_reports_removed_oids(populated):
    storage, a, b = populated
    connection = Connection(storage)
    del connection.get_root()["a"]
    del connection.get_root()["b"]
    connection.commit()
    storage.pack()
    assert set(storage.records) == {int8_to_str(0)}
    assert storage.sync() == [a, b]
    assert storage.sync() == []
