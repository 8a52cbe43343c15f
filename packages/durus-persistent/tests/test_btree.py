"""BTree and BNode: Durus 4.3 node layouts and state, mapping behaviour, range API."""

from __future__ import annotations

import pickle
import random
from collections.abc import MutableMapping
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from durus.btree import (
    BNode,
    BNode4,
    BNode8,
    BNode16,
    BNode32,
    BNode64,
    BNode128,
    BNode256,
    BNode512,
    BTree,
)
from durus.connection import Connection
from durus.persistent import PersistentObject, accelerated
from durus.storage import MemoryStorage

NODE_CLASSES = [
    (BNode, 2),
    (BNode4, 4),
    (BNode8, 8),
    (BNode16, 16),
    (BNode32, 32),
    (BNode64, 64),
    (BNode128, 128),
    (BNode256, 256),
    (BNode512, 512),
]


class BNode3(BNode):
    """An application-defined node class: set_bnode_minimum_degree finds it too."""

    __slots__ = []
    minimum_degree = 3


def keys_layout(node: BNode) -> Any:
    """A leaf as its list of keys; an internal node as (keys, [children])."""
    keys = [item[0] for item in node.items]
    if node.nodes is None:
        return keys
    return (keys, [keys_layout(child) for child in node.nodes])


def check_btree(tree: BTree) -> None:
    """Assert every B-tree invariant of spec 5.15 on ``tree``."""
    root = tree.root
    node_class = root.__class__
    t = node_class.minimum_degree
    leaf_depths = set()

    def walk(node: BNode, depth: int, low: Any, high: Any) -> None:
        assert node.__class__ is node_class, "all nodes have the class of the root"
        items = node.items
        assert type(items) is list
        assert len(items) <= 2 * t - 1
        if node is not root:
            assert len(items) >= t - 1
        for item in items:
            assert type(item) is tuple and len(item) == 2
        keys = [item[0] for item in items]
        assert all(a < b for a, b in pairwise(keys)), keys
        if keys and low is not None:
            assert low < keys[0]
        if keys and high is not None:
            assert keys[-1] < high
        if node.nodes is None:
            leaf_depths.add(depth)
        else:
            assert type(node.nodes) is list
            assert len(node.nodes) == len(items) + 1
            bounds = [low, *keys, high]
            for position, child in enumerate(node.nodes):
                walk(child, depth + 1, bounds[position], bounds[position + 1])

    walk(root, 0, None, None)
    assert len(leaf_depths) == 1, f"leaves at depths {leaf_depths}"
    if root.nodes is not None:
        assert root.items, "an internal root has items"
    assert tree.get_depth() == leaf_depths.pop() + 1


def outcome(function: Any) -> tuple[str, Any]:
    """What calling ``function`` gives: its value or its exception type."""
    try:
        return ("value", function())
    except Exception as exc:
        return ("raised", type(exc))


def filled(node_class: type[BNode], keys: Any, value: Any = True) -> BTree:
    tree = BTree(node_class)
    for key in keys:
        tree[key] = value(key) if callable(value) else value
    return tree


# -- the classes ------------------------------------------------------------------


def test_class_shapes() -> None:
    assert BNode.__slots__ == ["items", "nodes"]
    assert issubclass(BNode, PersistentObject)
    assert not issubclass(BNode, MutableMapping)
    assert BNode.items_is == [tuple]
    assert BNode.nodes_is == (None, [BNode])
    for node_class, degree in NODE_CLASSES:
        assert node_class.minimum_degree == degree
        assert node_class.__module__ == "durus.btree"
        assert node_class.__doc__
        if node_class is not BNode:
            assert issubclass(node_class, BNode)
            assert node_class.__dict__["__slots__"] == []
            assert node_class.items_is == [tuple]
            assert node_class.nodes_is == (None, [node_class])
        node = node_class()
        assert node.items == [] and node.nodes is None
        assert not hasattr(node, "__dict__")
        with pytest.raises(AttributeError):
            node.other = 1  # type: ignore[attr-defined]
    assert BTree.__slots__ == ["root"]
    assert issubclass(BTree, PersistentObject)
    assert issubclass(BTree, MutableMapping)
    assert BTree.root_is is BNode
    assert BTree.__doc__ and BNode.__doc__
    tree = BTree()
    with pytest.raises(AttributeError):
        tree.other = 1  # type: ignore[attr-defined]


def test_default_and_chosen_node_class() -> None:
    assert BTree().root.__class__ is BNode16
    assert BTree(BNode4).root.__class__ is BNode4
    assert BTree(node_constructor=BNode).root.__class__ is BNode


def test_states() -> None:
    tree = filled(BNode, range(5))
    assert tree.__getstate__() == {"root": tree.root}
    assert tree.root.__getstate__() == {"items": tree.root.items, "nodes": tree.root.nodes}
    leaf = tree.root.nodes[0]
    assert leaf.__getstate__() == {"items": [(0, True)], "nodes": None}


# pickle.dumps(obj.__getstate__(), 2) as produced by Durus 4.3.  A BTree's state
# holds its root node, which plain pickle writes as NEWOBJ + BUILD.
DURUS43_STATE_PICKLES = {
    "bnode_empty": (
        b"\x80\x02}q\x00(X\x05\x00\x00\x00itemsq\x01]q\x02X\x05\x00\x00\x00nodesq\x03Nu."
    ),
    "bnode_leaf": (
        b"\x80\x02}q\x00(X\x05\x00\x00\x00itemsq\x01]q\x02(K\x01X\x01\x00\x00\x00aq\x03\x86q"
        b"\x04K\x02X\x01\x00\x00\x00bq\x05\x86q\x06eX\x05\x00\x00\x00nodesq\x07Nu."
    ),
    "btree_empty": (
        b"\x80\x02}q\x00X\x04\x00\x00\x00rootq\x01cdurus.btree\nBNode16\nq\x02)\x81q\x03}q\x04("
        b"X\x05\x00\x00\x00itemsq\x05]q\x06X\x05\x00\x00\x00nodesq\x07Nubs."
    ),
    "btree_t4_3": (
        b"\x80\x02}q\x00X\x04\x00\x00\x00rootq\x01cdurus.btree\nBNode4\nq\x02)\x81q\x03}q\x04("
        b"X\x05\x00\x00\x00itemsq\x05]q\x06(K\x00X\x01\x00\x00\x000q\x07\x86q\x08K\x01X\x01\x00"
        b"\x00\x001q\t\x86q\nK\x02X\x01\x00\x00\x002q\x0b\x86q\x0ceX\x05\x00\x00\x00nodesq\rNu"
        b"bs."
    ),
    "btree_t2_5": (
        b"\x80\x02}q\x00X\x04\x00\x00\x00rootq\x01cdurus.btree\nBNode\nq\x02)\x81q\x03}q\x04(X"
        b"\x05\x00\x00\x00itemsq\x05]q\x06K\x01K\n\x86q\x07aX\x05\x00\x00\x00nodesq\x08]q\t(h"
        b"\x02)\x81q\n}q\x0b(h\x05]q\x0cK\x00K\x00\x86q\rah\x08Nubh\x02)\x81q\x0e}q\x0f(h\x05]q"
        b"\x10(K\x02K\x14\x86q\x11K\x03K\x1e\x86q\x12K\x04K(\x86q\x13eh\x08Nubeubs."
    ),
}


def test_state_pickles_match_durus43() -> None:
    leaf = BNode()
    leaf.items = [(1, "a"), (2, "b")]
    objects = {
        "bnode_empty": BNode(),
        "bnode_leaf": leaf,
        "btree_empty": BTree(),
        "btree_t4_3": filled(BNode4, range(3), str),
        "btree_t2_5": filled(BNode, range(5), lambda key: key * 10),
    }
    for name, obj in objects.items():
        assert pickle.dumps(obj.__getstate__(), 2) == DURUS43_STATE_PICKLES[name], name


def test_plain_pickle_round_trip() -> None:
    tree = filled(BNode, range(30), str)
    copy = pickle.loads(pickle.dumps(tree, 2))
    assert copy.__class__ is BTree
    assert copy.root.__class__ is BNode
    assert copy.items() == tree.items()
    assert keys_layout(copy.root) == keys_layout(tree.root)


# -- node layouts identical to Durus 4.3 ------------------------------------------------


def test_layout_t2_ascending_100() -> None:
    tree = BTree(BNode)
    for key in range(100):
        tree.add(key)
    assert tree.root.items == [(31, True), (63, True)]
    items, depth, node_count, length = T2_ASCENDING_100_STATS
    assert (tree.root.items, tree.get_depth(), tree.get_node_count(), len(tree)) == (
        items,
        depth,
        node_count,
        length,
    )
    assert keys_layout(tree.root) == T2_ASCENDING_100
    check_btree(tree)


def test_layout_t2_scrambled_inserts_and_deletes() -> None:
    tree = BTree(BNode)
    for key in [(i * 37) % 64 for i in range(64)]:
        tree[key] = -key
    checkpoints = [keys_layout(tree.root)]
    for step, key in enumerate([(i * 11) % 64 for i in range(48)]):
        del tree[key]
        check_btree(tree)
        if step % 12 == 11:
            checkpoints.append(keys_layout(tree.root))
    assert checkpoints == T2_SCRAMBLED_64_CHECKPOINTS
    deleted = {(i * 11) % 64 for i in range(48)}
    assert tree.items() == [(key, -key) for key in sorted(set(range(64)) - deleted)]


