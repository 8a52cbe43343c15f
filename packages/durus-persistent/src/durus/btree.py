"""BTree: a sorted persistent mapping made of many small persistent nodes.

A ``PersistentDict`` is one record, rewritten whole on every change.  A
``BTree`` spreads its items over ``BNode`` records (a B-tree of minimum degree
``t``: at most ``2t - 1`` items per node, at least ``t - 1`` in every node but
the root), so a change rewrites only the few nodes it touches, lookups load only
the nodes on one path, and keys come out in order (with range queries).

The insertion (preemptive split on the way down) and deletion (single pass,
fixing each child before descending into it) algorithms are those of Durus
4.3, followed step by step: the node layouts and node identities, and so the
records written, are the ones Durus 4.3 produces for the same operations.  Two
deliberate differences, both where Durus 4.3 leaves a broken tree:

* When the deleted key sits in an internal node whose two neighbouring
  children are both minimal, Durus deletes the successor from the right child
  first; with ``t = 2`` that child can be left with no item, and Durus then
  collapses it into its own child, which puts leaves at different depths (and
  can make the same delete fail with ``TypeError``).  Here only the node the
  deletion started from (the root) ever collapses; the emptied child is merged
  as it is, which keeps the tree balanced.
* A delete of an absent key may merge the root's last two children on its way
  down; Durus then raises ``KeyError`` before collapsing the root, leaving an
  internal root without items (``bool(tree)`` is then False for a non-empty
  tree).  Here the root collapses before the ``KeyError`` propagates.

All keys of one tree must be mutually comparable (they are kept sorted).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from operator import itemgetter
from typing import Any

from durus.persistent import UNSAVED, PersistentObject, _accel

__all__ = [
    "BNode",
    "BNode4",
    "BNode8",
    "BNode16",
    "BNode32",
    "BNode64",
    "BNode128",
    "BNode256",
    "BNode512",
    "BTree",
]

_key_of = itemgetter(0)


class BNode(PersistentObject):
    """One node of a ``BTree``: sorted ``(key, value)`` items and, unless a leaf, children.

    ``items`` is a list of 2-tuples in key order; ``nodes`` is None for a leaf,
    otherwise the list of the ``len(items) + 1`` children, ``nodes[i]`` holding
    the keys between ``items[i - 1]`` and ``items[i]``.  Each node is its own
    record.  The subclasses differ only in ``minimum_degree``.
    """

    __slots__ = ["items", "nodes"]

    # What the slots hold, for type-checking tools (set per class below).
    items_is: Any = [tuple]
    nodes_is: Any = None

    minimum_degree = 2

    items: list[tuple[Any, Any]]
    nodes: list[BNode] | None

    def __init__(self) -> None:
        self.items = []
        self.nodes = None

    def is_leaf(self) -> bool:
        return self.nodes is None

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        """The items of this subtree in key order."""
        nodes = self.nodes
        if nodes is None:
            yield from self.items
        else:
            for position, item in enumerate(self.items):
                yield from nodes[position]
                yield item
            yield from nodes[-1]

    def __reversed__(self) -> Iterator[tuple[Any, Any]]:
        """The items of this subtree in reverse key order."""
        nodes = self.nodes
        if nodes is None:
            yield from reversed(self.items)
        else:
            items = self.items
            for position in range(len(items), 0, -1):
                yield from reversed(nodes[position])
                yield items[position - 1]
            yield from reversed(nodes[0])

    def iter_from(self, key: Any) -> Iterator[tuple[Any, Any]]:
        """The items whose key is ``>= key``, in key order."""
        position = self.get_position(key)
        items = self.items
        nodes = self.nodes
        if nodes is None:
            yield from items[position:]
        else:
            yield from nodes[position].iter_from(key)
            for index in range(position, len(items)):
                yield items[index]
                yield from nodes[index + 1]

    def iter_backward_from(self, key: Any) -> Iterator[tuple[Any, Any]]:
        """The items whose key is ``< key``, in reverse key order."""
        position = self.get_position(key)
        items = self.items
        nodes = self.nodes
        if nodes is None:
            yield from reversed(items[:position])
        else:
            yield from nodes[position].iter_backward_from(key)
            for index in range(position - 1, -1, -1):
                yield items[index]
                yield from reversed(nodes[index])

    def is_full(self) -> bool:
        return len(self.items) == 2 * self.minimum_degree - 1

    def get_position(self, key: Any) -> int:
        """Index of the first item whose key is ``>= key`` (``len(items)`` if none)."""
        return bisect_left(self.items, key, key=_key_of)

    def search(self, key: Any) -> tuple[Any, Any] | None:
        """The item of this subtree with ``key``, or None."""
        node = self
        while True:
            items = node.items
            position = bisect_left(items, key, key=_key_of)
            if position < len(items) and items[position][0] == key:
                return items[position]
            nodes = node.nodes
            if nodes is None:
                return None
            node = nodes[position]

    def insert_item(self, item: tuple[Any, Any]) -> None:
        """Insert (or replace) ``item`` in this non-full subtree, splitting full children."""
        key = item[0]
        node = self
        full = 2 * self.minimum_degree - 1  # is_full(), inlined: this is the hot loop
        while True:
            items = node.items
            position = bisect_left(items, key, key=_key_of)
            if position < len(items) and items[position][0] == key:
                if node._p_status != UNSAVED:
                    node._p_note_change()
                items[position] = item
                return
            nodes = node.nodes
            if nodes is None:
                if node._p_status != UNSAVED:
                    node._p_note_change()
                items.insert(position, item)
                return
            child = nodes[position]
            if len(child.items) == full:
                node.split_child(position, child)
                middle_key = items[position][0]
                if middle_key == key:
                    items[position] = item  # split_child noted the change
                    return
                if middle_key < key:
                    child = nodes[position + 1]
            node = child

    def split_child(self, position: int, child: BNode) -> None:
        """Split the full ``child`` (``self.nodes[position]``) around its middle item.

        The middle item moves up into this node at ``position``; the upper
        items (and children) move to a new sibling inserted after ``child``.
        """
        self._p_note_change()
        child._p_note_change()
        t = self.minimum_degree
        sibling = child.__class__()
        child_items = child.items
        sibling.items = child_items[t:]
        middle = child_items[t - 1]
        del child_items[t - 1 :]
        child_nodes = child.nodes
        if child_nodes is not None:
            sibling.nodes = child_nodes[t:]
            del child_nodes[t:]
        assert self.nodes is not None
        self.nodes.insert(position + 1, sibling)
        self.items.insert(position, middle)

    def get_min_item(self) -> tuple[Any, Any]:
        """The item with the smallest key of this (non-empty) subtree."""
        node = self
        while node.nodes is not None:
            node = node.nodes[0]
        return node.items[0]

    def get_max_item(self) -> tuple[Any, Any]:
        """The item with the largest key of this (non-empty) subtree."""
        node = self
        while node.nodes is not None:
            node = node.nodes[-1]
        return node.items[-1]

    def delete(self, key: Any) -> None:
        """Remove the item with ``key`` from this subtree; ``KeyError(key)`` if absent.

        This node is treated as the root of its tree: if it is left with no
        item it takes over the items and children of its only child (keeping
        its identity).  On the way down, children may be restructured even
        when the key turns out to be absent (as in Durus 4.3).
        """
        try:
            self._delete(key)
        finally:
            nodes = self.nodes
            if nodes is not None and not self.items:
                only_child = nodes[0]
                self._p_note_change()
                self.items = only_child.items
                self.nodes = only_child.nodes

    def _delete(self, key: Any) -> None:
        t = self.minimum_degree
        items = self.items
        position = bisect_left(items, key, key=_key_of)
        found = position < len(items) and items[position][0] == key
        nodes = self.nodes
        if nodes is None:
            if not found:
                raise KeyError(key)
            self._p_note_change()
            del items[position]
            return
        if found:
            lower = nodes[position]
            upper = nodes[position + 1]
            if len(lower.items) >= t:
                replacement = lower.get_max_item()
                lower._delete(replacement[0])
                self._p_note_change()
                items[position] = replacement
            elif len(upper.items) >= t:
                replacement = upper.get_min_item()
                upper._delete(replacement[0])
                self._p_note_change()
                items[position] = replacement
            else:
                # Both neighbours minimal: remove the successor from the right
                # child, then merge left + successor + right into the left child.
                successor = upper.get_min_item()
                upper._delete(successor[0])
                lower._p_note_change()
                lower.items = lower.items + [successor] + upper.items
                if lower.nodes is not None:
                    assert upper.nodes is not None
                    lower.nodes = lower.nodes + upper.nodes
                self._p_note_change()
                del items[position]
                del nodes[position + 1]
        else:
            child = nodes[position]
            if len(child.items) < t:
                child = self._fix_child(position, child)
            child._delete(key)

    def _fix_child(self, position: int, child: BNode) -> BNode:
        """Give the minimal ``nodes[position]`` a t-th item; return the node to descend."""
        t = self.minimum_degree
        items = self.items
        nodes = self.nodes
        assert nodes is not None
        left = nodes[position - 1] if position > 0 else None
        right = nodes[position + 1] if position + 1 < len(nodes) else None
        if left is not None and len(left.items) >= t:
            # Rotate right: the separator comes down, left's last item goes up.
            self._p_note_change()
            child._p_note_change()
            left._p_note_change()
            child.items.insert(0, items[position - 1])
            items[position - 1] = left.items.pop()
            if left.nodes is not None:
                assert child.nodes is not None
                child.nodes.insert(0, left.nodes.pop())
        elif right is not None and len(right.items) >= t:
            # Rotate left: the separator comes down, right's first item goes up.
            self._p_note_change()
            child._p_note_change()
            right._p_note_change()
            child.items.append(items[position])
            items[position] = right.items.pop(0)
            if right.nodes is not None:
                assert child.nodes is not None
                child.nodes.append(right.nodes.pop(0))
        elif left is not None:
            # Absorb the left sibling: left + separator + child.
            self._p_note_change()
            child._p_note_change()
            child.items = left.items + [items[position - 1]] + child.items
            if child.nodes is not None:
                assert left.nodes is not None
                child.nodes = left.nodes + child.nodes
            del items[position - 1]
            del nodes[position - 1]
        elif right is not None:
            # Merge the right sibling in: child + separator + right.
            self._p_note_change()
            child._p_note_change()
            child.items = child.items + [items[position]] + right.items
            if child.nodes is not None:
                assert right.nodes is not None
                child.nodes = child.nodes + right.nodes
            del items[position]
            del nodes[position + 1]
        return child

    def get_count(self) -> int:
        """The number of items in this subtree."""
        count = len(self.items)
        if self.nodes is not None:
            for node in self.nodes:
                count += node.get_count()
        return count

    def get_node_count(self) -> int:
        """The number of nodes in this subtree, this one included."""
        count = 1
        if self.nodes is not None:
            for node in self.nodes:
                count += node.get_node_count()
        return count

    def get_level(self) -> int:
        """The height of this node above the leaves (0 for a leaf)."""
        level = 0
        node = self
        while node.nodes is not None:
            level += 1
            node = node.nodes[0]
        return level


BNode.nodes_is = (None, [BNode])


class BNode4(BNode):
    """A ``BNode`` of minimum degree 4 (3 to 7 items)."""

    __slots__: list[str] = []
    minimum_degree = 4


class BNode8(BNode):
    """A ``BNode`` of minimum degree 8 (7 to 15 items)."""

    __slots__: list[str] = []
    minimum_degree = 8


class BNode16(BNode):
    """A ``BNode`` of minimum degree 16 (15 to 31 items), the default of ``BTree``."""

    __slots__: list[str] = []
    minimum_degree = 16


class BNode32(BNode):
    """A ``BNode`` of minimum degree 32 (31 to 63 items)."""

    __slots__: list[str] = []
    minimum_degree = 32


class BNode64(BNode):
    """A ``BNode`` of minimum degree 64 (63 to 127 items)."""

    __slots__: list[str] = []
    minimum_degree = 64


class BNode128(BNode):
    """A ``BNode`` of minimum degree 128 (127 to 255 items)."""

    __slots__: list[str] = []
    minimum_degree = 128


class BNode256(BNode):
    """A ``BNode`` of minimum degree 256 (255 to 511 items)."""

    __slots__: list[str] = []
    minimum_degree = 256


class BNode512(BNode):
    """A ``BNode`` of minimum degree 512 (511 to 1023 items)."""

    __slots__: list[str] = []
    minimum_degree = 512


for _node_class in (BNode4, BNode8, BNode16, BNode32, BNode64, BNode128, BNode256, BNode512):
    _node_class.items_is = [tuple]
    _node_class.nodes_is = (None, [_node_class])
del _node_class


def _gen_bnode_classes() -> Iterator[type[BNode]]:
    """The subclasses of BNode, parents first, each application class once.

    Internal variants of a class (see ``durus.persistent``) share its module
    and qualified name and come after it, so they are skipped.
    """
    seen = {(BNode.__module__, BNode.__qualname__)}
    pending = list(reversed(BNode.__subclasses__()))
    while pending:
        klass = pending.pop()
        name = (klass.__module__, klass.__qualname__)
        if name not in seen:
            seen.add(name)
            yield klass
        pending.extend(reversed(klass.__subclasses__()))


#: How a BTree finds a key: ``BNode.search``, or the accelerator's C copy of it
#: (the same attribute reads, so the same loads and first touches, and the same
#: comparisons), which spares a Python frame and bound method per node.
_search: Callable[[Any, Any], Any] = BNode.search if _accel is None else _accel.bnode_search

# What the accelerator's iterators yield of each item.
_ITEMS, _KEYS, _VALUES = 0, 1, 2

#: BNode.__iter__ in Python, the reference of the accelerator's walk.
_python_bnode_iter = BNode.__iter__

if _accel is not None:
    # Iteration in C: BNode.__iter__'s walk, step for step (the same reads of
    # ``nodes`` then ``items``, when the generator would make them), without a
    # generator per node.  Nodes of a class with its own __iter__ still go
    # through it.
    def _bnode_iter(self: BNode) -> Iterator[tuple[Any, Any]]:
        return _accel.iterate_bnode(self, _ITEMS)

    _bnode_iter.__doc__ = BNode.__iter__.__doc__
    _bnode_iter.__qualname__ = "BNode.__iter__"
    BNode.__iter__ = _bnode_iter  # type: ignore[method-assign]
    _accel.set_bnode_iter(_bnode_iter)


class BTree(PersistentObject, MutableMapping):
    """A persistent sorted mapping stored as a B-tree of ``BNode`` records.

    Use it for large mappings (only the nodes touched are loaded and
    rewritten) and for ordered traversal and range queries over keys.
    ``node_constructor`` chooses the node class, and so the minimum degree.
    """

    __slots__ = ["root"]

    root_is = BNode  # what the ``root`` slot holds, for type-checking tools

    root: BNode

    def __init__(self, node_constructor: type[BNode] = BNode16) -> None:
        self.root = node_constructor()

    def __bool__(self) -> bool:
        return bool(self.root.items)

    __nonzero__ = __bool__

    # -- iteration --------------------------------------------------------------

    def iteritems(self) -> Iterator[tuple[Any, Any]]:
        """The ``(key, value)`` items in key order."""
        return iter(self.root)

    def iterkeys(self) -> Iterator[Any]:
        for item in self.root:
            yield item[0]

    def itervalues(self) -> Iterator[Any]:
        for item in self.root:
            yield item[1]

    def __iter__(self) -> Iterator[Any]:
        for item in self.root:
            yield item[0]

    if _accel is not None:
        # The generators above in C (self.root, too, is read at the first next()).

        def iterkeys(self) -> Iterator[Any]:
            return _accel.iterate_btree(self, _KEYS)

        def itervalues(self) -> Iterator[Any]:
            return _accel.iterate_btree(self, _VALUES)

        def __iter__(self) -> Iterator[Any]:
            return _accel.iterate_btree(self, _KEYS)

    def __reversed__(self) -> Iterator[Any]:
        for item in reversed(self.root):
            yield item[0]

    def items(self) -> list[tuple[Any, Any]]:  # type: ignore[override]
        """A new list of the items in key order (Durus returns lists, not views)."""
        return list(self.root)

    def keys(self) -> list[Any]:  # type: ignore[override]
        """A new list of the keys in order."""
        if _accel is not None:
            return list(_accel.iterate_btree(self, _KEYS))
        return [item[0] for item in self.root]

    def values(self) -> list[Any]:  # type: ignore[override]
        """A new list of the values in key order."""
        if _accel is not None:
            return list(_accel.iterate_btree(self, _VALUES))
        return [item[1] for item in self.root]

    def items_backward(self) -> Iterator[tuple[Any, Any]]:
        """The items in reverse key order."""
        return reversed(self.root)

    def items_from(self, key: Any, closed: bool = True) -> Iterator[tuple[Any, Any]]:
        """The items with keys ``>= key`` (``> key`` unless ``closed``), in key order."""
        for item in self.root.iter_from(key):
            if closed or item[0] != key:
                yield item

    def items_backward_from(self, key: Any, closed: bool = False) -> Iterator[tuple[Any, Any]]:
        """The items with keys ``< key`` (``<= key`` if ``closed``), in reverse key order."""
        if closed:
            item = _search(self.root, key)
            if item is not None:
                yield item
        yield from self.root.iter_backward_from(key)

    def items_range(
        self, start: Any, end: Any, closed_start: bool = True, closed_end: bool = False
    ) -> Iterator[tuple[Any, Any]]:
        """The items with keys from ``start`` towards ``end``.

        Ascending when ``start <= end``, else descending from ``start``.
        ``closed_start`` / ``closed_end`` say whether the bounds themselves are
        included.
        """
        if start <= end:
            for item in self.items_from(start, closed=closed_start):
                key = item[0]
                if end < key or (key == end and not closed_end):
                    break
                yield item
        else:
            for item in self.items_backward_from(start, closed=closed_start):
                key = item[0]
                if key < end or (key == end and not closed_end):
                    break
                yield item

    # -- lookup -------------------------------------------------------------------

    def __contains__(self, key: object) -> bool:
        return _search(self.root, key) is not None

    def has_key(self, key: Any) -> bool:
        """Whether ``key`` is present (the Python 2 spelling of ``key in tree``)."""
        return _search(self.root, key) is not None

    def __getitem__(self, key: Any) -> Any:
        item = _search(self.root, key)
        if item is None:
            raise KeyError(key)
        return item[1]

    def get(self, key: Any, default: Any = None) -> Any:
        item = _search(self.root, key)
        if item is None:
            return default
        return item[1]

    def get_min_item(self) -> tuple[Any, Any]:
        """The item with the smallest key; ``AssertionError`` when the tree is empty."""
        if not self.root.items:
            raise AssertionError("empty BTree has no min item")
        return self.root.get_min_item()

    def get_max_item(self) -> tuple[Any, Any]:
        """The item with the largest key; ``AssertionError`` when the tree is empty."""
        if not self.root.items:
            raise AssertionError("empty BTree has no max item")
        return self.root.get_max_item()

    def __len__(self) -> int:
        """The number of items (counted by walking every node)."""
        return self.root.get_count()

    def get_depth(self) -> int:
        """The number of node levels (1 for a tree that is a single leaf)."""
        return self.root.get_level() + 1

    def get_node_count(self) -> int:
        return self.root.get_node_count()

    # -- changes ----------------------------------------------------------------

    def add(self, key: Any, value: Any = True) -> None:
        """Set ``self[key] = value``; with no value, use the tree as a sorted set."""
        root = self.root
        if root.is_full():
            new_root = root.__class__()
            new_root.nodes = [root]
            new_root.split_child(0, root)
            self._p_note_change()
            self.root = root = new_root
        root.insert_item((key, value))

    def __setitem__(self, key: Any, value: Any) -> None:
        self.add(key, value)

    def setdefault(self, key: Any, value: Any = None) -> Any:
        """``self[key]``, first setting it to ``value`` when absent."""
        item = _search(self.root, key)
        if item is None:
            self.add(key, value)
            return value
        return item[1]

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Like ``dict.update``: at most one argument, plus keywords.

        The argument may be anything with an ``items()`` method (Durus 4.3
        accepts that much, mappings or not), a mapping with ``keys()`` only,
        or an iterable of pairs.
        """
        if len(args) > 1:
            raise TypeError(f"update expected at most 1 argument, got {len(args)}")
        if args:
            other = args[0]
            pairs: Iterable[tuple[Any, Any]]
            if hasattr(other, "items"):
                pairs = other.items()
            elif hasattr(other, "keys"):
                pairs = [(key, other[key]) for key in other.keys()]  # noqa: SIM118
            else:
                pairs = other
            for key, value in pairs:
                self.add(key, value)
        for key, value in kwargs.items():
            self.add(key, value)

    def __delitem__(self, key: Any) -> None:
        self.root.delete(key)

    def clear(self) -> None:
        """Remove every item: the tree gets a new, empty root of the same class."""
        self._p_note_change()
        self.root = self.root.__class__()

    def note_change_of_bnode_containing_key(self, key: Any) -> None:
        """Mark the node holding ``key`` changed (after mutating its value in place).

        ``KeyError(key)`` when the key is absent.
        """
        node = self.root
        while True:
            items = node.items
            position = bisect_left(items, key, key=_key_of)
            if position < len(items) and items[position][0] == key:
                node._p_note_change()
                return
            nodes = node.nodes
            if nodes is None:
                raise KeyError(key)
            node = nodes[position]

    def set_bnode_minimum_degree(self, degree: int) -> bool:
        """Rebuild the tree with the BNode subclass of minimum degree ``degree``.

        Returns False (and changes nothing) when the nodes already have that
        degree or no subclass of BNode has it, True after a rebuild.
        """
        if degree == self.root.minimum_degree:
            return False
        for klass in _gen_bnode_classes():
            if klass.minimum_degree == degree:
                break
        else:
            return False
        rebuilt = BTree(klass)
        for item in self.root:
            rebuilt.add(item[0], item[1])
        self._p_note_change()
        self.root = rebuilt.root
        return True
