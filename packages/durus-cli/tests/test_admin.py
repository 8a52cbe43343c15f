"""durus info / verify / census / convert / pack on real files, Durus 4.3's among them."""

from __future__ import annotations

import json
import os
import pathlib

from durus_cli_testing import DATA, copy_fixture, one_error_line, sample_records, write_dfs20

from durus.utils import int8_to_str

FIXTURES = ["durus43-packed.durus", "durus43-unpacked.durus", "durus43-truncated-tail.durus"]


def info_json(durus, path) -> dict:
    result = durus.run("info", "--json", str(path))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# -- info -----------------------------------------------------------------------------


def test_info_on_the_durus43_fixtures(durus):
    packed = info_json(durus, DATA / "durus43-packed.durus")
    assert packed["format"] == "SHELF-1"
    assert packed["size"] == 30134
    assert packed["objects"] == packed["stored_oids"] == 108
    assert packed["transactions"] == 1
    assert packed["garbage_bytes"] == 0
    assert packed["problems"] == 0
    unpacked = info_json(durus, DATA / "durus43-unpacked.durus")
    assert unpacked["objects"] == 108
    assert unpacked["stored_oids"] == 143
    assert unpacked["transactions"] == 10
    assert unpacked["garbage_bytes"] > 50000
    assert not unpacked["incomplete_tail"]
    torn = info_json(durus, DATA / "durus43-truncated-tail.durus")
    assert torn["incomplete_tail"]
    assert torn["transactions"] == 9  # the cut transaction is not counted


def test_info_text_names_every_fact(durus):
    result = durus.run("info", str(DATA / "durus43-unpacked.durus"))
    assert result.returncode == 0
    labels = [line.split(":")[0] for line in result.stdout.splitlines()]
    assert labels == ["file", "format", "size", "objects", "transactions", "garbage",
                      "last change"]
    assert "108 reachable from the root (143 oids stored)" in result.stdout
    assert "SHELF-1" in result.stdout
    assert result.stderr == ""  # no progress bar when not on a terminal


# -- verify ---------------------------------------------------------------------------


def test_verify_healthy_fixtures(durus):
    for name in FIXTURES:
        result = durus.run("verify", "--load", str(DATA / name))
        assert result.returncode == 0, result.stdout
        assert result.stdout.rstrip().endswith("OK: no problems found")
        assert "reachable objects checked and loaded" in result.stdout
        assert result.stderr == ""
    torn = durus.run("verify", str(DATA / "durus43-truncated-tail.durus"))
    assert "warning: the last transaction is incomplete" in torn.stdout


def test_verify_load_reports_missing_classes(durus):
    env = durus.env
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in env["PYTHONPATH"].split(os.pathsep) if p != str(DATA))
    result = durus.run("verify", "--load", str(DATA / "durus43-packed.durus"))
    assert result.returncode == 1
    assert "No module named 'fixture_classes': 5 objects (the first is oid 0)" in result.stdout
    assert "DAMAGED" in result.stdout
    # Without --load nothing is imported: the structure and pickles are fine.
    assert durus.run("verify", str(DATA / "durus43-packed.durus")).returncode == 0
    # --path puts the classes back.
    result = durus.run("verify", "--load", "--path", str(DATA),
                       str(DATA / "durus43-packed.durus"))
    assert result.returncode == 0, result.stdout


def test_verify_finds_a_broken_pickle(durus):
    from durus.connection import Connection
    from durus.file_storage import FileStorage
    from durus.persistent_list import PersistentList

    path = durus.cwd / "db.durus"
    storage = FileStorage(str(path))
    connection = Connection(storage)
    connection.get_root()["list"] = PersistentList(["MARKER-TEXT-1234"])
    connection.commit()
    storage.close()
    data = bytearray(path.read_bytes())
    at = data.index(b"MARKER-TEXT-1234")
    assert data[at - 5] == ord("X")  # BINUNICODE opcode before its 4-byte length
    data[at - 5] = 0xFF  # not an opcode
    path.write_bytes(bytes(data))
    result = durus.run("verify", str(path))
    assert result.returncode == 1
    assert "unpicklable records: 1" in result.stdout
    assert "oid 1:" in result.stdout
    assert result.stdout.rstrip().endswith("DAMAGED: 1 problem found")


def test_verify_finds_dangling_references_and_unreadable_records(durus):
    from durus.connection import Connection
    from durus.file_storage import FileStorage
    from durus.persistent_list import PersistentList
    from durus.serialize import pack_record, unpack_record

    path = durus.cwd / "db.durus"
    storage = FileStorage(str(path))
    connection = Connection(storage)
    connection.get_root()["a"] = PersistentList(["first-child"])
    connection.get_root()["b"] = PersistentList(["second-child"])
    connection.commit()
    root_oid = int8_to_str(0)
    oid, data, refs = unpack_record(storage.load(root_oid))
    storage.begin()
    storage.store(root_oid, pack_record(oid, data, refs + int8_to_str(99)))
    storage.end()
    storage.close()
    raw = bytearray(path.read_bytes())
    # Make the record of the second child name another oid than its item.
    at = raw.index(b"second-child")
    item = raw.rindex(int8_to_str(2) + int8_to_str(2), 0, at)
    raw[item + 15] = 7
    path.write_bytes(bytes(raw))
    result = durus.run("verify", str(path))
    assert result.returncode == 1, result.stdout
    assert "dangling references: 1" in result.stdout
    assert "oid 99, referred to by oid 0, has no record" in result.stdout
    assert "unreadable records: 1" in result.stdout
    assert "oid 2: the record names another oid" in result.stdout


