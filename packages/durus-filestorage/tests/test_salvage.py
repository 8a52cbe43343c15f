"""durus.shelf_salvage: the readable items of damaged files, and files written from them.

``gen_readable_items`` must agree with FileStorage on every intact file (the
same items, the same current records), find the items again after damage, leave
out a commit a crash cut short (as FileStorage does), and never raise.
``write_salvaged_shelf`` must write a file FileStorage and Durus 4.3 open, that
never hands a reserved (lost) oid to a new object.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent_dict import PersistentDict
from durus.persistent_list import PersistentList
from durus.shelf_format import read_item
from durus.shelf_salvage import (
    ReadableItem,
    UnreadableBytes,
    gen_readable_items,
    write_salvaged_shelf,
)
from durus.utils import int8_to_str

FIXTURES = ["durus43-packed.durus", "durus43-unpacked.durus"]


def events(path: str | Path) -> list[ReadableItem | UnreadableBytes]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return list(gen_readable_items(fd))
    finally:
        os.close(fd)


def current_records(path: str | Path) -> dict[bytes, bytes]:
    """oid -> the record of the last readable item naming it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        records = {}
        for event in gen_readable_items(fd):
            if isinstance(event, ReadableItem):
                name, record = read_item(fd, event.position, size)
                assert name == event.oid
                records[event.oid] = record
        return records
    finally:
        os.close(fd)


def storage_records(path: str | Path) -> dict[bytes, bytes]:
    storage = FileStorage(str(path), readonly=True)
    try:
        return dict(storage.gen_oid_record())
    finally:
        storage.close()


def build(path: Path) -> bytes:
    """A packed base and three commits after it."""
    storage = FileStorage(str(path))
    connection = Connection(storage)
    root = connection.get_root()
    root["items"] = PersistentList(PersistentDict(n=i, text="t" * (i % 7)) for i in range(120))
    connection.commit()
    connection.pack()
    for round_ in range(3):
        for i in range(round_, 120, 11):
            root["items"][i]["round"] = round_
        connection.commit()
    storage.close()
    return path.read_bytes()


@pytest.fixture
def database(tmp_path) -> Path:
    path = tmp_path / "db.durus"
    build(path)
    for side in ("db.durus.index", "db.durus.prepack"):
        if (tmp_path / side).exists():
            (tmp_path / side).unlink()
    return path


def int8(data: bytes, at: int) -> int:
    return int.from_bytes(data[at:at + 8], "big")


def layout(data: bytes) -> tuple[list[int], int, int, list[int]]:
    """``(items of the base, map start, map end, transaction starts after it)``."""
    map_start = 16 + int8(data, 8)
    items, position = [], 16
    while position < map_start:
        items.append(position)
        position += 8 + int8(data, position)
    map_end = map_start + 24 + int8(data, map_start + 8) * int8(data, map_start + 16)
    starts, position = [], map_end
    while position < len(data):
        starts.append(position)
        position += 8 + int8(data, position)
    return items, map_start, map_end, starts


@pytest.mark.parametrize("name", FIXTURES)
def test_an_intact_file_gives_what_filestorage_reads(data_dir, name):
    """Durus 4.3's files: every item, no unreadable bytes, FileStorage's current records."""
    found = events(data_dir / name)
    assert all(isinstance(event, ReadableItem) and event.sound for event in found)
    assert current_records(data_dir / name) == storage_records(data_dir / name)


def test_our_packed_file_with_commits(database):
    """Our writer's files too: the base, the map and later transactions are walked over."""
    assert all(isinstance(event, ReadableItem) for event in events(database))
    assert current_records(database) == storage_records(database)


def test_cut_inside_the_packed_base(database):
    """The items before the cut are readable; the cut item is named, to the end of the file."""
    data = database.read_bytes()
    items, _map_start, _map_end, _starts = layout(data)
    cut = items[60] + 30
    database.write_bytes(data[:cut])
    found = events(database)
    readable = [event for event in found if isinstance(event, ReadableItem)]
    assert [event.position for event in readable] == items[:60]
    assert found[-1] == UnreadableBytes(
        items[60], cut, f"an item of {int8(data, items[60]) + 8} bytes cut short by the end of "
        "the file", oid=data[items[60] + 8:items[60] + 16])


@pytest.mark.parametrize("into", [3, 8, 20, 40, 300])
def test_a_commit_cut_short_is_left_out_as_filestorage_leaves_it(database, tmp_path, into):
    """Cut inside the last transaction: FileStorage (as a writer) keeps exactly the rest."""
    data = database.read_bytes()
    _items, _start, _end, starts = layout(data)
    database.write_bytes(data[:starts[-1] + into])
    found = events(database)
    assert found[-1].unfinished and found[-1].start == starts[-1]
    assert all(not isinstance(event, UnreadableBytes) for event in found[:-1])
    copy = tmp_path / "copy.durus"
    copy.write_bytes(database.read_bytes())
    FileStorage(str(copy)).close()  # cuts the unfinished commit off
    assert current_records(database) == storage_records(copy)


