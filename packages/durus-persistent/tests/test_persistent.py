"""The persistent base classes: fields, status, state, tracking variants."""

from __future__ import annotations

import copy
import pickle

import pytest

from durus.connection import Connection
from durus.persistent import (
    GHOST,
    SAVED,
    UNSAVED,
    ComputedAttribute,
    Persistent,
    PersistentBase,
    PersistentObject,
    _delattribute,
    _getattribute,
    _hasattribute,
    _setattribute,
    accelerated,
    call_if_persistent,
    real_class,
)
from durus.storage import MemoryStorage
from durus.utils import int8_to_str


class Point(Persistent):
    def __init__(self, x=0, y=0):
        self.x = x
        self.y = y

    def norm2(self):
        return self.x * self.x + self.y * self.y


class Slotted(PersistentObject):
    __slots__ = ("a", "b")


class SlottedWithDict(PersistentObject):
    __slots__ = ("__dict__", "a")


class Private(PersistentObject):
    __slots__ = ("__secret", "shown")

    def set_secret(self, value):
        self.__secret = value

    def get_secret(self):
        return self.__secret


class SelfTracking(Persistent):
    """Defines its own __setattr__: must keep full tracking, no variants."""

    def __setattr__(self, name, value):
        Persistent.__setattr__(self, name, value)


def test_status_constants():
    assert (UNSAVED, SAVED, GHOST) == (1, 0, -1)


def test_new_objects_run_untracked_until_stored():
    p = Point(1, 2)
    assert isinstance(p, Point) and p.__class__ is Point and real_class(p) is Point
    # Pure Python: a hot variant, nothing to track yet; C: its own class.
    assert (type(p) is Point) is accelerated
    connection = Connection(MemoryStorage())
    connection.get_root()["p"] = p
    connection.commit()
    assert type(p) is Point and p._p_status == SAVED
    p.x = 5
    assert p._p_oid in connection.changed


def test_new_instance_fields():
    p = Point(1, 2)
    assert p._p_status == UNSAVED
    assert p._p_serial == 0
    assert p._p_connection is None
    assert p._p_oid is None
    assert p._p_is_unsaved() and not p._p_is_saved() and not p._p_is_ghost()
    assert p._p_format_oid() == "None"
    assert repr(p).startswith("<Point @")


@pytest.mark.parametrize("cls", [Point, Slotted])
def test_format_oid_reads_a_text_oid_as_latin1_bytes(cls):
    # Durus 4.3's own test (utest_persistent check_accessors) sets a str oid.
    p = cls.__new__(cls)
    p._p_oid = "aaaaaaaa"
    assert p._p_format_oid() == str(int.from_bytes(b"aaaaaaaa", "big")) == "7016996765293437281"
    p._p_oid = "\xff" * 8
    assert p._p_format_oid() == str(2**64 - 1)
    p._p_oid = int8_to_str(1)
    assert p._p_format_oid() == "1"
    assert repr(p) == f"<{cls.__name__} 1>"


def test_slots_classes_have_no_dict():
    s = Slotted()
    s.a = 1
    with pytest.raises(AttributeError):
        s.c = 3
    assert s.__getstate__() == {"a": 1}
    s.b = 2
    assert s.__getstate__() == {"a": 1, "b": 2}
    assert list(s._p_gen_data_slots()) == ["a", "b"]


def test_slots_and_dict_state_order():
    s = SlottedWithDict()
    s.z = 26
    s.a = 1
    assert list(s.__getstate__().items()) == [("z", 26), ("a", 1)]
    t = SlottedWithDict()
    t.__setstate__({"a": 5, "q": 7})
    assert t.a == 5 and t.q == 7


def test_private_slots_are_persisted():
    p = Private()
    p.set_secret(42)
    p.shown = 1
    state = p.__getstate__()
    assert state == {"_Private__secret": 42, "shown": 1}
    q = Private()
    q.__setstate__(state)
    assert q.get_secret() == 42


def test_setstate_replaces_everything():
    s = Slotted()
    s.a = 1
    s.b = 2
    s.__setstate__({"b": 3})
    assert not _hasattribute(s, "a")
    assert s.b == 3
    s.__setstate__(None)
    assert not _hasattribute(s, "b")
    with pytest.raises(AttributeError):
        s.__setstate__({"nope": 1})


def test_persistent_state_is_the_dict_itself():
    p = Point(1, 2)
    assert p.__getstate__() is p.__dict__
    with pytest.raises(TypeError):
        p.__setstate__(None)


def test_raw_attribute_helpers_do_not_track():
    p = Point(1, 2)
    _setattribute(p, "x", 5)
    assert _getattribute(p, "x") == 5
    _delattribute(p, "x")
    assert not _hasattribute(p, "x")
    assert _hasattribute(p, "y")


def test_call_if_persistent():
    assert call_if_persistent(lambda x: "yes", Point()) == "yes"
    assert call_if_persistent(lambda x: "yes", object()) is None
    assert isinstance(Point(), PersistentBase)