def test_layout_t16() -> None:
    tree = BTree()
    for key in range(600):
        tree[key] = str(key)
    checkpoints: list[Any] = [keys_layout(tree.root), tree.get_depth()]
    for key in [(i * 7) % 600 for i in range(450)]:
        del tree[key]
    check_btree(tree)
    checkpoints += [keys_layout(tree.root), tree.get_depth()]
    for key in [(i * 13) % 600 for i in range(300)]:
        tree[key] = str(key)
    check_btree(tree)
    checkpoints.append(keys_layout(tree.root))
    assert checkpoints == T16_CHECKPOINTS
    assert T16_CHECKPOINTS[1] == 3


def test_layout_t4_and_change_of_degree() -> None:
    tree = BTree(BNode4)
    for key in range(199, -1, -1):
        tree[key] = key
    checkpoints = [keys_layout(tree.root)]
    for key in range(0, 200, 2):
        del tree[key]
    checkpoints.append(keys_layout(tree.root))
    assert tree.set_bnode_minimum_degree(8) is True
    assert tree.root.__class__ is BNode8
    check_btree(tree)
    checkpoints.append(keys_layout(tree.root))
    assert checkpoints == T4_CHECKPOINTS
    assert tree.items() == [(key, key) for key in range(1, 200, 2)]


def test_failed_delete_restructures_like_durus() -> None:
    # The single-pass delete fixes children on its way down even when the key
    # turns out to be absent.
    count, missing, before, after = FAILED_DELETE
    tree = filled(BNode, range(0, 2 * count, 2))
    assert keys_layout(tree.root) == before
    with pytest.raises(KeyError) as info:
        del tree[missing]
    assert info.value.args == (missing,)
    assert keys_layout(tree.root) == after
    check_btree(tree)


def test_node_identities_like_durus() -> None:
    # Which node objects survive splits, merges and root collapses (their oids).
    labels: dict[int, int] = {}
    keep = []

    def label(node: BNode) -> int:
        if id(node) not in labels:
            labels[id(node)] = len(labels)
            keep.append(node)
        return labels[id(node)]

    def labelled(node: BNode) -> Any:
        # Labels are given in pre-order: a node before its children.
        number = label(node)
        children = None if node.nodes is None else [labelled(c) for c in node.nodes]
        return (number, [item[0] for item in node.items], children)

    tree = BTree(BNode)
    snapshots = []
    for operation, key in IDENTITY_OPS:
        if operation == "add":
            tree.add(key)
        else:
            del tree[key]
        snapshots.append(labelled(tree.root))
    assert snapshots == IDENTITY_SNAPSHOTS


def test_durus43_t2_unbalancing_delete_is_fixed() -> None:
    # Durus 4.3 raises TypeError here and leaves leaves at different depths:
    # it collapses the emptied right child of the deleted key's node.
    tree = filled(BNode, [7, 8, 0, 1, 4, 6, 5, 2, 3])
    assert keys_layout(tree.root) == (
        [5],
        [([1], [[0], [2, 3, 4]]), ([7], [[6], [8]])],
    )
    root = tree.root
    del tree[5]
    assert tree.root is root
    assert keys_layout(tree.root) == ([1, 6], [[0], [2, 3, 4], [7, 8]])
    check_btree(tree)


def test_failed_delete_does_not_leave_an_empty_root() -> None:
    # Durus 4.3 merges the root's two children on the way down, then raises
    # KeyError before collapsing the root: the tree is left with an internal
    # root holding no item, and bool(tree) is False although it holds 3 items
    # (layout ([], [[1, 2, 3]])).  Here the root collapses all the same.
    tree = filled(BNode, [3, 0, 1, 2])
    tree.pop(0)
    assert keys_layout(tree.root) == ([2], [[1], [3]])
    root = tree.root
    with pytest.raises(KeyError):
        del tree[0]
    assert tree.root is root
    assert keys_layout(tree.root) == [1, 2, 3]
    assert tree and len(tree) == 3 and tree.get_depth() == 1
    check_btree(tree)
    # What follows agrees with Durus again.
    tree.add(0)
    assert keys_layout(tree.root) == ([2], [[0, 1], [3]])


def test_root_collapse_keeps_the_root_object() -> None:
    tree = filled(BNode, range(4))
    root = tree.root
    assert tree.get_depth() == 2
    for key in range(3):
        del tree[key]
    assert tree.root is root
    assert tree.get_depth() == 1
    assert root.items == [(3, True)] and root.nodes is None


# -- BNode methods ---------------------------------------------------------------------


def test_bnode_methods() -> None:
    node = BNode()
    assert node.is_leaf()
    assert node.search(1) is None
    assert node.get_position(1) == 0
    assert node.get_count() == 0 and node.get_node_count() == 1 and node.get_level() == 0
    node.insert_item((1, "a"))
    node.insert_item((3, "c"))
    assert node.items == [(1, "a"), (3, "c")]
    assert node.get_position(0) == 0
    assert node.get_position(1) == 0
    assert node.get_position(2) == 1
    assert node.get_position(4) == 2
    assert node.search(1) == (1, "a")
    assert node.search(2) is None
    assert not node.is_full()
    node.insert_item((2, "b"))
    assert node.is_full()  # 2t - 1 = 3 items
    node.insert_item((2, "B"))  # replaces
    assert node.items == [(1, "a"), (2, "B"), (3, "c")]
    assert list(node) == node.items
    assert list(reversed(node)) == node.items[::-1]
    assert node.get_min_item() == (1, "a") and node.get_max_item() == (3, "c")
    with pytest.raises(KeyError) as info:
        node.delete(5)
    assert info.value.args == (5,)
    node.delete(2)
    assert node.items == [(1, "a"), (3, "c")]
    with pytest.raises(TypeError):
        len(node)  # type: ignore[arg-type]


def test_bnode_split_child() -> None:
    parent = BNode4()
    child = BNode4()
    child.items = [(k, k) for k in range(7)]
    parent.nodes = [child]
    assert child.is_full()
    parent.split_child(0, child)
    assert parent.items == [(3, 3)]
    assert parent.nodes[0] is child
    assert child.items == [(0, 0), (1, 1), (2, 2)]
    sibling = parent.nodes[1]
    assert sibling.__class__ is BNode4
    assert sibling.items == [(4, 4), (5, 5), (6, 6)]
    assert sibling.nodes is None and child.nodes is None

    grandparent = BNode()
    inner = BNode()
    inner.items = [(10, 0), (20, 0), (30, 0)]
    leaves = [BNode() for _ in range(4)]
    inner.nodes = list(leaves)
    grandparent.items = [(40, 0)]
    grandparent.nodes = [inner, BNode()]
    grandparent.split_child(0, inner)
    assert grandparent.items == [(20, 0), (40, 0)]
    assert inner.items == [(10, 0)] and inner.nodes == leaves[:2]
    assert grandparent.nodes[1].items == [(30, 0)]
    assert grandparent.nodes[1].nodes == leaves[2:]


def test_bnode_tree_walks() -> None:
    tree = filled(BNode, range(0, 40, 2), lambda key: -key)
    root = tree.root
    assert list(root) == [(k, -k) for k in range(0, 40, 2)]
    assert list(reversed(root)) == [(k, -k) for k in range(38, -1, -2)]
    assert [k for k, _ in root.iter_from(11)] == list(range(12, 40, 2))
    assert [k for k, _ in root.iter_from(12)] == list(range(12, 40, 2))
    assert [k for k, _ in root.iter_from(100)] == []
    assert [k for k, _ in root.iter_backward_from(11)] == [10, 8, 6, 4, 2, 0]
    assert [k for k, _ in root.iter_backward_from(12)] == [10, 8, 6, 4, 2, 0]
    assert [k for k, _ in root.iter_backward_from(0)] == []
    assert root.search(14) == (14, -14)
    assert root.search(15) is None
    assert root.get_min_item() == (0, 0)
    assert root.get_max_item() == (38, -38)
    assert root.get_count() == 20
    assert root.get_level() == tree.get_depth() - 1 > 0
    assert root.get_node_count() == tree.get_node_count() > 1
    assert root.nodes[0].get_level() == root.get_level() - 1


# -- BTree as a mapping -------------------------------------------------------------------


def test_empty_tree() -> None:
    tree = BTree()
    assert not tree
    assert len(tree) == 0
    assert tree.items() == [] and tree.keys() == [] and tree.values() == []
    assert tree.get_depth() == 1 and tree.get_node_count() == 1
    with pytest.raises(AssertionError, match="empty BTree has no min item"):
        tree.get_min_item()
    with pytest.raises(AssertionError, match="empty BTree has no max item"):
        tree.get_max_item()
    with pytest.raises(KeyError) as info:
        tree["k"]
    assert info.value.args == ("k",)
    with pytest.raises(KeyError) as info:
        del tree["k"]
    assert info.value.args == ("k",)
    assert str(info.value) == "'k'"
    assert list(tree.items_from(0)) == [] and list(tree.items_backward_from(0, True)) == []
    with pytest.raises(KeyError):
        tree.popitem()
    assert tree.get("k", 5) == 5


