"""Object graphs described as JSON-able data: build them, describe what was read back.

Shared by the generative tests and the Durus 4.3 interop tests, so this module imports only
the standard library and ``durus`` names that Durus 4.3 has too (it runs in both
interpreters), and the application classes of the graphs live here: their pickles name the
module ``graph_spec``, which both interpreters import from this folder (``sys.path``).

A *spec* is ``{"objects": [OBJECT, ...], "graph": VALUE}``; ``build(root, spec)`` stores
the value of ``"graph"`` at ``root["graph"]``.  An OBJECT is a persistent object:

* ``{"kind": "attrs", "attrs": [[name, VALUE], ...]}``: a ``GraphAttrs`` (``Persistent``,
  state in ``__dict__``);
* ``{"kind": "slots", "attrs": [[name, VALUE], ...]}``: a ``GraphSlots``
  (``PersistentObject`` with ``__slots__``; names among ``SLOT_NAMES``);
* ``{"kind": "dict", "items": [[KEY, VALUE], ...]}``: a ``PersistentDict``;
* ``{"kind": "list", "items": [VALUE, ...]}``: a ``PersistentList``;
* ``{"kind": "set", "items": [KEY, ...]}``: a ``PersistentSet``;
* ``{"kind": "btree", "degree": 2, "items": [[int or str, VALUE], ...]}``: a ``BTree`` of
  ``BNode`` (degree 2), ``BNode4`` or ``BNode16`` nodes (keys of one type per tree).

A VALUE is ``None``, a bool, an int (any size), a str, or a tagged list:
``["float", repr]``, ``["bytes", hex]``, ``["tuple", [VALUE, ...]]``,
``["list", [VALUE, ...]]``, ``["dict", [[KEY, VALUE], ...]]``, ``["set", [KEY, ...]]``,
``["frozenset", [KEY, ...]]``, ``["plain", [[name, VALUE], ...]]`` (a ``GraphPlain``, a
non-persistent class instance) or ``["ref", i]``: the persistent object ``objects[i]``
(itself, another one, shared, in cycles).  A KEY is a VALUE without refs, lists, dicts,
sets or plain instances (hashable, compared by value).

``describe(root)`` gives the same notation for what is reachable from ``root["graph"]``,
objects numbered in discovery order (so oids, and the spec's numbering, do not matter);
``expected(spec, changes)`` is what it must give, computed on a graph that was never stored.

A *change* (``mutate(root, change)``, a rewrite of part of a stored graph) is
``{"objects": [OBJECT, ...], "ops": [OP, ...]}`` where ``["ref", i]`` means object ``i`` of
``objects_of(root)`` (discovery order, before the change) for ``i < n`` and new object
``i - n`` of the change otherwise.  An OP is ``["set", i, key, VALUE]`` (item, attribute,
BTree key; on a list: index modulo its length, append when empty), ``["del", i, key]``
(removes if present), ``["add", i, VALUE]`` (append to a list, add to a set) or
``["graph", VALUE]`` (replace ``root["graph"]``).  Ops that do not apply to the object's
kind do nothing, the same way on every graph.

As a script (``python graph_spec.py COMMAND ...``, with Durus 4.3 or ours), on a file
``FILE`` or a server given by ``--host/--port`` or ``--address`` (a Unix socket) instead:
``write [FILE] SPEC_JSON_FILE`` (build and commit), ``mutate [FILE] CHANGE_JSON_FILE``
(apply and commit), ``pack [FILE]`` and ``describe [FILE]`` (prints the JSON).  ``-``
reads the JSON from standard input.
"""

from __future__ import annotations

import argparse
import json
import sys

from durus.btree import BNode, BNode4, BNode16, BTree
from durus.persistent import Persistent, PersistentObject
from durus.persistent_dict import PersistentDict
from durus.persistent_list import PersistentList
from durus.persistent_set import PersistentSet

