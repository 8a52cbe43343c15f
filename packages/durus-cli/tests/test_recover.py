"""durus recover DAMAGED NEW: what can be read is saved, what cannot is named, DAMAGED is untouched.

Real damaged files (a packed database cut short, an item head hit, the root
lost), real ``python -m durus`` processes; the new file is opened with
FileStorage and Connection like an application would.
"""

from __future__ import annotations

import os
import pathlib
import re

import pytest
from durus_cli_testing import one_error_line, sample_records, write_dfs20

from durus.connection import Connection
from durus.error import ReadConflictError
from durus.file_storage import FileStorage
from durus.persistent_dict import PersistentDict
from durus.persistent_list import PersistentList


def build_packed(path: pathlib.Path, count: int = 3000) -> None:
    """A database of ``count`` small objects under the root, packed (issue 13's case)."""
    storage = FileStorage(str(path))
    connection = Connection(storage)
    root = connection.get_root()
    for i in range(count):
        root[i] = PersistentDict(number=i, pad="x" * 60)
    connection.commit()
    connection.pack()
    storage.close()
    for side in (f"{path}.index", f"{path}.prepack"):
        if os.path.exists(side):
            os.unlink(side)


def item_positions(data: bytes) -> list[int]:
    """Where the items of the packed base start."""
    map_start = 16 + int.from_bytes(data[8:16], "big")
    positions, position = [], 16
    while position < map_start:
        positions.append(position)
        position += 8 + int.from_bytes(data[position:position + 8], "big")
    return positions