def test_mapping_methods() -> None:
    tree = BTree(BNode)
    tree.update({5: "e", 1: "a"})
    tree.update([(3, "c")])
    tree[7] = "g"
    tree.add(9)
    assert tree
    assert len(tree) == 5
    assert tree.items() == [(1, "a"), (3, "c"), (5, "e"), (7, "g"), (9, True)]
    assert type(tree.items()) is list
    assert tree.keys() == [1, 3, 5, 7, 9] and type(tree.keys()) is list
    assert tree.values() == ["a", "c", "e", "g", True] and type(tree.values()) is list
    assert list(tree) == [1, 3, 5, 7, 9]
    assert list(reversed(tree)) == [9, 7, 5, 3, 1]
    assert list(tree.iteritems()) == tree.items()
    assert list(tree.iterkeys()) == tree.keys()
    assert list(tree.itervalues()) == tree.values()
    assert list(tree.items_backward()) == tree.items()[::-1]
    assert 3 in tree and 4 not in tree
    assert tree.has_key(3) and not tree.has_key(4)
    assert tree[3] == "c" and tree.get(3) == "c" and tree.get(4) is None
    assert tree.setdefault(3, "zz") == "c"
    assert tree.setdefault(4, "d") == "d" and tree[4] == "d"
    assert tree.setdefault(6) is None and 6 in tree
    assert tree.get_min_item() == (1, "a") and tree.get_max_item() == (9, True)
    assert tree.pop(6) is None
    assert tree.pop(6, "gone") == "gone"
    assert tree.popitem() == (1, "a")
    del tree[4]
    assert tree.keys() == [3, 5, 7, 9]
    assert tree == {3: "c", 5: "e", 7: "g", 9: True}
    with pytest.raises(TypeError):
        tree.update({}, {})
    other = BTree(BNode4)
    other.update(tree)
    assert other.items() == tree.items()
    with pytest.raises(TypeError):
        hash(tree)
    assert repr(tree) == f"<BTree @{id(tree):x}>"
    tree.clear()
    assert not tree and tree.root.__class__ is BNode and tree.items() == []


def test_update_with_keywords() -> None:
    tree = BTree()
    tree.update({"b": 2}, a=1, c=3)
    assert tree.items() == [("a", 1), ("b", 2), ("c", 3)]
    tree.update(d=4)
    assert tree.keys() == ["a", "b", "c", "d"]


def test_update_takes_any_object_with_items_pairs_mappings_and_keywords() -> None:
    class OnlyItems:  # no keys(), not iterable: Durus 4.3 takes it (utest_btree)
        def items(self) -> list[tuple[str, int]]:
            return [("x", 24), ("y", 25)]

    class OnlyKeys:  # the mapping protocol without items()
        def keys(self) -> list[str]:
            return ["k"]

        def __getitem__(self, key: str) -> str:
            return key * 2

    tree = BTree()
    tree.update()
    assert tree.items() == []
    tree.update(OnlyItems())
    tree.update(OnlyKeys(), z=26)
    tree.update([("p", 1)], q=2)
    tree.update(iter([("r", 3)]))
    assert dict(tree.items()) == {"x": 24, "y": 25, "k": "kk", "z": 26, "p": 1, "q": 2, "r": 3}
    with pytest.raises(TypeError):
        tree.update(1, 2)
    with pytest.raises(TypeError):
        tree.update(1)


def test_clear_makes_a_new_root_of_the_same_class() -> None:
    tree = filled(BNode4, range(50))
    old_root = tree.root
    tree.clear()
    assert tree.root is not old_root
    assert tree.root.__class__ is BNode4
    assert tree.root.items == [] and tree.root.nodes is None


def test_root_split_installs_a_new_root() -> None:
    tree = filled(BNode, range(3))
    old_root = tree.root
    assert old_root.is_full()
    tree.add(3)
    assert tree.root is not old_root
    assert tree.root.__class__ is BNode
    assert tree.root.nodes[0] is old_root
    assert keys_layout(tree.root) == ([1], [[0], [2, 3]])


def test_replacing_a_value_splits_full_nodes_on_the_way() -> None:
    # As in Durus 4.3, the preemptive split happens even when the key exists.
    tree = filled(BNode, range(3), lambda key: key)
    assert tree.get_depth() == 1
    tree[1] = "x"
    assert tree.root.items == [(1, "x")]
    assert keys_layout(tree.root) == ([1], [[0], [2]])
    tree = filled(BNode, range(20))
    for key in range(20):
        tree[key] = key * 2
        check_btree(tree)
    assert tree.values() == [key * 2 for key in range(20)]


def test_range_api() -> None:
    tree = BTree(BNode)
    for key in (1, 2, 3, 5, 7, 9):
        tree[key] = str(key)

    def keys(items: Any) -> list[Any]:
        return [key for key, _ in items]

    assert keys(tree.items_from(3)) == [3, 5, 7, 9]
    assert keys(tree.items_from(3, closed=False)) == [5, 7, 9]
    assert keys(tree.items_from(4)) == [5, 7, 9]
    assert keys(tree.items_from(4, closed=False)) == [5, 7, 9]
    assert keys(tree.items_backward_from(3)) == [2, 1]
    assert keys(tree.items_backward_from(3, closed=True)) == [3, 2, 1]
    assert keys(tree.items_backward_from(4)) == [3, 2, 1]
    assert keys(tree.items_backward_from(4, closed=True)) == [3, 2, 1]
    assert keys(tree.items_range(2, 7)) == [2, 3, 5]
    assert keys(tree.items_range(2, 7, closed_end=True)) == [2, 3, 5, 7]
    assert keys(tree.items_range(2, 7, closed_start=False)) == [3, 5]
    assert keys(tree.items_range(4, 8)) == [5, 7]
    # start > end: descending from start.
    assert keys(tree.items_range(7, 2)) == [7, 5, 3]
    assert keys(tree.items_range(7, 2, closed_start=True, closed_end=True)) == [7, 5, 3, 2]
    assert keys(tree.items_range(7, 2, closed_start=False, closed_end=False)) == [5, 3]
    assert keys(tree.items_range(3, 3)) == []
    assert keys(tree.items_range(3, 3, True, True)) == [3]
    assert keys(tree.items_range(3, 3, False, True)) == []
    assert next(tree.items_range(1, 9)) == (1, "1")


def test_set_bnode_minimum_degree() -> None:
    tree = filled(BNode, range(100))
    assert tree.set_bnode_minimum_degree(2) is False  # same degree
    assert tree.set_bnode_minimum_degree(4) is True
    assert tree.root.__class__ is BNode4
    check_btree(tree)
    assert keys_layout(tree.root) == keys_layout(filled(BNode4, range(100)).root)
    assert tree.set_bnode_minimum_degree(4) is False
    # BNode itself is not a candidate (as in Durus 4.3), nor are unknown degrees.
    assert tree.set_bnode_minimum_degree(2) is False
    assert tree.set_bnode_minimum_degree(5) is False
    assert tree.root.__class__ is BNode4
    # An application's subclass of BNode is found.
    assert tree.set_bnode_minimum_degree(3) is True
    assert tree.root.__class__ is BNode3
    check_btree(tree)
    assert tree.set_bnode_minimum_degree(16) is True
    assert tree.root.__class__ is BNode16
    assert tree.keys() == list(range(100))


def test_note_change_of_bnode_containing_key() -> None:
    tree = filled(BNode, range(30), lambda key: [key])
    with pytest.raises(KeyError) as info:
        tree.note_change_of_bnode_containing_key(99)
    assert info.value.args == (99,)
    tree.note_change_of_bnode_containing_key(17)


def test_unorderable_keys_raise_type_error() -> None:
    tree = BTree()
    tree[1] = 1
    with pytest.raises(TypeError):
        tree["a"] = 2
    assert tree.items() == [(1, 1)]


# -- change tracking through a connection ------------------------------------------------


def stored_tree(node_class: type[BNode], keys: Any) -> tuple[Connection, MemoryStorage, BTree]:
    storage = MemoryStorage()
    connection = Connection(storage)
    connection.get_root()["tree"] = tree = filled(node_class, keys, str)
    connection.commit()
    return connection, storage, tree


def changed_nodes(connection: Connection) -> set[Any]:
    return {id(obj) for obj in connection.changed.values()}


def test_insert_into_a_leaf_changes_only_that_leaf() -> None:
    connection, _storage, tree = stored_tree(BNode, range(0, 40, 2))
    leaf = tree.root
    while leaf.nodes is not None:
        leaf = leaf.nodes[0]
    assert not connection.changed
    tree[1] = "new"
    assert changed_nodes(connection) == {id(leaf)}


def test_note_change_of_bnode_marks_the_node() -> None:
    connection, _storage, tree = stored_tree(BNode, range(30))
    node = tree.root
    while 17 not in [key for key, _ in node.items]:
        node = node.nodes[node.get_position(17)]
    tree.note_change_of_bnode_containing_key(17)
    assert changed_nodes(connection) == {id(node)}
    assert node._p_is_unsaved()


