"""No stray files: temporaries do not outlive their process, and backups are not lost.

Real child processes commit and exit without closing (normally, with a daemon
thread still committing, or killed with SIGKILL in the middle of writing the
side index); the directory must then hold only the database and its side
files.  A writer's open removes the temporaries a dead process left.  Packing
keeps one ``F.prepack`` as Durus 4.3 did, or with ``keep_backups`` numbers the
earlier ones.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent_list import PersistentList
from durus.shelf_errors import FileLockedError


def _child(code: str, *args: str, tmpdir: Path | None = None) -> subprocess.Popen[str]:
    """Run ``code`` in a new interpreter that imports this durus."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args], env=env, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def _finish(child: subprocess.Popen[str]) -> None:
    _out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert err == "", err  # no "Exception ignored in ..." at shutdown either


# -- exiting without close() -----------------------------------------------------


def test_the_readme_pattern_leaves_only_the_database_and_its_index(tmp_path):
    # README: Connection("app.durus"), commit, and the program simply ends.
    _finish(_child("""
        import os, sys
        os.chdir(sys.argv[1])
        from durus.connection import Connection
        connection = Connection("app.durus")
        connection.get_root()["greeting"] = "hello"
        connection.commit()
    """, str(tmp_path)))
    assert sorted(os.listdir(tmp_path)) == ["app.durus", "app.durus.index"]
    storage = FileStorage(str(tmp_path / "app.durus"))
    assert storage.shelf.open_scan_bytes == 0  # the index saved at exit covers it all
    assert Connection(storage).get_root()["greeting"] == "hello"
    storage.close()
    assert sorted(os.listdir(tmp_path)) == ["app.durus", "app.durus.index"]


def test_a_daemon_thread_still_committing_at_exit(tmp_path):
    # The storages are referenced by a thread that never ends: no finalizer ever
    # runs for them, so only the exit hook can remove the temporary database.
    data = tmp_path / "data"
    temp = tmp_path / "temp"
    data.mkdir()
    temp.mkdir()
    _finish(_child("""
        import os, sys, threading
        from durus.connection import Connection
        from durus.file_storage import FileStorage, TempFileStorage
        committed = threading.Event()

        def work():
            scratch = Connection(TempFileStorage())
            kept = Connection(FileStorage(os.path.join(sys.argv[1], "app.durus"), fsync=False))
            n = 0
            while True:
                for connection in (scratch, kept):
                    connection.get_root()["n"] = n
                    connection.commit()
                n += 1
                if n == 50:
                    committed.set()

        threading.Thread(target=work, daemon=True).start()
        committed.wait()
    """, str(data), tmpdir=temp))
    assert os.listdir(temp) == []
    assert sorted(os.listdir(data)) == ["app.durus", "app.durus.index"]
    storage = FileStorage(str(data / "app.durus"))
    assert Connection(storage).get_root()["n"] >= 49
    storage.close()


def test_a_pack_left_unfinished_at_exit_removes_its_file(tmp_path):
    _finish(_child("""
        import os, sys, threading
        from durus.connection import Connection
        from durus.persistent_list import PersistentList
        connection = Connection(os.path.join(sys.argv[1], "app.durus"))
        root = connection.get_root()
        root["items"] = [PersistentList([i]) for i in range(2000)]
        connection.commit()
        packer = connection.get_storage().get_packer()
        next(packer)
        next(packer)
        assert os.path.exists(os.path.join(sys.argv[1], "app.durus.pack"))
        threading.Thread(target=lambda: [packer, threading.Event().wait()], daemon=True).start()
    """, str(tmp_path)))
    assert sorted(os.listdir(tmp_path)) == ["app.durus", "app.durus.index"]


# -- what an earlier process left ------------------------------------------------


def _commit(path: str, value: object) -> None:
    storage = FileStorage(path)
    connection = Connection(storage)
    connection.get_root()["value"] = value
    connection.commit()
    storage.close()


def test_a_writer_removes_the_temporaries_of_dead_processes(tmp_path, caplog):
    path = str(tmp_path / "app.durus")
    _commit(path, 1)
    leftovers = ["app.durus.index.4242.tmp", "app.durus.4242-0123abcd.new", "app.durus.pack"]
    kept = [
        "app.durus.index",
        "app.durus.prepack",
        "app.durus.prepack.1",
        "app.durus.cut-14",
        "app.durus.index.notes.tmp",  # not a name we make
        "other.durus.index.4242.tmp",  # another database's
        "app.durus.index.4242.tmp.bak",
    ]
    for name in leftovers + kept[1:]:
        (tmp_path / name).write_bytes(b"x")
    everything = sorted(["app.durus", *leftovers, *kept])
    assert sorted(os.listdir(tmp_path)) == everything

    # A reader takes no lock: it removes nothing.
    FileStorage(path, readonly=True).close()
    assert sorted(os.listdir(tmp_path)) == everything
    caplog.set_level(logging.INFO, logger="durus.file_storage")
    writer = FileStorage(path)
    assert sorted(os.listdir(tmp_path)) == sorted(["app.durus", *kept])
    assert "removed" in caplog.text and "app.durus.index.4242.tmp" in caplog.text
    # While a writer holds the file, its temporaries are its own: an open that
    # the lock refuses leaves them alone.
    (tmp_path / "app.durus.index.4243.tmp").write_bytes(b"x")
    with pytest.raises(FileLockedError):
        FileStorage(path)
    assert (tmp_path / "app.durus.index.4243.tmp").exists()
    writer.close()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a FIFO")
