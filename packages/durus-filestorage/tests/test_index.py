"""The side index ``<file>.index``: opening without rescanning, and never trusting a stale one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent_list import PersistentList
from durus.utils import int8_to_str


def build(path: str, commits: int = 30) -> dict[bytes, bytes]:
    connection = Connection(FileStorage(path))
    root = connection.get_root()
    for i in range(commits):
        root[i] = PersistentList([i] * 20)
        connection.commit()
    storage = connection.get_storage()
    records = dict(storage.gen_oid_record())
    storage.close()
    return records


def append_raw_transaction(path: str, name: bytes, record: bytes) -> None:
    """Append a commit the way any other SHELF writer (e.g. Durus 4.3) would."""
    item = (8 + len(record)).to_bytes(8, "big") + name + record
    with open(path, "ab") as f:
        f.write(len(item).to_bytes(8, "big") + item)


def test_reopening_uses_the_index(tmp_path):
    path = str(tmp_path / "i.durus")
    records = build(path)
    assert os.path.exists(path + ".index")
    for readonly in (False, True):
        storage = FileStorage(path, readonly=readonly)
        assert storage.shelf.open_scan_bytes == 0
        assert dict(storage.gen_oid_record()) == records
        storage.close()


def test_read_only_open_does_not_write_an_index(tmp_path):
    path = str(tmp_path / "ro.durus")
    build(path)
    os.unlink(path + ".index")
    storage = FileStorage(path, readonly=True)
    assert storage.shelf.open_scan_bytes > 0
    storage.close()
    assert not os.path.exists(path + ".index")


def test_transactions_after_the_index_are_scanned(tmp_path):
    path = str(tmp_path / "after.durus")
    records = build(path)
    size = os.path.getsize(path)
    name = int8_to_str(1)
    record = name + (2).to_bytes(4, "big") + b"hi"
    append_raw_transaction(path, name, record)
    storage = FileStorage(path)
    assert storage.shelf.open_scan_bytes == os.path.getsize(path) - size
    assert storage.load(name) == record
    records[name] = record
    assert dict(storage.gen_oid_record()) == records
    storage.close()
    storage = FileStorage(path)
    assert storage.shelf.open_scan_bytes == 0
    storage.close()


def test_an_index_of_another_file_is_ignored(tmp_path):
    path = str(tmp_path / "a.durus")
    other = str(tmp_path / "b.durus")
    build(path, commits=30)
    records_b = build(other, commits=12)
    shutil.copyfile(path + ".index", str(tmp_path / "saved.index"))
    shutil.copyfile(other, path)  # the database replaced behind the index's back
    shutil.copyfile(str(tmp_path / "saved.index"), path + ".index")
    storage = FileStorage(path)
    assert storage.shelf.open_scan_bytes == os.path.getsize(path) - storage.shelf.map_end
    assert dict(storage.gen_oid_record()) == records_b
    storage.close()


def test_a_truncated_or_rewritten_database_is_noticed(tmp_path):
    path = str(tmp_path / "t.durus")
    build(path)
    data = Path(path).read_bytes()
    index = Path(path + ".index").read_bytes()
    # The same file with its last transaction replaced by another of the same length.
    storage = FileStorage(path)
    last = storage.shelf.last_start
    storage.close()
    with open(path, "wb") as f:
        f.write(data[:last])
    name = int8_to_str(0)
    record = storage_record = name + (0).to_bytes(4, "big")
    filler = data[last:]
    padding = len(filler) - 8 - 8 - 8 - len(record)
    record = storage_record + bytes(8 * (padding // 8))
    append_raw_transaction(path, name, record)
    with open(path + ".index", "wb") as f:
        f.write(index)
    storage = FileStorage(path)
    assert storage.shelf.open_scan_bytes > 0
    assert storage.load(name) == record
    storage.close()
    # Shorter than the index says: the index is not used.
    with open(path, "wb") as f:
        f.write(data[:last])
    with open(path + ".index", "wb") as f:
        f.write(index)
    storage = FileStorage(path)
    assert storage.shelf.open_scan_bytes == last - storage.shelf.map_end
    storage.close()


def test_a_damaged_index_is_ignored(tmp_path):
    path = str(tmp_path / "d.durus")
    records = build(path)
    data = bytearray(Path(path + ".index").read_bytes())
    for at in (0, 30, len(data) // 2, len(data) - 1):
        broken = bytearray(data)
        broken[at] ^= 0x55
        with open(path + ".index", "wb") as f:
            f.write(broken)
        storage = FileStorage(path, readonly=True)
        assert storage.shelf.open_scan_bytes > 0
        assert dict(storage.gen_oid_record()) == records
        storage.close()
    with open(path + ".index", "wb") as f:
        f.write(data[:40])
    storage = FileStorage(path)
    assert dict(storage.gen_oid_record()) == records
    storage.close()
    assert Path(path + ".index").read_bytes() == data  # rewritten at close


def test_a_large_scan_at_open_saves_the_index_at_once(tmp_path):
    path = str(tmp_path / "large.durus")
    storage = FileStorage(path, fsync=False)
    for _ in range(3):
        storage.begin()
        name = storage.new_oid()
        storage.store(name, name + (2 << 20).to_bytes(4, "big") + bytes(2 << 20))
        storage.end()
    storage.close()
    os.unlink(path + ".index")
    storage = FileStorage(path)
    assert storage.shelf.open_scan_bytes > 6 << 20
    assert os.path.exists(path + ".index")
    storage.close()


def test_the_index_after_a_pack(tmp_path):
    path = str(tmp_path / "packed.durus")
    connection = Connection(FileStorage(path))
    root = connection.get_root()
    root["x"] = PersistentList([1])
    connection.commit()
    storage = connection.get_storage()
    packer = storage.get_packer()
    next(packer)
    root["y"] = PersistentList([2])  # committed during the pack: after the new map
    connection.commit()
    for _step in packer:
        pass
    storage.close()
    storage = FileStorage(path)
    assert storage.shelf.open_scan_bytes == 0
    assert len(storage.shelf.index) > 0
    assert list(Connection(storage).get_root()["y"]) == [2]
    storage.close()
