"""Hypothesis strategies of ``graph_spec`` specs and changes.

Biased toward what broke before: objects whose only reference is to themselves, cycles and
shared objects, byte strings holding pickle opcode bytes (``P``, ``Q``, ``\\x80``), states
past the compression threshold, BTrees deep enough to have several nodes.
"""

from __future__ import annotations

import functools
import os

import graph_spec
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: ``DURUS_HYPOTHESIS_PROFILE=large`` runs 20 times the examples, from random seeds, and keeps
#: failing examples in Hypothesis's database (``.hypothesis/``) to replay them.
LARGE = os.environ.get("DURUS_HYPOTHESIS_PROFILE", "") == "large"


def example_settings(examples, **overrides):
    """Settings of a storage-backed test: ``examples`` examples (20x under ``large``).

    By default ``derandomize``: CI runs the same examples every time, so a failure seen in a
    CI log is reproduced by running the test again, with no example database to carry over
    (CI starts from a clean checkout, and tox runs without the cache provider).  ``large``
    explores new examples instead.  ``deadline=None``: storages (servers, PostgreSQL, disk)
    take the time a loaded machine gives them.
    """
    return settings(
        max_examples=examples * 20 if LARGE else examples,
        derandomize=not LARGE,
        database=settings.default.database if LARGE else None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        **overrides,
    )

ATTR_NAMES = ("a", "b", "c", "d", "name", "P", "Q", "ünï")
# A few strings and bytes that look like pickle opcodes or zlib and record headers.
TRICKY_TEXT = ("", "P", "Q", "PQ", "\x80\x03", "x\x9c", "ünïcödé", "日本", "\U0001f600")
TRICKY_BYTES = (b"", b"P", b"Q", b"\x80\x02", b"\x80\x03Q.", b"x\x9c", b"\x00" * 8, b"\xff")
# Past COMPRESSION_THRESHOLD (2048): states holding these are zlib-compressed.
BIG_TEXT = "PQ\u00e9" * 800
BIG_BYTES = bytes(range(256)) * 10

texts = st.one_of(st.sampled_from(TRICKY_TEXT), st.text(max_size=12))
binaries = st.one_of(st.sampled_from(TRICKY_BYTES), st.binary(max_size=12))
ints = st.one_of(
    st.integers(-300, 300),
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**31, -(2**31) - 1, 2**63, 2**64 + 1, -(2**100)]),
)


def floats(allow_nan=True):
    return st.floats(allow_nan=allow_nan).map(lambda x: ["float", repr(x)])


def _atoms(allow_nan):
    return st.one_of(
        st.none(),
        st.booleans(),
        ints,
        texts,
        binaries.map(lambda b: ["bytes", b.hex()]),
        floats(allow_nan),
    )


@functools.cache
def keys():
    """Hashable plain VALUEs: dict keys, set elements (no NaN: it never equals itself)."""
    return st.recursive(
        _atoms(allow_nan=False),
        lambda inner: st.one_of(
            st.lists(inner, max_size=2).map(lambda xs: ["tuple", xs]),
            st.lists(inner, max_size=2).map(lambda xs: ["frozenset", xs]),
        ),
        max_leaves=3,
    )


@functools.cache
def values(n_objects=0, own=None, only_own=False):
    """VALUEs; with ``n_objects`` they may hold ``["ref", i]``, ``own`` more often (or only:
    ``only_own``, a state whose refs trailer is empty as its own oid is left out)."""
    atoms = _atoms(allow_nan=True)
    big = st.sampled_from([BIG_TEXT, ["bytes", BIG_BYTES.hex()]])
    if n_objects:
        refs = st.integers(0, n_objects - 1)
        if own is not None:
            refs = st.just(own) if only_own else st.one_of(st.just(own), refs)
        refs = refs.map(lambda i: ["ref", i])
        # Branches are drawn about evenly: refs twice, big constants rarely.
        base = st.one_of(refs, refs, atoms, atoms, atoms, st.one_of(big, atoms, atoms))
    else:
        base = st.one_of(atoms, atoms, st.one_of(big, atoms, atoms))
    plain_attrs = st.lists(st.sampled_from(ATTR_NAMES), max_size=2, unique=True)

    def containers(inner):
        return st.one_of(
            st.lists(inner, max_size=3).map(lambda xs: ["list", xs]),
            st.lists(inner, max_size=3).map(lambda xs: ["tuple", xs]),
            st.lists(st.tuples(keys(), inner).map(list), max_size=2).map(
                lambda kv: ["dict", kv]
            ),
            st.lists(keys(), max_size=2).map(lambda xs: ["set", xs]),
            plain_attrs.flatmap(lambda names: _plain(names, inner)),
        )

    return st.recursive(base, containers, max_leaves=4)


def _plain(names, inner):
    pairs = st.tuples(*[inner for _ in names])
    return pairs.map(lambda vs: ["plain", [list(p) for p in zip(names, vs, strict=True)]])


def btree_keys():
    return st.one_of(
        st.lists(st.integers(-1000, 1000), max_size=40, unique=True),
        st.lists(st.text(max_size=4), max_size=20, unique=True),
    )


