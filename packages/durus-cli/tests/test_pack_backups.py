"""``durus pack`` never loses an earlier backup: it is kept as ``FILE.prepack.N``."""

from __future__ import annotations

import os
import pathlib

from durus_cli_testing import one_error_line

from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent_list import PersistentList


def _garbage_commit(path: pathlib.Path, tag: str) -> bytes:
    """Commit an object and drop it again (garbage for a pack); the file's bytes."""
    storage = FileStorage(str(path))
    connection = Connection(storage)
    root = connection.get_root()
    root["drop"] = PersistentList([tag])
    connection.commit()
    del root["drop"]
    root["last"] = tag
    connection.commit()
    storage.close()
    return path.read_bytes()


def _files(folder: pathlib.Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_packing_twice_keeps_both_backups(durus):
    path = durus.cwd / "app.durus"
    first = _garbage_commit(path, "one")
    result = durus.run("pack", "app.durus")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1  # nothing was kept: no second line
    second = _garbage_commit(path, "two")
    result = durus.run("pack", "app.durus")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith("packed app.durus: ")
    assert lines[1].startswith("kept the earlier backup as app.durus.prepack.1; ")
    assert "1 numbered backup, " in lines[1]
    assert (durus.cwd / "app.durus.prepack.1").read_bytes() == first
    assert (durus.cwd / "app.durus.prepack").read_bytes() == second
    # durus -p --file, Durus 4.3's spelling, keeps them too.
    third = _garbage_commit(path, "three")
    result = durus.run("-p", "--file", "app.durus")
    assert result.returncode == 0, result.stderr
    assert "kept the earlier backup as app.durus.prepack.2; " in result.stdout
    assert (durus.cwd / "app.durus.prepack.2").read_bytes() == second
    assert (durus.cwd / "app.durus.prepack").read_bytes() == third
    assert _files(durus.cwd) == [
        "app.durus", "app.durus.index", "app.durus.prepack", "app.durus.prepack.1",
        "app.durus.prepack.2",
    ]


def test_replace_backup_is_durus43s_single_backup(durus):
    path = durus.cwd / "app.durus"
    _garbage_commit(path, "one")
    assert durus.run("pack", "--replace-backup", "app.durus").returncode == 0
    second = _garbage_commit(path, "two")
    result = durus.run("pack", "--replace-backup", "app.durus")
    assert result.returncode == 0, result.stderr
    assert "kept" not in result.stdout
    assert (durus.cwd / "app.durus.prepack").read_bytes() == second
    result = durus.run("-p", "--file", "app.durus", "--replace-backup")
    assert result.returncode == 0, result.stderr
    assert _files(durus.cwd) == ["app.durus", "app.durus.index", "app.durus.prepack"]


def test_replace_backup_needs_a_file(durus):
    line = one_error_line(durus.run("-p", "--replace-backup", "--port", "1"))
    assert line == ("durus: error: --replace-backup is for a file packed here (--file); a "
                    "server always replaces its FILE.prepack")
