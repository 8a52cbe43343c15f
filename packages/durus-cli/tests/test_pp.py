"""The console's ``pp``: a persistent object and one level of its contents.

Objects are written to a real file, then read back by a fresh connection (so
they start as ghosts), and shown by the function itself and by a console
typed into a real terminal.
"""

from __future__ import annotations

import io
import sys

import pytest
from durus_cli_testing import DATA

from durus.btree import BTree
from durus.cli_client import format_persistent, pp
from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent_dict import PersistentDict
from durus.persistent_list import PersistentList
from durus.persistent_set import PersistentSet


@pytest.fixture
def fixture_classes():
    sys.path.insert(0, str(DATA))
    try:
        import fixture_classes

        yield fixture_classes
    finally:
        sys.path.remove(str(DATA))


@pytest.fixture
def database(tmp_path, fixture_classes):
    """A file holding a root with one of each kind; returns a fresh connection's root."""
    path = str(tmp_path / "pp.durus")
    connection = Connection(FileStorage(path))
    root = connection.get_root()
    root["list"] = PersistentList([1, "two", PersistentDict(inner=1)])  # oids 1 and 2
    root["n"] = 1
    root["account"] = fixture_classes.Account("alice", 100)
    root["slotted"] = fixture_classes.Slotted("box", 7)
    root["set"] = PersistentSet({3, 1, 2})
    root["tree"] = tree = BTree()
    for i in range(5000):
        tree[i] = PersistentList([i]) if i % 1000 == 0 else f"value {i}"
    root["big"] = PersistentDict((f"key{i:03}", i) for i in range(100))
    root["long"] = "x" * 1000
    connection.commit()
    connection.storage.close()
    fresh = Connection(FileStorage(path, readonly=True))
    yield fresh.get_root()
    fresh.storage.close()


def name(obj) -> str:
    """``<Class oid>``, as ``pp`` shows a persistent object (oids depend on commit order)."""
    return f"<{obj.__class__.__name__} {int.from_bytes(obj._p_oid, 'big')}>"


def test_one_level_of_each_kind(database):
    root = database
    lines = format_persistent(root).splitlines()
    assert lines[:7] == [
        "<PersistentDict 0> 8 items:",
        f"  'list': {name(root['list'])}",
        "  'n': 1",
        f"  'account': {name(root['account'])}",
        f"  'slotted': {name(root['slotted'])}",
        f"  'set': {name(root['set'])}",
        f"  'tree': {name(root['tree'])}",
    ]
    assert lines[7] == f"  'big': {name(root['big'])}"
    assert lines[8].startswith("  'long': 'xxxx") and len(lines[8]) < 100  # bounded
    assert len(lines) == 9
    # The children were not loaded to be named.
    assert root["list"]._p_is_ghost() and root["tree"]._p_is_ghost()
    inner = root["list"][2]
    assert format_persistent(root["list"]) == f"{name(root['list'])} [1, 'two', {name(inner)}]"
    assert format_persistent(inner) == f"{name(inner)} {{'inner': 1}}"
    assert format_persistent(root["account"]) == (
        f"{name(root['account'])} owner='alice', balance=100, history=[]")
    assert format_persistent(root["slotted"]) == f"{name(root['slotted'])} name='box', size=7"
    assert format_persistent(root["set"]) == f"{name(root['set'])} {{1, 2, 3}}"


def test_large_containers_are_bounded(database):
    big = format_persistent(database["big"]).splitlines()
    assert big[0] == f"{name(database['big'])} 100 items, the first 30:"
    assert big[1] == "  'key000': 0"
    assert big[30] == "  'key029': 29"
    assert big[31:] == ["  ... 70 more"]
    # A BTree is not counted (len() would load every node), only shown in part.
    tree = format_persistent(database["tree"], limit=3).splitlines()
    assert tree[0] == f"{name(database['tree'])} more than 3 items, the first 3:"
    assert tree[1] == f"  0: {name(database['tree'][0])}"
    assert tree[2:] == ["  1: 'value 1'", "  2: 'value 2'", "  ..."]
    small = format_persistent(database["tree"], limit=5000).splitlines()
    assert small[0] == f"{name(database['tree'])} 5000 items:"
    assert len(small) == 5001


def test_pp_prints_it_and_pprints_anything_else(database):
    out = io.StringIO()
    pp(database["set"], stream=out)
    pp({"plain": [1, 2]}, stream=out)
    pp(BTree(), stream=out)  # not saved yet
    assert out.getvalue().splitlines() == [
        f"{name(database['set'])} {{1, 2, 3}}",
        "{'plain': [1, 2]}",
        "<BTree unsaved> {}",
    ]


def test_pp_in_a_real_console(durus):
    pexpect = pytest.importorskip("pexpect", reason="the terminal tests need pexpect")
    setup = durus.run("-c", "--file", "db.durus", input=(
        "from durus.persistent_list import PersistentList\n"
        "root['a'] = PersistentList([1, 2])\nroot['n'] = 1\nconnection.commit()\n"))
    assert setup.returncode == 0, setup.stderr
    child = pexpect.spawn(sys.executable, ["-m", "durus", "-c", "--file", "db.durus"],
                          cwd=str(durus.cwd), env=durus.env, encoding="utf-8", timeout=60,
                          dimensions=(40, 200))
    try:
        child.expect_exact(">>> ")
        child.sendline("pp(root)")
        child.expect_exact("pp(root)")  # the echo
        child.expect_exact(">>> ")
        assert child.before.strip() == "<PersistentDict 0> {'a': <PersistentList 1>, 'n': 1}"
        child.sendline("pp(root['a'])")
        child.expect_exact("pp(root['a'])")
        child.expect_exact(">>> ")
        assert child.before.strip() == "<PersistentList 1> [1, 2]"
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        if child.isalive():
            child.terminate(force=True)