@st.composite
def object_spec(draw, n_objects, own, kind=None):
    """One OBJECT of ``graph_spec`` (index ``own`` among ``n_objects``)."""
    kind = kind or draw(st.sampled_from(graph_spec.OBJECT_KINDS))
    value = values(n_objects, own, only_own=draw(st.integers(0, 3)) == 0)
    if kind in ("attrs", "slots"):
        names = graph_spec.SLOT_NAMES if kind == "slots" else ATTR_NAMES
        chosen = draw(st.lists(st.sampled_from(names), max_size=3, unique=True))
        return {"kind": kind, "attrs": [[name, draw(value)] for name in chosen]}
    if kind == "dict":
        items = draw(st.lists(st.tuples(keys(), value).map(list), max_size=4))
        return {"kind": kind, "items": items}
    if kind == "list":
        return {"kind": kind, "items": draw(st.lists(value, max_size=4))}
    if kind == "set":
        return {"kind": kind, "items": draw(st.lists(keys(), max_size=4))}
    tree_keys = draw(btree_keys())
    degree = draw(st.sampled_from(sorted(graph_spec.NODE_CLASSES)))
    # Most values in a big tree are plain; some refer to objects (or to the tree itself).
    small = st.integers(0, 9)
    if n_objects:
        small = st.one_of(small, small, st.integers(0, n_objects - 1).map(lambda j: ["ref", j]))
    return {"kind": kind, "degree": degree, "items": [[k, draw(small)] for k in tree_keys]}


@st.composite
def specs(draw, max_objects=6):
    """A spec: up to ``max_objects`` objects of any kind, the graph a value holding refs."""
    n = draw(st.integers(1, max_objects))
    objects = [draw(object_spec(n, i)) for i in range(n)]
    graph = draw(
        st.one_of(
            st.just(["ref", 0]),
            st.lists(st.integers(0, n - 1), min_size=1, max_size=n + 1).map(
                lambda xs: ["list", [["ref", i] for i in xs]]
            ),
            values(n),
        )
    )
    return {"objects": objects, "graph": graph}


def self_referring_specs():
    """Specs of one object whose only reference is itself (issue 12's graphs)."""
    own = ["ref", 0]
    wrap = st.sampled_from(["bare", "list", "tuple", "dict", "plain"]).map(
        lambda how: {
            "bare": own,
            "list": ["list", [own]],
            "tuple": ["tuple", [own, 1]],
            "dict": ["dict", [["me", own]]],
            "plain": ["plain", [["a", own]]],
        }[how]
    )

    @st.composite
    def one(draw):
        kind = draw(st.sampled_from(["attrs", "slots", "dict", "list", "btree"]))
        ref = draw(wrap)
        if kind in ("attrs", "slots"):
            body = {"attrs": [["a", ref]]}
        elif kind == "dict":
            body = {"items": [["me", ref]]}
        elif kind == "list":
            body = {"items": [ref]}
        else:
            body = {"degree": 16, "items": [[1, ref]]}
        return {"objects": [{"kind": kind, **body}], "graph": ["ref", 0]}

    return one()


@st.composite
def changes(draw, spec, max_ops=5):
    """A change of ``graph_spec.mutate`` for the graph that ``spec`` builds.

    Ops are chosen for the kind of each object as ``describe`` finds them, so most apply.
    """
    existing = graph_spec.expected(spec)["objects"]
    n_new = draw(st.integers(0, 2))
    total = len(existing) + n_new
    new = [draw(object_spec(total, len(existing) + i)) for i in range(n_new)]
    value = values(total)
    ops = []
    for _ in range(draw(st.integers(1, max_ops))):
        if not existing or draw(st.integers(0, 9)) == 0:
            ops.append(["graph", draw(value)])
            continue
        i = draw(st.integers(0, len(existing) - 1))
        ops.append(draw(op_for(i, existing[i], value)))
    return {"objects": new, "ops": ops}


def op_for(i, described, value):
    """An OP on object ``i``, described (by ``describe``) as ``described``: its keys and
    attribute names are chosen among those it has, or new ones; ``value`` draws VALUEs."""
    cls = described["class"]
    if cls.endswith(("GraphAttrs", "GraphSlots")):
        names = graph_spec.SLOT_NAMES if cls.endswith("GraphSlots") else ATTR_NAMES
        name = st.sampled_from(names)
        return st.one_of(
            st.tuples(name, value).map(lambda p: ["set", i, p[0], p[1]]),
            name.map(lambda n: ["del", i, n]),
        )
    if cls.endswith("PersistentList"):
        index = st.integers(-5, 5)
        return st.one_of(
            st.tuples(index, value).map(lambda p: ["set", i, p[0], p[1]]),
            index.map(lambda k: ["del", i, k]),
            value.map(lambda v: ["add", i, v]),
        )
    if cls.endswith("PersistentSet"):
        return st.one_of(
            keys().map(lambda k: ["add", i, k]),
            st.sampled_from(described["items"] or [None]).map(lambda k: ["del", i, k]),
        )
    if cls.endswith("BTree"):
        present = [k for k, _v in described["items"]]
        key = st.integers(-1000, 1000) if not present or isinstance(present[0], int) else (
            st.text(max_size=4)
        )
        old = st.sampled_from(present) if present else key
        return st.one_of(
            st.tuples(key, value).map(lambda p: ["set", i, p[0], p[1]]),
            old.map(lambda k: ["del", i, k]),
        )
    present = [k for k, _v in described["items"]]  # PersistentDict
    old = st.sampled_from(present) if present else keys()
    return st.one_of(
        st.tuples(st.one_of(old, keys()), value).map(lambda p: ["set", i, p[0], p[1]]),
        old.map(lambda k: ["del", i, k]),
    )