@pytest.fixture
def cut_file(durus) -> pathlib.Path:
    """A packed file cut in the middle of its packed records."""
    path = durus.cwd / "cut.durus"
    build_packed(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path


def snapshot(path: pathlib.Path) -> tuple[bytes, int]:
    return path.read_bytes(), os.stat(path).st_mtime_ns


def surviving_numbers(path: pathlib.Path) -> set[int]:
    storage = FileStorage(str(path), readonly=True)
    try:
        return {int.from_bytes(oid, "big") for oid, _record in storage.gen_oid_record()}
    finally:
        storage.close()


def test_recover_a_file_cut_inside_its_packed_base(durus, cut_file):
    """Every readable object is copied; the lost ones and who refers to them are listed."""
    before = snapshot(cut_file)
    new = durus.cwd / "saved.durus"
    result = durus.run("recover", str(cut_file), str(new))
    assert result.returncode == 0, result.stderr
    assert snapshot(cut_file) == before  # the damaged file is never changed
    assert result.stderr == ""  # no progress bar when not on a terminal
    summary = re.match(r"recovered \S+ \(SHELF-1\) into \S+: (\d+) objects copied, (\d+) lost",
                       result.stdout)
    assert summary, result.stdout
    copied, lost = int(summary.group(1)), int(summary.group(2))
    assert copied > 1000 and lost > 1000
    assert copied + lost == 3001  # the root and 3000 objects: each one accounted for
    assert "the file ends inside its initial transaction" in result.stdout
    lost_lines = re.findall(r"^  oid (\d+): .*; referred to by oid 0$", result.stdout, re.M)
    assert len(lost_lines) == 20  # --max-reports
    assert f"dangling references: {lost}, from 1 surviving object to {lost} lost" in result.stdout
    survivors = surviving_numbers(new)
    assert len(survivors) == copied
    assert not {int(n) for n in lost_lines} & survivors

    # The application: the survivors read back; a lost object raises ReadConflictError
    # naming its oid; a new object never takes a lost oid.
    connection = Connection(FileStorage(str(new)))
    root = connection.get_root()
    assert len(root) == 3000
    readable = [i for i in range(3000) if int.from_bytes(root[i]._p_oid, "big") in survivors]
    assert len(readable) == copied - 1
    assert all(root[i]["number"] == i for i in readable)
    gone = next(i for i in range(3000) if i not in set(readable))
    with pytest.raises(ReadConflictError) as raised:
        root[gone]["number"]
    assert raised.value.oids == [root[gone]._p_oid]
    connection.abort()
    root["new"] = fresh = PersistentList(PersistentList() for _ in range(3000))
    connection.commit()
    new_oids = {int.from_bytes(obj._p_oid, "big") for obj in [fresh, *fresh]}
    lost_oids = {int.from_bytes(root[i]._p_oid, "big") for i in range(3000)} - survivors
    assert len(lost_oids) == lost
    assert not new_oids & lost_oids
    connection.storage.close()


def test_verify_calls_the_copy_healthy_but_for_its_dangling_references(durus, cut_file):
    """The new file's only problems are the references to lost objects it keeps."""
    new = durus.cwd / "saved.durus"
    assert durus.run("recover", str(cut_file), str(new)).returncode == 0
    verify = durus.run("verify", "--load", str(new))
    assert verify.returncode == 1
    sections = [line for line in verify.stdout.splitlines()[1:] if not line.startswith(" ")]
    assert sections[0].startswith("dangling references: ")
    assert sections[-1].startswith("DAMAGED")
    assert "structural damage" not in verify.stdout
    assert "unpicklable" not in verify.stdout
    assert "durus recover" not in verify.stdout  # recovering again would change nothing


def test_a_healthy_file_is_copied_whole(durus):
    """Nothing lost: every object, and the copy verifies OK."""
    path = durus.cwd / "whole.durus"
    build_packed(path, 200)
    new = durus.cwd / "copy.durus"
    result = durus.run("recover", str(path), str(new))
    assert result.returncode == 0, result.stderr
    assert "201 objects copied, nothing lost" in result.stdout
    assert "dangling" not in result.stdout
    assert durus.run("verify", "--load", str(new)).returncode == 0
    assert surviving_numbers(new) == surviving_numbers(path)


def test_a_damaged_item_head_loses_that_object_only(durus):
    """The items after a damaged one are found again; the damaged one is named."""
    path = durus.cwd / "hit.durus"
    build_packed(path, 300)
    data = bytearray(path.read_bytes())
    hit = item_positions(bytes(data))[100]
    oid = int.from_bytes(data[hit + 8:hit + 16], "big")
    data[hit + 6] ^= 0x40  # the item's length now runs far past the end of the file
    path.write_bytes(bytes(data))
    new = durus.cwd / "saved.durus"
    result = durus.run("recover", str(path), str(new))
    assert result.returncode == 0, result.stderr
    assert "300 objects copied, 1 lost" in result.stdout
    assert f"  oid {oid}: its item at {hit} is damaged; referred to by oid 0" in result.stdout


def test_a_lost_root_gets_a_new_root_holding_what_survived(durus):
    """Without its root the copy would open empty and a pack would drop everything."""
    path = durus.cwd / "rootless.durus"
    build_packed(path, 50)
    data = bytearray(path.read_bytes())
    assert item_positions(bytes(data))[0] == 16 and data[24:32] == bytes(8)  # the root's item
    data[22] ^= 0x40
    path.write_bytes(bytes(data))
    new = durus.cwd / "saved.durus"
    result = durus.run("recover", str(path), str(new))
    assert result.returncode == 0, result.stderr
    assert "50 objects copied, 1 lost" in result.stdout
    assert "the root object (oid 0) was lost" in result.stdout
    connection = Connection(FileStorage(str(new)))
    root = connection.get_root()
    assert sorted(obj["number"] for obj in root.values()) == list(range(50))
    assert all(int.from_bytes(obj._p_oid, "big") == key for key, obj in root.items())
    connection.storage.close()
    assert durus.run("verify", "--load", str(new)).returncode == 0


def test_a_commit_cut_short_is_left_out_not_lost(durus):
    """The last transaction cut by a crash was never part of the database: nothing is lost."""
    path = durus.cwd / "torn.durus"
    build_packed(path, 100)
    connection = Connection(FileStorage(str(path)))
    connection.get_root()["late"] = PersistentList(range(100))
    connection.commit()
    connection.storage.close()
    path.write_bytes(path.read_bytes()[:-50])
    new = durus.cwd / "saved.durus"
    result = durus.run("recover", str(path), str(new))
    assert result.returncode == 0, result.stderr
    assert "101 objects copied, nothing lost" in result.stdout
    assert "note: the last transaction is incomplete" in result.stdout
    assert durus.run("verify", str(new)).returncode == 0


def test_recover_never_overwrites_without_force(durus, cut_file):
    """NEW exists: refused (untouched) unless --force, which replaces it."""
    new = durus.cwd / "taken.durus"
    new.write_bytes(b"precious")
    refused = durus.run("recover", str(cut_file), str(new))
    assert "taken.durus exists: choose a new file name, or give --force" in one_error_line(refused)
    assert new.read_bytes() == b"precious"
    assert not os.path.exists(f"{new}.recovering")
    forced = durus.run("recover", "--force", str(cut_file), str(new))
    assert forced.returncode == 0, forced.stderr
    assert new.read_bytes().startswith(b"SHELF-1\n")


def test_recover_refuses_to_write_over_the_damaged_file(durus, cut_file):
    """Not even with --force: the damaged file is never changed."""
    before = snapshot(cut_file)
    link = durus.cwd / "same.durus"
    os.link(cut_file, link)
    for target in (cut_file, link):
        result = durus.run("recover", "--force", str(cut_file), str(target))
        assert "is the damaged file itself" in one_error_line(result)
    assert snapshot(cut_file) == before


def test_recover_refuses_a_new_file_a_server_holds(durus, cut_file):
    """--force does not pull a database from under a running writer."""
    held = durus.cwd / "held.durus"
    storage = FileStorage(str(held))  # holds the writer lock, as a server would
    try:
        result = durus.run("recover", "--force", str(cut_file), str(held))
        assert "in use by another process" in one_error_line(result)
    finally:
        storage.close()
    assert not os.path.exists(f"{held}.recovering")


def test_recover_refuses_what_is_not_a_database(durus):
    """A zero-length file, a foreign file, a missing one: one error line, nothing written."""
    empty = durus.cwd / "empty.durus"
    empty.write_bytes(b"")
    foreign = durus.cwd / "picture.png"
    foreign.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    for source, words in ((empty, "empty file"), (foreign, "not a Durus database"),
                          (durus.cwd / "missing.durus", "no such file")):
        result = durus.run("recover", str(source), str(durus.cwd / "out.durus"))
        assert words in one_error_line(result)
        assert not os.path.exists(durus.cwd / "out.durus")


def test_recover_reads_a_legacy_dfs20_file(durus):
    """Any format the tools read is a source; the result is SHELF-1."""
    path = durus.cwd / "legacy.durus"
    records = sample_records()
    write_dfs20(path, records)
    new = durus.cwd / "saved.durus"
    result = durus.run("recover", str(path), str(new))
    assert result.returncode == 0, result.stderr
    assert f"(DFS20) into {new}: {len(records)} objects copied, nothing lost" in result.stdout
    assert surviving_numbers(new) == {int.from_bytes(oid, "big") for oid in records}


def test_recover_shows_a_progress_bar_when_asked(durus, cut_file):
    """Like pack, verify and convert: on standard error, with --progress (or a terminal)."""
    result = durus.run("recover", "--progress", str(cut_file), str(durus.cwd / "a.durus"))
    assert result.returncode == 0
    assert "recovering [" in result.stderr
    assert "checking [" in result.stderr
    quiet = durus.run("recover", "--no-progress", str(cut_file), str(durus.cwd / "b.durus"))
    assert quiet.stderr == ""


def test_usage_lists_recover_and_convert_in_every_direction(durus):
    """``durus -h``: recover is a mode, and convert's line no longer says one direction only."""
    usage = durus.run("-h").stdout
    assert "recover BAD NEW" in usage
    convert = usage[usage.index("convert OLD NEW"):usage.index("recover BAD NEW")]
    assert "between SHELF-1, SQLite and PostgreSQL, in any" in convert
    assert "into a SHELF-1 file" not in convert
    help_text = durus.run("recover", "--help")
    assert help_text.returncode == 0
    assert "--force" in help_text.stdout