def test_an_unfinished_durus43_commit_is_left_out(database):
    """Durus 4.3's length placeholder (0) followed by the items it managed to write."""
    data = database.read_bytes()
    _items, _start, _end, starts = layout(data)
    last = data[starts[-1]:]
    database.write_bytes(data + bytes(8) + last[8:])
    before = storage_records(database)
    found = events(database)
    assert found[-1].unfinished and found[-1].start == len(data)
    assert current_records(database) == before


def test_items_are_found_again_after_a_damaged_head(database):
    """A length hit in the middle of the base: only that item is lost, and it is named."""
    data = bytearray(database.read_bytes())
    items, _start, _end, _starts = layout(bytes(data))
    hit = items[40]
    data[hit + 6] ^= 0x40  # its length now runs far past the end of the file
    database.write_bytes(bytes(data))
    found = events(database)
    gaps = [event for event in found if isinstance(event, UnreadableBytes)]
    assert gaps == [UnreadableBytes(hit, items[41], f"the item of oid {int8(data, hit + 8)} has "
                                    "a damaged head", oid=bytes(data[hit + 8:hit + 16]))]
    positions = {event.position for event in found if isinstance(event, ReadableItem)}
    assert set(items) - positions == {hit}


def test_a_damaged_initial_length_loses_nothing(database):
    """The map is found where it is, not where the damaged length says."""
    data = bytearray(database.read_bytes())
    expected = storage_records(database)
    data[14] ^= 0x01
    database.write_bytes(bytes(data))
    assert all(isinstance(event, ReadableItem) for event in events(database))
    assert current_records(database) == expected


def test_a_damaged_item_name_does_not_hide_the_real_item(database):
    """An item whose name was hit is reported unsound; the intact one of that oid stays."""
    data = bytearray(database.read_bytes())
    items, map_start, _end, _starts = layout(bytes(data))
    hit = items[30]
    data[hit + 15] ^= 0x03  # its name now names another oid than its record
    database.write_bytes(bytes(data))
    found = [event for event in events(database) if isinstance(event, ReadableItem)]
    unsound = [event for event in found if not event.sound]
    assert [event.position for event in unsound] == [hit]
    assert [event.position for event in found if event.position < map_start] == items


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_never_raises_and_every_item_reads(tmp_path_factory, data):
    """Any damage: events in order, not overlapping, every item readable by ``read_item``."""
    folder = tmp_path_factory.mktemp("salvage")
    original = build(folder / "db.durus")
    raw = bytearray(original)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(raw) - 1))
        if data.draw(st.booleans()):
            raw[at] ^= data.draw(st.integers(1, 255))
        else:
            del raw[at:at + data.draw(st.integers(1, 200))]
    path = folder / "damaged.durus"
    path.write_bytes(bytes(raw))
    end = 8
    fd = os.open(path, os.O_RDONLY)
    try:
        for event in gen_readable_items(fd):
            start = event.position if isinstance(event, ReadableItem) else event.start
            assert end <= start and start < event.end <= len(raw)
            end = event.end
            if isinstance(event, ReadableItem):
                assert read_item(fd, event.position, len(raw))[0] == event.oid
    finally:
        os.close(fd)


# -- write_salvaged_shelf --------------------------------------------------------


def test_a_salvaged_file_opens_and_keeps_lost_oids_from_new_objects(database, tmp_path):
    """Reserved oids get no record and are never handed out; the others are, as after a pack."""
    records = storage_records(database)
    lost = {int8_to_str(n) for n in (5, 7, 50)} | {int8_to_str(len(records) + 3)}
    kept = {oid: record for oid, record in records.items() if oid not in lost}
    new = tmp_path / "salvaged.durus"
    reserved = set()

    def items():
        for oid in sorted(kept):
            yield oid, kept[oid]
        reserved.update(int.from_bytes(oid, "big") for oid in lost)  # read after the items

    assert write_salvaged_shelf(new, items(), reserved) == len(kept)
    assert storage_records(new) == kept
    storage = FileStorage(str(new))
    handed_out = {storage.new_oid() for _ in range(400)}
    storage.close()
    assert not handed_out & lost
    assert not handed_out & set(kept)
    with pytest.raises(FileExistsError):
        write_salvaged_shelf(new, [], ())


def test_durus43_never_hands_out_a_reserved_oid(database, tmp_path, durus43):
    """Durus 4.3's allocator walks the same hole list: the reserved oids are not in it."""
    records = storage_records(database)
    kept = {oid: record for oid, record in records.items() if oid not in (int8_to_str(9),)}
    new = tmp_path / "salvaged.durus"
    write_salvaged_shelf(new, sorted(kept.items()), [9, len(records) + 5])
    result = durus43(
        """
        import sys
        from durus.file_storage import FileStorage
        from durus.utils import str_to_int8
        storage = FileStorage(sys.argv[1])
        print(sorted(str_to_int8(storage.new_oid()) for _ in range(300)))
        """,
        str(new),
    )
    handed_out = set(eval(result.stdout))
    assert not handed_out & {9, len(records) + 5}
    assert not handed_out & {int.from_bytes(oid, "big") for oid in kept}
