"""Records: byte layout of spec 2, compression, references, memo sharing."""

from __future__ import annotations

import io
import pickle
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import durus.serialize as serialize
from durus.connection import Connection
from durus.persistent import Persistent, PersistentObject
from durus.persistent_list import PersistentList
from durus.serialize import (
    COMPRESSED_START_BYTE,
    ObjectReader,
    extract_class_name,
    pack_record,
    split_oids,
    unpack_record,
)
from durus.storage import MemoryStorage
from durus.utils import int8_to_str

ROOT_RECORD = bytes.fromhex(  # spec 2.9: the root record of a new database
    "0000000000000000" "00000046"
    "80026364757275732e70657273697374656e745f646963740a50657273697374656e74446963740a71002e"
    "789c6b60aa2d648c6061606048492c492c04f2988bf500396a056d"
)

# Spec 2.9's decompressed state pickle; the spec's text drops the final SETITEM
# ("s") of the outer dict, which real Durus 4.3 writes (checked against 4.3).
ROOT_WITH_TWO_LISTS_STATE = (
    b"\x80\x02}q\x01X\x04\x00\x00\x00dataq\x02}q\x03(X\x01\x00\x00\x00aq\x04"
    b"c_codecs\nencode\nq\x05X\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01q\x06"
    b"X\x06\x00\x00\x00latin1q\x07\x86q\x08Rq\tcdurus.persistent_list\nPersistentList\nq\n"
    b"\x86q\x0bQX\x01\x00\x00\x00bq\x0ch\x05X\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02"
    b"q\rh\x07\x86q\x0eRq\x0fh\n\x86q\x10Qus."
)


class Chain(PersistentObject):
    __slots__ = ("next", "payload")


class Blob(Persistent):
    pass


@pytest.fixture(autouse=True)
def fresh_class_memory(monkeypatch):
    """Each test starts with no class known to hold references (the writer
    remembers them process-wide, so test order would otherwise matter)."""
    monkeypatch.setattr(serialize, "_referring_classes", set())


@pytest.fixture
def durus43_compression(monkeypatch):
    """Durus 4.3's exact records: protocol-2 states, every state compressed."""
    monkeypatch.setattr(serialize, "COMPRESSION_THRESHOLD", 0)
    monkeypatch.setattr(serialize, "STATE_PICKLE_PROTOCOL", 2)


def test_root_record_is_byte_identical_to_durus(durus43_compression):
    storage = MemoryStorage()
    Connection(storage)
    assert storage.records[b"\0" * 8] == ROOT_RECORD


def test_references_are_encoded_as_durus_does(durus43_compression):
    storage = MemoryStorage()
    connection = Connection(storage)
    root = connection.get_root()
    root["a"] = PersistentList()
    root["b"] = PersistentList()
    connection.commit()
    _oid, data, refs = unpack_record(storage.records[b"\0" * 8])
    assert refs == int8_to_str(1) + int8_to_str(2)
    state = ObjectReader(None).get_state_pickle(data)
    assert state == ROOT_WITH_TWO_LISTS_STATE


def test_small_states_are_stored_raw_by_default():
    storage = MemoryStorage()
    Connection(storage)
    data = unpack_record(storage.records[b"\0" * 8])[1]
    assert data == (
        b"\x80\x02cdurus.persistent_dict\nPersistentDict\nq\x00."
        b"\x80\x03}q\x00X\x04\x00\x00\x00dataq\x01}q\x02s."
    )


def test_references_are_plain_bytes_by_default():
    # Protocol-3 state pickles: an oid is SHORT_BINBYTES, not _codecs.encode.
    storage = MemoryStorage()
    connection = Connection(storage)
    storage.oid = 199
    connection.get_root()["x"] = PersistentList([1])
    connection.commit()
    data = unpack_record(storage.records[b"\0" * 8])[1]
    assert b"_codecs" not in data
    assert b"C\x08" + int8_to_str(200) in data
    assert Connection(storage).get_root()["x"] == PersistentList([1])


