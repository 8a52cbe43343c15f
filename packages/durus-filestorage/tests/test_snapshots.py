"""``Connection(FileStorage(...), mvcc=True)``: a read-only reader beside the writer."""

from __future__ import annotations

from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent_dict import PersistentDict


def test_a_read_only_reader_reads_the_file_as_of_its_snapshot(tmp_path):
    path = str(tmp_path / "app.durus")
    writer = Connection(FileStorage(path), mvcc=True)
    root = writer.get_root()
    root["a"] = PersistentDict(value=1)
    root["b"] = PersistentDict(value=1)
    writer.commit()

    reader = Connection(FileStorage(path, readonly=True), mvcc=True)
    assert reader.get_root()["a"]["value"] == 1
    root["a"]["value"] = root["b"]["value"] = 2
    root["c"] = PersistentDict(value=2)
    writer.commit()
    # b was never loaded by the reader: it still reads the snapshot's version.
    assert reader.get_root()["b"]["value"] == 1
    assert "c" not in reader.get_root()
    reader.commit()  # read-only: never conflicts; takes a new snapshot
    assert [reader.get_root()[k]["value"] for k in "abc"] == [2, 2, 2]
    reader.get_storage().close()
    writer.get_storage().close()
