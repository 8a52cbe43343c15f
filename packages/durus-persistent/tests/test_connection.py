"""Connection: root, loading, cache, commit/abort, helpers."""

from __future__ import annotations

import pickle

import pytest

from durus.connection import (
    ROOT_OID,
    Cache,
    Connection,
    ObjectDictionary,
    ReferenceContainer,
    gen_every_instance,
    touch_every_reference,
)
from durus.error import DurusError
from durus.persistent import GHOST, SAVED, UNSAVED, Persistent, PersistentObject
from durus.persistent_dict import PersistentDict
from durus.storage import MemoryStorage
from durus.utils import int8_to_str


class Node(Persistent):
    def __init__(self, name, children=()):
        self.name = name
        self.children = list(children)


class Leaf(PersistentObject):
    __slots__ = ("value",)


class CustomRoot(PersistentDict):
    __slots__ = ()


def test_root_is_oid_zero_and_created_once():
    storage = MemoryStorage()
    connection = Connection(storage)
    root = connection.get_root()
    assert root._p_oid == ROOT_OID == b"\0" * 8
    assert isinstance(root, PersistentDict)
    assert root._p_status == SAVED
    assert set(storage.records) == {ROOT_OID}
    again = Connection(storage)
    assert again.get_root()._p_oid == ROOT_OID
    assert len(storage.records) == 1


def test_root_class():
    storage = MemoryStorage()
    assert type(Connection(storage, root_class=CustomRoot).get_root()) is CustomRoot
    assert type(Connection(storage, root_class=CustomRoot).get_root()) is CustomRoot
    with pytest.raises(TypeError):
        Connection(storage, root_class=PersistentDict)


def test_connection_needs_a_storage():
    with pytest.raises(TypeError):
        Connection(object())  # type: ignore[arg-type]


def test_get_by_int_or_bytes_and_missing():
    connection = Connection(MemoryStorage())
    root = connection.get_root()
    root["n"] = Node("n")
    connection.commit()
    oid = root["n"]._p_oid
    assert connection.get(oid) is root["n"]
    assert connection[int.from_bytes(oid, "big")] is root["n"]
    assert connection.get(999) is None


def test_get_loads_without_recording_access():
    storage = MemoryStorage()
    first = Connection(storage)
    first.get_root()["n"] = Node("n")
    first.commit()
    second = Connection(storage)
    second.get_root()._p_set_status_ghost()
    second.abort()  # nothing keeps the node's ghost alive now
    assert second.cache.get(int8_to_str(1)) is None
    node = second.get(1)
    assert node._p_status == SAVED
    assert node._p_serial == 0
    assert second.get_stored_pickle(int8_to_str(1)).startswith(b"\x80\x02c")


def test_references_become_ghosts_until_used():
    storage = MemoryStorage()
    first = Connection(storage)
    tree = Node("top", [Node("left"), Node("right", [Node("deep")])])
    first.get_root()["tree"] = tree
    first.commit()
    assert len(storage.records) == 5
    second = Connection(storage)
    top = second.get_root()["tree"]
    assert top._p_status == GHOST
    loads = second.get_load_count()
    assert [c.name for c in top.children] == ["left", "right"]
    assert second.get_load_count() == loads + 3
    deep = top.children[1].children[0]
    assert deep._p_status == GHOST
    assert deep.name == "deep"


def test_identity_is_preserved_within_a_connection():
    storage = MemoryStorage()
    first = Connection(storage)
    shared = Node("shared")
    first.get_root()["x"] = Node("x", [shared])
    first.get_root()["y"] = Node("y", [shared])
    first.commit()
    root = Connection(storage).get_root()
    assert root["x"].children[0] is root["y"].children[0]


def test_abort_discards_changes_and_new_objects():
    connection = Connection(MemoryStorage())
    root = connection.get_root()
    root["n"] = Node("n")
    connection.commit()
    node = root["n"]
    node.name = "changed"
    extra = Node("extra")
    root["extra"] = extra
    connection.abort()
    assert node.name == "n"
    assert "extra" not in root
    assert extra._p_oid is None


def test_serial_grows_on_commit_and_abort():
    connection = Connection(MemoryStorage())
    serial = connection.get_transaction_serial()
    connection.commit()
    connection.abort()
    assert connection.get_transaction_serial() == serial + 2


def test_failed_serialization_rolls_back():
    connection = Connection(MemoryStorage())
    root = connection.get_root()
    node = Node("n")
    root["n"] = node
    node.bad = lambda: None  # not picklable
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        connection.commit()
    assert root._p_status == UNSAVED
    assert node._p_oid is None
    del node.bad
    connection.commit()
    assert Connection(connection.get_storage()).get_root()["n"].name == "n"


