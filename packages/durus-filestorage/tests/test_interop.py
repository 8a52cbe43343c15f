"""Files move both ways between this FileStorage and a real Durus 4.3.

Marked ``interop``: they run Durus 4.3 (``DURUS43_PYTHON``, set by the tox
interop envs) in a subprocess and skip when it is not available.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from durus.btree import BTree
from durus.connection import Connection
from durus.file_storage import FileLockedError, FileStorage, LegacyFormatError
from durus.persistent_dict import PersistentDict
from durus.persistent_list import PersistentList
from durus.persistent_set import PersistentSet
from durus.utils import int8_to_str

pytestmark = pytest.mark.interop

#: Runs under both Durus 4.3 and ours: a JSON-able description of everything
#: reachable from the root, with classes and shared references.
SUMMARY = r'''
def summarize(root):
    from durus.persistent import PersistentBase
    seen = set()

    def d(o):
        if isinstance(o, PersistentBase):
            oid = int.from_bytes(o._p_oid, "big")
            if oid in seen:
                return ["ref", oid]
            seen.add(oid)
            cls = type(o).__module__ + "." + type(o).__name__
            if cls.endswith((".BTree", ".PersistentDict")):
                body = [[d(k), d(v)] for k, v in o.items()]
            elif cls.endswith(".PersistentList"):
                body = [d(x) for x in o]
            elif cls.endswith(".PersistentSet"):
                body = sorted((d(x) for x in o), key=repr)
            else:
                body = [[k, d(v)] for k, v in sorted(o.__getstate__().items())]
            return [cls, oid, body]
        if isinstance(o, bytes):
            return ["bytes", o.hex()]
        if isinstance(o, tuple):
            return ["tuple", [d(x) for x in o]]
        if isinstance(o, list):
            return ["list", [d(x) for x in o]]
        if isinstance(o, dict):
            return ["dict", sorted(([d(k), d(v)] for k, v in o.items()), key=repr)]
        if isinstance(o, (set, frozenset)):
            return ["set", sorted((d(x) for x in o), key=repr)]
        if isinstance(o, float):
            return ["float", repr(o)]
        return o

    return d(root)
'''

READ_WITH_DURUS43 = SUMMARY + r'''
import json, sys
from durus.connection import Connection
from durus.file_storage import FileStorage
storage = FileStorage(sys.argv[1], readonly=True)
connection = Connection(storage)
print(json.dumps(summarize(connection.get_root())))
'''


def summarize_here(path: str) -> object:
    namespace: dict[str, object] = {}
    exec(SUMMARY, namespace)
    storage = FileStorage(path, readonly=True)
    try:
        return json.loads(json.dumps(namespace["summarize"](Connection(storage).get_root())))
    finally:
        storage.close()


def populate(connection: Connection, rounds: int = 3) -> None:
    from fixture_classes import Account, Slotted

    root = connection.get_root()
    root["tree"] = tree = BTree()
    root["accounts"] = PersistentDict()
    for i in range(rounds):
        for k in range(300):
            tree[k + 1000 * i] = PersistentList([k, "v" * (k % 7)])
        alice = Account("alice", i)
        alice.friend = Account("bob", -i)
        alice.friend.friend = alice
        root["accounts"][i] = alice
        root["slotted"] = Slotted("box", i)
        root["set"] = PersistentSet({"a", "b", i})
        root["plain"] = {"bytes": b"\x00\xff" * i, "tuple": (1, 2.5, None), "big": 10**30}
        connection.commit()
        for k in range(0, 300, 3):
            del tree[k + 1000 * i]  # garbage
        connection.commit()


def test_files_we_write_and_pack_read_correctly_in_durus43(tmp_path, durus43):
    path = str(tmp_path / "ours.durus")
    connection = Connection(FileStorage(path))
    populate(connection)
    connection.get_storage().close()
    ours = summarize_here(path)
    assert json.loads(durus43(READ_WITH_DURUS43, path).stdout) == ours
    storage = FileStorage(path)
    connection = Connection(storage)
    connection.pack()
    connection.get_root()["after_pack"] = PersistentList(["tail"])
    connection.commit()
    storage.close()
    packed = summarize_here(path)
    assert json.loads(durus43(READ_WITH_DURUS43, path).stdout) == packed
    assert os.path.getsize(path) < os.path.getsize(path + ".prepack")


ALLOCATE_WITH_DURUS43 = r'''
import json, sys
from durus.file_storage import FileStorage
storage = FileStorage(sys.argv[1])
names = [int.from_bytes(storage.new_oid(), "big") for _ in range(int(sys.argv[2]))]
storage.close()
print(json.dumps(names))
'''


def test_durus43_allocates_the_same_oids_in_our_packed_file(tmp_path, durus43):
    path = str(tmp_path / "holes.durus")
    connection = Connection(FileStorage(path))
    root = connection.get_root()
    items = [PersistentList([i]) for i in range(1, 40)]
    root["items"] = list(items)
    connection.commit()
    root["items"] = [item for item in items if item[0] % 4]
    connection.commit()
    connection.pack()
    connection.get_storage().close()
    theirs = json.loads(durus43(ALLOCATE_WITH_DURUS43, path, "25").stdout)
    storage = FileStorage(path)
    ours = [int.from_bytes(storage.new_oid(), "big") for _ in range(25)]
    storage.close()
    assert theirs == ours
    assert ours[:9] == [36, 32, 28, 24, 20, 16, 12, 8, 4]


WRITE_WITH_DURUS43 = r'''
import sys
from durus.btree import BTree
from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent_list import PersistentList
from fixture_classes import Account
path, action = sys.argv[1], sys.argv[2]
connection = Connection(FileStorage(path))
root = connection.get_root()
if action == "create":
    root["tree"] = tree = BTree()
    for k in range(500):
        tree[k] = PersistentList([k])
    root["account"] = Account("carol", 7)
    connection.commit()
    for k in range(0, 500, 2):
        del tree[k]
    connection.commit()
elif action == "pack":
    connection.pack()
elif action == "append":
    root["from_durus43"] = PersistentList(["hello"])
    connection.commit()
connection.get_storage().close()
'''


def test_files_durus43_writes_and_packs_open_here(tmp_path, durus43):
    path = str(tmp_path / "theirs.durus")
    durus43(WRITE_WITH_DURUS43, path, "create")
    their_summary = json.loads(durus43(READ_WITH_DURUS43, path).stdout)
    assert summarize_here(path) == their_summary
    # Our writer leaves an index behind; Durus 4.3 then packs behind its back.
    storage = FileStorage(path)
    connection = Connection(storage)
    connection.get_root()["ours"] = 1
    connection.commit()
    storage.close()
    assert os.path.exists(path + ".index")
    durus43(WRITE_WITH_DURUS43, path, "pack")
    durus43(WRITE_WITH_DURUS43, path, "append")
    expected = json.loads(durus43(READ_WITH_DURUS43, path).stdout)
    storage = FileStorage(path)
    assert storage.shelf.open_scan_bytes > 0  # the stale index was not used
    connection = Connection(storage)
    assert list(connection.get_root()["from_durus43"]) == ["hello"]
    storage.close()
    assert summarize_here(path) == expected
    # We pack what Durus 4.3 packed and appended to; Durus 4.3 reads the result.
    storage = FileStorage(path)
    storage.pack()
    storage.close()
    assert json.loads(durus43(READ_WITH_DURUS43, path).stdout) == expected


def test_our_pack_is_byte_identical_to_durus43s(tmp_path, durus43, data_dir):
    ours = str(tmp_path / "ours.durus")
    theirs = str(tmp_path / "theirs.durus")
    for name in (ours, theirs):
        shutil.copyfile(data_dir / "durus43-unpacked.durus", name)
    durus43(WRITE_WITH_DURUS43, theirs, "pack")
    storage = FileStorage(ours)
    storage.pack()
    storage.close()
    assert Path(ours).read_bytes() == Path(theirs).read_bytes()
    assert Path(theirs).read_bytes() == Path(data_dir / "durus43-packed.durus").read_bytes()


LOCK_WITH_DURUS43 = r'''
import sys, time
from durus.file_storage import FileStorage
try:
    storage = FileStorage(sys.argv[1])
except IOError as error:
    print("refused", type(error).__name__)
    sys.exit(0)
print("locked", flush=True)
sys.stdin.read()
storage.close()
'''


def test_durus43_and_we_exclude_each_other(tmp_path, durus43):
    import subprocess

    path = str(tmp_path / "lock.durus")
    storage = FileStorage(path)
    assert durus43(LOCK_WITH_DURUS43, path).stdout.startswith("refused")
    storage.close()
    python = os.environ["DURUS43_PYTHON"]
    child = subprocess.Popen(
        [python, "-c", LOCK_WITH_DURUS43, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={"PATH": os.environ.get("PATH", "")},
    )
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(FileLockedError):
            FileStorage(path)
    finally:
        child.communicate("")


WRITE_DFS20 = r'''
import sys
from durus.connection import Connection
from durus.file_storage2 import FileStorage2
from durus.persistent_list import PersistentList
storage = FileStorage2(sys.argv[1])
connection = Connection(storage)
root = connection.get_root()
for i in range(20):
    root[i] = PersistentList([i] * i)
    connection.commit()
del root[3]
connection.commit()
if sys.argv[2] == "pack":
    connection.pack()
    root["after"] = PersistentList(["after"])
    connection.commit()
storage.close()
'''


@pytest.mark.parametrize("packed", [False, True])
def test_dfs20_files_of_durus43(tmp_path, durus43, packed):
    from durus.file_storage2 import FileStorage2

    path = str(tmp_path / "legacy.durus")
    durus43(WRITE_DFS20, path, "pack" if packed else "plain")
    with pytest.raises(LegacyFormatError, match="durus convert"):
        FileStorage(path)
    expected = json.loads(durus43(READ_WITH_DURUS43.replace(
        "from durus.file_storage import FileStorage",
        "from durus.file_storage2 import FileStorage2 as FileStorage"), path).stdout)
    legacy = FileStorage2(path)
    records = dict(legacy.gen_oid_record())
    assert int8_to_str(0) in records
    namespace: dict[str, object] = {}
    exec(SUMMARY, namespace)
    assert json.loads(json.dumps(namespace["summarize"](Connection(legacy).get_root()))) == expected
    legacy.close()


def test_our_reader_follows_a_durus43_writer_and_its_pack(tmp_path, durus43):
    path = str(tmp_path / "shared.durus")
    durus43(WRITE_WITH_DURUS43, path, "create")
    reader_storage = FileStorage(path, readonly=True)
    reader = Connection(reader_storage)
    assert "from_durus43" not in reader.get_root()
    durus43(WRITE_WITH_DURUS43, path, "append")
    reader.abort()
    assert list(reader.get_root()["from_durus43"]) == ["hello"]
    durus43(WRITE_WITH_DURUS43, path, "pack")
    reader.abort()
    assert not reader_storage.shelf.is_replaced()
    assert reader_storage.shelf.get_offset_map().get_array_size() > 0
    assert summarize_here(path) == json.loads(durus43(READ_WITH_DURUS43, path).stdout)
    assert list(reader.get_root()["from_durus43"]) == ["hello"]
    reader_storage.close()


def test_an_index_made_stale_by_a_durus43_commit(tmp_path, durus43):
    """Durus 4.3 appends after our writer saved the index (it knows nothing of it):
    the index still covers its region, the commit after it is scanned."""
    path = str(tmp_path / "stale.durus")
    durus43(WRITE_WITH_DURUS43, path, "create")
    storage = FileStorage(path)
    connection = Connection(storage)
    for i in range(20):
        connection.get_root()[f"ours{i}"] = PersistentList([i])
        connection.commit()
    storage.close()
    index_before = Path(path + ".index").read_bytes()
    size = os.path.getsize(path)
    durus43(WRITE_WITH_DURUS43, path, "append")
    assert Path(path + ".index").read_bytes() == index_before
    expected = json.loads(durus43(READ_WITH_DURUS43, path).stdout)
    storage = FileStorage(path, readonly=True)
    assert storage.shelf.open_scan_bytes == os.path.getsize(path) - size
    assert storage.shelf.index.base is not None  # the covered region still comes from it
    assert list(Connection(storage).get_root()["from_durus43"]) == ["hello"]
    storage.close()
    assert summarize_here(path) == expected