def test_reads_change_nothing() -> None:
    connection, _storage, tree = stored_tree(BNode, range(30))
    tree.get(3)
    tree.setdefault(3, "x")
    list(tree.items_range(2, 20))
    list(tree.items_backward_from(20, True))
    tree.get_min_item()
    tree.get_max_item()
    len(tree)
    tree.get_depth()
    tree.get_node_count()
    assert 3 in tree
    assert tree.set_bnode_minimum_degree(2) is False
    assert not connection.changed


def node_states(tree: BTree) -> dict[int, Any]:
    """id(node) -> (node, its items, ids of its children) for every node of ``tree``."""
    states: dict[int, Any] = {}

    def walk(node: BNode) -> None:
        children = None if node.nodes is None else [id(child) for child in node.nodes]
        states[id(node)] = (node, list(node.items), children)
        for child in node.nodes or ():
            walk(child)

    walk(tree.root)
    return states


def assert_changes_noted(tree: BTree, root: BNode, before: dict[int, Any]) -> None:
    """Every stored node whose items or children changed since ``before`` is UNSAVED."""
    if tree.root is not root:
        assert tree._p_is_unsaved(), "the BTree changed its root without noting it"
    for key, (node, items, children) in node_states(tree).items():
        if key in before and node._p_oid is not None:
            _node, old_items, old_children = before[key]
            if (items, children) != (old_items, old_children):
                assert node._p_is_unsaved(), f"{node!r} changed without noting it"


@pytest.mark.parametrize("node_class", [BNode, BNode3, BNode4])
def test_every_structural_change_is_noted(node_class: type[BNode]) -> None:
    rng = random.Random(node_class.minimum_degree)
    storage = MemoryStorage()
    connection = Connection(storage)
    connection.get_root()["tree"] = tree = BTree(node_class)
    connection.commit()
    for step in range(600):
        before, root = node_states(tree), tree.root
        key = rng.randrange(40)
        choice = rng.random()
        if choice < 0.5:
            tree[key] = step
        elif choice < 0.95:
            try:
                del tree[key]
            except KeyError:
                pass
        elif choice < 0.97:
            if key in tree:
                tree.note_change_of_bnode_containing_key(key)
        else:
            tree.set_bnode_minimum_degree(rng.choice([3, 4, 8]))
        assert_changes_noted(tree, root, before)
        connection.commit()
        if step % 50 == 0:
            fresh = Connection(storage).get_root()["tree"]
            assert keys_layout(fresh.root) == keys_layout(tree.root)


def test_round_trip_commit_and_abort() -> None:
    connection, storage, tree = stored_tree(BNode4, range(200))
    layout = keys_layout(tree.root)
    items = tree.items()
    other = Connection(storage).get_root()["tree"]
    assert isinstance(other, BTree) and other is not tree
    assert other.items() == items
    assert keys_layout(other.root) == layout
    assert other.root.__class__ is BNode4

    for key in range(0, 200, 3):
        del tree[key]
    for key in range(1000, 1100):
        tree[key] = "x"
    tree.set_bnode_minimum_degree(8)
    assert connection.changed
    connection.abort()
    assert tree.items() == items
    assert keys_layout(tree.root) == layout
    assert tree.root.__class__ is BNode4

    del tree[5]
    tree[500] = "y"
    connection.commit()
    fresh = Connection(storage).get_root()["tree"]
    assert fresh.items() == tree.items()
    assert keys_layout(fresh.root) == keys_layout(tree.root)


# -- random operation sequences against dict + sorted() -------------------------------------

tree_keys = st.integers(0, 60)
tree_values = st.integers(-3, 3)


class BTreeAgainstDict(RuleBasedStateMachine):
    """A stored BTree and a dict agree under random operations; invariants hold.

    After every commit a fresh connection must see the same items and the
    same node layout (so every node that changed was noted), and an abort must
    bring back the committed items and layout.
    """

    @initialize(node_class=st.sampled_from([BNode, BNode, BNode4, BNode3]))
    def start(self, node_class: type[BNode]) -> None:
        self.storage = MemoryStorage()
        self.connection = Connection(self.storage)
        self.tree = BTree(node_class)
        self.connection.get_root()["tree"] = self.tree
        self.connection.commit()
        self.model: dict[int, int] = {}
        self.committed: dict[int, int] = {}
        self.committed_layout: Any = []
        self.saved_states = node_states(self.tree)
        self.saved_root = self.tree.root

    def both(self, method: str, *args: Any) -> None:
        expected = outcome(lambda: getattr(self.model, method)(*args))
        got = outcome(lambda: getattr(self.tree, method)(*args))
        assert got == expected, (method, args)

    @rule(key=tree_keys, value=tree_values)
    def setitem(self, key: int, value: int) -> None:
        self.both("__setitem__", key, value)

    @rule(keys=st.lists(tree_keys, min_size=1, max_size=15), value=tree_values)
    def setitems(self, keys: list[int], value: int) -> None:
        for key in keys:
            self.tree[key] = value
            self.model[key] = value

    @rule(key=tree_keys)
    def add(self, key: int) -> None:
        self.tree.add(key)
        self.model[key] = True

    @rule(key=tree_keys)
    def delitem(self, key: int) -> None:
        self.both("__delitem__", key)

    @rule(keys=st.lists(tree_keys, min_size=1, max_size=15))
    def delitems(self, keys: list[int]) -> None:
        for key in keys:
            self.both("__delitem__", key)

    @rule(key=tree_keys)
    def getitem(self, key: int) -> None:
        self.both("__getitem__", key)

    @rule(key=tree_keys, default=tree_values)
    def get(self, key: int, default: int) -> None:
        self.both("get", key, default)

    @rule(key=tree_keys, default=tree_values)
    def setdefault(self, key: int, default: int) -> None:
        self.both("setdefault", key, default)

    @rule(key=tree_keys)
    def pop(self, key: int) -> None:
        self.both("pop", key)

    @rule()
    def popitem(self) -> None:
        if self.model:
            key = min(self.model)
            assert self.tree.popitem() == (key, self.model.pop(key))
        else:
            with pytest.raises(KeyError):
                self.tree.popitem()

    @rule(other=st.dictionaries(tree_keys, tree_values, max_size=8))
    def update(self, other: dict[int, int]) -> None:
        self.both("update", other)

    @rule()
    def clear(self) -> None:
        self.both("clear")

    @rule(degree=st.sampled_from([2, 3, 4, 8]))
    def change_degree(self, degree: int) -> None:
        before = self.tree.root.__class__.minimum_degree
        changed = self.tree.set_bnode_minimum_degree(degree)
        assert changed == (degree != before and degree != 2)
        if changed:
            assert self.tree.root.__class__.minimum_degree == degree

    @rule(key=tree_keys)
    def note_change(self, key: int) -> None:
        if key in self.model:
            self.tree.note_change_of_bnode_containing_key(key)
        else:
            with pytest.raises(KeyError):
                self.tree.note_change_of_bnode_containing_key(key)

    @rule(
        start=tree_keys,
        end=tree_keys,
        closed_start=st.booleans(),
        closed_end=st.booleans(),
    )
    def ranges(self, start: int, end: int, closed_start: bool, closed_end: bool) -> None:
        ordered = sorted(self.model.items())
        got = list(self.tree.items_range(start, end, closed_start, closed_end))
        if start <= end:
            expected = [
                (k, v)
                for k, v in ordered
                if (start < k or (closed_start and k == start))
                and (k < end or (closed_end and k == end))
            ]
        else:
            expected = [
                (k, v)
                for k, v in reversed(ordered)
                if (k < start or (closed_start and k == start))
                and (end < k or (closed_end and k == end))
            ]
        assert got == expected
        assert list(self.tree.items_from(start, closed_start)) == [
            (k, v) for k, v in ordered if start < k or (closed_start and k == start)
        ]
        assert list(self.tree.items_backward_from(start, closed_start)) == [
            (k, v) for k, v in reversed(ordered) if k < start or (closed_start and k == start)
        ]

    @rule()
    def commit(self) -> None:
        self.connection.commit()
        self.committed = dict(self.model)
        self.committed_layout = keys_layout(self.tree.root)
        fresh = Connection(self.storage).get_root()["tree"]
        assert keys_layout(fresh.root) == self.committed_layout
        assert fresh.items() == sorted(self.committed.items())
        assert fresh.root.__class__ is self.tree.root.__class__
        self.saved_states = node_states(self.tree)
        self.saved_root = self.tree.root

    @rule()
    def abort(self) -> None:
        self.connection.abort()
        self.model = dict(self.committed)
        assert keys_layout(self.tree.root) == self.committed_layout
        self.saved_states = node_states(self.tree)
        self.saved_root = self.tree.root

    @invariant()
    def agrees(self) -> None:
        if not hasattr(self, "tree"):
            return
        check_btree(self.tree)
        assert_changes_noted(self.tree, self.saved_root, self.saved_states)
        ordered = sorted(self.model.items())
        assert self.tree.items() == ordered
        assert list(self.tree) == [k for k, _ in ordered]
        assert list(reversed(self.tree)) == [k for k, _ in reversed(ordered)]
        assert len(self.tree) == len(ordered)
        assert bool(self.tree) == bool(ordered)
        if ordered:
            assert self.tree.get_min_item() == ordered[0]
            assert self.tree.get_max_item() == ordered[-1]


