"""Byte-level SHELF-1 format: the spec's examples (1.3, 2.9, 3.3.3, 3.3.4) and the map."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

import durus.serialize
from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent_list import PersistentList
from durus.shelf_format import EMPTY_SHELF, gen_map_bytes, map_dimensions
from durus.utils import int8_to_str

EMPTY_40 = bytes.fromhex(
    "5348454c462d310a" "0000000000000000" "0000000000000010" "0000000000000001" "0000000000000000"
)
ROOT_DATA = (
    b"\x80\x02cdurus.persistent_dict\nPersistentDict\nq\x00."
    + bytes.fromhex("789c6b60aa2d648c6061606048492c492c04f2988bf500396a056d".replace(" ", ""))
)


def oid(n: int) -> bytes:
    return int8_to_str(n)


def test_new_file_is_the_40_bytes_of_the_spec(tmp_path):
    path = str(tmp_path / "new.durus")
    storage = FileStorage(path)
    storage.close()
    assert EMPTY_SHELF == EMPTY_40
    assert Path(path).read_bytes() == EMPTY_40
    assert not os.path.exists(path + ".index")


def test_root_record_bytes(tmp_path, monkeypatch):
    # Durus 4.3 compressed every state; with the threshold at 0 we do too.
    monkeypatch.setattr(durus.serialize, "COMPRESSION_THRESHOLD", 0)
    monkeypatch.setattr(durus.serialize, "STATE_PICKLE_PROTOCOL", 2)
    path = str(tmp_path / "root.durus")
    storage = FileStorage(path)
    Connection(storage)
    storage.close()
    data = Path(path).read_bytes()
    assert len(data) == 146
    record = oid(0) + (70).to_bytes(4, "big") + ROOT_DATA
    assert len(ROOT_DATA) == 70
    expected = EMPTY_40 + (98).to_bytes(8, "big") + (90).to_bytes(8, "big") + oid(0) + record
    assert data == expected


def naive_map(map_start: int, positions: dict[int, int], count: int, width: int) -> bytes:
    """Spec 3.3.1/3.3.2 literally: fill with blanks, put positions, stitch holes."""
    blank = (1 << (8 * width)) - 1
    slots = [blank] * count
    for n, position in positions.items():
        slots[n] = position
    prev = count - 1
    for i in range(count):
        if slots[i] == blank or slots[i] >= map_start:
            slots[i] = prev + map_start
            prev = i
    header = (16 + width * count).to_bytes(8, "big") + width.to_bytes(8, "big")
    header += count.to_bytes(8, "big")
    return header + b"".join(s.to_bytes(width, "big") for s in slots)


@pytest.mark.parametrize("seed", range(12))
def test_map_bytes_match_the_spec_algorithm(seed):
    rng = random.Random(seed)
    live = sorted(rng.sample(range(rng.randint(1, 3000)), rng.randint(1, 400)))
    map_start = rng.choice([100, 5000, 70000, 1 << 24, 1 << 40])
    positions = {n: rng.randrange(16, map_start) for n in live}
    width, count = map_dimensions(map_start, max(live))
    from array import array

    table = array("Q", bytes(8 * (max(live) + 1)))
    for n, position in positions.items():
        table[n] = position
    ours = b"".join(gen_map_bytes(map_start, table, count, width, chunk=rng.choice([7, 64, 65536])))
    assert ours == naive_map(map_start, positions, count, width)


def test_map_dimensions():
    assert map_dimensions(16, None) == (1, 0)
    assert map_dimensions(381, 3) == (2, 5)  # spec 3.3.4: S+M+3 = 387 -> 2 bytes
    assert map_dimensions(250, 2) == (1, 4)  # 255 fits one byte
    assert map_dimensions(250, 3) == (2, 5)  # 256 does not


def slots_of(storage: FileStorage) -> list[int]:
    offset_map = storage.shelf.get_offset_map()
    return [offset_map.slot(j) for j in range(offset_map.get_array_size())]


def test_packed_file_map_structure_of_spec_3_3_4(tmp_path):
    path = str(tmp_path / "packed.durus")
    connection = Connection(FileStorage(path))
    root = connection.get_root()
    for key in "abc":
        root[key] = PersistentList([key])
    connection.commit()
    assert [root[k]._p_oid for k in "abc"] == [oid(1), oid(2), oid(3)]
    del root["b"]
    connection.commit()
    connection.pack()
    storage = connection.get_storage()
    data = Path(path).read_bytes()
    map_start = 16 + int.from_bytes(data[8:16], "big")
    offset_map = storage.shelf.get_offset_map()
    assert offset_map.get_start() == map_start
    width, count = map_dimensions(map_start, 3)
    assert (offset_map.width, offset_map.get_array_size()) == (width, count) == (2, 5)
    header = data[map_start : map_start + 24]
    assert header == b"".join(n.to_bytes(8, "big") for n in (16 + 2 * 5, 2, 5))
    slots = slots_of(storage)
    # Items in ascending oid order right after the 16-byte header.
    assert slots[0] == 16 < slots[1] < slots[3] < map_start
    assert slots[2] == map_start + 4  # hole 2 links to the top slot
    assert slots[4] == map_start + 2  # the top slot links to hole 2
    assert data[map_start + 24 : map_start + 34] == b"".join(s.to_bytes(2, "big") for s in slots)
    assert len(data) == map_start + 34  # nothing after the map
    assert list(offset_map.gen_holes()) == [2, 4]
    # 2 was removed by this pack: not handed out until sync() reported it.
    assert storage.invalid == {oid(2)}
    assert [storage.new_oid() for _ in range(3)] == [oid(4), oid(5), oid(6)]
    assert storage.sync() == [oid(2)]
    storage.close()


def build_spec_1_3_database(path: str) -> None:
    """Live max oid 10, then 1, 3, 8, 9 removed by a pack."""
    connection = Connection(FileStorage(path))
    root = connection.get_root()
    items = [PersistentList([i]) for i in range(1, 11)]
    root["items"] = list(items)
    connection.commit()
    assert [item._p_oid for item in items] == [oid(i) for i in range(1, 11)]
    root["items"] = [item for item in items if item[0] not in (1, 3, 8, 9)]
    connection.commit()
    connection.pack()
    storage = connection.get_storage()
    assert sorted(storage.invalid) == [oid(1), oid(3), oid(8), oid(9)]
    assert slots_of(storage)[11] >= storage.shelf.map_start
    assert list(storage.shelf.get_offset_map().gen_holes()) == [9, 8, 3, 1, 11]
    # While the removed oids are still invalid, they are skipped (and consumed).
    assert [storage.new_oid() for _ in range(2)] == [oid(11), oid(12)]
    storage.close()


def test_allocation_order_of_spec_1_3(tmp_path):
    path = str(tmp_path / "alloc.durus")
    build_spec_1_3_database(path)
    storage = FileStorage(path)
    assert [storage.new_oid() for _ in range(7)] == [oid(n) for n in (9, 8, 3, 1, 11, 12, 13)]
    storage.close()


def test_allocation_after_sync_reports_the_removed(tmp_path):
    path = str(tmp_path / "alloc.durus")
    connection = Connection(FileStorage(path))
    root = connection.get_root()
    items = [PersistentList([i]) for i in range(1, 11)]
    root["items"] = list(items)
    connection.commit()
    root["items"] = [item for item in items if item[0] not in (1, 3, 8, 9)]
    connection.commit()
    connection.pack()
    storage = connection.get_storage()
    assert sorted(storage.sync()) == [oid(1), oid(3), oid(8), oid(9)]
    assert storage.sync() == []
    assert [storage.new_oid() for _ in range(6)] == [oid(n) for n in (9, 8, 3, 1, 11, 12)]
    storage.close()


def test_never_packed_file_reuses_uncommitted_oids(tmp_path):
    path = str(tmp_path / "reuse.durus")
    connection = Connection(FileStorage(path))
    root = connection.get_root()
    root["a"] = PersistentList()
    connection.commit()
    storage = connection.get_storage()
    assert [storage.new_oid() for _ in range(3)] == [oid(2), oid(3), oid(4)]
    storage.close()  # allocated, never committed
    storage = FileStorage(path)
    assert storage.new_oid() == oid(2)
    # Holes below the largest committed oid are found too.
    storage.begin()
    storage.store(oid(2), oid(2) + bytes(4))
    assert storage.new_oid() == oid(3)
    storage.end()
    storage.close()


def test_later_transactions_skip_allocated_names(tmp_path):
    path = str(tmp_path / "skip.durus")
    storage = FileStorage(path)
    names = [storage.new_oid() for _ in range(5)]
    assert names == [oid(n) for n in range(5)]
    storage.begin()
    for name in (names[0], names[3]):
        storage.store(name, name + bytes(4))
    storage.end()
    storage.close()
    storage = FileStorage(path)
    assert [storage.new_oid() for _ in range(3)] == [oid(1), oid(2), oid(4)]
    storage.close()


def test_surprise_oid(tmp_path):
    storage = FileStorage(str(tmp_path / "s.durus"))
    storage.begin()
    storage.store(oid(0), oid(0) + bytes(4))  # the root is always allowed
    name = storage.new_oid()
    storage.store(name, name + bytes(4))
    with pytest.raises(ValueError, match="surprise"):
        storage.store(oid(77), oid(77) + bytes(4))
    # The whole pending commit was discarded.
    assert storage.pending_records == {}
    storage.end()
    with pytest.raises(KeyError):
        storage.load(oid(0))
    storage.close()


def test_store_refuses_records_that_would_corrupt_the_file(tmp_path):
    storage = FileStorage(str(tmp_path / "r.durus"))
    storage.begin()
    with pytest.raises(ValueError, match="start with that oid"):
        storage.store(oid(0), oid(1) + bytes(4))
    with pytest.raises(ValueError, match="malformed"):
        storage.store(oid(0), oid(0) + (10).to_bytes(4, "big") + b"short")
    with pytest.raises(ValueError):
        storage.store(b"123", b"123")
    storage.close()


def test_duplicate_oid_in_one_transaction_later_wins(tmp_path, reference_records):
    path = str(tmp_path / "dup.durus")
    storage = FileStorage(path)
    storage.begin()
    storage.store(oid(0), oid(0) + bytes(4) + b"")
    storage.end()
    first = oid(0) + (1).to_bytes(4, "big") + b"a"
    second = oid(0) + (1).to_bytes(4, "big") + b"b"
    storage.shelf.store([(oid(0), first), (oid(0), second)])
    assert storage.load(oid(0)) == second
    storage.close()
    storage = FileStorage(path)
    assert storage.load(oid(0)) == second
    storage.close()
    assert reference_records(Path(path).read_bytes())[oid(0)] == second


# -- walk_transactions and read_item: the lenient read-only walk of inspection tools ------


def _item(n: int, payload: bytes, record_oid: int | None = None) -> bytes:
    name = oid(n if record_oid is None else record_oid)
    record = name + len(payload).to_bytes(4, "big") + payload
    return (8 + len(record)).to_bytes(8, "big") + oid(n) + record


def _transaction(*items: bytes) -> bytes:
    body = b"".join(items)
    return len(body).to_bytes(8, "big") + body


def _walk(tmp_path, data: bytes, start: int = 0):
    from durus.shelf_format import walk_transactions

    path = tmp_path / "walk.bin"
    path.write_bytes(data)
    seen: list[tuple[int, int, list[int]]] = []
    fd = os.open(path, os.O_RDONLY)
    try:
        end, problem = walk_transactions(
            fd, start, len(data), lambda s, e, flat: seen.append((s, e, flat))
        )
    finally:
        os.close(fd)
    return seen, end, problem


def test_walk_transactions_reports_items_and_empty_transactions(tmp_path):
    first = _transaction(_item(1, b"one"), _item(2, b"two"))
    # The record of oid 3 names oid 9: damage for the reader of records, not for the walk.
    second = _transaction(_item(3, b"three", record_oid=9))
    data = first + bytes(8) + second + bytes(8)
    seen, end, problem = _walk(tmp_path, data)
    assert problem is None
    assert end == len(data)
    a = len(first)
    b = a + 8
    assert seen == [
        (0, a, [1, 8, 2, 8 + len(_item(1, b"one"))]),
        (a, a + 8, []),
        (b, b + len(second), [3, b + 8]),
        (b + len(second), len(data), []),
    ]


def test_walk_transactions_reports_where_the_structure_breaks(tmp_path):
    good = _transaction(_item(1, b"one"))
    # A transaction claiming 3 bytes more than its items fill: malformed at its start.
    items = _item(2, b"two")
    bad = (len(items) + 3).to_bytes(8, "big") + items + b"xyz"
    seen, end, problem = _walk(tmp_path, good + bad + good)
    assert [s for s, _e, _f in seen] == [0]
    assert end == len(good)
    assert problem is not None and problem.kind == "malformed" and problem.offset == len(good)
    # An impossible item length.
    seen, end, problem = _walk(tmp_path, good + _transaction(bytes(8) + oid(2) + bytes(12)))
    assert problem is not None and problem.kind == "malformed" and "impossible" in problem.detail
    # Cut by the end of the file: incomplete, whatever the cut.
    whole = good + _transaction(_item(2, b"two"), _item(3, b"three"))
    for cut in range(len(good) + 1, len(whole)):
        seen, end, problem = _walk(tmp_path, whole[:cut])
        assert end == len(good), cut
        assert problem is not None and problem.kind == "incomplete", cut
        assert problem.offset == len(good)


def test_walk_transactions_recognises_an_unfinished_durus43_commit(tmp_path):
    good = _transaction(_item(1, b"one"))
    items = _item(2, b"two") + _item(3, b"three")
    for tail in (items, items[:-4], items[:20]):
        seen, end, problem = _walk(tmp_path, good + bytes(8) + tail)
        assert [s for s, _e, _f in seen] == [0]  # the placeholder is not a transaction
        assert end == len(good)
        assert problem is not None and problem.kind == "incomplete"
        assert problem.offset == len(good)
        assert "Durus 4.3" in problem.detail


def test_read_item(tmp_path):
    from durus.shelf_format import read_item

    data = _item(4, b"four") + _item(5, b"five")
    path = tmp_path / "items.bin"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        name, record = read_item(fd, 0, len(data))
        assert name == oid(4) and record == data[16 : len(_item(4, b"four"))]
        with pytest.raises(ValueError, match="runs past the end"):
            read_item(fd, len(_item(4, b"four")), len(data) - 1)
        with pytest.raises(ValueError, match="cut short"):
            read_item(fd, len(data) - 4, len(data))
    finally:
        os.close(fd)