def test_plain_pickle_and_copy_keep_the_class():
    p = Point(3, 4)
    data = pickle.dumps(p, 2)
    assert b"__main__" not in data and b"test_persistent\nPoint\n" in data
    q = pickle.loads(data)
    assert real_class(q) is Point and (q.x, q.y) == (3, 4)
    assert q._p_oid is None and q._p_status == UNSAVED
    r = copy.deepcopy(p)
    assert real_class(r) is Point and r.norm2() == 25


def test_computed_attribute_alone():
    c = ComputedAttribute()
    calls = []

    def compute():
        calls.append(1)
        return 7

    assert c.get(compute) == 7
    assert c.get(compute) == 7
    assert len(calls) == 1
    assert c.__getstate__() is None
    c.invalidate()
    assert c.get(compute) == 7
    assert len(calls) == 2


# -- tracking through a connection ------------------------------------------------


@pytest.fixture
def connection():
    return Connection(MemoryStorage())


def stored_point(connection, x=1, y=2):
    p = Point(x, y)
    connection.get_root()["p"] = p
    connection.commit()
    return p


def test_first_read_records_access_and_later_reads_are_plain(connection):
    p = stored_point(connection)
    serial = connection.get_transaction_serial()
    assert p._p_serial != serial
    assert type(p) is Point
    assert p.x == 1
    assert p._p_serial == serial
    # Pure Python: now a hot variant, invisible except through type().
    assert (type(p) is Point) is accelerated
    assert isinstance(p, Point) and p.__class__ is Point
    assert type(p).__name__ == "Point" and type(p).__qualname__ == "Point"
    assert repr(p) == f"<Point {p._p_format_oid()}>"
    connection.abort()
    assert type(p) is Point
    assert p._p_serial == serial


def test_variant_call_builds_the_application_class(connection):
    p = stored_point(connection)
    p.x
    assert (type(p) is Point) is accelerated
    fresh = type(p)(5, 6)
    assert real_class(fresh) is Point and fresh.norm2() == 61
    assert real_class(p.__class__()) is Point


def test_write_after_read_marks_change_once(connection):
    p = stored_point(connection)
    assert p.x == 1
    assert p._p_status == SAVED
    p.x = 10
    assert p._p_status == UNSAVED
    assert connection.changed == {p._p_oid: p}
    p.y = 20
    assert p.x == 10
    connection.commit()
    assert p._p_status == SAVED and type(p) is Point
    other = Connection(connection.get_storage())
    assert other.get_root()["p"].norm2() == 500


def test_blind_write_marks_change_without_access(connection):
    p = stored_point(connection)
    serial = connection.get_transaction_serial()
    p.x = 9
    assert p._p_status == UNSAVED
    assert p._p_serial != serial
    assert p.x == 9
    assert p._p_serial == serial
    connection.abort()
    assert p._p_status == GHOST
    assert p.x == 1


def test_delete_attribute_is_a_change(connection):
    p = stored_point(connection)
    del p.y
    assert p._p_status == UNSAVED
    connection.commit()
    other = Connection(connection.get_storage())
    assert not hasattr(other.get_root()["p"], "y")


def test_ghost_loads_on_first_read(connection):
    p = stored_point(connection)
    p._p_set_status_ghost()
    assert p._p_is_ghost()
    assert _getattribute(p, "__dict__") == {}
    assert p._p_oid is not None  # _p_ names never load
    assert p.norm2() == 5
    assert p._p_is_saved()


def test_ghost_loads_on_write(connection):
    p = stored_point(connection)
    p._p_set_status_ghost()
    p.x = 3
    assert p._p_status == UNSAVED
    assert p.y == 2


def test_own_setattr_keeps_full_tracking(connection):
    s = SelfTracking()
    connection.get_root()["s"] = s
    s.v = 1
    connection.commit()
    assert s.v == 1
    assert type(s) is SelfTracking  # never switched
    s.v = 2
    assert s._p_status == UNSAVED
    connection.commit()
    assert Connection(connection.get_storage()).get_root()["s"].v == 2


def test_slotted_objects_switch_too(connection):
    s = Slotted()
    s.a = 1
    connection.get_root()["s"] = s
    connection.commit()
    assert s.a == 1
    assert (type(s) is Slotted) is accelerated
    s.b = 2
    assert s._p_status == UNSAVED
    connection.commit()
    assert Connection(connection.get_storage()).get_root()["s"].__getstate__() == {"a": 1, "b": 2}


def test_explicit_status_setters_keep_tracking_consistent(connection):
    p = stored_point(connection)
    p.x
    p._p_set_status_unsaved()
    p._p_set_status_saved()
    # Saved again: the next write must be noticed.
    p.x = 7
    assert p._p_status == UNSAVED
    assert p._p_oid in connection.changed


def test_computed_attribute_ghost_needs_no_storage(connection):
    c = ComputedAttribute()
    connection.get_root()["c"] = c
    connection.commit()
    c._p_set_status_ghost()
    loads = connection.get_load_count()
    assert c.get(lambda: 3) == 3
    assert connection.get_load_count() == loads


def test_note_access_on_a_ghost_keeps_it_loadable(connection):
    p = stored_point(connection)
    connection.abort()
    p._p_set_status_ghost()
    connection.note_access(p)  # as a caller outside the attribute hooks might
    assert p._p_is_ghost()
    assert p.x == 1  # still loads on first read
