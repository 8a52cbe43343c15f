"""The Durus 4.3 FileStorage surface (spec 6.4) and round trips through Connection."""

from __future__ import annotations

import io
import os

import pytest

from durus.btree import BTree
from durus.connection import Connection
from durus.error import DurusError, DurusKeyError
from durus.file_storage import FileStorage, FileStorageError, TempFileStorage
from durus.persistent import Persistent
from durus.persistent_dict import PersistentDict
from durus.persistent_list import PersistentList
from durus.serialize import split_oids, unpack_record
from durus.storage import Storage, get_census
from durus.utils import int8_to_str


class Thing(Persistent):
    def __init__(self, n):
        self.n = n


def test_attributes_and_str(tmp_path):
    path = str(tmp_path / "api.durus")
    storage = FileStorage(path)
    assert isinstance(storage, Storage)
    assert storage.get_filename() == path
    assert str(storage) == f"FileStorage({path!r})"
    assert storage.pending_records == {}
    assert storage.allocated_unused_oids == set()
    assert storage.pack_extra is None
    assert storage.invalid == set()
    assert storage.shelf.get_file().get_name() == path
    assert not storage.shelf.get_file().is_temporary()
    assert storage.fsync is True
    assert FileStorage.has_format(path)
    with open(path, "rb") as f:
        assert FileStorage.has_format(f)
    assert not FileStorage.has_format(io.BytesIO(b"DFS20\0"))
    assert not FileStorage.has_format(str(tmp_path / "missing"))
    storage.close()
    storage.close()  # closing twice is harmless


def test_temp_file_storage():
    storage = TempFileStorage()
    path = storage.get_filename()
    assert os.path.exists(path)
    assert storage.shelf.get_file().is_temporary()
    connection = Connection(storage)
    connection.get_root()["x"] = PersistentList([1])
    connection.commit()
    assert list(storage.get_packer()) == []  # never packed, as in Durus 4.3
    storage.close()
    assert not os.path.exists(path)
    assert FileStorage().get_filename() != path


def test_round_trip_many_objects(tmp_path):
    path = str(tmp_path / "many.durus")
    connection = Connection(FileStorage(path))
    root = connection.get_root()
    root["tree"] = tree = BTree()
    for i in range(3000):
        tree[i] = Thing(i)
        if i % 500 == 0:
            connection.commit()
    root["list"] = PersistentList(range(100))
    connection.commit()
    connection.get_storage().close()
    for readonly in (False, True):
        storage = FileStorage(path, readonly=readonly)
        connection = Connection(storage)
        tree = connection.get_root()["tree"]
        assert len(tree) == 3000
        assert all(tree[i].n == i for i in range(0, 3000, 7))
        assert list(connection.get_root()["list"]) == list(range(100))
        census = get_census(storage)
        assert census[b"Thing"] == 3000
        storage.close()


def test_objects_referring_to_themselves_read_back_after_reopen_and_pack(tmp_path):
    # Their refs trailer leaves out their own oid, so it is empty although
    # their state refers to a persistent object (issue 12's unreadable files).
    path = str(tmp_path / "self.durus")
    connection = Connection(FileStorage(path))
    root = connection.get_root()
    mapping = PersistentDict()
    mapping["me"] = mapping
    thing = Thing([None])
    thing.n[0] = thing
    root.update(mapping=mapping, thing=thing)
    connection.commit()
    assert unpack_record(connection.storage.load(mapping._p_oid))[2] == b""
    connection.storage.close()
    for step in ("reopen", "pack"):
        connection = Connection(FileStorage(path))
        if step == "pack":
            connection.pack()
            connection.storage.close()
            connection = Connection(FileStorage(path))
        root = connection.get_root()
        assert root["mapping"]["me"] is root["mapping"]
        assert root["thing"].n == [root["thing"]]
        connection.storage.close()


