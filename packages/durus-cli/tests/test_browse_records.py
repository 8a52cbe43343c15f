"""``durus.browse_records`` reads back what Durus writes, without importing classes.

Generated plain values (nested dicts, lists, tuples, sets, text, bytes,
numbers) are stored in records the way Durus 4.3 writes them (protocol 2,
zlib above 2 KiB) and the way we do (protocol 3, uncompressed), and must
decode to the same values; references become ``Ref``s and every class a
stand-in.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durus import serialize
from durus.browse_records import Ref, Unimported, decode_record
from durus.connection import Connection
from durus.persistent_dict import PersistentDict
from durus.storage import MemoryStorage

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=30),
                    st.binary(max_size=30), st.floats(allow_nan=False))
hashable = st.one_of(st.integers(), st.text(max_size=10), st.binary(max_size=10))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.tuples(inner, inner),
        st.dictionaries(hashable, inner, max_size=5), st.frozensets(hashable, max_size=5)),
    max_leaves=30,
)


@pytest.fixture(params=["ours", "durus43"])
def layout(request, monkeypatch):
    if request.param == "durus43":
        monkeypatch.setattr(serialize, "STATE_PICKLE_PROTOCOL", 2)
        monkeypatch.setattr(serialize, "COMPRESSION_THRESHOLD", 0)
    return request.param


def _record_of(value, padding=""):
    connection = Connection(MemoryStorage())
    obj = PersistentDict(value=value, padding=padding, child=PersistentDict())
    connection.get_root()["obj"] = obj
    connection.commit()
    storage = connection.get_storage()
    return storage.load(obj._p_oid), obj


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # a constant setting
@given(value=values, big=st.booleans())
def test_generated_values_decode_to_what_was_stored(layout, value, big):
    padding = "x" * 5000 if big else ""  # past 2 KiB: Durus 4.3's layout compresses
    record, obj = _record_of(value, padding)
    decoded = decode_record(record)
    assert decoded.error is None
    assert decoded.class_name == "durus.persistent_dict.PersistentDict"
    data = decoded.state["data"]
    assert data["value"] == value and data["padding"] == padding
    child = data["child"]
    assert isinstance(child, Ref) and child.oid == int.from_bytes(obj["child"]._p_oid, "big")
    assert decoded.refs == [child.oid]


def test_an_unknown_class_is_a_stand_in_and_nothing_is_imported():
    connection = Connection(MemoryStorage())
    connection.get_root()["x"] = PersistentDict(when=__import__("fractions").Fraction(1, 3))
    connection.commit()
    record = connection.get_storage().load(connection.get_root()["x"]._p_oid)
    value = decode_record(record).state["data"]["when"]
    assert isinstance(value, Unimported) and value._class_name == "fractions.Fraction"


def test_a_record_that_is_not_one_is_a_message():
    assert decode_record(b"short").error.startswith("not a Durus record")