def test_large_states_are_compressed_when_it_helps():
    storage = MemoryStorage()
    connection = Connection(storage)
    blob = Blob()
    blob.text = "x" * 5000
    connection.get_root()["blob"] = blob
    connection.commit()
    data = unpack_record(storage.records[blob._p_oid])[1]
    assert len(data) < 500
    class_end = data.index(b"q\x00.") + 3
    assert data[class_end] == COMPRESSED_START_BYTE == 0x78
    assert Connection(storage).get_root()["blob"].text == "x" * 5000


def test_states_below_the_threshold_are_stored_raw():
    # zlib's fixed cost per state (tens of microseconds) is not worth paying
    # for a BTree node or any state of a few hundred bytes.
    storage = MemoryStorage()
    connection = Connection(storage)
    blob = Blob()
    blob.text = "x" * (serialize.COMPRESSION_THRESHOLD - 100)
    connection.get_root()["blob"] = blob
    connection.commit()
    data = unpack_record(storage.records[blob._p_oid])[1]
    assert blob.text.encode() in data
    assert Connection(storage).get_root()["blob"].text == blob.text


def test_high_oids_in_references(durus43_compression):
    storage = MemoryStorage()
    connection = Connection(storage)
    storage.oid = 199  # the next oid is 200: its latin-1 text has a byte >= 0x80
    connection.get_root()["x"] = PersistentList([1])
    connection.commit()
    state = ObjectReader(None).get_state_pickle(
        unpack_record(storage.records[b"\0" * 8])[1]
    )
    assert b"X\t\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xc3\x88" in state
    assert Connection(storage).get_root()["x"] == PersistentList([1])


def test_state_may_refer_to_the_class_through_the_memo(durus43_compression):
    storage = MemoryStorage()
    connection = Connection(storage)
    head = Chain()
    head.payload = 1
    head.next = Chain()
    head.next.payload = 2
    connection.get_root()["chain"] = head
    connection.commit()
    data = unpack_record(storage.records[head._p_oid])[1]
    assert b"h\x00" in ObjectReader(None).get_state_pickle(data)  # BINGET 0
    again = Connection(storage).get_root()["chain"]
    assert again.next.payload == 2


def test_a_state_without_references_may_use_the_class_memo_only_at_protocol_2(monkeypatch):
    # A record with no refs is read by pickle.loads when its state pickle has
    # a memo of its own (protocol 3, ours); Durus 4.3's protocol-2 states may
    # name the class through the class pickle's memo, so they keep the
    # unpickler that shares it.
    for protocol in (3, 2):
        monkeypatch.setattr(serialize, "STATE_PICKLE_PROTOCOL", protocol)
        storage = MemoryStorage()
        connection = Connection(storage)
        blob = Blob()
        blob.kind, blob.numbers = Blob, [1, 2, 1]
        connection.get_root()["blob"] = blob
        connection.commit()
        record = storage.records[blob._p_oid]
        data, refs = unpack_record(record)[1:]
        assert refs == b""
        state_pickle = ObjectReader(None).get_state_pickle(data)
        assert state_pickle[:2] == bytes([0x80, protocol])
        assert (b"h\x00" in state_pickle) == (protocol == 2)  # BINGET 0: the class
        reader = ObjectReader(None)
        assert reader.get_state(data, references=False) == {"kind": Blob, "numbers": [1, 2, 1]}
        assert reader.get_load_count() == 1
        loaded = Connection(storage).get_root()["blob"]
        assert (loaded.kind, loaded.numbers) == (Blob, [1, 2, 1])


@pytest.mark.parametrize("protocol", [3, 2])
def test_objects_referring_only_to_themselves_read_back(monkeypatch, protocol):
    # Their refs trailer is empty (the own oid is left out, as Durus 4.3
    # does), but their state pickle calls persistent_load: an empty trailer
    # must never send such a state to pickle.loads.
    monkeypatch.setattr(serialize, "STATE_PICKLE_PROTOCOL", protocol)
    storage = MemoryStorage()
    connection = Connection(storage)
    root = connection.get_root()
    mapping = PersistentList()
    mapping.append(mapping)
    blob = Blob()
    blob.me = blob
    chain = Chain()
    chain.next, chain.payload = chain, [chain, "PQ"]
    root.update(mapping=mapping, blob=blob, chain=chain)
    connection.commit()
    for obj in (mapping, blob, chain):
        assert unpack_record(storage.records[obj._p_oid])[2] == b""
    again = Connection(storage).get_root()
    assert again["mapping"][0] is again["mapping"]
    assert again["blob"].me is again["blob"]
    chain = again["chain"]
    assert chain.next is chain and chain.payload == [chain, "PQ"]