__all__ = [
    "NODE_CLASSES",
    "OBJECT_KINDS",
    "SLOT_NAMES",
    "Describer",
    "GraphAttrs",
    "GraphPlain",
    "GraphSlots",
    "apply_op",
    "build",
    "describe",
    "expected",
    "main",
    "make_objects",
    "make_value",
    "mutate",
    "objects_of",
]

SLOT_NAMES = ("a", "b", "c", "d")
OBJECT_KINDS = ("attrs", "slots", "dict", "list", "set", "btree")
NODE_CLASSES = {2: BNode, 4: BNode4, 16: BNode16}


class GraphAttrs(Persistent):
    """An application class whose state is its ``__dict__``."""


class GraphSlots(PersistentObject):
    """An application class whose state is its set slots (unset ones are left out)."""

    __slots__ = SLOT_NAMES


class GraphPlain:
    """A plain (non-persistent) instance inside a state: pickled by reduce, with its refs."""

    def __eq__(self, other):
        return type(other) is GraphPlain and self.__dict__ == other.__dict__

    __hash__ = None


# -- building -----------------------------------------------------------------------------


def make_value(value, objects):
    """The Python value of a spec VALUE; ``["ref", i]`` is ``objects[i]``."""
    if not isinstance(value, list):
        return value
    tag, body = value
    if tag == "ref":
        return objects[body]
    if tag == "float":
        return float(body)
    if tag == "bytes":
        return bytes.fromhex(body)
    if tag == "tuple":
        return tuple(make_value(x, objects) for x in body)
    if tag == "list":
        return [make_value(x, objects) for x in body]
    if tag == "dict":
        return {make_value(k, objects): make_value(v, objects) for k, v in body}
    if tag == "set":
        return {make_value(x, objects) for x in body}
    if tag == "frozenset":
        return frozenset(make_value(x, objects) for x in body)
    if tag == "plain":
        plain = GraphPlain()
        for name, x in body:
            setattr(plain, name, make_value(x, objects))
        return plain
    raise ValueError(f"unknown value tag {tag!r}")


def _new_object(spec):
    kind = spec["kind"]
    if kind == "attrs":
        return GraphAttrs()
    if kind == "slots":
        return GraphSlots()
    if kind == "dict":
        return PersistentDict()
    if kind == "list":
        return PersistentList()
    if kind == "set":
        return PersistentSet()
    if kind == "btree":
        return BTree(NODE_CLASSES[spec.get("degree", 16)])
    raise ValueError(f"unknown object kind {kind!r}")


def _fill(obj, spec, objects):
    kind = spec["kind"]
    if kind in ("attrs", "slots"):
        for name, value in spec["attrs"]:
            setattr(obj, name, make_value(value, objects))
    elif kind in ("dict", "btree"):
        for key, value in spec["items"]:
            obj[make_value(key, objects)] = make_value(value, objects)
    elif kind == "list":
        obj.extend(make_value(value, objects) for value in spec["items"])
    else:
        for key in spec["items"]:
            obj.add(make_value(key, objects))


def make_objects(specs, existing=()):
    """``existing`` followed by new objects made for ``specs`` (OBJECTs whose refs number
    ``existing`` then the new objects), filled."""
    new = [_new_object(spec) for spec in specs]
    objects = list(existing) + new
    for obj, spec in zip(new, specs, strict=True):
        _fill(obj, spec, objects)
    return objects


def build(root, spec):
    """Hang the graph of ``spec`` at ``root["graph"]`` (no commit)."""
    objects = make_objects(spec["objects"])
    root["graph"] = make_value(spec["graph"], objects)


def mutate(root, change):
    """Apply a change (see the module docstring) to the graph at ``root["graph"]`` (no commit)."""
    objects = make_objects(change.get("objects", ()), objects_of(root))
    for op in change["ops"]:
        apply_op(root, objects, op)


