"""Damaged files: info, verify and census agree, with FileStorage and with each other.

A real database (a packed base of a few hundred objects, then commits) is
damaged at places Hypothesis chooses: cut short, bytes flipped, a stretch
zeroed.  Every command then either calls the file healthy, and FileStorage
really opens it and reads back every object reachable from the root, or
reports damage with a non-zero exit status: never both, never "a new, empty
database" for a file that had objects.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import tempfile
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durus.btree import BTree
from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent_dict import PersistentDict
from durus.persistent_list import PersistentList
from durus.serialize import check_record, split_oids, unpack_record

ROOT = bytes(8)
LARGE = os.environ.get("DURUS_HYPOTHESIS_PROFILE", "") == "large"


def example_settings(examples: int):
    """``examples`` derandomized examples (20x and random under DURUS_HYPOTHESIS_PROFILE=large).

    The ``durus`` fixture only names a folder: each example works in its own.
    """
    return settings(
        max_examples=examples * 20 if LARGE else examples,
        derandomize=not LARGE,
        database=settings.default.database if LARGE else None,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def build_database(path: pathlib.Path) -> None:
    """A packed base (with garbage removed), then three commits: every part of the format."""
    storage = FileStorage(str(path))
    connection = Connection(storage)
    root = connection.get_root()
    root["items"] = PersistentList(
        PersistentDict(number=i, text=f"item-{i}" * (i % 5 + 1)) for i in range(240))
    root["tree"] = tree = BTree()
    for i in range(300):
        tree[i] = f"value-{i}"
    root["big"] = PersistentList(["x" * 3000])  # a compressed state
    root["garbage"] = PersistentList(range(50))
    connection.commit()
    del root["garbage"]
    connection.commit()
    connection.pack()
    for round_ in range(3):
        for i in range(round_, 240, 17):
            root["items"][i]["changed"] = round_
        root[f"added-{round_}"] = PersistentList(PersistentDict(n=n) for n in range(10))
        connection.commit()
    storage.close()
    index = pathlib.Path(f"{path}.index")
    if index.exists():
        index.unlink()
    prepack = pathlib.Path(f"{path}.prepack")
    if prepack.exists():
        prepack.unlink()


def boundaries(data: bytes) -> list[int]:
    """Offsets where the structure changes: the prefix, lengths, items, the offset map."""
    def int8(at: int) -> int:
        return int.from_bytes(data[at:at + 8], "big")

    marks = [0, 8, 16]
    map_start = 16 + int8(8)
    position = 16
    while position < map_start:
        marks.append(position)
        position += 8 + int8(position)
    width, count = int8(map_start + 8), int8(map_start + 16)
    marks += [map_start, map_start + 8, map_start + 24, map_start + 24 + width * count]
    position = map_start + 24 + width * count
    while position < len(data):
        marks.append(position)
        end = position + 8 + int8(position)
        position += 8
        while position < end:
            marks.append(position)
            position += 8 + int8(position)
    return sorted(set(marks))


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("original") / "original.durus"
    build_database(path)
    return path.read_bytes()


@dataclass
class Truth:
    """What FileStorage itself makes of a file."""

    opens: bool = False
    records: bool = False  # every record reachable from the root loads
    objects: bool = False  # ... and every one of those objects unpickles
    reachable: int = 0


def storage_truth(path: pathlib.Path, scratch: pathlib.Path) -> Truth:
    """Open ``path`` read-only and (a copy) as a writer; read everything reachable."""
    truth = Truth()
    copy = scratch / "writer-copy.durus"
    shutil.copyfile(path, copy)
    try:
        FileStorage(str(path), readonly=True).close()
        storage = FileStorage(str(copy))
    except Exception:
        return truth
    truth.opens = True
    try:
        reachable = []
        try:
            todo, seen = [ROOT], {ROOT}
            while todo:
                oid = todo.pop()
                record = storage.load(oid)
                check_record(oid, record)
                reachable.append(oid)
                for ref in split_oids(unpack_record(record)[2]):
                    if ref not in seen:
                        seen.add(ref)
                        todo.append(ref)
        except Exception:
            return truth
        truth.records = True
        truth.reachable = len(reachable)
        try:
            connection = Connection(storage)
            for oid in reachable:
                obj = connection.get(oid)
                if obj._p_is_ghost():
                    obj._p_load_state()
        except Exception:
            return truth
        truth.objects = True
        return truth
    finally:
        storage.close()


def damage(data: bytes, kind: str, at: int, extra: int) -> bytes:
    if kind == "truncate":
        return data[:at]
    raw = bytearray(data)
    if kind == "flip":
        raw[at] ^= extra
    else:  # zero a stretch
        raw[at:at + extra] = bytes(len(raw[at:at + extra]))
    return bytes(raw)


@st.composite
def damages(draw, size: int, marks: list[int]) -> tuple[str, int, int]:
    kind = draw(st.sampled_from(["truncate", "flip", "flip", "zero"]))
    near = st.sampled_from(marks).flatmap(
        lambda mark: st.integers(max(0, mark - 9), min(size - 1, mark + 9)))
    at = draw(st.one_of(st.integers(0, size - 1), near))
    extra = draw(st.integers(1, 255)) if kind == "flip" else draw(st.integers(1, 64))
    return kind, at, extra


def check_commands(durus, path: pathlib.Path, truth: Truth) -> dict[str, int]:
    """Run info, verify --load and census on ``path``; assert each one's report is consistent."""
    name = str(path)
    info = durus.run("info", "--json", name)
    verify = durus.run("verify", "--load", name)
    census = durus.run("census", name)
    everything = info.stdout + info.stderr + verify.stdout + verify.stderr + census.stderr
    assert "no objects yet" not in everything
    assert "Traceback" not in everything
    for result in (info, verify, census):
        assert result.returncode in (0, 1), result
    if info.returncode == 1 and not info.stdout:
        # Not recognised as a database at all (only an empty file here): one line, no verdict.
        assert path.stat().st_size == 0, info.stderr
        assert verify.returncode == census.returncode == 1
        return {"info": 1, "verify": 1, "census": 1}
    facts = json.loads(info.stdout)
    # info: healthy (exit 0, no problems) or damaged (exit 1), never both.
    assert bool(facts["problems"]) == (info.returncode == 1), facts
    assert facts["damaged"] == bool(facts["problems"]), facts
    if info.returncode == 0:
        assert truth.records, (facts, truth)
        assert facts["objects"] == truth.reachable
        assert facts["garbage_bytes"] is not None
    else:
        assert facts["garbage_bytes"] is None
    # verify: "OK" with exit 0, or "DAMAGED" with exit 1.
    assert ("OK: no problems found" in verify.stdout) == (verify.returncode == 0), verify.stdout
    assert ("DAMAGED" in verify.stdout) == (verify.returncode == 1), verify.stdout
    if verify.returncode == 0:
        assert truth.objects, (verify.stdout, truth)
        checked = re.search(r"(\d+) reachable objects checked", verify.stdout)
        assert checked and int(checked.group(1)) == truth.reachable
    # census: the same verdict as info (both read the structure, not the pickles).
    assert census.returncode == info.returncode, (census.stderr, facts)
    assert ("DAMAGED" in census.stderr) == (census.returncode == 1)
    # verify checks more than info: info's damage is verify's damage too.
    if info.returncode == 1:
        assert verify.returncode == 1
    return {"info": info.returncode, "verify": verify.returncode, "census": census.returncode}