def test_states_holding_opcode_bytes_in_their_data_read_back():
    # b"P" and b"Q" (PERSID, BINPERSID) inside strings, bytes and ints only
    # send a state down the general unpickler; either way it reads the same.
    storage = MemoryStorage()
    connection = Connection(storage)
    blob = Blob()
    blob.text, blob.raw, blob.numbers = "PQ" * 3, b"QP", [80, 81, 0x5150]
    connection.get_root()["blob"] = blob
    connection.commit()
    loaded = Connection(storage).get_root()["blob"]
    assert (loaded.text, loaded.raw, loaded.numbers) == ("PQPQPQ", b"QP", [80, 81, 0x5150])


def test_a_protocol_3_state_sharing_the_class_memo_falls_back_to_the_general_reader():
    # A writer whose class and state pickles share one protocol-3 memo: the
    # state names its class by BINGET 0, which pickle.loads cannot resolve.
    sio = io.BytesIO()
    pickler = pickle.Pickler(sio, 3)
    pickler.dump(Blob)
    pickler.dump({"kind": Blob, "n": 1})
    data = sio.getvalue()
    assert b"h\x00" in data[data.index(b".") + 1 :]
    assert ObjectReader(None).get_state(data, references=False) == {"kind": Blob, "n": 1}


def test_refs_are_sorted_unique_and_exclude_self():
    storage = MemoryStorage()
    connection = Connection(storage)
    first, second = Blob(), Blob()
    holder = Blob()
    holder.items = [second, first, second, holder]
    connection.get_root()["h"] = holder
    connection.commit()
    refs = split_oids(unpack_record(storage.records[holder._p_oid])[2])
    assert refs == sorted({first._p_oid, second._p_oid})


def test_record_helpers():
    record = pack_record(int8_to_str(5), b"data\nName\nrest", int8_to_str(1))
    assert unpack_record(record) == (int8_to_str(5), b"data\nName\nrest", int8_to_str(1))
    assert extract_class_name(record) == b"Name"
    assert extract_class_name(pack_record(int8_to_str(5), b"x", b"")) == "?"
    assert split_oids(b"") == []
    with pytest.raises(ValueError):
        split_oids(b"123")


def test_reader_falls_back_when_bytes_only_look_compressed():
    # A raw state pickle never starts with 0x78, but a reader must not trust that.
    reader = ObjectReader(None)
    class_pickle = b"\x80\x02c__builtin__\nobject\nq\x00."
    assert reader.get_state(class_pickle + zlib.compress(b"\x80\x02K\x05.")) == 5
    assert reader.get_state(class_pickle + b"\x80\x02K\x07.") == 7


def test_ghost_from_record():
    storage = MemoryStorage()
    Connection(storage)
    ghost = ObjectReader(None).get_ghost(unpack_record(storage.records[b"\0" * 8])[1])
    assert ghost._p_is_ghost() and type(ghost).__name__ == "PersistentDict"


def test_writer_generator_is_not_reentrant():
    connection = Connection(MemoryStorage())
    writer = serialize.ObjectWriter(connection)
    generator = writer.gen_new_objects(connection.get_root())
    next(generator)
    with pytest.raises(RuntimeError):
        next(writer.gen_new_objects(connection.get_root()))
    generator.close()
    writer.close()


class Peeker:
    """Plain object whose unpickling reads a persistent object (a nested load)."""

    def __init__(self, target):
        self.target = target

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.seen = state["target"].payload  # loads a ghost while unpickling