def apply_op(root, objects, op):
    """Apply one OP of a change; its refs and object numbers index ``objects``."""
    if op[0] == "graph":
        root["graph"] = make_value(op[1], objects)
        return
    target = objects[op[1]]
    if op[0] == "set":
        _set(target, make_value(op[2], objects), make_value(op[3], objects))
    elif op[0] == "del":
        _delete(target, make_value(op[2], objects))
    elif op[0] == "add":
        value = make_value(op[2], objects)
        if isinstance(target, PersistentList):
            target.append(value)
        elif isinstance(target, PersistentSet) and _hashable(value):
            target.add(value)
    else:
        raise ValueError(f"unknown op {op[0]!r}")


def _hashable(value):
    """Hashable, with no persistent object inside: set elements and keys hold none."""
    try:
        hash(value)
    except TypeError:
        return False
    if isinstance(value, PersistentObject):
        return False
    if isinstance(value, (tuple, frozenset)):
        return all(_hashable(x) for x in value)
    return True


def _attribute_name(target, key):
    if not isinstance(key, str):
        return None
    if isinstance(target, GraphSlots):
        return key if key in SLOT_NAMES else None
    return key if key and not key.startswith("_") else None


def _set(target, key, value):
    if isinstance(target, (GraphAttrs, GraphSlots)):
        name = _attribute_name(target, key)
        if name is not None:
            setattr(target, name, value)
    elif isinstance(target, PersistentDict):
        if _hashable(key):
            target[key] = value
    elif isinstance(target, BTree):
        if _btree_key_fits(target, key):
            target[key] = value
    elif isinstance(target, PersistentList):
        if not isinstance(key, int) or isinstance(key, bool) or not len(target):
            target.append(value)
        else:
            target[key % len(target)] = value
    elif isinstance(target, PersistentSet) and _hashable(value):
        target.add(value)


def _btree_key_fits(tree, key):
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        return False
    if not tree:
        return True
    return type(tree.get_min_item()[0]) is type(key)


def _delete(target, key):
    if isinstance(target, (GraphAttrs, GraphSlots)):
        name = _attribute_name(target, key)
        if name is not None and hasattr(target, name):
            delattr(target, name)
    elif isinstance(target, (PersistentDict, BTree)):
        fits = not isinstance(target, BTree) or _btree_key_fits(target, key)
        if _hashable(key) and fits and key in target:
            del target[key]
    elif isinstance(target, PersistentList):
        if isinstance(key, int) and not isinstance(key, bool) and len(target):
            del target[key % len(target)]
    elif isinstance(target, PersistentSet) and _hashable(key):
        target.discard(key)


# -- describing ---------------------------------------------------------------------------


def _class_name(obj):
    cls = obj.__class__  # type(obj) may be an internal variant of the class
    return cls.__module__ + "." + cls.__qualname__


