"""The accelerator's memory safety: references, the collector, re-entrancy.

Each test names the C rule it guards.  Those that could crash the interpreter
run their program in a child process, so a crash is a failure, not a lost run.
Most also run on the pure path, where they state the reference behaviour.
"""

from __future__ import annotations

import gc
import signal
import subprocess
import sys
import textwrap
import weakref
from typing import Any

import pytest

from durus.btree import BNode, BTree
from durus.connection import Connection
from durus.persistent import ConnectionBase, Persistent, accelerated, new_ghost
from durus.storage import MemoryStorage

needs_accelerator = pytest.mark.skipif(not accelerated, reason="the C accelerator is not in use")


class Item(Persistent):
    pass


def _child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=False
    )


@needs_accelerator
def test_a_freed_connection_class_cannot_pass_for_a_connection():
    """is_conn() once cached the last ConnectionBase subclass by a borrowed pointer:
    after that class was freed, an unrelated class allocated at its address passed
    the check and its instances were read as C connections (a segfault here)."""
    run = _child(
        """
        import gc
        from durus.persistent import ConnectionBase, Persistent

        class Item(Persistent):
            pass

        item = Item()
        item._p_status = 0
        missed = 0
        for index in range(200):
            sub = type("Sub", (ConnectionBase,), {})
            item._p_connection = sub()
            item._p_serial = 0
            item.__dict__
            item._p_connection = None
            del sub
            gc.collect()
            calls = []

            class Other:
                def note_access(self, obj):
                    calls.append(obj)

            item._p_connection = Other()
            item.__dict__
            missed += not calls
            item._p_connection = None
            del Other
            gc.collect()
        print(missed)
        """
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "0"


def _refcounts(*objects: Any) -> list[int]:
    return [sys.getrefcount(obj) for obj in objects]


def _exercise(connection: Any, items: list[Any], recent: Any) -> None:
    for item in items:
        connection.note_access(item)
    connection.transaction_serial += 1
    for item in items:
        item.__dict__  # the first touch through getattro
    for item in items:
        recent.add(item)
    for item in items[:3]:
        recent.push_oldest(item)
    for _ in range(3):
        recent.push_oldest(recent.pop_oldest())
    recent.list()
    list(recent)
    assert items[0] in recent
    assert 1 not in recent
    with pytest.raises(TypeError):
        recent.add(1)
    for item in items[3:6]:
        recent.discard(item)
    for item in items:
        recent.add(item)


@needs_accelerator
def test_no_reference_leaks_in_the_recent_list_and_first_touches():
    from durus import _persistent_accel

    connection = ConnectionBase()
    recent = _persistent_accel.RecentObjects()
    connection._recent = recent
    items = [Item() for _ in range(10)]
    for item in items:
        item._p_connection = connection
        item._p_status = 0
    _exercise(connection, items, recent)
    before = _refcounts(connection, recent, *items)
    for _ in range(500):
        _exercise(connection, items, recent)
    assert _refcounts(connection, recent, *items) == before
    assert len(recent) == len(items)
    connection._recent = None
    while recent:
        recent.pop_oldest()
    assert _refcounts(*items) == [count - 1 for count in before[2:]]


class _LoadingConnection(ConnectionBase):
    """A connection whose load fails every other time."""

    def __init__(self) -> None:
        super().__init__()
        self.loads = 0

    def load_state(self, obj: Any) -> None:
        self.loads += 1
        if self.loads % 2:
            raise OSError("load failed")
        obj.__setstate__({"value": self.loads})
        obj._p_status = 0

    def note_change(self, obj: Any) -> None:
        pass

    if not accelerated:  # the C ConnectionBase has its own

        def note_access(self, obj: Any) -> None:
            pass


def test_no_reference_leaks_in_ghosts_loads_and_search():
    connection = _LoadingConnection()
    oid = b"\0" * 7 + b"\1"
    key = object()
    node = BNode()
    node.items = [(1, "a"), (3, "b")]

    class Refusing:
        def __lt__(self, other: Any) -> bool:
            raise ValueError

        __gt__ = __eq__ = __lt__  # type: ignore[assignment]

    refusing = Refusing()

    def run() -> None:
        ghost = new_ghost(Item, oid, connection)
        with pytest.raises(OSError):
            ghost.value
        assert ghost.value > 0
        ghost.value = key
        assert ghost.value is key
        del ghost.value
        assert BTree()._p_oid is None
        tree = BTree()
        tree.root = node
        assert tree.get(3) == "b"
        assert tree.get(2) is None
        with pytest.raises(ValueError):
            tree.get(refusing)

    run()
    before = _refcounts(connection, oid, key, node, refusing)
    for _ in range(500):
        run()
    assert _refcounts(connection, oid, key, node, refusing) == before


def test_the_collector_frees_connections_and_their_objects():
    """Connection -> recent list -> objects -> connection: one cycle, traversed."""
    refs = []
    for _ in range(20):
        storage = MemoryStorage()
        connection = Connection(storage, cache_size=10)
        root = connection.get_root()
        root["tree"] = tree = BTree()
        for index in range(40):
            item = Item()
            item.root = root
            tree[index] = item
        connection.commit()
        reader = Connection(storage, cache_size=10)
        for index in range(40):
            assert reader.get_root()["tree"][index].root is not None
        reader.abort()
        refs += [weakref.ref(connection), weakref.ref(reader), weakref.ref(item)]
        refs.append(weakref.ref(reader.get_root()["tree"]))
    del connection, reader, root, tree, item, storage
    gc.collect()
    assert [ref for ref in refs if ref() is not None] == []


class _Toucher(Persistent):
    """Touches its neighbours, the connection and the recent list from __del__."""

    def __del__(self) -> None:
        for ref in self.__dict__.get("others", ()):
            other = ref()
            if other is not None:  # not freed before this one
                other.__dict__
                other._p_connection.note_access(other)


@needs_accelerator
def test_finalizers_that_touch_the_recent_list_while_it_is_freed():
    """recent_clear(): releasing one object runs code that moves the others."""
    from durus import _persistent_accel

    for _ in range(50):
        connection = ConnectionBase()
        recent = _persistent_accel.RecentObjects()
        connection._recent = recent
        objects = [_Toucher() for _ in range(30)]
        for index, obj in enumerate(objects):
            obj.others = [weakref.ref(other) for other in objects[index + 1 :] + objects[:index]]
            obj._p_connection = connection
            obj._p_status = 0
        for obj in objects:
            recent.add(obj)
        del objects, obj
        # The list goes; the new list of the connection takes what __del__ touches.
        connection._recent = _persistent_accel.RecentObjects()
        del recent
        gc.collect()
        del connection
        gc.collect()


def test_finalizers_that_touch_the_recent_list_during_collection():
    """The same in a cycle the collector breaks (tp_clear, then dealloc)."""
    run = _child(
        """
        import gc
        from durus.connection import Connection
        from durus.persistent import Persistent
        from durus.storage import MemoryStorage

        class Toucher(Persistent):
            def __del__(self):
                for other in self.__dict__.get("others", ()):
                    try:
                        other.__dict__
                        other._p_connection.note_access(other)
                    except (ReferenceError, AttributeError):
                        pass

        for _ in range(30):
            connection = Connection(MemoryStorage(), cache_size=5)
            objects = [Toucher() for _ in range(40)]
            root = connection.get_root()
            for index, obj in enumerate(objects):
                root[index] = obj
                obj.others = objects
            connection.commit()
            for obj in objects:
                obj.__dict__
            del objects, obj, root, connection
            gc.collect()
        print("ok")
        """
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"


class _Host(ConnectionBase):
    def load_state(self, obj: Any) -> None:
        raise AssertionError(f"loaded for {obj!r}")


class _Name(str):
    pass


@pytest.mark.parametrize("name", ["_p_\xe9t\xe9", _Name("_p_oid"), _Name("__class__")])
def test_untracked_names_beyond_ascii_and_str_subclasses(name):
    """is_tracked(): name[:3] == "_p_" and the untracked dunders, for every str."""
    ghost = new_ghost(Item, b"\0" * 8, _Host())
    try:
        getattr(ghost, name)
    except AttributeError:
        pass
    assert ghost._p_is_ghost()


def test_a_failing_len_of_the_items_propagates():
    """bnode_search(): the second length of the items is checked too."""

    class Items(list):  # type: ignore[type-arg]
        calls = 0

        def __len__(self) -> int:
            Items.calls += 1
            if Items.calls > 1:
                raise RuntimeError("len refused")
            return list.__len__(self)

    node = BNode()
    node.items = Items([(1, "a")])
    tree = BTree()
    tree.root = node
    with pytest.raises(RuntimeError, match="len refused"):
        tree.get(0)


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs signal.setitimer")
def test_a_search_through_a_cycle_of_nodes_can_be_interrupted():
    node = BNode()
    node.items = [(1, "a")]
    node.nodes = [node, node]
    tree = BTree()
    tree.root = node

    class Interrupted(Exception):
        pass

    def interrupt(signum: int, frame: Any) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    try:
        with pytest.raises(Interrupted):
            tree.get(0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
