"""Shared fixtures of the durus-filestorage tests.

Tests cannot import each other (pytest runs with ``--import-mode=importlib``),
so helpers live here as fixtures.  This folder goes on ``sys.path`` so that the
fixture databases' application classes (``fixture_classes``) can be imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def expected() -> dict[str, Any]:
    with open(DATA / "expected.json", encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture
def fixture_copy(tmp_path: Path) -> Callable[[str], str]:
    """``fixture_copy(name)``: a writable copy of a fixture database in tmp_path."""

    def copy(name: str) -> str:
        target = tmp_path / name
        shutil.copyfile(DATA / name, target)
        os.chmod(target, 0o644)
        return str(target)

    return copy


def _child_env() -> dict[str, str]:
    """An environment in which a child Python imports this durus and fixture_classes."""
    import durus

    paths = [str(TESTS)]
    for portion in durus.__path__:
        parent = os.path.dirname(os.path.abspath(portion))
        if parent not in paths:
            paths.append(parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop("PYTHONSTARTUP", None)
    return env


@pytest.fixture
def run_python() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_python(code, *args)``: run code in a fresh interpreter using this durus."""

    def run(code: str, *args: str, check: bool = True, timeout: float = 120):
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code), *args],
            env=_child_env(),
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    return run


@pytest.fixture
def durus43() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``durus43(code, *args)``: run code under the real Durus 4.3 (DURUS43_PYTHON)."""
    python = os.environ.get("DURUS43_PYTHON")
    if not python:
        pytest.skip("DURUS43_PYTHON is not set (the tox interop envs set it)")
    if not os.path.exists(python):
        pytest.fail(f"DURUS43_PYTHON={python!r} does not exist")

    def run(code: str, *args: str, check: bool = True, timeout: float = 120):
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env["PYTHONPATH"] = str(TESTS)
        proc = subprocess.run(
            [python, "-c", textwrap.dedent(code), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"Durus 4.3 failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    return run


@pytest.fixture
def check_expected() -> Callable[..., None]:
    """``check_expected(root, expected_root, truncated=False)``: every value of expected.json."""

    def check(root: Any, exp: dict[str, Any], truncated: bool = False) -> None:
        from fixture_classes import Account, Slotted

        from durus.btree import BTree
        from durus.persistent import real_class
        from durus.persistent_dict import PersistentDict
        from durus.persistent_set import PersistentSet

        def kind(obj: Any) -> type:
            # Loaded objects may run as a tracking variant of their class.
            return real_class(obj)

        assert kind(root) is PersistentDict
        accounts = root["accounts"]
        assert kind(accounts) is PersistentDict
        assert sorted(accounts.keys()) == sorted(exp["accounts"])
        for name, values in exp["accounts"].items():
            account = accounts[name]
            assert kind(account) is Account
            assert account.owner == values["owner"]
            assert account.balance == values["balance"]
            assert [list(entry) for entry in account.history] == values["history"]
        alice = accounts["alice"]
        # "root['same_alice'] is root['accounts']['alice'] and alice.friend.friend is alice"
        assert root["same_alice"] is alice
        assert alice.friend.friend is alice
        assert kind(alice.friend) is Account
        assert alice.friend is accounts["bob"]
        assert root["big_int"] == exp["big_int"]
        assert type(root["bytes"]) is bytes
        assert root["bytes"] == bytes.fromhex(exp["bytes_hex"])
        assert root["dict"] == exp["dict"] and type(root["dict"]) is dict
        assert type(root["dict"]["b"]) is dict
        assert root["float"] == exp["float"] and type(root["float"]) is float
        assert root["int"] == exp["int"] and type(root["int"]) is int
        assert root["list"] == exp["list"] and type(root["list"]) is list
        assert root["none"] is None
        pdict = root["pdict"]
        assert kind(pdict) is PersistentDict
        assert dict(pdict.items()) == exp["pdict"]
        pset = root["pset"]
        assert kind(pset) is PersistentSet
        assert sorted(pset) == exp["pset"]
        slotted = root["slotted"]
        assert kind(slotted) is Slotted
        assert (slotted.name, slotted.size) == (exp["slotted"]["name"], exp["slotted"]["size"])
        assert root["str"] == exp["str"]
        assert root["tuple"] == tuple(exp["tuple"]) and type(root["tuple"]) is tuple
        tree = root["tree"]
        assert kind(tree) is BTree
        keys = list(tree.keys())
        assert keys == sorted(keys)
        assert len(keys) == len(tree)
        for key, value in exp["tree_sample"].items():
            assert tree[int(key)] == value
        if truncated:
            # The cut transaction deleted 'plist' and 500 keys: none of it applied.
            assert "plist" in root
            assert len(tree) == 2000 and keys == list(range(2000))
        else:
            assert exp["plist"] == "deleted" and "plist" not in root
            assert len(tree) == exp["tree_len"]
        for key in keys:
            value = tree[key]
            assert value in (f"value-{key}", f"changed-{key}")
        expected_keys = set(exp) - {"accounts", "bytes_hex", "identity", "plist", "tree_len",
                                    "tree_sample"} | {"accounts", "bytes", "same_alice", "tree"}
        if truncated:
            expected_keys.add("plist")
        assert set(root.keys()) == expected_keys

    return check


def read_shelf_simply(data: bytes) -> dict[bytes, bytes]:
    """oid -> current record of a complete SHELF-1 image (the spec's Appendix B).

    Deliberately naive and independent of durus.shelf: used as the reference.
    """

    def int8(at: int) -> int:
        return int.from_bytes(data[at : at + 8], "big")

    assert data[:8] == b"SHELF-1\n"
    map_start = 16 + int8(8)
    total, width, count = int8(map_start), int8(map_start + 8), int8(map_start + 16)
    assert total == 16 + width * count
    records: dict[bytes, bytes] = {}

    def item(position: int) -> tuple[bytes, bytes]:
        length = int8(position)
        body = data[position + 8 : position + 8 + length]
        assert len(body) == length
        return body[:8], body[8:]

    for i in range(count):
        at = map_start + 24 + i * width
        value = int.from_bytes(data[at : at + width], "big")
        if value < map_start:
            name, record = item(value)
            assert name == i.to_bytes(8, "big") == record[:8]
            records[name] = record
    position = map_start + 24 + width * count
    while position < len(data):
        end = position + 8 + int8(position)
        assert end <= len(data), "incomplete transaction"
        position += 8
        while position < end:
            name, record = item(position)
            assert name == record[:8]
            records[name] = record
            position += 8 + 8 + len(record)
        assert position == end
    return records


@pytest.fixture
def reference_records() -> Callable[[bytes], dict[bytes, bytes]]:
    return read_shelf_simply