def test_nested_loads_while_unpickling():
    storage = MemoryStorage()
    connection = Connection(storage)
    target = Chain()
    target.payload = "inner"
    holder = Blob()
    holder.peeker = Peeker(target)
    connection.get_root()["holder"] = holder
    connection.commit()
    fresh = Connection(storage)
    peeker = fresh.get_root()["holder"].peeker
    assert peeker.seen == "inner"
    assert peeker.target is fresh.get(target._p_oid)


def test_reused_picklers_are_replaced_after_a_large_record():
    # The C pickler's memo never shrinks: clearing it after a large record would
    # cost that record's size on every later one (Durus 4.3 had the same issue).
    import pickle

    reused = serialize._ReusedPickler(lambda sio: pickle.Pickler(sio, 3))
    first = reused.pickler
    assert reused.dump([1]) == pickle.dumps([1], 3)
    assert reused.pickler is first
    reused.dump(list(range(50000)))
    assert reused.dump([1]) == pickle.dumps([1], 3)
    assert reused.pickler is not first


def test_the_writer_renews_both_picklers_after_large_records():
    connection = Connection(MemoryStorage())
    writer = serialize.ObjectWriter(connection)
    plain_first, hooked_first = writer._plain.pickler, writer._hooked.pickler
    big_plain = PersistentList(range(50000))
    held = Blob()
    big_hooked = PersistentList([held] + list(range(50000)))
    for obj in (big_plain, big_hooked):
        obj._p_oid = int8_to_str(7)
        writer.get_state(obj)
    writer.get_state(PersistentList([1]))
    assert writer._plain.pickler is not plain_first
    assert writer._hooked.pickler is not hooked_first
    assert writer.pickler is writer._hooked.pickler
    writer.close()


def test_the_plain_pickler_is_renewed_when_a_reference_stops_it():
    # A large state with a reference at its end fills the plain pickler's memo
    # but writes nothing to its buffer: keeping that pickler would make every
    # later clear_memo() pay for the large table.
    connection = Connection(MemoryStorage())
    writer = serialize.ObjectWriter(connection)
    plain = writer._plain.pickler
    late_reference = PersistentList([str(i) for i in range(50000)] + [Blob()])
    late_reference._p_oid = int8_to_str(7)
    _data, refs = writer.get_state(late_reference)
    assert len(refs) == 8
    assert writer._plain.pickler is not plain
    writer.close()


PLAIN_STATES = [
    {"n": 12345, "s": "item 12345", "f": 0.5, "b": b"\0\1", "t": True, "z": None},
    {"same": "shared text", "again": "shared text"},
    {},
    {"nested": [(1, "a"), (2, "b")], "set": {1, 2}, 3: frozenset({"x"}), "big": 2**80},
    {"when": __import__("datetime").date(2026, 11, 27), "shared": ["x"] * 3},
]


@pytest.mark.parametrize("state", PLAIN_STATES)
def test_states_without_references_pickle_to_the_same_bytes_without_the_hook(state):
    # The writer pickles such states without the persistent-id hook: its bytes
    # must be exactly what the hooked pickler writes.
    import io

    blob = Blob()
    blob.__dict__.update(state)
    connection = Connection(MemoryStorage())
    writer = serialize.ObjectWriter(connection)
    data, refs = writer.get_state(blob)
    hooked = io.BytesIO()
    pickler = serialize._RecordPickler(hooked, serialize.STATE_PICKLE_PROTOCOL, writer)
    pickler.dump(state)
    class_pickle = serialize._class_pickle(Blob)
    assert data == class_pickle + hooked.getvalue()
    assert refs == b""


def test_a_state_with_a_persistent_value_still_records_its_reference():
    storage = MemoryStorage()
    connection = Connection(storage)
    holder, held = Blob(), Blob()
    holder.n, holder.other = 1, held
    connection.get_root()["holder"] = holder
    connection.commit()
    assert unpack_record(storage.records[holder._p_oid])[2] == held._p_oid