def test_load_errors(tmp_path):
    storage = FileStorage(str(tmp_path / "e.durus"))
    with pytest.raises(DurusKeyError):
        storage.load(int8_to_str(5))
    with pytest.raises(KeyError):
        storage.load(b"short")
    storage.close()


def test_gen_oid_record(tmp_path):
    path = str(tmp_path / "g.durus")
    connection = Connection(FileStorage(path))
    root = connection.get_root()
    root["a"] = PersistentDict({"b": PersistentList([1])})
    root["garbage"] = PersistentList([2])
    connection.commit()
    a, b = root["a"]._p_oid, root["a"]["b"]._p_oid
    assert sorted([a, b, root["garbage"]._p_oid]) == [int8_to_str(n) for n in (1, 2, 3)]
    del root["garbage"]
    connection.commit()
    storage = connection.get_storage()
    everything = dict(storage.gen_oid_record())
    assert len(everything) == 4  # every record in the file, garbage included
    reachable = list(storage.gen_oid_record(start_oid=int8_to_str(0)))
    assert [o for o, _r in reachable] == [int8_to_str(0), a, b]
    for name, record in reachable:
        assert record == storage.load(name)
        assert unpack_record(record)[0] == name
    seen = {0}
    assert [o for o, _r in storage.gen_oid_record(start_oid=a, seen=seen)] == [a, b]
    assert seen == {0, int.from_bytes(a, "big"), int.from_bytes(b, "big")}
    refs = split_oids(unpack_record(storage.load(int8_to_str(0)))[2])
    assert refs == [a]
    assert list(storage.bulk_load([b, int8_to_str(0)])) == [
        storage.load(b),
        storage.load(int8_to_str(0)),
    ]
    crawled = list(connection.get_crawler())
    assert len(crawled) == 3
    storage.close()


def test_read_only_storage_refuses_commits(tmp_path):
    path = str(tmp_path / "ro.durus")
    FileStorage(path).close()
    storage = FileStorage(path, readonly=True)
    with pytest.raises(FileStorageError, match="read-only"):
        Connection(storage)  # creating the root needs a commit
    assert list(storage.get_packer()) == []
    storage.close()
    with pytest.raises(FileNotFoundError):
        FileStorage(str(tmp_path / "missing.durus"), readonly=True)
    with pytest.raises(ValueError, match="repair"):
        FileStorage(path, readonly=True, repair=True)
    assert issubclass(FileStorageError, DurusError)


def test_closed_storage_refuses_commits(tmp_path):
    storage = FileStorage(str(tmp_path / "c.durus"))
    storage.close()
    storage.begin()
    storage.store(int8_to_str(0), int8_to_str(0) + bytes(4))
    with pytest.raises(FileStorageError, match="closed"):
        storage.end()


def test_abort_and_commit_cycles_keep_state(tmp_path):
    path = str(tmp_path / "cycle.durus")
    connection = Connection(FileStorage(path))
    root = connection.get_root()
    root["n"] = 1
    connection.commit()
    root["n"] = 2
    connection.abort()
    assert root["n"] == 1
    connection.get_storage().close()
    assert Connection(FileStorage(path, readonly=True)).get_root()["n"] == 1


def test_fsync_false_is_durus_speed_mode(tmp_path):
    path = str(tmp_path / "nofsync.durus")
    storage = FileStorage(path, fsync=False)
    assert storage.fsync is False
    connection = Connection(storage)
    connection.get_root()["x"] = 1
    connection.commit()
    storage.flush_to_disk()  # a no-op without fsync
    storage.close()
    assert Connection(FileStorage(path)).get_root()["x"] == 1


def test_path_like_filename(tmp_path):
    storage = FileStorage(tmp_path / "pathlike.durus")
    assert storage.get_filename() == str(tmp_path / "pathlike.durus")
    storage.close()


def test_relative_filename_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = FileStorage("rel.durus")
    assert storage.get_filename() == str(tmp_path / "rel.durus")
    storage.close()