BTreeAgainstDict.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
TestBTreeAgainstDict = BTreeAgainstDict.TestCase


# -- expected layouts, generated once with Durus 4.3 ----------------------------------------
# keys_layout() of the root after the operations of the test using each value.

# fmt: off
T2_ASCENDING_100 = ([31, 63],
 [([15],
   [([7],
     [([3], [([1], [[0], [2]]), ([5], [[4], [6]])]),
      ([11], [([9], [[8], [10]]), ([13], [[12], [14]])])]),
    ([23],
     [([19], [([17], [[16], [18]]), ([21], [[20], [22]])]),
      ([27], [([25], [[24], [26]]), ([29], [[28], [30]])])])]),
  ([47],
   [([39],
     [([35], [([33], [[32], [34]]), ([37], [[36], [38]])]),
      ([43], [([41], [[40], [42]]), ([45], [[44], [46]])])]),
    ([55],
     [([51], [([49], [[48], [50]]), ([53], [[52], [54]])]),
      ([59], [([57], [[56], [58]]), ([61], [[60], [62]])])])]),
  ([79],
   [([71],
     [([67], [([65], [[64], [66]]), ([69], [[68], [70]])]),
      ([75], [([73], [[72], [74]]), ([77], [[76], [78]])])]),
    ([87],
     [([83], [([81], [[80], [82]]), ([85], [[84], [86]])]),
      ([91],
       [([89], [[88], [90]]),
        ([93, 95, 97], [[92], [94], [96], [98, 99]])])])])])

T2_ASCENDING_100_STATS = ([(31, True), (63, True)], 6, 96, 100)

T2_SCRAMBLED_64_CHECKPOINTS = [([20, 37],
  [([10],
    [([3, 6], [[0, 1, 2], [4, 5], [7, 8, 9]]),
     ([13, 16], [[11, 12], [14, 15], [17, 18, 19]])]),
   ([30],
    [([23, 26], [[21, 22], [24, 25], [27, 28, 29]]),
     ([33], [[31, 32], [34, 35, 36]])]),
   ([47, 57],
    [([40, 43], [[38, 39], [41, 42], [44, 45, 46]]),
     ([50, 53], [[48, 49], [51, 52], [54, 55, 56]]),
     ([60], [[58, 59], [61, 62, 63]])])]),
 ([37],
  [([10, 16, 26],
    [([3, 6], [[1], [4, 5], [7, 8, 9]]), ([14], [[12], [15]]),
     ([20, 23], [[17, 18, 19], [21], [25]]),
     ([30, 32], [[27, 28, 29], [31], [34, 36]])]),
   ([47, 56],
    [([40, 43], [[38, 39], [41, 42], [45]]),
     ([50, 53], [[48, 49], [51, 52], [54]]),
     ([60], [[58, 59], [61, 62, 63]])])]),
 ([36],
  [([10, 25],
    [([3, 7], [[1], [5], [8, 9]]), ([16, 20], [[12, 14], [18, 19], [21, 23]]),
     ([30, 32], [[27, 29], [31], [34]])]),
   ([43, 53],
    [([40], [[38], [41, 42]]), ([47, 51], [[45], [49], [52]]),
     ([56, 60], [[54], [58], [62, 63]])])]),
 ([36],
  [([16, 25],
    [([5, 9], [[3], [7], [12, 14]]), ([20], [[18], [23]]),
     ([29], [[27], [31, 34]])]),
   ([53],
    [([40, 45, 49], [[38], [42], [47], [51]]), ([60], [[56, 58], [62]])])]),
 ([20, 49],
  [([16], [[7, 9], [18]]), ([29, 38], [[27], [31], [40, 42]]),
   ([60], [[51, 53], [62]])])]

T16_CHECKPOINTS = [([255],
  [([15, 31, 47, 63, 79, 95, 111, 127, 143, 159, 175, 191, 207, 223, 239],
    [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14],
     [16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30],
     [32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46],
     [48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62],
     [64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78],
     [80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94],
     [96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110],
     [112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125,
      126],
     [128, 129, 130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 140, 141,
      142],
     [144, 145, 146, 147, 148, 149, 150, 151, 152, 153, 154, 155, 156, 157,
      158],
     [160, 161, 162, 163, 164, 165, 166, 167, 168, 169, 170, 171, 172, 173,
      174],
     [176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189,
      190],
     [192, 193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203, 204, 205,
      206],
     [208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219, 220, 221,
      222],
     [224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237,
      238],
     [240, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250, 251, 252, 253,
      254]]),
   ([271, 287, 303, 319, 335, 351, 367, 383, 399, 415, 431, 447, 463, 479, 495,
     511, 527, 543, 559, 575],
    [[256, 257, 258, 259, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269,
      270],
     [272, 273, 274, 275, 276, 277, 278, 279, 280, 281, 282, 283, 284, 285,
      286],
     [288, 289, 290, 291, 292, 293, 294, 295, 296, 297, 298, 299, 300, 301,
      302],
     [304, 305, 306, 307, 308, 309, 310, 311, 312, 313, 314, 315, 316, 317,
      318],
     [320, 321, 322, 323, 324, 325, 326, 327, 328, 329, 330, 331, 332, 333,
      334],
     [336, 337, 338, 339, 340, 341, 342, 343, 344, 345, 346, 347, 348, 349,
      350],
     [352, 353, 354, 355, 356, 357, 358, 359, 360, 361, 362, 363, 364, 365,
      366],
     [368, 369, 370, 371, 372, 373, 374, 375, 376, 377, 378, 379, 380, 381,
      382],
     [384, 385, 386, 387, 388, 389, 390, 391, 392, 393, 394, 395, 396, 397,
      398],
     [400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413,
      414],
     [416, 417, 418, 419, 420, 421, 422, 423, 424, 425, 426, 427, 428, 429,
      430],
     [432, 433, 434, 435, 436, 437, 438, 439, 440, 441, 442, 443, 444, 445,
      446],
     [448, 449, 450, 451, 452, 453, 454, 455, 456, 457, 458, 459, 460, 461,
      462],
     [464, 465, 466, 467, 468, 469, 470, 471, 472, 473, 474, 475, 476, 477,
      478],
     [480, 481, 482, 483, 484, 485, 486, 487, 488, 489, 490, 491, 492, 493,
      494],
     [496, 497, 498, 499, 500, 501, 502, 503, 504, 505, 506, 507, 508, 509,
      510],
     [512, 513, 514, 515, 516, 517, 518, 519, 520, 521, 522, 523, 524, 525,
      526],
     [528, 529, 530, 531, 532, 533, 534, 535, 536, 537, 538, 539, 540, 541,
      542],
     [544, 545, 546, 547, 548, 549, 550, 551, 552, 553, 554, 555, 556, 557,
      558],
     [560, 561, 562, 563, 564, 565, 566, 567, 568, 569, 570, 571, 572, 573,
      574],
     [576, 577, 578, 579, 580, 581, 582, 583, 584, 585, 586, 587, 588, 589, 590,
      591, 592, 593, 594, 595, 596, 597, 598, 599]])]),
 3,
 ([166, 222, 278, 334, 390, 479, 535],
  [[5, 12, 19, 26, 33, 40, 47, 54, 61, 68, 75, 82, 89, 96, 103, 110, 117, 124,
    131, 138, 145, 150, 152, 157, 159, 164],
   [171, 173, 178, 180, 185, 187, 192, 194, 199, 201, 206, 208, 213, 215, 220],
   [227, 229, 234, 236, 241, 243, 248, 250, 255, 257, 262, 264, 269, 271, 276],
   [283, 285, 290, 292, 297, 299, 304, 306, 311, 313, 318, 320, 325, 327, 332],
   [339, 341, 346, 348, 353, 355, 360, 362, 367, 369, 374, 376, 381, 383, 388],
   [395, 397, 402, 404, 409, 411, 416, 418, 423, 425, 430, 432, 437, 439, 444,
    446, 451, 453, 458, 460, 465, 467, 472, 474],
   [481, 486, 488, 493, 495, 500, 502, 507, 509, 514, 516, 521, 523, 528, 530],
   [537, 542, 544, 549, 551, 556, 558, 563, 565, 570, 572, 577, 579, 584, 586,
    591, 593, 598]]),
 2,
 ([37, 75, 124, 166, 193, 222, 250, 278, 306, 334, 360, 390, 432, 479, 507, 535,
   566],
  [[0, 1, 3, 5, 7, 9, 11, 12, 13, 14, 16, 18, 19, 20, 22, 24, 26, 27, 29, 31,
    33, 35],
   [39, 40, 42, 44, 46, 47, 48, 50, 52, 53, 54, 55, 57, 59, 61, 63, 65, 66, 68,
    70, 72, 74],
   [76, 78, 79, 81, 82, 83, 85, 87, 89, 91, 92, 94, 96, 98, 100, 102, 103, 104,
    105, 107, 109, 110, 111, 113, 115, 117, 118, 120, 122],
   [126, 128, 130, 131, 133, 135, 137, 138, 139, 141, 143, 144, 145, 146, 148,
    150, 152, 154, 156, 157, 159, 161, 163, 164, 165],
   [167, 169, 170, 171, 172, 173, 174, 176, 178, 180, 182, 183, 185, 187, 189,
    191, 192],
   [194, 195, 196, 198, 199, 200, 201, 202, 204, 206, 208, 209, 211, 213, 215,
    217, 219, 220, 221],
   [224, 226, 227, 228, 229, 230, 232, 234, 235, 236, 237, 239, 241, 243, 245,
    247, 248],
   [252, 254, 255, 256, 257, 258, 260, 261, 262, 263, 264, 265, 267, 269, 271,
    273, 274, 276],
   [280, 282, 283, 284, 285, 286, 287, 289, 290, 291, 292, 293, 295, 297, 299,
    302, 304],
   [308, 310, 311, 312, 313, 315, 317, 318, 319, 320, 321, 323, 325, 327, 328,
    330, 332],
   [336, 338, 339, 341, 343, 345, 346, 347, 348, 349, 351, 353, 354, 355, 356,
    358],
   [362, 364, 367, 369, 371, 373, 374, 375, 376, 377, 380, 381, 382, 383, 384,
    386, 388],
   [393, 395, 397, 399, 401, 402, 403, 404, 406, 408, 409, 410, 411, 412, 414,
    416, 418, 419, 421, 423, 425, 427, 429, 430],
   [434, 436, 437, 438, 439, 440, 442, 444, 445, 446, 447, 449, 451, 453, 455,
    458, 460, 462, 464, 465, 466, 467, 468, 471, 472, 473, 474, 475, 477],
   [481, 484, 486, 488, 490, 492, 493, 494, 495, 497, 499, 500, 501, 502, 503,
    505],
   [509, 510, 512, 514, 516, 518, 520, 521, 523, 525, 527, 528, 529, 530, 531,
    533],
   [536, 537, 538, 540, 542, 544, 546, 549, 551, 553, 555, 556, 557, 558, 559,
    562, 563, 564, 565],
   [568, 570, 572, 575, 577, 579, 581, 583, 584, 585, 586, 588, 590, 591, 592,
    593, 594, 596, 598]])]