def test_reference_to_another_connections_object_is_refused():
    first = Connection(MemoryStorage())
    second = Connection(MemoryStorage())
    node = Node("n")
    first.get_root()["n"] = node
    first.commit()
    second.get_root()["n"] = node
    with pytest.raises(ValueError, match="different connection"):
        second.commit()


def test_cache_shrinks_to_its_size():
    storage = MemoryStorage()
    writer = Connection(storage)
    root = writer.get_root()
    for i in range(50):
        root[i] = Node(str(i))
    writer.commit()
    reader = Connection(storage, cache_size=10)
    nodes = reader.get_root()
    names = [nodes[i].name for i in range(50)]
    assert names == [str(i) for i in range(50)]
    assert reader.get_cache_count() == 51
    reader.abort()  # every object was used in the transaction just ended
    assert reader.get_cache_count() == 51
    reader.abort()  # now they are candidates, least recently used first
    assert reader.get_cache_count() <= 10
    assert nodes[49].name == "49"
    reader.set_cache_size(5)
    assert reader.get_cache_size() == 5
    with pytest.raises(ValueError):
        reader.set_cache_size(0)


def test_cache_keeps_objects_weakly_and_used_objects_strongly():
    storage = MemoryStorage()
    writer = Connection(storage)
    writer.get_root()["n"] = Node("n")
    writer.commit()
    reader = Connection(storage)
    oid = int8_to_str(1)
    reader.get_root()._p_set_status_ghost()
    assert reader.cache.get(oid) is None  # only the root's state held it
    node = reader.get_root()["n"]
    assert node.name == "n"
    del node
    reader.get_root()._p_set_status_ghost()
    # Used in this transaction: kept alive until a shrink considers it.
    assert reader.cache.get(oid) is not None


def test_object_dictionary_and_reference_container():
    objects = ObjectDictionary()
    leaf = Leaf()
    objects[b"k"] = leaf
    assert objects.get(b"k") is leaf and b"k" in objects and len(objects) == 1
    del leaf
    assert objects.get(b"k") is None and len(objects) == 0
    assert list(objects) == []
    container = ReferenceContainer()
    item = Leaf()
    container.add(item)
    container.add(item)
    assert len(container) == 1
    container.discard(item)
    assert len(container) == 0
    cache = Cache(3)
    assert cache.get_size() == 3
    with pytest.raises(ValueError):
        Cache(0)


def test_object_dictionary_deletes_a_live_entry_at_once():
    # Durus 4.3's utest_connection TestObjectDictionary.b.
    objects = ObjectDictionary()
    leaf = Leaf()
    objects[b"k"] = leaf
    del objects[b"k"]
    assert objects.get(b"k") is None and b"k" not in objects
    assert len(objects) == 0 and list(objects) == []
    del objects[b"absent"]  # as Durus 4.3: no KeyError
    objects[b"k"] = leaf
    assert objects.get(b"k") is leaf and len(objects) == 1


def test_get_crawler_loads_everything_reachable():
    storage = MemoryStorage()
    writer = Connection(storage)
    writer.get_root()["tree"] = Node("top", [Node("a"), Node("b")])
    writer.commit()
    reader = Connection(storage)
    names = sorted(
        obj.name for obj in reader.get_crawler() if isinstance(obj, Node)
    )
    assert names == ["a", "b", "top"]


def test_gen_every_instance_and_touch_every_reference():
    storage = MemoryStorage()
    connection = Connection(storage)
    root = connection.get_root()
    root["tree"] = Node("top", [Node("a")])
    leaf = Leaf()
    leaf.value = 1
    root["leaf"] = leaf
    connection.commit()
    found = sorted(n.name for n in gen_every_instance(connection, Node))
    assert found == ["a", "top"]
    touch_every_reference(connection, "Leaf")
    # The root refers to the leaf, so its record names the class Leaf.
    assert root._p_oid in connection.changed
    assert leaf._p_oid in connection.changed
    assert connection.get_root()["tree"]._p_oid not in connection.changed
    connection.commit()


def test_pack_through_the_connection_removes_garbage():
    storage = MemoryStorage()
    connection = Connection(storage)
    root = connection.get_root()
    root["n"] = Node("n")
    connection.commit()
    garbage = root["n"]
    del root["n"]
    connection.commit()
    assert len(storage.records) == 2
    connection.pack()
    assert set(storage.records) == {ROOT_OID}
    connection.abort()
    assert garbage._p_status == GHOST


def test_connection_on_a_path_needs_filestorage_or_opens_it(tmp_path):
    path = str(tmp_path / "x.durus")
    try:
        import durus.file_storage  # noqa: F401
    except ImportError:
        with pytest.raises(DurusError, match="durus-filestorage"):
            Connection(path)
    else:
        connection = Connection(path)
        assert len(connection.get_root()) == 0
        connection.get_storage().close()