def test_verify_finds_structural_damage(durus):
    path = copy_fixture("durus43-unpacked.durus", durus.cwd)
    raw = bytearray(path.read_bytes())
    # The first transaction after the empty offset map starts at offset 40: make its
    # length claim three bytes more than its items fill.
    length = int.from_bytes(raw[40:48], "big")
    raw[40:48] = (length + 3).to_bytes(8, "big")
    path.write_bytes(bytes(raw))
    result = durus.run("verify", str(path))
    assert result.returncode == 1
    assert "structural damage" in result.stdout
    assert "malformed transaction" in result.stdout
    assert "(offset 40)" in result.stdout


def test_verify_on_a_new_empty_database(durus):
    from durus.file_storage import FileStorage

    path = durus.cwd / "new.durus"
    FileStorage(str(path)).close()
    result = durus.run("verify", str(path))
    assert result.returncode == 0
    assert "no objects yet" in result.stdout


# -- census ---------------------------------------------------------------------------


def test_census_of_the_packed_fixture(durus):
    result = durus.run("census", "--json", str(DATA / "durus43-packed.durus"))
    assert result.returncode == 0
    census = json.loads(result.stdout)
    counts = {name: entry["objects"] for name, entry in census.items()}
    assert counts == {
        "durus.btree.BNode16": 99,
        "durus.persistent_dict.PersistentDict": 3,
        "fixture_classes.Account": 2,
        "durus.btree.BTree": 1,
        "durus.persistent_set.PersistentSet": 1,
        "durus.persistent_list.PersistentList": 1,
        "fixture_classes.Slotted": 1,
    }
    assert all(entry["bytes"] > 0 for entry in census.values())
    table = durus.run("census", str(DATA / "durus43-packed.durus")).stdout.splitlines()
    assert table[0].split() == ["class", "objects", "bytes"]
    assert table[1].split()[:2] == ["durus.btree.BNode16", "99"]  # the most bytes first
    assert table[-1].split()[:2] == ["total", "108"]


# -- pack -----------------------------------------------------------------------------


def test_pack_a_file(durus):
    path = copy_fixture("durus43-unpacked.durus", durus.cwd)
    before = path.stat().st_size
    result = durus.run("pack", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"packed {path}: 86.8 kB (86833 bytes) -> ")
    assert result.stderr == ""
    assert path.stat().st_size < before
    assert (durus.cwd / "durus43-unpacked.durus.prepack").exists()
    facts = info_json(durus, path)
    assert facts["objects"] == facts["stored_oids"] == 108
    assert facts["garbage_bytes"] == 0
    assert durus.run("verify", "--load", str(path)).returncode == 0


def test_classic_pack_flag_with_file(durus):
    path = copy_fixture("durus43-unpacked.durus", durus.cwd)
    result = durus.run("-p", "--file", str(path))
    assert result.returncode == 0, result.stderr
    assert info_json(durus, path)["stored_oids"] == 108


def test_pack_refuses_a_missing_file(durus):
    line = one_error_line(durus.run("pack", "missing.durus"))
    assert line == "durus: error: missing.durus: no such file"
    assert not (durus.cwd / "missing.durus").exists()


# -- convert --------------------------------------------------------------------------


def _root_of(path: pathlib.Path) -> dict:
    from durus.connection import Connection
    from durus.file_storage import FileStorage

    storage = FileStorage(str(path), readonly=True)
    try:
        root = Connection(storage).get_root()
        return {
            "alice": (root["alice"].owner, root["alice"].balance),
            "box": (root["box"].name, root["box"].size),
            "numbers": list(root["numbers"]),
            "inner": list(root["nested"]["inner"]),
        }
    finally:
        storage.close()


EXPECTED_ROOT = {"alice": ("alice", 100), "box": ("box", 7), "numbers": list(range(10)),
                 "inner": ["x"]}