T4_CHECKPOINTS = [([72, 136],
  [([24, 40, 56],
    [([4, 8, 12, 16, 20],
      [[0, 1, 2, 3], [5, 6, 7], [9, 10, 11], [13, 14, 15], [17, 18, 19],
       [21, 22, 23]]),
     ([28, 32, 36], [[25, 26, 27], [29, 30, 31], [33, 34, 35], [37, 38, 39]]),
     ([44, 48, 52], [[41, 42, 43], [45, 46, 47], [49, 50, 51], [53, 54, 55]]),
     ([60, 64, 68], [[57, 58, 59], [61, 62, 63], [65, 66, 67], [69, 70, 71]])]),
   ([88, 104, 120],
    [([76, 80, 84], [[73, 74, 75], [77, 78, 79], [81, 82, 83], [85, 86, 87]]),
     ([92, 96, 100],
      [[89, 90, 91], [93, 94, 95], [97, 98, 99], [101, 102, 103]]),
     ([108, 112, 116],
      [[105, 106, 107], [109, 110, 111], [113, 114, 115], [117, 118, 119]]),
     ([124, 128, 132],
      [[121, 122, 123], [125, 126, 127], [129, 130, 131], [133, 134, 135]])]),
   ([152, 168, 184],
    [([140, 144, 148],
      [[137, 138, 139], [141, 142, 143], [145, 146, 147], [149, 150, 151]]),
     ([156, 160, 164],
      [[153, 154, 155], [157, 158, 159], [161, 162, 163], [165, 166, 167]]),
     ([172, 176, 180],
      [[169, 170, 171], [173, 174, 175], [177, 178, 179], [181, 182, 183]]),
     ([188, 192, 196],
      [[185, 186, 187], [189, 190, 191], [193, 194, 195], [197, 198, 199]])])]),
 ([45, 77, 109, 141],
  [([9, 17, 25, 37],
    [[1, 3, 5, 7], [11, 13, 15], [19, 21, 23], [27, 29, 31, 33, 35],
     [39, 41, 43]]),
   ([53, 61, 69], [[47, 49, 51], [55, 57, 59], [63, 65, 67], [71, 73, 75]]),
   ([85, 93, 101], [[79, 81, 83], [87, 89, 91], [95, 97, 99], [103, 105, 107]]),
   ([117, 125, 133],
    [[111, 113, 115], [119, 121, 123], [127, 129, 131], [135, 137, 139]]),
   ([149, 157, 165, 173, 181, 189],
    [[143, 145, 147], [151, 153, 155], [159, 161, 163], [167, 169, 171],
     [175, 177, 179], [183, 185, 187], [191, 193, 195, 197, 199]])]),
 ([15, 31, 47, 63, 79, 95, 111, 127, 143, 159, 175],
  [[1, 3, 5, 7, 9, 11, 13], [17, 19, 21, 23, 25, 27, 29],
   [33, 35, 37, 39, 41, 43, 45], [49, 51, 53, 55, 57, 59, 61],
   [65, 67, 69, 71, 73, 75, 77], [81, 83, 85, 87, 89, 91, 93],
   [97, 99, 101, 103, 105, 107, 109], [113, 115, 117, 119, 121, 123, 125],
   [129, 131, 133, 135, 137, 139, 141], [145, 147, 149, 151, 153, 155, 157],
   [161, 163, 165, 167, 169, 171, 173],
   [177, 179, 181, 183, 185, 187, 189, 191, 193, 195, 197, 199]])]

FAILED_DELETE = (4, -1, ([2], [[0], [4, 6]]), ([4], [[0, 2], [6]]))

IDENTITY_OPS = [('add', 3), ('add', 6), ('add', 13), ('add', 7), ('add', 13), ('add', 18),
 ('del', 7), ('del', 18), ('add', 4), ('del', 4), ('add', 18), ('add', 21),
 ('del', 18), ('add', 6), ('add', 18), ('add', 6), ('add', 17), ('add', 10),
 ('add', 14), ('add', 16), ('del', 10), ('add', 2), ('add', 13), ('add', 10),
 ('add', 15), ('add', 21), ('del', 17), ('add', 10), ('del', 18), ('del', 2),
 ('add', 8), ('add', 21), ('del', 21), ('add', 21), ('add', 14), ('add', 19),
 ('add', 1), ('add', 9), ('add', 7), ('add', 15), ('add', 14), ('del', 8),
 ('del', 13), ('add', 4), ('add', 4), ('add', 7), ('add', 18), ('add', 9),
 ('del', 19), ('del', 4), ('del', 16), ('add', 1), ('del', 21), ('add', 12),
 ('add', 12), ('add', 20), ('add', 6), ('add', 6), ('add', 3), ('add', 1),
 ('add', 18), ('del', 3), ('add', 19), ('del', 6), ('add', 15), ('del', 15),
 ('add', 14), ('add', 9), ('add', 23), ('add', 22), ('add', 0), ('add', 16),
 ('del', 22), ('del', 0), ('del', 9), ('add', 5), ('del', 7), ('add', 16),
 ('del', 12), ('add', 7), ('add', 15), ('add', 8), ('add', 11), ('del', 23),
 ('add', 11), ('add', 3), ('add', 6), ('del', 15), ('del', 19)]