@example_settings(12)  # each example runs three commands; the fixed cases below add more
@given(data=st.data())
def test_commands_report_damage_consistently(durus, original, data):
    """Each command says healthy (and the file reads back) or damaged (exit 1), never both."""
    marks = boundaries(original)
    kind, at, extra = data.draw(damages(len(original), marks))
    with tempfile.TemporaryDirectory(dir=durus.cwd) as scratch:
        folder = pathlib.Path(scratch)
        path = folder / "damaged.durus"
        path.write_bytes(damage(original, kind, at, extra))
        truth = storage_truth(path, folder)
        check_commands(durus, path, truth)


def test_the_undamaged_database_is_healthy(durus, original, tmp_path):
    """The generated database itself: every command calls it healthy (the test can tell)."""
    path = tmp_path / "whole.durus"
    path.write_bytes(original)
    truth = storage_truth(path, tmp_path)
    assert truth.objects and truth.reachable > 250
    assert check_commands(durus, path, truth) == {"info": 0, "verify": 0, "census": 0}


def base_items(data: bytes) -> list[int]:
    """The positions of the items of the initial transaction (the packed base)."""
    map_start = 16 + int.from_bytes(data[8:16], "big")
    return [mark for mark in boundaries(data) if 16 <= mark < map_start]


def cut_inside_the_packed_base(data: bytes) -> bytes:
    """The file of issue 13: cut in the middle of the packed records."""
    map_start = 16 + int.from_bytes(data[8:16], "big")
    return data[:map_start // 2]


DAMAGE_KINDS = {
    # name: (how to damage, whether objects are still readable)
    "cut inside the packed base": cut_inside_the_packed_base,
    "cut inside the offset map": lambda data: data[:16 + int.from_bytes(data[8:16], "big") + 30],
    "a flipped byte in an item head of the base":
        lambda data: damage(data, "flip", base_items(data)[10] + 7, 4),
    "a flipped byte in an item's name":
        lambda data: damage(data, "flip", base_items(data)[20] + 15, 1),
    "a flipped byte in the initial transaction's length": lambda data: damage(data, "flip", 14, 1),
    "a flipped byte in the prefix": lambda data: damage(data, "flip", 3, 0x20),
    "a zeroed stretch in the base": lambda data: damage(data, "zero", 5000, 64),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE_KINDS))