def test_convert_dfs20_to_a_new_file(durus):
    records = sample_records()
    old = durus.cwd / "legacy.durus"
    write_dfs20(old, records)
    original = old.read_bytes()
    info = info_json(durus, old)
    assert info["format"] == "DFS20"
    assert info["objects"] == len(records)
    result = durus.run("convert", str(old), "new.durus")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"converted {old} (DFS20) into new.durus (SHELF-1): "
                                    f"{len(records)} objects copied")
    assert old.read_bytes() == original  # the old file is never touched
    new = durus.cwd / "new.durus"
    assert new.read_bytes().startswith(b"SHELF-1\n")
    assert durus.run("verify", "--load", str(new)).returncode == 0
    import sys

    sys.path.insert(0, str(DATA))
    try:
        assert _root_of(new) == EXPECTED_ROOT
        # The converted file takes new objects under fresh oids.
        from durus.connection import Connection
        from durus.file_storage import FileStorage
        from durus.persistent_list import PersistentList

        storage = FileStorage(str(new))
        connection = Connection(storage)
        connection.get_root()["later"] = PersistentList([1])
        connection.commit()
        storage.close()
        assert _root_of(new) == EXPECTED_ROOT
    finally:
        sys.path.remove(str(DATA))
    assert info_json(durus, new)["objects"] == len(records) + 1


def test_convert_never_overwrites(durus):
    old = durus.cwd / "legacy.durus"
    write_dfs20(old, sample_records())
    (durus.cwd / "taken.durus").write_bytes(b"precious")
    line = one_error_line(durus.run("convert", str(old), "taken.durus"))
    assert "taken.durus exists" in line
    assert (durus.cwd / "taken.durus").read_bytes() == b"precious"
    assert not (durus.cwd / "taken.durus.converting").exists()


def test_convert_in_place_keeps_a_backup(durus):
    old = durus.cwd / "legacy.durus"
    write_dfs20(old, sample_records(), packed=0)
    original = old.read_bytes()
    result = durus.run("convert", "legacy.durus")
    assert result.returncode == 0, result.stderr
    assert "the original file is kept as legacy.durus.dfs20" in result.stdout
    assert (durus.cwd / "legacy.durus.dfs20").read_bytes() == original
    assert old.read_bytes().startswith(b"SHELF-1\n")
    import sys

    sys.path.insert(0, str(DATA))
    try:
        assert _root_of(old) == EXPECTED_ROOT
    finally:
        sys.path.remove(str(DATA))
    # A second in-place conversion has nothing to do.
    line = one_error_line(durus.run("convert", "legacy.durus"))
    assert "already a SHELF-1 database" in line


def test_convert_refuses_when_the_backup_exists(durus):
    old = durus.cwd / "legacy.durus"
    write_dfs20(old, sample_records())
    original = old.read_bytes()
    (durus.cwd / "legacy.durus.dfs20").write_bytes(b"older backup")
    line = one_error_line(durus.run("convert", "legacy.durus"))
    assert "legacy.durus.dfs20 exists" in line
    assert old.read_bytes() == original


def test_convert_refuses_a_damaged_file(durus):
    old = durus.cwd / "legacy.durus"
    records = sample_records()
    del records[int8_to_str(1)]  # the root now refers to a missing object
    write_dfs20(old, records)
    line = one_error_line(durus.run("convert", str(old), "new.durus"))
    assert "is damaged" in line
    assert not (durus.cwd / "new.durus").exists()
    assert not (durus.cwd / "new.durus.converting").exists()


# -- Durus 4.3's SQLite databases: readable by the tools, convertible --------------------


def test_tools_read_the_durus43_sqlite_fixture(durus):
    path = DATA / "durus43-sqlite.durus"
    facts = info_json(durus, path)
    assert facts["format"] == "SQLite"
    assert facts["objects"] == facts["stored_oids"] == 24
    assert facts["transactions"] is None
    text = durus.run("info", str(path)).stdout
    assert "transactions: not recorded by SQLite storages" in text
    result = durus.run("verify", "--load", str(path))
    assert result.returncode == 0, result.stdout
    assert "24 reachable objects checked and loaded" in result.stdout
    census = json.loads(durus.run("census", "--json", str(path)).stdout)
    assert census["durus.btree.BNode16"]["objects"] == 19
    assert census["fixture_classes.Account"]["objects"] == 1


def test_convert_the_durus43_sqlite_fixture(durus):
    old = copy_fixture("durus43-sqlite.durus", durus.cwd)
    original = old.read_bytes()
    result = durus.run("convert", str(old), "new.durus")
    assert result.returncode == 0, result.stderr
    assert "(SQLite) into new.durus (SHELF-1): 24 objects copied" in result.stdout
    assert old.read_bytes() == original
    result = durus.run(
        "-c", "--file", "new.durus", "--readonly",
        input="print(root['alice'].owner, root['alice'].balance, root['pdict']['x'], "
              "list(root['pdict']['y']), root['str'], len(root['tree']))\n")
    assert result.returncode == 0, result.stderr
    assert "alice 100 1 [1, 2, 3] h\u00e9llo 300" in result.stdout
    # In place: the SQLite file is kept as FILE.sqlite.
    result = durus.run("convert", str(old))
    assert result.returncode == 0, result.stderr
    assert (durus.cwd / "durus43-sqlite.durus.sqlite").read_bytes() == original
    assert old.read_bytes().startswith(b"SHELF-1\n")