IDENTITY_SNAPSHOTS = [(0, [3], None), (0, [3, 6], None), (0, [3, 6, 13], None),
 (1, [6], [(0, [3], None), (2, [7, 13], None)]),
 (1, [6], [(0, [3], None), (2, [7, 13], None)]),
 (1, [6], [(0, [3], None), (2, [7, 13, 18], None)]),
 (1, [6], [(0, [3], None), (2, [13, 18], None)]),
 (1, [6], [(0, [3], None), (2, [13], None)]),
 (1, [6], [(0, [3, 4], None), (2, [13], None)]),
 (1, [6], [(0, [3], None), (2, [13], None)]),
 (1, [6], [(0, [3], None), (2, [13, 18], None)]),
 (1, [6], [(0, [3], None), (2, [13, 18, 21], None)]),
 (1, [6], [(0, [3], None), (2, [13, 21], None)]),
 (1, [6], [(0, [3], None), (2, [13, 21], None)]),
 (1, [6], [(0, [3], None), (2, [13, 18, 21], None)]),
 (1, [6], [(0, [3], None), (2, [13, 18, 21], None)]),
 (1, [6, 18], [(0, [3], None), (2, [13, 17], None), (3, [21], None)]),
 (1, [6, 18], [(0, [3], None), (2, [10, 13, 17], None), (3, [21], None)]),
 (1, [6, 13, 18],
  [(0, [3], None), (2, [10], None), (4, [14, 17], None), (3, [21], None)]),
 (5, [13],
  [(1, [6], [(0, [3], None), (2, [10], None)]),
   (6, [18], [(4, [14, 16, 17], None), (3, [21], None)])]),
 (5, [6, 14, 18],
  [(0, [3], None), (2, [13], None), (4, [16, 17], None), (3, [21], None)]),
 (7, [14],
  [(5, [6], [(0, [2, 3], None), (2, [13], None)]),
   (8, [18], [(4, [16, 17], None), (3, [21], None)])]),
 (7, [14],
  [(5, [6], [(0, [2, 3], None), (2, [13], None)]),
   (8, [18], [(4, [16, 17], None), (3, [21], None)])]),
 (7, [14],
  [(5, [6], [(0, [2, 3], None), (2, [10, 13], None)]),
   (8, [18], [(4, [16, 17], None), (3, [21], None)])]),
 (7, [14],
  [(5, [6], [(0, [2, 3], None), (2, [10, 13], None)]),
   (8, [18], [(4, [15, 16, 17], None), (3, [21], None)])]),
 (7, [14],
  [(5, [6], [(0, [2, 3], None), (2, [10, 13], None)]),
   (8, [18], [(4, [15, 16, 17], None), (3, [21], None)])]),
 (7, [6, 14, 18],
  [(0, [2, 3], None), (2, [10, 13], None), (4, [15, 16], None),
   (3, [21], None)]),
 (9, [14],
  [(7, [6], [(0, [2, 3], None), (2, [10, 13], None)]),
   (10, [18], [(4, [15, 16], None), (3, [21], None)])]),
 (9, [6, 14, 16],
  [(0, [2, 3], None), (2, [10, 13], None), (4, [15], None), (3, [21], None)]),
 (9, [6, 14, 16],
  [(0, [3], None), (2, [10, 13], None), (4, [15], None), (3, [21], None)]),
 (11, [14],
  [(9, [6], [(0, [3], None), (2, [8, 10, 13], None)]),
   (12, [16], [(4, [15], None), (3, [21], None)])]),
 (11, [14],
  [(9, [6], [(0, [3], None), (2, [8, 10, 13], None)]),
   (12, [16], [(4, [15], None), (3, [21], None)])]),
 (11, [6, 14], [(0, [3], None), (2, [8, 10, 13], None), (3, [15, 16], None)]),
 (11, [6, 14],
  [(0, [3], None), (2, [8, 10, 13], None), (3, [15, 16, 21], None)]),
 (11, [6, 14],
  [(0, [3], None), (2, [8, 10, 13], None), (3, [15, 16, 21], None)]),
 (11, [6, 14, 16],
  [(0, [3], None), (2, [8, 10, 13], None), (3, [15], None),
   (13, [19, 21], None)]),
 (14, [14],
  [(11, [6], [(0, [1, 3], None), (2, [8, 10, 13], None)]),
   (15, [16], [(3, [15], None), (13, [19, 21], None)])]),
 (14, [14],
  [(11, [6, 10], [(0, [1, 3], None), (2, [8, 9], None), (16, [13], None)]),
   (15, [16], [(3, [15], None), (13, [19, 21], None)])]),
 (14, [14],
  [(11, [6, 10], [(0, [1, 3], None), (2, [7, 8, 9], None), (16, [13], None)]),
   (15, [16], [(3, [15], None), (13, [19, 21], None)])]),
 (14, [14],
  [(11, [6, 10], [(0, [1, 3], None), (2, [7, 8, 9], None), (16, [13], None)]),
   (15, [16], [(3, [15], None), (13, [19, 21], None)])]),
 (14, [14],
  [(11, [6, 10], [(0, [1, 3], None), (2, [7, 8, 9], None), (16, [13], None)]),
   (15, [16], [(3, [15], None), (13, [19, 21], None)])]),
 (14, [14],
  [(11, [6, 10], [(0, [1, 3], None), (2, [7, 9], None), (16, [13], None)]),
   (15, [16], [(3, [15], None), (13, [19, 21], None)])]),
 (14, [14],
  [(11, [6, 9], [(0, [1, 3], None), (2, [7], None), (16, [10], None)]),
   (15, [16], [(3, [15], None), (13, [19, 21], None)])]),
 (14, [14],
  [(11, [6, 9], [(0, [1, 3, 4], None), (2, [7], None), (16, [10], None)]),
   (15, [16], [(3, [15], None), (13, [19, 21], None)])]),
 (14, [14],
  [(11, [3, 6, 9],
    [(0, [1], None), (17, [4], None), (2, [7], None), (16, [10], None)]),
   (15, [16], [(3, [15], None), (13, [19, 21], None)])]),
 (14, [6, 14],
  [(11, [3], [(0, [1], None), (17, [4], None)]),
   (18, [9], [(2, [7], None), (16, [10], None)]),
   (15, [16], [(3, [15], None), (13, [19, 21], None)])]),
 (14, [6, 14],
  [(11, [3], [(0, [1], None), (17, [4], None)]),
   (18, [9], [(2, [7], None), (16, [10], None)]),
   (15, [16], [(3, [15], None), (13, [18, 19, 21], None)])]),
 (14, [6, 14],
  [(11, [3], [(0, [1], None), (17, [4], None)]),
   (18, [9], [(2, [7], None), (16, [10], None)]),
   (15, [16], [(3, [15], None), (13, [18, 19, 21], None)])]),
 (14, [6],
  [(11, [3], [(0, [1], None), (17, [4], None)]),
   (15, [9, 14, 16],
    [(2, [7], None), (16, [10], None), (3, [15], None),
     (13, [18, 21], None)])]),
 (14, [9],
  [(11, [6], [(17, [1, 3], None), (2, [7], None)]),
   (15, [14, 16], [(16, [10], None), (3, [15], None), (13, [18, 21], None)])]),
 (14, [9],
  [(11, [6], [(17, [1, 3], None), (2, [7], None)]),
   (15, [14, 18], [(16, [10], None), (3, [15], None), (13, [21], None)])]),
 (14, [9],
  [(11, [6], [(17, [1, 3], None), (2, [7], None)]),
   (15, [14, 18], [(16, [10], None), (3, [15], None), (13, [21], None)])]),
 (14, [9],
  [(11, [6], [(17, [1, 3], None), (2, [7], None)]),
   (15, [14], [(16, [10], None), (13, [15, 18], None)])]),
 (14, [9],
  [(11, [6], [(17, [1, 3], None), (2, [7], None)]),
   (15, [14], [(16, [10, 12], None), (13, [15, 18], None)])]),
 (14, [9],
  [(11, [6], [(17, [1, 3], None), (2, [7], None)]),
   (15, [14], [(16, [10, 12], None), (13, [15, 18], None)])]),
 (14, [9],
  [(11, [6], [(17, [1, 3], None), (2, [7], None)]),
   (15, [14], [(16, [10, 12], None), (13, [15, 18, 20], None)])]),
 (14, [9],
  [(11, [6], [(17, [1, 3], None), (2, [7], None)]),
   (15, [14], [(16, [10, 12], None), (13, [15, 18, 20], None)])]),
 (14, [9],
  [(11, [6], [(17, [1, 3], None), (2, [7], None)]),
   (15, [14], [(16, [10, 12], None), (13, [15, 18, 20], None)])]),
 (14, [9],
  [(11, [6], [(17, [1, 3], None), (2, [7], None)]),
   (15, [14], [(16, [10, 12], None), (13, [15, 18, 20], None)])]),
 (14, [9],
  [(11, [6], [(17, [1, 3], None), (2, [7], None)]),
   (15, [14], [(16, [10, 12], None), (13, [15, 18, 20], None)])]),
 (14, [9],
  [(11, [6], [(17, [1, 3], None), (2, [7], None)]),
   (15, [14, 18], [(16, [10, 12], None), (13, [15], None), (19, [20], None)])]),
 (14, [14],
  [(11, [6, 9], [(17, [1], None), (2, [7], None), (16, [10, 12], None)]),
   (15, [18], [(13, [15], None), (19, [20], None)])]),
 (14, [14],
  [(11, [6, 9], [(17, [1], None), (2, [7], None), (16, [10, 12], None)]),
   (15, [18], [(13, [15], None), (19, [19, 20], None)])]),
 (14, [14],
  [(11, [9], [(17, [1, 7], None), (16, [10, 12], None)]),
   (15, [18], [(13, [15], None), (19, [19, 20], None)])]),
 (14, [14],
  [(11, [9], [(17, [1, 7], None), (16, [10, 12], None)]),
   (15, [18], [(13, [15], None), (19, [19, 20], None)])]),
 (14, [9, 12, 18],
  [(17, [1, 7], None), (16, [10], None), (13, [14], None),
   (19, [19, 20], None)]),
 (20, [12],
  [(14, [9], [(17, [1, 7], None), (16, [10], None)]),
   (21, [18], [(13, [14], None), (19, [19, 20], None)])]),
 (20, [12],
  [(14, [9], [(17, [1, 7], None), (16, [10], None)]),
   (21, [18], [(13, [14], None), (19, [19, 20], None)])]),
 (20, [12],
  [(14, [9], [(17, [1, 7], None), (16, [10], None)]),
   (21, [18], [(13, [14], None), (19, [19, 20, 23], None)])]),
 (20, [12],
  [(14, [9], [(17, [1, 7], None), (16, [10], None)]),
   (21, [18, 20], [(13, [14], None), (19, [19], None), (22, [22, 23], None)])]),
 (20, [12],
  [(14, [9], [(17, [0, 1, 7], None), (16, [10], None)]),
   (21, [18, 20], [(13, [14], None), (19, [19], None), (22, [22, 23], None)])]),
 (20, [12],
  [(14, [9], [(17, [0, 1, 7], None), (16, [10], None)]),
   (21, [18, 20],
    [(13, [14, 16], None), (19, [19], None), (22, [22, 23], None)])]),
 (20, [12],
  [(14, [9], [(17, [0, 1, 7], None), (16, [10], None)]),
   (21, [18, 20], [(13, [14, 16], None), (19, [19], None), (22, [23], None)])]),
 (20, [18],
  [(14, [9, 12], [(17, [1, 7], None), (16, [10], None), (13, [14, 16], None)]),
   (21, [20], [(19, [19], None), (22, [23], None)])]),
 (20, [18],
  [(14, [7, 12], [(17, [1], None), (16, [10], None), (13, [14, 16], None)]),
   (21, [20], [(19, [19], None), (22, [23], None)])]),
 (20, [18],
  [(14, [7, 12], [(17, [1, 5], None), (16, [10], None), (13, [14, 16], None)]),
   (21, [20], [(19, [19], None), (22, [23], None)])]),
 (20, [18],
  [(14, [5, 12], [(17, [1], None), (16, [10], None), (13, [14, 16], None)]),
   (21, [20], [(19, [19], None), (22, [23], None)])]),
 (20, [18],
  [(14, [5, 12], [(17, [1], None), (16, [10], None), (13, [14, 16], None)]),
   (21, [20], [(19, [19], None), (22, [23], None)])]),
 (20, [18],
  [(14, [5, 14], [(17, [1], None), (16, [10], None), (13, [16], None)]),
   (21, [20], [(19, [19], None), (22, [23], None)])]),
 (20, [18],
  [(14, [5, 14], [(17, [1], None), (16, [7, 10], None), (13, [16], None)]),
   (21, [20], [(19, [19], None), (22, [23], None)])]),
 (20, [18],
  [(14, [5, 14], [(17, [1], None), (16, [7, 10], None), (13, [15, 16], None)]),
   (21, [20], [(19, [19], None), (22, [23], None)])]),
 (20, [18],
  [(14, [5, 14],
    [(17, [1], None), (16, [7, 8, 10], None), (13, [15, 16], None)]),
   (21, [20], [(19, [19], None), (22, [23], None)])]),
 (20, [18],
  [(14, [5, 8, 14],
    [(17, [1], None), (16, [7], None), (23, [10, 11], None),
     (13, [15, 16], None)]),
   (21, [20], [(19, [19], None), (22, [23], None)])]),
 (20, [14],
  [(14, [5, 8], [(17, [1], None), (16, [7], None), (23, [10, 11], None)]),
   (21, [18], [(13, [15, 16], None), (22, [19, 20], None)])]),
 (20, [14],
  [(14, [5, 8], [(17, [1], None), (16, [7], None), (23, [10, 11], None)]),
   (21, [18], [(13, [15, 16], None), (22, [19, 20], None)])]),
 (20, [14],
  [(14, [5, 8], [(17, [1, 3], None), (16, [7], None), (23, [10, 11], None)]),
   (21, [18], [(13, [15, 16], None), (22, [19, 20], None)])]),
 (20, [14],
  [(14, [5, 8], [(17, [1, 3], None), (16, [6, 7], None), (23, [10, 11], None)]),
   (21, [18], [(13, [15, 16], None), (22, [19, 20], None)])]),
 (20, [8],
  [(14, [5], [(17, [1, 3], None), (16, [6, 7], None)]),
   (21, [14, 18],
    [(23, [10, 11], None), (13, [16], None), (22, [19, 20], None)])]),
 (20, [8],
  [(14, [5], [(17, [1, 3], None), (16, [6, 7], None)]),
   (21, [14, 18], [(23, [10, 11], None), (13, [16], None), (22, [20], None)])])]