class Describer:
    """Describes values, numbering persistent objects as it finds them (``objects``).

    A model of a graph (the stateful tests) subclasses it: ``identity(x)`` says what is a
    reference (a hashable identity, else None) and ``persistent(obj)`` describes one.
    """

    def __init__(self):
        self.numbers = {}
        self.objects = []

    def identity(self, x):
        return id(x) if isinstance(x, PersistentObject) else None

    def value(self, x):
        if x is None or isinstance(x, (bool, int, str)):
            return x
        identity = self.identity(x)
        if identity is not None:
            number = self.numbers.get(identity)
            if number is None:
                number = self.numbers[identity] = len(self.objects)
                self.objects.append(x)
            return ["ref", number]
        if isinstance(x, float):
            return ["float", repr(x)]
        if isinstance(x, bytes):
            return ["bytes", x.hex()]
        if isinstance(x, tuple):
            return ["tuple", [self.value(y) for y in x]]
        if isinstance(x, list):
            return ["list", [self.value(y) for y in x]]
        if isinstance(x, dict):
            return ["dict", [[self.value(k), self.value(v)] for k, v in x.items()]]
        if isinstance(x, (set, frozenset)):
            tag = "set" if isinstance(x, set) else "frozenset"
            return [tag, self.keys(x)]
        if isinstance(x, GraphPlain):
            return ["plain", self.attrs(vars(x).items())]
        raise TypeError(f"a graph holds an unexpected {type(x).__name__}: {x!r}")

    def keys(self, keys):
        described = [self.value(k) for k in keys]
        return sorted(described, key=lambda d: json.dumps(d, sort_keys=True))

    def attrs(self, pairs):
        return [[name, self.value(v)] for name, v in sorted(pairs, key=lambda p: p[0])]

    def persistent(self, obj):
        result = {"class": _class_name(obj)}
        if isinstance(obj, GraphSlots):
            result["attrs"] = self.attrs(
                (name, getattr(obj, name)) for name in SLOT_NAMES if hasattr(obj, name)
            )
        elif isinstance(obj, Persistent):
            result["attrs"] = self.attrs(vars(obj).items())
        elif isinstance(obj, PersistentDict):
            result["items"] = [[self.value(k), self.value(v)] for k, v in obj.items()]
        elif isinstance(obj, PersistentList):
            result["items"] = [self.value(v) for v in obj]
        elif isinstance(obj, PersistentSet):
            result["items"] = self.keys(obj)
        elif isinstance(obj, BTree):
            result["node"] = obj.root.__class__.__name__
            result["items"] = [[self.value(k), self.value(v)] for k, v in obj.items()]
        else:
            raise TypeError(f"a graph holds an unexpected persistent {_class_name(obj)}")
        return result


    def describe(self, graph):
        """``{"graph": ..., "objects": [...]}`` for the value ``graph``."""
        graph = self.value(graph)
        described = []
        while len(described) < len(self.objects):  # the list grows as objects are found
            described.append(self.persistent(self.objects[len(described)]))
        return {"graph": graph, "objects": described}


def describe(root):
    """The canonical JSON-able description of the graph at ``root["graph"]``."""
    return Describer().describe(root["graph"])


def objects_of(root):
    """The persistent objects of the graph at ``root["graph"]``, in discovery order."""
    describer = Describer()
    describer.describe(root["graph"])
    return describer.objects


def expected(spec, changes=()):
    """What ``describe`` gives after ``build(root, spec)`` then ``mutate`` for each change.

    Computed on objects that were never stored (a detached ``PersistentDict`` root).
    """
    root = PersistentDict()
    build(root, spec)
    for change in changes:
        mutate(root, change)
    return describe(root)


# -- the script -----------------------------------------------------------------------------


def _read_json(name):
    if name == "-":
        return json.load(sys.stdin)
    with open(name) as f:
        return json.load(f)


def _open_storage(args, positional):
    if args.address or args.port or args.host:
        from durus.client_storage import ClientStorage

        if args.address:
            return ClientStorage(address=args.address)
        return ClientStorage(host=args.host or "127.0.0.1", port=args.port or 2972)
    from durus.file_storage import FileStorage

    if not positional:
        raise SystemExit("give a FILE, or --host/--port or --address of a server")
    return FileStorage(positional.pop(0))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("write", "mutate", "pack", "describe"))
    parser.add_argument("args", nargs="*", help="[FILE] and a JSON file (write, mutate)")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--address", help="a server's Unix socket")
    args = parser.parse_intermixed_args(argv)
    positional = list(args.args)
    from durus.connection import Connection

    storage = _open_storage(args, positional)
    try:
        connection = Connection(storage)
        root = connection.get_root()
        if args.command in ("write", "mutate"):
            if len(positional) != 1:
                raise SystemExit(f"{args.command} needs one JSON file")
            data = _read_json(positional[0])
            (build if args.command == "write" else mutate)(root, data)
            connection.commit()
        elif args.command == "pack":
            connection.pack()
        else:
            json.dump(describe(root), sys.stdout, sort_keys=True)
            sys.stdout.write("\n")
    finally:
        storage.close()
    return 0


if __name__ == "__main__":
    # Run as the module ``graph_spec`` (not ``__main__``), so that the classes pickled by
    # the script are the ones the tests import.
    import graph_spec

    sys.exit(graph_spec.main())