def test_each_kind_of_damage_is_reported_once(durus, original, tmp_path, kind):
    """Every kind of damage: one structural verdict, exit 1, the readable objects counted."""
    path = tmp_path / "damaged.durus"
    path.write_bytes(DAMAGE_KINDS[kind](original))
    truth = storage_truth(path, tmp_path)
    assert check_commands(durus, path, truth) == {"info": 1, "verify": 1, "census": 1}
    verify = durus.run("verify", str(path))
    assert "structural damage: 1\n" in verify.stdout
    info = json.loads(durus.run("info", "--json", str(path)).stdout)
    assert info["objects"] > 0  # what is still readable is counted, not "empty"


def test_info_of_a_file_cut_inside_its_packed_base(durus, original, tmp_path):
    """Issue 13's report: no garbage estimate, one verdict, exit status 1."""
    path = tmp_path / "cut.durus"
    path.write_bytes(cut_inside_the_packed_base(original))
    info = durus.run("info", str(path))
    assert info.returncode == 1
    assert "100% of the file" not in info.stdout
    assert "garbage:      unknown: the file is damaged" in info.stdout
    assert "found: the file is DAMAGED" in info.stdout
    verify = durus.run("verify", str(path))
    assert verify.returncode == 1
    assert "the file ends inside its initial transaction" in verify.stdout
    assert "no objects yet" not in verify.stdout
    assert f"to save what can be read: durus recover {path} NEW_FILE" in verify.stdout


def test_a_zero_length_file_and_a_foreign_file(durus, tmp_path):
    """Neither is a database: one error line and a non-zero exit, from every command."""
    empty = tmp_path / "empty.durus"
    empty.write_bytes(b"")
    foreign = tmp_path / "foreign.durus"
    foreign.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    for path, words in ((empty, "empty file"), (foreign, "not a Durus database")):
        for command in ("info", "verify", "census"):
            result = durus.run(command, str(path))
            assert result.returncode == 1, result
            assert result.stdout == ""
            assert words in result.stderr


def test_damage_hidden_from_the_framing_walk_is_reported(durus, original, tmp_path):
    """A transaction whose length runs past the end while more transactions follow.

    The lenient framing walk takes it for a commit cut short by a crash (a warning);
    FileStorage refuses the file: verify must say damaged too.
    """
    marks = boundaries(original)
    data = bytearray(original)
    map_start = 16 + int.from_bytes(data[8:16], "big")
    width, count = (int.from_bytes(data[map_start + 8 + 8 * i:map_start + 16 + 8 * i], "big")
                    for i in range(2))
    first = map_start + 24 + width * count  # the first transaction after the map
    assert first in marks
    data[first] ^= 0x10  # its length now claims far more than the file holds
    path = tmp_path / "long.durus"
    path.write_bytes(bytes(data))
    truth = storage_truth(path, tmp_path)
    assert not truth.opens
    assert check_commands(durus, path, truth)["verify"] == 1


def test_a_commit_cut_short_is_a_warning_not_damage(durus, original, tmp_path):
    """Cut inside the last transaction: a crash's leftover, which FileStorage leaves out."""
    def int8(at: int) -> int:
        return int.from_bytes(original[at:at + 8], "big")

    map_start = 16 + int8(8)
    position = map_start + 24 + int8(map_start + 8) * int8(map_start + 16)
    starts = []
    while position < len(original):
        starts.append(position)
        position += 8 + int8(position)
    assert len(starts) == 3  # the three commits after the pack
    path = tmp_path / "torn.durus"
    path.write_bytes(original[:starts[-1] + 100])
    truth = storage_truth(path, tmp_path)
    assert check_commands(durus, path, truth) == {"info": 0, "verify": 0, "census": 0}
    assert "warning: the last transaction is incomplete" in durus.run("verify", str(path)).stdout


def test_verify_load_sets_the_state_as_a_connection_does(durus, tmp_path):
    """A state the class refuses (an attribute a slotted class lacks) is not "loaded"."""
    path = tmp_path / "db.durus"
    storage = FileStorage(str(path))
    connection = Connection(storage)
    connection.get_root()["child"] = PersistentDict(marker="UNIQUE-MARKER")
    connection.commit()
    storage.close()
    raw = bytearray(path.read_bytes())
    at = raw.rindex(b"data", 0, raw.index(b"UNIQUE-MARKER"))
    raw[at + 2] = ord("X")  # PersistentDict has no slot "daXa"
    path.write_bytes(bytes(raw))
    assert durus.run("verify", str(path)).returncode == 0  # the pickles are well-formed
    result = durus.run("verify", "--load", str(path))
    assert result.returncode == 1
    assert "oid 1 (durus.persistent_dict.PersistentDict): cannot be loaded: AttributeError" \
        in result.stdout
