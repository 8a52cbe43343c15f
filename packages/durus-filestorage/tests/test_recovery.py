"""Opening after a crash at any byte of a commit, damaged files, files that are not SHELF-1."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from durus.connection import Connection
from durus.file_storage import (
    DamagedFileError,
    FileFormatError,
    FileStorage,
    LegacyFormatError,
)
from durus.persistent_list import PersistentList
from durus.utils import ShortRead, int8_to_str


def make_database(path: str, commits: int = 4) -> list[int]:
    """A database of a few commits; returns the offsets where each transaction ends."""
    storage = FileStorage(path)
    connection = Connection(storage)
    root = connection.get_root()
    ends = [os.path.getsize(path)]
    for i in range(commits):
        root[f"k{i}"] = PersistentList([i] * (i + 1))
        root["last"] = i
        connection.commit()
        ends.append(os.path.getsize(path))
    storage.close()
    return ends


def side_files(path: str) -> list[str]:
    folder, base = os.path.split(path)
    return sorted(f for f in os.listdir(folder) if f.startswith(base + ".cut-"))


def remove_side_files(path: str) -> None:
    for name in side_files(path):
        os.unlink(os.path.join(os.path.dirname(path), name))
    if os.path.exists(path + ".index"):
        os.unlink(path + ".index")


def test_a_cut_at_every_byte_of_the_last_commit(tmp_path, reference_records, caplog):
    path = str(tmp_path / "cut.durus")
    ends = make_database(path)
    full = Path(path).read_bytes()
    start = ends[-2]
    before = reference_records(full[:start])
    assert before != reference_records(full)
    for cut in range(start, len(full) + 1):
        remove_side_files(path)
        with open(path, "wb") as f:
            f.write(full[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="durus.file_storage"):
            # Syncing the recovery (the default) is slow: test it at some cuts only.
            storage = FileStorage(path, fsync=cut % 50 == 0)
        records = dict(storage.gen_oid_record())
        storage.close()
        if cut == len(full):
            assert records == reference_records(full)
            assert side_files(path) == []
            continue
        assert records == before, cut
        assert Path(path).read_bytes() == full[:start]
        if cut == start:
            assert side_files(path) == []
            continue
        assert side_files(path) == [f"cut.durus.cut-{start}"]
        assert Path(f"{path}.cut-{start}").read_bytes() == full[start:cut]
        assert f"cut.durus.cut-{start}" in caplog.text
        # Reopening finds a clean file and the database works.
        connection = Connection(FileStorage(path, fsync=False))
        assert connection.get_root()["last"] == 2
        connection.get_storage().close()


def test_read_only_open_ignores_an_incomplete_tail(tmp_path, reference_records):
    path = str(tmp_path / "ro.durus")
    ends = make_database(path)
    full = Path(path).read_bytes()
    for cut in range(ends[-2] + 1, len(full), 7):
        with open(path, "wb") as f:
            f.write(full[:cut])
        storage = FileStorage(path, readonly=True)
        assert dict(storage.gen_oid_record()) == reference_records(full[: ends[-2]])
        assert storage.sync() == []
        storage.close()
        assert Path(path).read_bytes() == full[:cut]
        assert side_files(path) == []


def test_a_cut_inside_a_record_body_is_detected(tmp_path):
    """Durus 4.3 accepts a last item whose body is cut if its length and name are intact."""
    path = str(tmp_path / "body.durus")
    ends = make_database(path)
    full = Path(path).read_bytes()
    # Cut 3 bytes before the end: inside the last record's body.
    with open(path, "wb") as f:
        f.write(full[:-3])
    storage = FileStorage(path)
    assert storage.shelf.end == ends[-2]
    assert Connection(storage).get_root()["last"] == 2
    storage.close()


def test_an_unfinished_durus43_commit_is_cut(tmp_path, reference_records):
    """Durus 4.3 writes a zero length first and patches it after the items."""
    path = str(tmp_path / "d43.durus")
    ends = make_database(path)
    full = Path(path).read_bytes()
    start = ends[-2]
    last_items = full[start + 8 :]
    for cut in range(0, len(last_items) + 1, 5):
        remove_side_files(path)
        image = full[:start] + bytes(8) + last_items[:cut]
        with open(path, "wb") as f:
            f.write(image)
        storage = FileStorage(path, fsync=False)
        records = dict(storage.gen_oid_record())
        storage.close()
        assert records == reference_records(full[:start])
        if cut == 0:
            # Only the placeholder: a complete, empty transaction.
            assert Path(path).read_bytes() == image
        else:
            assert Path(path).read_bytes() == full[:start]
            assert Path(f"{path}.cut-{start}").read_bytes() == image[start:]


def test_damage_inside_the_file_is_an_error_unless_repair(tmp_path, reference_records, caplog):
    path = str(tmp_path / "damaged.durus")
    ends = make_database(path)
    full = bytearray(Path(path).read_bytes())
    # Break the name of the first item of the second-to-last transaction.
    bad = ends[-3]
    full[bad + 8 + 8 + 7] ^= 0xFF
    with open(path, "wb") as f:
        f.write(full)
    for readonly in (False, True):
        with pytest.raises(DamagedFileError) as caught:
            FileStorage(path, readonly=readonly)
        assert caught.value.offset == bad
        assert "repair=True" in str(caught.value)
        assert isinstance(caught.value, ShortRead)  # what Durus 4.3 raised
    assert Path(path).read_bytes() == full
    with caplog.at_level(logging.WARNING, logger="durus.file_storage"):
        storage = FileStorage(path, repair=True)
    assert dict(storage.gen_oid_record()) == reference_records(bytes(full[:bad]))
    storage.close()
    assert Path(path).read_bytes() == full[:bad]
    assert Path(f"{path}.cut-{bad}").read_bytes() == full[bad:]
    assert "repair=True" in caplog.text


def test_garbage_after_the_last_transaction_is_not_taken_for_a_crash(tmp_path):
    path = str(tmp_path / "garbage.durus")
    make_database(path)
    with open(path, "ab") as f:
        f.write(b"\xab" * 100)
    with pytest.raises(DamagedFileError):
        FileStorage(path)
    storage = FileStorage(path, repair=True)
    assert Connection(storage).get_root()["last"] == 3
    storage.close()


def test_zero_filled_tail_reads_as_empty_transactions(tmp_path):
    path = str(tmp_path / "zeros.durus")
    make_database(path)
    size = os.path.getsize(path)
    with open(path, "ab") as f:
        f.write(bytes(21))
    # Two empty transactions, then 5 bytes: cut with the empty transaction before
    # them (it may be the length placeholder of a commit by Durus 4.3).
    storage = FileStorage(path)
    assert os.path.getsize(path) == size + 8
    assert Connection(storage).get_root()["last"] == 3
    storage.close()


def test_an_empty_file_opened_writable_becomes_a_new_database(tmp_path):
    # As in Durus 4.3 (utest_file_storage check_open_empty): mkstemp, then open.
    path = tmp_path / "empty.durus"
    path.write_bytes(b"")
    with pytest.raises(FileFormatError, match="empty file"):
        FileStorage(str(path), readonly=True)  # a reader writes nothing
    assert path.read_bytes() == b""
    storage = FileStorage(str(path))
    connection = Connection(storage)
    connection.get_root()["x"] = 1
    connection.commit()
    storage.close()
    reader = FileStorage(str(path), readonly=True)
    assert Connection(reader).get_root()["x"] == 1
    reader.close()


def test_format_errors_are_assertion_errors_too_as_in_durus_4_3(tmp_path):
    # utest_file_storage check_short_magic / check_wrong_magic catch AssertionError.
    for content in (b"b", b"bogusbogus"):
        path = tmp_path / "bogus.durus"
        path.write_bytes(content)
        with pytest.raises(AssertionError):
            FileStorage(str(path))
        with pytest.raises(FileFormatError):
            FileStorage(str(path))
        assert path.read_bytes() == content


def test_a_closed_storage_refuses_loads_and_packs_with_value_error(tmp_path):
    from durus.file_storage import StorageClosedError

    path = str(tmp_path / "closed.durus")
    connection = Connection(FileStorage(path))
    connection.get_root()["x"] = 1
    connection.commit()
    storage = connection.storage
    storage.close()
    for call in (lambda: storage.load(b"\0" * 8), lambda: storage.load(b"\0\0\0\0\0\0\0\x09"),
                 storage.pack):
        with pytest.raises(StorageClosedError, match="closed"):
            call()
    assert issubclass(StorageClosedError, ValueError)  # what Durus 4.3 raised
    assert sorted(os.listdir(tmp_path)) == ["closed.durus", "closed.durus.index"]


def test_a_directory_is_refused(tmp_path):
    for readonly in (False, True):
        with pytest.raises(FileFormatError, match="is a directory"):
            FileStorage(str(tmp_path), readonly=readonly)


def test_unknown_format_is_refused(tmp_path):
    path = tmp_path / "other.durus"
    path.write_bytes(b"this is not a database at all\n")
    with pytest.raises(FileFormatError, match="unknown format"):
        FileStorage(str(path))


def test_interrupted_creation_is_refused(tmp_path):
    path = tmp_path / "partial.durus"
    path.write_bytes(b"SHELF-")
    with pytest.raises(FileFormatError, match="fragment"):
        FileStorage(str(path))


def test_dfs20_file_names_the_format_and_the_conversion(tmp_path):
    path = tmp_path / "old.durus"
    path.write_bytes(b"DFS20\x00" + (14).to_bytes(8, "big") + bytes(8))
    for readonly in (False, True):
        with pytest.raises(LegacyFormatError) as caught:
            FileStorage(str(path), readonly=readonly)
        message = str(caught.value)
        assert "DFS20" in message
        assert f"durus convert {path}" in message
    with pytest.raises(LegacyFormatError):
        Connection(str(path))


def test_cut_inside_the_offset_map_is_an_error(tmp_path):
    path = str(tmp_path / "map.durus")
    connection = Connection(FileStorage(path))
    connection.get_root()["x"] = PersistentList()
    connection.commit()
    connection.pack()
    connection.get_storage().close()
    data = Path(path).read_bytes()
    map_start = 16 + int.from_bytes(data[8:16], "big")
    with open(path, "wb") as f:
        f.write(data[: map_start + 26])
    with pytest.raises(DamagedFileError, match="offset map"):
        FileStorage(path)


def test_the_file_is_locked_while_recovering(tmp_path):
    path = str(tmp_path / "lock.durus")
    ends = make_database(path)
    with open(path, "r+b") as f:
        f.truncate(ends[-1] - 2)
    storage = FileStorage(path)
    assert storage.load(int8_to_str(0))
    storage.close()