def test_shrink_evicts_the_least_recently_used_first():
    storage = MemoryStorage()
    writer = Connection(storage)
    root = writer.get_root()
    for i in range(30):
        root[i] = Node(str(i))
    writer.commit()
    reader = Connection(storage, cache_size=10)
    nodes = reader.get_root()
    assert [nodes[i].name for i in range(30)] == [str(i) for i in range(30)]
    reader.abort()  # all 30 were used in that transaction: nothing to evict yet
    assert all(nodes[i]._p_status == SAVED for i in range(30))
    assert [nodes[i].name for i in range(5)] == [str(i) for i in range(5)]
    reader.abort()  # now only the first five (and the root) were used recently
    assert [nodes[i]._p_status for i in range(5)] == [SAVED] * 5
    assert all(nodes[i]._p_status == GHOST for i in range(5, 30))


def test_entries_of_freed_objects_are_purged():
    storage = MemoryStorage()
    writer = Connection(storage)
    root = writer.get_root()
    for i in range(3000):
        root[i] = Node(str(i))
    writer.commit()
    reader = Connection(storage, cache_size=10)
    nodes = reader.get_root()
    assert sum(len(nodes[i].name) for i in range(3000)) > 0
    mapping = reader.cache.objects.mapping
    assert len(mapping) == 3001
    nodes._p_set_status_ghost()  # frees the 3000 nodes once no longer used
    reader.abort()
    reader.abort()
    assert reader.get_cache_count() <= 10
    assert len(mapping) < 1500  # the dead entries did not pile up


class Audited(Persistent):
    """Counts the times a commit marks it saved through its own method."""

    saved_calls: list[str] = []

    def _p_set_status_saved(self):
        Audited.saved_calls.append(self.__class__.__name__)
        super()._p_set_status_saved()


def test_after_a_commit_every_stored_object_is_saved_and_runs_as_its_own_class():
    storage = MemoryStorage()
    connection = Connection(storage)
    root = connection.get_root()
    root["read"], root["blind"] = Node("read"), Node("blind")
    connection.commit()
    read, blind = root["read"], root["blind"]
    assert read.name == "read"  # a read first: it runs hot, then hot-dirty
    read.name = "read, changed"
    blind._p_note_change()  # a change without a read: cold-dirty
    blind.name = "blind, changed"
    new = Node("new")
    root["new"] = new
    audited = Audited()
    audited.tag = "audited"
    root["audited"] = audited
    connection.commit()
    for obj in (root, read, blind, new, audited):
        assert obj._p_status == SAVED
        assert type(obj) is obj.__class__
    assert Audited.saved_calls == ["Audited"]
    fresh = Connection(storage).get_root()
    assert (fresh["read"].name, fresh["blind"].name, fresh["new"].name) == (
        "read, changed", "blind, changed", "new")
    # Loading a ghost marks it saved through the class's own method too.
    assert fresh["audited"].tag == "audited"
    assert Audited.saved_calls == ["Audited", "Audited"]


def test_a_failed_commit_leaves_changed_objects_unsaved_and_tracked():
    connection = Connection(MemoryStorage())
    root = connection.get_root()
    root["node"] = node = Node("node")
    connection.commit()
    node.name = "changed"
    node.unpicklable = (x for x in ())  # a generator: pickling it is a TypeError
    with pytest.raises(TypeError):
        connection.commit()
    assert node._p_status == UNSAVED
    assert node._p_oid in connection.changed
    del node.unpicklable
    connection.commit()
    assert node._p_status == SAVED and type(node) is Node


class AuditingConnection(Connection):
    """A connection whose class has its own note_access."""

    def __init__(self, *args, **kwargs):
        self.accessed = []
        super().__init__(*args, **kwargs)

    def note_access(self, obj):
        self.accessed.append(obj._p_oid)
        super().note_access(obj)


def test_a_connection_class_with_its_own_note_access_sees_every_first_touch():
    storage = MemoryStorage()
    writer = Connection(storage)
    writer.get_root()["a"], writer.get_root()["b"] = Node("a"), Node("b")
    writer.commit()
    connection = AuditingConnection(storage)
    root = connection.get_root()
    a, b = root["a"], root["b"]
    for _ in range(2):
        connection.abort()
        connection.accessed.clear()
        assert (a.name, b.name, a.name) == ("a", "b", "a")
        # Each object's first read of the transaction (a load included) went
        # through the method; once noted, later reads may skip it.
        assert connection.accessed[:2] == [a._p_oid, b._p_oid]
        assert set(connection.accessed) == {a._p_oid, b._p_oid}
        assert a._p_serial == b._p_serial == connection.transaction_serial
