"""The records a Connection writes for the containers match Durus 4.3's.

Durus 4.3 always zlib-compresses the state pickle; whether this implementation
compresses a given state is the serializer's business, so the comparison is on
the class pickle, the (decompressed) state pickle and the refs trailer.
"""

from __future__ import annotations

import io
import pickle
import zlib

import durus.serialize as serialize
from durus.btree import BNode, BTree
from durus.connection import Connection
from durus.persistent_dict import PersistentDict
from durus.persistent_list import PersistentList
from durus.persistent_set import PersistentSet
from durus.storage import MemoryStorage

# (oid, class pickle, state pickle, refs) of every record Durus 4.3 wrote for
# the database built by sample_records().
DURUS43_RECORDS = [
    (
        0,
        b"\x80\x02cdurus.persistent_dict\nPersistentDict\nq\x00.",
        b"\x80\x02}q\x01X\x04\x00\x00\x00dataq\x02}q\x03(X\x04\x00\x00\x00dictq\x04c_codecs\nen"
        b"code\nq\x05X\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01q\x06X\x06\x00\x00\x00lati"
        b"n1q\x07\x86q\x08Rq\th\x00\x86q\nQX\x04\x00\x00\x00listq\x0bh\x05X\x08\x00\x00\x00\x00"
        b"\x00\x00\x00\x00\x00\x00\x02q\x0ch\x07\x86q\rRq\x0ecdurus.persistent_list\nPersistentL"
        b"ist\nq\x0f\x86q\x10QX\x03\x00\x00\x00setq\x11h\x05X\x08\x00\x00\x00\x00\x00\x00\x00\x00"
        b"\x00\x00\x03q\x12h\x07\x86q\x13Rq\x14cdurus.persistent_set\nPersistentSet\nq\x15\x86q"
        b"\x16QX\x04\x00\x00\x00treeq\x17h\x05X\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x04q"
        b"\x18h\x07\x86q\x19Rq\x1acdurus.btree\nBTree\nq\x1b\x86q\x1cQus.",
        b"\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00"
        b"\x00\x00\x03\x00\x00\x00\x00\x00\x00\x00\x04",
    ),
    (
        1,
        b"\x80\x02cdurus.persistent_dict\nPersistentDict\nq\x00.",
        b"\x80\x02}q\x01X\x04\x00\x00\x00dataq\x02}q\x03X\x01\x00\x00\x00xq\x04K\x01ss.",
        b"",
    ),
    (
        2,
        b"\x80\x02cdurus.persistent_list\nPersistentList\nq\x00.",
        b"\x80\x02}q\x01X\x04\x00\x00\x00dataq\x02]q\x03(K\x01K\x02es.",
        b"",
    ),
    (
        3,
        b"\x80\x02cdurus.persistent_set\nPersistentSet\nq\x00.",
        b"\x80\x02}q\x01X\x01\x00\x00\x00sq\x02c__builtin__\nset\nq\x03]q\x04K\x03a\x85q\x05Rq"
        b"\x06s.",
        b"",
    ),
    (
        4,
        b"\x80\x02cdurus.btree\nBTree\nq\x00.",
        b"\x80\x02}q\x01X\x04\x00\x00\x00rootq\x02c_codecs\nencode\nq\x03X\x08\x00\x00\x00\x00"
        b"\x00\x00\x00\x00\x00\x00\x05q\x04X\x06\x00\x00\x00latin1q\x05\x86q\x06Rq\x07cdurus.bt"
        b"ree\nBNode\nq\x08\x86q\tQs.",
        b"\x00\x00\x00\x00\x00\x00\x00\x05",
    ),
    (
        5,
        b"\x80\x02cdurus.btree\nBNode\nq\x00.",
        b"\x80\x02}q\x01(X\x05\x00\x00\x00itemsq\x02]q\x03K\x01X\x02\x00\x00\x00v1q\x04\x86q\x05"
        b"aX\x05\x00\x00\x00nodesq\x06]q\x07(c_codecs\nencode\nq\x08X\x08\x00\x00\x00\x00\x00\x00"
        b"\x00\x00\x00\x00\x06q\tX\x06\x00\x00\x00latin1q\n\x86q\x0bRq\x0ch\x00\x86q\rQh\x08X\x08"
        b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x07q\x0eh\n\x86q\x0fRq\x10h\x00\x86q\x11Qeu.",
        b"\x00\x00\x00\x00\x00\x00\x00\x06\x00\x00\x00\x00\x00\x00\x00\x07",
    ),
    (
        6,
        b"\x80\x02cdurus.btree\nBNode\nq\x00.",
        b"\x80\x02}q\x01(X\x05\x00\x00\x00itemsq\x02]q\x03K\x00X\x02\x00\x00\x00v0q\x04\x86q\x05"
        b"aX\x05\x00\x00\x00nodesq\x06Nu.",
        b"",
    ),
    (
        7,
        b"\x80\x02cdurus.btree\nBNode\nq\x00.",
        b"\x80\x02}q\x01(X\x05\x00\x00\x00itemsq\x02]q\x03(K\x02X\x02\x00\x00\x00v2q\x04\x86q\x05"
        b"K\x03X\x02\x00\x00\x00v3q\x06\x86q\x07eX\x05\x00\x00\x00nodesq\x08Nu.",
        b"",
    ),
]


def split_record(record: bytes) -> tuple[int, bytes, bytes, bytes]:
    """(oid, class pickle, state pickle decompressed, refs trailer) of a record."""
    oid = int.from_bytes(record[:8], "big")
    length = int.from_bytes(record[8:12], "big")
    data = record[12 : 12 + length]
    refs = record[12 + length :]
    stream = io.BytesIO(data)
    pickle.Unpickler(stream).load()  # the class pickle
    class_pickle = data[: stream.tell()]
    state = data[stream.tell() :]
    if state[:1] == b"\x78":
        state = zlib.decompress(state)
    return oid, class_pickle, state, refs


def sample_records() -> tuple[MemoryStorage, list[tuple[int, bytes, bytes, bytes]]]:
    storage = MemoryStorage()
    connection = Connection(storage)
    root = connection.get_root()
    root["dict"] = PersistentDict(x=1)
    root["list"] = PersistentList([1, 2])
    root["set"] = PersistentSet([3])
    tree = BTree(BNode)
    for key in range(4):
        tree[key] = f"v{key}"
    root["tree"] = tree
    connection.commit()
    records = sorted(split_record(record) for record in storage.records.values())
    return storage, records


def test_records_match_durus43(monkeypatch) -> None:
    # Durus 4.3's layout: protocol-2 state pickles sharing the class's memo.
    monkeypatch.setattr(serialize, "STATE_PICKLE_PROTOCOL", 2)
    _storage, records = sample_records()
    assert [record[0] for record in records] == list(range(8))
    for got, expected in zip(records, DURUS43_RECORDS, strict=True):
        assert got == expected, f"record of oid {expected[0]}"


def test_records_load_back() -> None:
    storage, _records = sample_records()
    root = Connection(storage).get_root()
    assert root["dict"] == PersistentDict(x=1)
    assert root["list"] == [1, 2]
    assert root["set"] == PersistentSet([3])
    tree = root["tree"]
    assert tree.items() == [(0, "v0"), (1, "v1"), (2, "v2"), (3, "v3")]
    assert tree.root.__class__ is BNode
    assert [node.items for node in tree.root.nodes] == [[(0, "v0")], [(2, "v2"), (3, "v3")]]
