"""The databases written by a real Durus 4.3 open with every value, identity and class."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from durus.connection import Connection
from durus.file_storage import FileFormatError, FileStorage

SHELF_FIXTURES = ["durus43-unpacked.durus", "durus43-packed.durus"]
CUT = 37  # expected.json: the truncated fixture is the unpacked one minus 37 bytes


@pytest.mark.parametrize("name", SHELF_FIXTURES)
def test_writable_copy_has_every_expected_value(name, fixture_copy, expected, check_expected):
    path = fixture_copy(name)
    before = Path(path).read_bytes()
    storage = FileStorage(path)
    connection = Connection(storage)
    check_expected(connection.get_root(), expected["root"])
    storage.close()
    # Opening and reading changes no byte of the database.
    assert Path(path).read_bytes() == before


@pytest.mark.parametrize("name", SHELF_FIXTURES)
def test_read_only_open_of_the_fixture_itself(name, data_dir, expected, check_expected):
    path = str(data_dir / name)
    storage = FileStorage(path, readonly=True)
    check_expected(Connection(storage).get_root(), expected["root"])
    assert storage.sync() == []
    storage.close()
    assert not os.path.exists(path + ".index")


@pytest.mark.parametrize("name", SHELF_FIXTURES)
def test_connection_with_a_path(name, fixture_copy, expected, check_expected):
    connection = Connection(fixture_copy(name))
    check_expected(connection.get_root(), expected["root"])
    connection.get_storage().close()


@pytest.mark.parametrize("name", SHELF_FIXTURES)
def test_records_match_a_naive_reader(name, data_dir, reference_records):
    path = str(data_dir / name)
    reference = reference_records(Path(path).read_bytes())
    storage = FileStorage(path, readonly=True)
    ours = dict(storage.gen_oid_record())
    assert ours == reference
    for oid, record in reference.items():
        assert storage.load(oid) == record
    storage.close()


def test_packed_fixture_map(data_dir):
    storage = FileStorage(str(data_dir / "durus43-packed.durus"), readonly=True)
    shelf = storage.shelf
    assert len(shelf.index) == 0  # everything is in the initial transaction
    offset_map = shelf.get_offset_map()
    positions = dict(offset_map.iteritems())
    assert max(positions) + 2 == offset_map.get_array_size()
    holes = list(offset_map.gen_holes())
    assert holes[-1] == offset_map.get_array_size() - 1
    assert sorted(holes) == sorted(set(range(offset_map.get_array_size())) - set(positions))
    assert holes[:-1] == sorted(holes[:-1], reverse=True)
    storage.close()


def test_truncated_fixture_opens_at_its_last_complete_transaction(
    fixture_copy, expected, check_expected, reference_records, caplog
):
    path = fixture_copy("durus43-truncated-tail.durus")
    damaged = Path(path).read_bytes()
    unpacked = Path(fixture_copy("durus43-unpacked.durus")).read_bytes()
    assert unpacked[: len(damaged)] == damaged and len(unpacked) - len(damaged) == CUT
    with caplog.at_level("WARNING", logger="durus.file_storage"):
        storage = FileStorage(path)
    connection = Connection(storage)
    check_expected(connection.get_root(), expected["root"], truncated=True)
    # Exactly the complete transactions: the cut one is gone, bytes moved aside.
    end = os.path.getsize(path)
    assert damaged[:end] == Path(path).read_bytes()
    side_files = [f for f in os.listdir(os.path.dirname(path)) if ".cut-" in f]
    assert side_files == [f"durus43-truncated-tail.durus.cut-{end}"]
    side = os.path.join(os.path.dirname(path), side_files[0])
    assert Path(side).read_bytes() == damaged[end:]
    assert side in caplog.text and "incomplete" in caplog.text
    reference = reference_records(damaged[:end])
    assert dict(storage.gen_oid_record()) == reference
    # The storage is usable: a new commit lands after the last complete transaction.
    root = connection.get_root()
    root["after"] = 1
    connection.commit()
    storage.close()
    storage = FileStorage(path)
    assert Connection(storage).get_root()["after"] == 1
    storage.close()


def test_truncated_fixture_read_only_ignores_the_cut_tail(
    data_dir, expected, check_expected
):
    path = str(data_dir / "durus43-truncated-tail.durus")
    size = os.path.getsize(path)
    storage = FileStorage(path, readonly=True)
    check_expected(Connection(storage).get_root(), expected["root"], truncated=True)
    storage.close()
    assert os.path.getsize(path) == size


def test_sqlite_fixture_is_refused_clearly(data_dir):
    path = str(data_dir / "durus43-sqlite.durus")
    for readonly in (True, False):
        with pytest.raises(FileFormatError, match="SQLite"):
            FileStorage(path, readonly=readonly) if readonly else FileStorage(path)
    assert Path(path).read_bytes()[:6] == b"SQLite"
