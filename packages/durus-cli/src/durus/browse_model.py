"""What ``durus browse`` knows about the database it shows, read through the Storage API.

Records are read one at a time as pages need them (``Browser.object``); the
census and the referrers need one pass over every reachable record, made the
first time a page asks and kept.  Nothing here writes: the storage was opened
read-only (a file, a database URL) or is a client that never commits.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from durus.browse_records import Decoded, Ref, decode_record
from durus.serialize import extract_class_name, split_oids, unpack_record
from durus.utils import int8_to_str

__all__ = ["Browser", "Index", "iterate_btree"]

#: BTree and BNode class names (Durus 4.3's and ours are the same).
BTREE = "durus.btree.BTree"


@dataclass
class Index:
    """One pass over every reachable record: classes, sizes, referrers."""

    classes: dict[int, str] = field(default_factory=dict)
    sizes: dict[int, int] = field(default_factory=dict)
    referrers: dict[int, list[int]] = field(default_factory=dict)

    def census(self) -> list[tuple[str, int, int]]:
        """``(class name, objects, bytes)``, the most bytes first."""
        counts: dict[str, list[int]] = {}
        for oid, name in self.classes.items():
            entry = counts.setdefault(name, [0, 0])
            entry[0] += 1
            entry[1] += self.sizes[oid]
        return sorted(((name, n, size) for name, (n, size) in counts.items()),
                      key=lambda row: (-row[2], row[0]))


class Browser:
    """The storage being browsed, and what was learnt of it (one lock: one storage)."""

    def __init__(self, storage: Any, description: str, facts: Any = None) -> None:
        self.storage = storage
        self.description = description
        #: ``facts()`` -> list of (label, value) rows, or None
        self.facts_source = facts
        self.lock = threading.Lock()
        self._index: Index | None = None

    def object(self, oid: int) -> Decoded | None:
        """Record ``oid`` decoded, or None if there is none."""
        try:
            record = self.storage.load(int8_to_str(oid))
        except KeyError:
            return None
        return decode_record(record)

    def index(self) -> Index:
        if self._index is None:
            index = Index()
            for oid, record in self.storage.gen_oid_record():
                number = int.from_bytes(oid, "big")
                try:
                    name = extract_class_name(record)
                    name = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
                except Exception:
                    name = "?"
                index.classes[number] = str(name)
                index.sizes[number] = len(record)
                for ref in split_oids(unpack_record(record)[2]):
                    index.referrers.setdefault(int.from_bytes(ref, "big"), []).append(number)
            self._index = index
        return self._index

    def close(self) -> None:
        self.storage.close()


def state_fields(decoded: Decoded) -> list[tuple[str, Any]]:
    """The named parts of a state: a ``__dict__``, slots, or the whole state."""
    state = decoded.state
    if isinstance(state, tuple) and len(state) == 2 and all(
            s is None or isinstance(s, dict) for s in state):
        merged: dict[Any, Any] = {}
        for part in state:
            merged.update(part or {})
        state = merged
    if isinstance(state, dict):
        return [(str(key), value) for key, value in state.items()]
    return [("state", state)]


def iterate_btree(browser: Browser, tree: Decoded, start_key: Any = None) -> Iterator[tuple]:
    """The ``(key, value)`` items of a BTree record in key order, from ``start_key``.

    Nodes are loaded as the walk reaches them; one that cannot be read
    raises ``LookupError`` (the page says so).
    """
    fields = dict(state_fields(tree))
    root = fields.get("root")
    if isinstance(root, Ref):
        yield from _walk(browser, root.oid, start_key)


def _walk(browser: Browser, oid: int, start_key: Any) -> Iterator[tuple]:
    node = browser.object(oid)
    if node is None or node.error:
        raise LookupError(f"BTree node {oid} cannot be read")
    fields = dict(state_fields(node))
    items = list(fields.get("items") or [])
    nodes = fields.get("nodes")
    first = 0
    if start_key is not None:
        # nodes[i] holds the keys between items[i - 1] and items[i].
        while first < len(items) and _less(items[first][0], start_key):
            first += 1
    for position in range(first, len(items)):
        if nodes:
            yield from _walk(browser, nodes[position].oid,
                             start_key if position == first else None)
        yield tuple(items[position])
    if nodes:
        yield from _walk(browser, nodes[len(items)].oid,
                         start_key if first == len(items) else None)


def _less(a: Any, b: Any) -> bool:
    try:
        return bool(a < b)
    except TypeError:  # a key of another type than the one asked for
        return str(a) < str(b)

