"""Reading legacy DFS20 files (for ``durus convert``) without unpickling their index."""

from __future__ import annotations

import pickle
import zlib

import pytest

from durus.connection import Connection
from durus.file_storage import FileStorage, FileStorageError, LegacyFormatError
from durus.file_storage2 import FileStorage2, gen_dfs20_records
from durus.persistent_list import PersistentList
from durus.shelf import write_new_shelf
from durus.utils import int8_to_str


def record(n: int, payload: bytes, refs: tuple[int, ...] = ()) -> bytes:
    name = int8_to_str(n)
    return name + len(payload).to_bytes(4, "big") + payload + b"".join(map(int8_to_str, refs))


def transaction(records: list[bytes]) -> bytes:
    return b"".join(len(r).to_bytes(4, "big") + r for r in records) + bytes(4)


def dfs20_image(before: list[list[bytes]], after: list[list[bytes]]) -> bytes:
    """A DFS20 file as spec 3.8 describes it (an index block between two runs)."""
    body = b"".join(transaction(t) for t in before)
    index_offset = 14 + len(body)
    index_block = zlib.compress(pickle.dumps({}))  # never read by the reader
    return (
        b"DFS20\0"
        + index_offset.to_bytes(8, "big")
        + body
        + len(index_block).to_bytes(8, "big")
        + index_block
        + b"".join(transaction(t) for t in after)
    )


def test_records_before_and_after_the_index(tmp_path):
    path = tmp_path / "legacy.durus"
    first = [record(0, b"root-1", (1,)), record(1, b"one")]
    later = [[record(0, b"root-2", (1, 2)), record(2, b"two")], [record(1, b"one-2")]]
    path.write_bytes(dfs20_image([first], later))
    storage = FileStorage2(str(path))
    assert storage.load(int8_to_str(0)) == record(0, b"root-2", (1, 2))
    assert dict(storage.gen_oid_record()) == {
        int8_to_str(0): record(0, b"root-2", (1, 2)),
        int8_to_str(1): record(1, b"one-2"),
        int8_to_str(2): record(2, b"two"),
    }
    reachable = [oid for oid, _r in storage.gen_oid_record(start_oid=int8_to_str(0))]
    assert reachable == [int8_to_str(n) for n in (0, 1, 2)]
    with pytest.raises(KeyError):
        storage.load(int8_to_str(9))
    with pytest.raises(FileStorageError, match="durus convert"):
        storage.new_oid()
    assert storage.sync() == []
    assert FileStorage2.has_format(str(path))
    storage.close()
    assert next(iter(gen_dfs20_records(str(path))))[0] == int8_to_str(0)


def test_a_cut_last_transaction_is_ignored(tmp_path):
    path = tmp_path / "cut.durus"
    image = dfs20_image([], [[record(0, b"a")], [record(0, b"b"), record(1, b"c")]])
    path.write_bytes(image[:-6])
    assert dict(gen_dfs20_records(str(path))) == {int8_to_str(0): record(0, b"a")}
    assert path.read_bytes() == image[:-6]


def test_converting_to_a_shelf(tmp_path):
    old = tmp_path / "old.durus"
    new = tmp_path / "new.durus"
    old.write_bytes(dfs20_image([[record(0, b"r", (5,)), record(5, b"five")]], []))
    with pytest.raises(LegacyFormatError):
        FileStorage(str(old))
    write_new_shelf(new, gen_dfs20_records(old))
    storage = FileStorage(str(new))
    assert dict(storage.gen_oid_record()) == dict(gen_dfs20_records(old))
    # The converted file is a packed shelf: 5 was the largest oid.
    assert storage.shelf.get_offset_map().get_array_size() == 7
    assert storage.new_oid() == int8_to_str(4)
    storage.close()
    with pytest.raises(FileExistsError):
        write_new_shelf(new, [])


def test_a_converted_real_database_opens_in_a_connection(tmp_path):
    shelf_path = tmp_path / "a.durus"
    connection = Connection(FileStorage(str(shelf_path)))
    connection.get_root()["x"] = PersistentList([1, 2])
    connection.commit()
    records = dict(connection.get_storage().gen_oid_record())
    connection.get_storage().close()
    legacy = tmp_path / "legacy.durus"
    legacy.write_bytes(dfs20_image([list(records.values())], []))
    converted = tmp_path / "converted.durus"
    write_new_shelf(converted, gen_dfs20_records(legacy))
    connection = Connection(FileStorage(str(converted)))
    assert list(connection.get_root()["x"]) == [1, 2]
    connection.get_storage().close()



def test_read_only_methods_refuse_clearly(tmp_path):
    # `end` once collided with an attribute holding the end offset.
    path = tmp_path / "legacy.durus"
    path.write_bytes(dfs20_image([[record(0, b"root")]], []))
    storage = FileStorage2(str(path))
    for call in (storage.begin, storage.end, storage.new_oid):
        with pytest.raises(FileStorageError, match="durus convert"):
            call()


def test_readers_report_damage_instead_of_giving_up(tmp_path):
    import os

    from durus.file_storage import DamagedFileError
    from durus.file_storage2 import (
        HEADER_SIZE,
        dfs20_index_end,
        read_dfs20_header,
        read_dfs20_record,
        scan_dfs20_transactions,
    )

    path = tmp_path / "legacy.durus"
    first = [record(0, b"root-1", (1,)), record(1, b"one")]
    later = [[record(0, b"root-2", (1, 2)), record(2, b"two")], [record(1, b"one-2")]]
    image = dfs20_image([first], later)
    cut = len(image) - 6  # inside the last record
    path.write_bytes(image[:cut])
    fd = os.open(path, os.O_RDONLY)
    try:
        index_offset = read_dfs20_header(fd, str(path))
        seen: list[tuple[int, list[int]]] = []
        end, problem = scan_dfs20_transactions(
            fd, HEADER_SIZE, index_offset, lambda s, flat: seen.append((s, flat))
        )
        assert (end, problem) == (index_offset, None)
        assert seen == [(HEADER_SIZE, [0, HEADER_SIZE, 1, HEADER_SIZE + 4 + len(first[0])])]
        assert read_dfs20_record(fd, HEADER_SIZE) == first[0]
        index_end = dfs20_index_end(fd, str(path), index_offset)
        seen.clear()
        end, problem = scan_dfs20_transactions(
            fd, index_end, cut, lambda s, flat: seen.append((s, flat))
        )
        assert [s for s, _flat in seen] == [index_end]
        assert problem is not None and problem.kind == "incomplete" and problem.offset == end
        with pytest.raises(ValueError, match="runs past the end"):
            read_dfs20_record(fd, len(image) - 8 - len(later[1][0]))
    finally:
        os.close(fd)
    # A record shorter than its header is malformed; a bad index offset is damage.
    path.write_bytes(b"DFS20\0" + (14).to_bytes(8, "big") + (5).to_bytes(4, "big") + bytes(20))
    fd = os.open(path, os.O_RDONLY)
    try:
        end, problem = scan_dfs20_transactions(fd, 14, 38, lambda s, flat: None)
        assert problem is not None and problem.kind == "malformed" and problem.offset == 14
    finally:
        os.close(fd)
    path.write_bytes(b"DFS20\0" + (999).to_bytes(8, "big") + bytes(20))
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(DamagedFileError, match="index offset 999"):
            read_dfs20_header(fd, str(path))
    finally:
        os.close(fd)