def test_a_reference_deep_in_plain_containers_is_found_whatever_came_before():
    # The writer tries the plain pickler first for classes whose last state
    # held no reference: a reference found later must still be recorded, and
    # the new object it names stored in the same commit.
    storage = MemoryStorage()
    connection = Connection(storage)
    root = connection.get_root()
    root["first"] = first = Blob()
    first.values = [1, 2, 3]
    connection.commit()
    second, deep = Blob(), Blob()
    second.values = [1, {"k": (2, [deep])}]
    root["second"] = second
    connection.commit()
    assert unpack_record(storage.records[second._p_oid])[2] == deep._p_oid
    assert deep._p_oid in storage.records
    third = Blob()
    third.values = [4]
    root["third"] = third
    connection.commit()
    assert unpack_record(storage.records[third._p_oid])[2] == b""
    fresh = Connection(storage)
    assert fresh.get_root()["second"].values[1]["k"][1][0] is fresh.get(deep._p_oid)


def test_check_record_accepts_records_and_names_each_defect():
    oid = int8_to_str(7)
    serialize.check_record(oid, pack_record(oid, b"data", int8_to_str(1)))
    for record, words in [
        (b"\0" * 11, "shorter than its 12-byte header"),
        (pack_record(int8_to_str(8), b"data", b""), "names another oid"),
        (oid + (10).to_bytes(4, "big") + b"short", "data length runs past its end"),
        (pack_record(oid, b"data", b"123"), "not a whole number of oids"),
    ]:
        with pytest.raises(ValueError, match=words):
            serialize.check_record(oid, record)
    with pytest.raises(ValueError, match="8 bytes"):
        serialize.check_record(b"123", b"123")


def test_a_connection_reuses_its_writer_and_its_memos_keep_nothing(monkeypatch):
    connection = Connection(MemoryStorage())
    root = connection.get_root()
    root["plain"] = PersistentList(["text", 1.5])
    root["holder"] = PersistentList([Blob()])
    connection.commit()
    writer = connection._writer
    assert writer is not None
    # Nothing of the commit stays referenced from the picklers' memos.
    assert writer._plain.pickler.memo.copy() == {}
    assert writer._hooked.pickler.memo.copy() == {}
    assert writer.refs == set() and writer.objects_found == [] and writer.assigned == []
    root["more"] = PersistentList([2])
    connection.commit()
    assert connection._writer is writer
    # A changed setting gets a writer made under it.
    monkeypatch.setattr(serialize, "STATE_PICKLE_PROTOCOL", 2)
    root["durus43"] = PersistentList([3])
    connection.commit()
    assert connection._writer is not writer
    assert Connection(connection.get_storage()).get_root()["durus43"] == PersistentList([3])


def _values(references: list[Blob]) -> st.SearchStrategy:
    """Nested plain containers with, sometimes, persistent objects in them."""
    leaves = st.one_of(
        st.integers(), st.floats(allow_nan=False), st.text(max_size=12),
        st.binary(max_size=12), st.booleans(), st.none(), st.sampled_from(references),
    )
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.tuples(children, children),
            st.dictionaries(st.text(max_size=4), children, max_size=4),
            st.frozensets(st.integers(), max_size=4),
        ),
        max_leaves=25,
    )


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_records_are_the_hooked_picklers_whatever_came_before(data):
    # The writer may take the plain pickler, stop it, remember the class, go
    # back: a sequence of states must give exactly the bytes and refs of the
    # hooked pickler alone, state after state, on one reused writer.
    connection = Connection(MemoryStorage())
    pool = [Blob() for _ in range(3)]
    connection.get_root()["pool"] = pool
    connection.commit()
    writer = serialize.ObjectWriter(connection)
    reference = serialize.ObjectWriter(connection)
    for value in data.draw(st.lists(_values(pool), min_size=1, max_size=6)):
        blob = Blob()
        blob.value = value
        blob._p_oid = int8_to_str(99)
        got = writer.get_state(blob)
        reference.refs.clear()
        expected = reference._hooked.dump({"value": value})
        expected_refs = b"".join(sorted(reference.refs))
        assert got == (serialize._class_pickle(Blob) + serialize._squeezed(expected),
                       expected_refs)
        writer.reset()