# fmt: on


@pytest.mark.skipif(not accelerated, reason="the C accelerator is not running")
@given(
    keys=st.lists(st.one_of(st.integers(-50, 50), st.floats(allow_nan=True)), max_size=120),
    probes=st.lists(st.one_of(st.integers(-60, 60), st.floats(allow_nan=True)), max_size=30),
)
def test_the_c_search_finds_what_bnode_search_finds(keys, probes):
    from durus.persistent import _accel

    tree = BTree(BNode4)
    for key in keys:
        tree[key] = repr(key)
    for probe in [*keys[:10], *probes]:
        assert _accel.bnode_search(tree.root, probe) == tree.root.search(probe)


class ForeignIterNode(BNode4):
    """A node class with its own __iter__: the C walk must go through it."""

    __slots__ = ()

    def __iter__(self):  # type: ignore[override]
        from durus.btree import _python_bnode_iter

        for item in list(_python_bnode_iter(self)):
            yield (item[0], f"via {item[1]}")


def _reference_walk(node: BNode) -> Any:
    """BNode.__iter__ of btree.py, each child walked by it too."""
    nodes = node.nodes
    if nodes is None:
        yield from node.items
    else:
        for position, item in enumerate(node.items):
            yield from _reference_descend(nodes[position])
            yield item
        yield from _reference_descend(nodes[-1])


def _reference_descend(node: BNode) -> Any:
    """``iter(node)`` for the reference: a class's own __iter__ is used."""
    return iter(node) if type(node) is ForeignIterNode else _reference_walk(node)


def _reference_walk_from_root(tree: BTree) -> Any:
    """``for item in self.root`` in a generator: root is read at its start."""
    yield from _reference_descend(tree.root)


def _walk_in_a_fresh_transaction(
    storage: MemoryStorage, iterate: Any, steps: int
) -> tuple[list[Any], list[tuple[bytes | None, int]]]:
    """Take ``steps`` items of ``iterate(tree)`` in a new connection: what came
    out, and the oid and status of each recent object in access order."""
    connection = Connection(storage)
    tree = connection.get_root()["tree"]
    iterator = iterate(tree)
    got = [value for _, value in zip(range(steps), iterator, strict=False)]
    recent = [(obj._p_oid, obj._p_status) for obj in connection.cache.recent_objects]
    return got, recent


@pytest.mark.skipif(not accelerated, reason="the C accelerator is not running")
@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(st.integers(-200, 200), unique=True, max_size=150),
    foreign=st.sets(st.integers(0, 40), max_size=4),
    steps=st.integers(0, 160),
    kind=st.sampled_from(["items", "keys", "values", "list_keys", "list_values", "list_items"]),
)
def test_the_c_walk_reads_and_yields_what_the_python_walk_does(keys, foreign, steps, kind):
    """The C iterators against BNode.__iter__ in Python: the same items, and the
    same loads and first touches in the same order, after any number of steps."""

    storage = MemoryStorage()
    connection = Connection(storage)
    tree = BTree(BNode4)
    for key in keys:
        tree[key] = str(key)
    # Some nodes become nodes of a class with its own __iter__.
    nodes = [tree.root]
    for node in nodes:
        nodes.extend(node.nodes or ())
    for index in sorted(foreign):
        if index < len(nodes):
            nodes[index].__class__ = ForeignIterNode
    connection.get_root()["tree"] = tree
    connection.commit()

    def python_walk(tree: BTree) -> Any:
        # BTree's methods in Python: the method lookup is the tree's first
        # touch; iteritems reads root at once, the generators at their start.
        if kind == "keys":
            return (item[0] for item in _reference_walk_from_root(tree))
        getattr(tree, {"items": "iteritems", "values": "itervalues"}.get(kind, kind[5:]))
        if kind == "items":
            return _reference_descend(tree.root)
        if kind == "values":
            return (item[1] for item in _reference_walk_from_root(tree))
        part = {"list_keys": 0, "list_values": 1}.get(kind)
        items = list(_reference_descend(tree.root))
        return iter(items if part is None else [item[part] for item in items])

    def c_walk(tree: BTree) -> Any:
        if kind == "items":
            return tree.iteritems()
        if kind == "keys":
            return iter(tree)
        if kind == "values":
            return tree.itervalues()
        listing = {"list_keys": tree.keys, "list_values": tree.values, "list_items": tree.items}
        return iter(listing[kind]())

    assert _walk_in_a_fresh_transaction(storage, c_walk, steps) == _walk_in_a_fresh_transaction(
        storage, python_walk, steps
    )


class ReentrantNode(BNode4):
    """Reading its ``nodes`` asks the running iterator for its next item."""

    __slots__ = ()
    running: list[Any] = []

    def __getattribute__(self, name: str) -> Any:
        if name == "nodes" and ReentrantNode.running:
            next(ReentrantNode.running[0])
        return super().__getattribute__(name)


def test_an_iterator_asked_for_its_next_item_while_it_works_refuses():
    tree = BTree(ReentrantNode)
    for key in range(20):
        tree[key] = key
    iterator = iter(tree)
    ReentrantNode.running[:] = [iterator]
    try:
        # A generator raises ValueError here too ("generator already executing").
        with pytest.raises(ValueError, match="already executing"):
            next(iterator)
    finally:
        ReentrantNode.running.clear()
    assert list(tree) == list(range(20))
