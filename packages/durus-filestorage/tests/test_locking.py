"""One writer at a time; read-only opens share the file and catch up with sync()."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from durus.connection import Connection
from durus.error import DurusError
from durus.file_storage import FileLockedError, FileStorage
from durus.persistent_list import PersistentList
from durus.utils import int8_to_str


def test_second_writer_in_the_same_process_fails_at_once(tmp_path):
    path = str(tmp_path / "one.durus")
    first = FileStorage(path)
    with pytest.raises(FileLockedError) as caught:
        FileStorage(path)
    error = caught.value
    assert isinstance(error, BlockingIOError) and isinstance(error, OSError)
    assert isinstance(error, DurusError)
    assert error.errno == errno.EAGAIN
    assert error.filename == path
    assert path in str(error) and "readonly=True" in str(error)
    # The first writer is unaffected; once closed, the file can be opened again.
    connection = Connection(first)
    connection.get_root()["x"] = 1
    connection.commit()
    first.close()
    second = FileStorage(path)
    assert Connection(second).get_root()["x"] == 1
    second.close()


def test_temporary_file_is_locked_too():
    storage = FileStorage()
    with pytest.raises(FileLockedError):
        FileStorage(storage.get_filename())
    storage.close()


def test_second_writer_in_another_process_fails(tmp_path, run_python):
    path = str(tmp_path / "two.durus")
    storage = FileStorage(path)
    code = """
        import sys
        from durus.file_storage import FileStorage, FileLockedError
        try:
            FileStorage(sys.argv[1])
        except FileLockedError as error:
            print("locked:", error)
        else:
            print("opened")
        reader = FileStorage(sys.argv[1], readonly=True)
        print("reader ok", reader.load(b"\\0" * 8)[:8] == b"\\0" * 8)
    """
    Connection(storage)
    result = run_python(code, path)
    assert result.stdout.splitlines()[0] == f"locked: {FileLockedError(path)}"
    assert "reader ok True" in result.stdout
    storage.close()
    assert run_python(code, path).stdout.startswith("opened")


def test_writer_in_another_process_excludes_us(tmp_path):
    path = str(tmp_path / "three.durus")
    FileStorage(path).close()
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from durus.file_storage import FileStorage; s = FileStorage(sys.argv[1]);"
            " print('ready', flush=True); sys.stdin.read(); s.close()",
            path,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        with pytest.raises(FileLockedError):
            FileStorage(path)
        FileStorage(path, readonly=True).close()
    finally:
        child.communicate("")
    FileStorage(path).close()


def test_reader_sees_later_commits_after_sync_and_abort(tmp_path):
    path = str(tmp_path / "reader.durus")
    writer = Connection(FileStorage(path))
    root = writer.get_root()
    root["items"] = PersistentList([1])
    root["n"] = 1
    writer.commit()
    reader_storage = FileStorage(path, readonly=True)
    reader = Connection(reader_storage)
    items = reader.get_root()["items"]
    assert list(items) == [1] and reader.get_root()["n"] == 1
    root["items"].append(2)
    root["n"] = 2
    root["new"] = PersistentList(["new"])
    writer.commit()
    # Until the reader syncs it keeps its snapshot.
    assert reader.get_root()["n"] == 1 and list(items) == [1]
    reader.abort()
    assert reader.get_root()["n"] == 2
    assert list(items) == [1, 2]  # the cached object was invalidated and reloaded
    assert list(reader.get_root()["new"]) == ["new"]
    root["n"] = 3
    writer.commit()
    changed = reader_storage.sync()
    assert changed == [int8_to_str(0)]
    assert reader_storage.sync() == []
    reader_storage.close()
    writer.get_storage().close()


def test_reader_waits_for_an_incomplete_commit(tmp_path):
    path = str(tmp_path / "partial.durus")
    writer = FileStorage(path)
    connection = Connection(writer)
    reader = FileStorage(path, readonly=True)
    name = writer.new_oid()
    record = name + (3).to_bytes(4, "big") + b"abc"
    transaction = (16 + len(record)).to_bytes(8, "big") + (8 + len(record)).to_bytes(8, "big")
    transaction += name + record
    # Another writer (say Durus 4.3, or ours mid-pwrite) has written a part of a commit.
    with open(path, "ab") as f:
        f.write(transaction[:20])
    assert reader.sync() == []
    with pytest.raises(KeyError):
        reader.load(name)
    with open(path, "ab") as f:
        f.write(transaction[20:])
    assert reader.sync() == [name]
    assert reader.load(name) == record
    reader.close()
    connection.get_storage().close()


def test_reader_follows_a_pack(tmp_path):
    path = str(tmp_path / "packed.durus")
    writer = Connection(FileStorage(path))
    root = writer.get_root()
    root["keep"] = PersistentList(["keep"])
    root["drop"] = PersistentList(["drop"])
    writer.commit()
    drop = root["drop"]._p_oid
    reader_storage = FileStorage(path, readonly=True)
    reader = Connection(reader_storage)
    raw = FileStorage(path, readonly=True)
    assert list(reader.get_root()["drop"]) == ["drop"]
    del root["drop"]
    writer.commit()
    writer.pack()
    root["after"] = PersistentList(["after"])
    writer.commit()
    changed = set(raw.sync())
    assert drop in changed and int8_to_str(0) in changed
    assert raw.shelf.is_replaced() is False
    raw.close()
    reader.abort()
    assert reader_storage.shelf.is_replaced() is False
    assert list(reader.get_root()["after"]) == ["after"]
    assert "drop" not in reader.get_root()
    with pytest.raises(KeyError):
        reader_storage.load(drop)
    reader_storage.close()
    writer.get_storage().close()


def test_group_commit_visible_before_durable(tmp_path):
    path = str(tmp_path / "group.durus")
    storage = FileStorage(path)
    Connection(storage)
    reader = FileStorage(path, readonly=True)
    storage.begin()
    name = storage.new_oid()
    record = name + (1).to_bytes(4, "big") + b"x"
    storage.store(name, record)
    storage.end(sync_to_disk=False)
    assert storage.load(name) == record
    assert storage.shelf.has_unsynced()
    assert reader.sync() == [name]  # visible to readers at once
    storage.flush_to_disk()
    assert not storage.shelf.has_unsynced()
    storage.flush_to_disk()  # nothing pending: no-op
    for _ in range(3):
        storage.begin()
        storage.store(name, record)
        storage.end(None, False)
    assert storage.shelf.has_unsynced()
    storage.begin()
    storage.store(name, record)
    storage.end()  # a durable commit syncs the earlier ones too
    assert not storage.shelf.has_unsynced()
    storage.begin()
    storage.store(name, record)
    storage.end(sync_to_disk=False)
    storage.close()  # close syncs what is pending
    reader.close()
    storage = FileStorage(path)
    assert storage.load(name) == record
    assert Connection(storage).get_root() is not None
    storage.close()
    nosync = FileStorage(path, fsync=False)
    nosync.begin()
    nosync.store(name, record)
    nosync.end(sync_to_disk=False)
    assert not nosync.shelf.has_unsynced()
    nosync.flush_to_disk()
    nosync.close()
