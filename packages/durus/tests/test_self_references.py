"""Issue 12, by hand on every storage: objects whose state refers only to themselves.

Such a record has an empty refs trailer (a record leaves its own oid out, as Durus 4.3
does), so a reader that took an empty trailer for "no references" could not read them.
"""

from __future__ import annotations

from graph_spec import GraphAttrs, GraphSlots

from durus.persistent_dict import PersistentDict
from durus.persistent_list import PersistentList
from durus.serialize import unpack_record


def make_dict():
    d = PersistentDict()
    d["me"] = d
    return d


def make_attrs():
    x = GraphAttrs()
    x.me = x
    return x


def make_slots():
    x = GraphSlots()
    x.a = x
    return x


def make_in_plain_list():
    x = GraphAttrs()
    x.items = [x]  # the state holds only a self reference, inside a plain list
    return x


def make_list():
    x = PersistentList()
    x.append(x)
    return x


CASES = {
    "dict": (make_dict, lambda x: x["me"] is x),
    "attrs": (make_attrs, lambda x: x.me is x),
    "slots": (make_slots, lambda x: x.a is x),
    "in_plain_list": (make_in_plain_list, lambda x: x.items == [x] and x.items[0] is x),
    "list": (make_list, lambda x: len(x) == 1 and x[0] is x),
}


def check_all(place):
    for name, (_make, check) in CASES.items():
        obj = place[name]
        assert check(obj), name
        assert check(obj), name  # and once loaded
    return True


def test_self_references_read_back(db):
    writer = db.connect()
    place = db.place(writer)
    for name, (make, _check) in CASES.items():
        place[name] = make()
    writer.commit()
    for name in CASES:  # the shape of issue 12: the own oid is not in the trailer
        obj = place[name]
        record = writer.get_storage().load(obj._p_oid)
        assert unpack_record(record)[2] == b"", name
    assert db.read(check_all)  # a fresh connection
    db.pack(writer)
    assert db.read(check_all)
    db.close()
    assert check_all(db.place(db.connect()))  # the storage reopened
    if db.name.startswith("server"):
        db.close()
        db.kind.restart_server()
        assert db.read(check_all)
