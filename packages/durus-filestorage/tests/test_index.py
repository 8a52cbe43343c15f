"""The side index ``<file>.index``: opening without rescanning, and never trusting a stale one."""

from __future__ import annotations

import os
import shutil
from array import array
from pathlib import Path

from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent_list import PersistentList
from durus.shelf_index import BLOCK, PositionIndex, load_index_file, save_index_file
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
        assert dict(storage.gen_oid_record()) == records
        # Noticed at open (the header) or when the damaged block was first used.
        shelf = storage.shelf
        assert shelf.open_scan_bytes > 0 or shelf.index_rescan_bytes > 0
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


def build_raw_tail(path: str, count: int, length: int) -> dict[bytes, bytes]:
    """A database whose tail holds ``count`` one-item commits of ``length`` bytes."""
    records = build(path, commits=2)
    for k in range(count):
        name = int8_to_str(1000 + k)
        record = name + (0).to_bytes(4, "big") + bytes([k % 251]) * length
        append_raw_transaction(path, name, record)
        records[name] = record
    storage = FileStorage(path)  # indexes the new commits: saved at close
    storage.close()
    return records


def test_an_index_pointing_at_another_oid_is_caught_by_the_item(tmp_path, caplog):
    """A stale index whose checksums all agree (the file changed only between the
    sampled regions): every item names its oid, so the load notices and rebuilds."""
    path = str(tmp_path / "swap.durus")
    records = build_raw_tail(path, count=100, length=4000)
    storage = FileStorage(path)
    first, second = int8_to_str(1040), int8_to_str(1060)
    at_first = storage.shelf.get_position(first)
    at_second = storage.shelf.get_position(second)
    assert at_first is not None and at_second is not None
    storage.close()
    # Another writer's history: the two commits (of the same size) in the other order.
    data = bytearray(Path(path).read_bytes())
    size = 8 + 8 + len(records[first])
    assert size == 8 + 8 + len(records[second])
    item_first = data[at_first : at_first + size]
    data[at_first : at_first + size] = data[at_second : at_second + size]
    data[at_second : at_second + size] = item_first
    Path(path).write_bytes(data)
    storage = FileStorage(path, readonly=True)
    assert storage.shelf.open_scan_bytes == 0
    assert storage.shelf.index.base is not None
    with caplog.at_level("WARNING", logger="durus.file_storage"):
        assert storage.load(first) == records[first]
    assert storage.shelf.index_rescan_bytes > 0
    assert storage.shelf.index.base is None
    assert "damaged" in caplog.text
    assert storage.shelf.get_position(first) == at_second
    assert dict(storage.gen_oid_record()) == records
    storage.close()


def test_a_damaged_block_is_found_when_first_used(tmp_path, caplog):
    path = str(tmp_path / "block.durus")
    records = build(path)
    data = Path(path + ".index").read_bytes()
    storage = FileStorage(path, readonly=True)
    base = storage.shelf.index.base
    assert base is not None
    where = base.body_at + 8 * 5  # the position of oid 5
    storage.close()
    broken = bytearray(data)
    broken[where] ^= 0x08  # still a plausible position: only the block's crc tells
    Path(path + ".index").write_bytes(broken)
    storage = FileStorage(path)
    shelf = storage.shelf
    assert shelf.open_scan_bytes == 0  # opening did not look at the array
    assert shelf.index.base is not None and not shelf.index.base.verified
    with caplog.at_level("WARNING", logger="durus.file_storage"):
        assert storage.load(int8_to_str(5)) == records[int8_to_str(5)]
    assert "damaged" in caplog.text
    assert shelf.index_rescan_bytes > 0
    assert dict(storage.gen_oid_record()) == records
    storage.close()
    assert Path(path + ".index").read_bytes() == data  # the writer saved a sound one


def test_opening_does_not_read_the_array(tmp_path):
    """A 1,000,000-entry index whose blocks but the first are all damaged: the
    open never notices (it reads none of them), loads use only the first block."""
    path = str(tmp_path / "big.durus")
    records = build(path)
    loaded = load_index_file(path + ".index", low=0)
    assert loaded is not None
    meta, mapped, count, largest = loaded
    slots = 1_000_000
    index = PositionIndex()
    index.array = array("Q", bytes(8 * slots))
    index.array[: mapped.slots] = mapped.chunk(0, mapped.slots)
    index.array[slots - 1] = largest  # a valid position, never loaded
    index.count = count + 1
    index.top = slots
    mapped.close()
    save_index_file(path + ".index", meta, index, durable=False, largest=largest)
    data = bytearray(Path(path + ".index").read_bytes())
    body_at = len(data) - 8 * slots
    for block in range(1, (slots + BLOCK - 1) // BLOCK):
        data[body_at + 8 * BLOCK * block + 7] ^= 0xFF  # an impossible position
    Path(path + ".index").write_bytes(data)
    storage = FileStorage(path, readonly=True)
    shelf = storage.shelf
    assert shelf.open_scan_bytes == 0
    base = shelf.index.base
    assert base is not None and base.slots == slots and base.verified == set()
    assert len(shelf.index) == count + 1
    for name, record in records.items():
        assert storage.load(name) == record
    assert base.verified == {0}
    assert shelf.index_rescan_bytes == 0 and shelf.index.base is base
    storage.close()


def test_an_index_of_the_previous_version_is_rebuilt(tmp_path):
    path = str(tmp_path / "v1.durus")
    records = build(path)
    data = Path(path + ".index").read_bytes()
    old = bytearray(data)
    old[: len(b"DURUS-SHELF-INDEX-2\n")] = b"DURUS-SHELF-INDEX-1\n"
    Path(path + ".index").write_bytes(old)
    storage = FileStorage(path)
    assert storage.shelf.open_scan_bytes > 0
    assert storage.shelf.index.base is None
    assert dict(storage.gen_oid_record()) == records
    storage.close()
    assert Path(path + ".index").read_bytes() == data


def test_set_many_matches_set_one_by_one():
    # Dense, growing, sparse (far beyond the array) and removing entries.
    entries = [(5, 100), (0, 200), (5, 300), (70000, 400), (10**9, 500), (0, 0), (10**9, 0)]
    one_by_one, at_once = PositionIndex(), PositionIndex()
    expected_olds = [one_by_one.set(n, position) for n, position in entries]
    assert at_once.set_many(entries) == expected_olds == [0, 0, 100, 0, 0, 200, 500]
    assert (at_once.count, at_once.top, at_once.extra) == (
        one_by_one.count, one_by_one.top, one_by_one.extra)
    assert at_once.limit() == one_by_one.limit() == 70001
    assert list(at_once.items()) == list(one_by_one.items()) == [(5, 300), (70000, 400)]


def test_set_many_on_a_reopened_file_consults_the_mapped_index(tmp_path):
    path = str(tmp_path / "db.durus")
    connection = Connection(FileStorage(path))
    connection.get_root()["items"] = [PersistentList([i]) for i in range(50)]
    connection.commit()
    connection.get_storage().close()
    storage = FileStorage(path)
    index = storage.shelf.index
    assert index.base is not None
    count = index.count
    old_root = index.get(0)
    olds = index.set_many([(0, 12345), (10**6, 678)])
    assert olds == [old_root, 0]
    assert index.count == count + 1
    assert index.get(0) == 12345 and index.get(10**6) == 678
    storage.close()