def test_sigkill_while_the_index_is_written_at_exit(tmp_path):
    """The child ends without closing and is killed while its exit hook writes the index.

    The index temporary's name is taken by a FIFO before the child gets there,
    so the child blocks inside the write, after a first part, until it is
    killed: a kill in the middle, every time.
    """
    path = str(tmp_path / "app.durus")
    child = _child("""
        import sys
        from durus.connection import Connection
        from durus.persistent_list import PersistentList
        connection = Connection(sys.argv[1])
        connection.get_root()["many"] = [PersistentList() for _ in range(50_000)]
        connection.commit()
        sys.stdout.write("committed\\n")
        sys.stdout.flush()
        sys.stdin.readline()
    """, path)
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline() == "committed\n"
        temporary = tmp_path / f"app.durus.index.{child.pid}.tmp"
        os.mkfifo(temporary)
        reader = os.open(temporary, os.O_RDONLY | os.O_NONBLOCK)
        try:
            child.stdin.write("exit now\n")
            child.stdin.flush()
            # 400 kB of positions: the child is stuck in the write after the pipe's
            # 64 kB, and still after we read the first bytes.
            ready, _, _ = select.select([reader], [], [], 120)
            assert ready, "the child never began writing its index"
            assert os.read(reader, 20).startswith(b"DURUS-SHELF-INDEX")
            child.kill()
            child.wait(timeout=60)
        finally:
            os.close(reader)
    finally:
        child.kill()
        child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert sorted(os.listdir(tmp_path)) == ["app.durus", temporary.name]
    FileStorage(path, readonly=True).close()  # takes no lock: leaves it
    assert sorted(os.listdir(tmp_path)) == ["app.durus", temporary.name]
    storage = FileStorage(path)
    assert len(Connection(storage).get_root()["many"]) == 50_000
    storage.close()
    assert sorted(os.listdir(tmp_path)) == ["app.durus", "app.durus.index"]


# -- backups of packs ------------------------------------------------------------


def _garbage_commit(path: str, tag: str) -> bytes:
    """Commit an object, drop it again (garbage for a pack); the file's bytes."""
    storage = FileStorage(path)
    connection = Connection(storage)
    root = connection.get_root()
    root["drop"] = PersistentList([tag])
    connection.commit()
    del root["drop"]
    root["last"] = tag
    connection.commit()
    storage.close()
    return Path(path).read_bytes()


def test_pack_keeps_one_backup_as_durus43_did(tmp_path):
    # The API (and so a server's automatic packs) replaces the older F.prepack.
    path = str(tmp_path / "app.durus")
    _garbage_commit(path, "one")
    FileStorage(path).pack()
    second = _garbage_commit(path, "two")
    storage = FileStorage(path)
    storage.pack()
    storage.close()
    assert Path(path + ".prepack").read_bytes() == second
    assert sorted(os.listdir(tmp_path)) == ["app.durus", "app.durus.index", "app.durus.prepack"]


def test_pack_with_keep_backups_numbers_the_earlier_ones(tmp_path):
    path = str(tmp_path / "app.durus")
    before = [_garbage_commit(path, "one")]
    storage = FileStorage(path)
    packer = storage.get_packer(keep_backups=True)
    for _step in packer:
        pass
    assert packer.kept_backup is None  # there was no earlier backup
    storage.close()
    for tag in ("two", "three"):
        before.append(_garbage_commit(path, tag))
        storage = FileStorage(path)
        storage.pack(keep_backups=True)
        storage.close()
    assert Path(path + ".prepack").read_bytes() == before[2]  # the newest
    assert Path(path + ".prepack.1").read_bytes() == before[0]  # the oldest
    assert Path(path + ".prepack.2").read_bytes() == before[1]
    # A number is never reused, even when an older backup was deleted.
    os.unlink(path + ".prepack.1")
    _garbage_commit(path, "four")
    storage = FileStorage(path)
    packer = storage.get_packer(keep_backups=True)
    for _step in packer:
        pass
    storage.close()
    assert packer.kept_backup == path + ".prepack.3"
    assert Path(path + ".prepack.3").read_bytes() == before[2]
    # Packing a packed file again: the backup would be the same bytes, none is added.
    storage = FileStorage(path)
    storage.pack(keep_backups=True)
    storage.pack(keep_backups=True)
    storage.close()
    names = sorted(os.listdir(tmp_path))
    assert names == [
        "app.durus", "app.durus.index", "app.durus.prepack", "app.durus.prepack.2",
        "app.durus.prepack.3", "app.durus.prepack.4",
    ]
