"""Object records: turning persistent objects into bytes and back.

A record (spec 2.1) is ``oid + int4 len(data) + data + refs`` where ``data`` is
the class pickle followed by the (maybe zlib-compressed) state pickle, written
by *one* pickler so that the state may refer to the class through the memo,
and ``refs`` lists, sorted and unique, the oids the state refers to.  Packing
trusts ``refs`` alone, so it must be complete.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from io import BytesIO
from pickle import Pickler, Unpickler
from typing import TYPE_CHECKING, Any
from zlib import compress, decompress
from zlib import error as zlib_error

from durus.persistent import GHOST, PersistentBase, real_class

if TYPE_CHECKING:
    from durus.connection import Connection

__all__ = [
    "COMPRESSED_START_BYTE",
    "COMPRESSION_THRESHOLD",
    "NEWLINE",
    "PICKLE_PROTOCOL",
    "WRITE_COMPRESSED_STATE_PICKLES",
    "ObjectReader",
    "ObjectWriter",
    "extract_class_name",
    "pack_record",
    "split_oids",
    "unpack_record",
]

PICKLE_PROTOCOL = 2
#: Compress state pickles with zlib (Durus 4.3 compressed every one).
WRITE_COMPRESSED_STATE_PICKLES = True
#: State pickles shorter than this are stored raw: compressing a few dozen
#: bytes makes them longer and costs time on every load.  Set it to 0 to
#: compress every state as Durus 4.3 did (byte-identical records).
COMPRESSION_THRESHOLD = 256
COMPRESSED_START_BYTE = compress(b"\x80\x02}q\x00.")[0]  # 0x78: zlib, 32 KiB window
NEWLINE = b"\n"

_int4 = struct.Struct(">I")


def pack_record(oid: bytes, data: bytes, refs: bytes) -> bytes:
    """The record of spec 2.1."""
    return b"".join((oid, _int4.pack(len(data)), data, refs))


def unpack_record(record: bytes) -> tuple[bytes, bytes, bytes]:
    """``(oid, data, refs)`` of a record, without validation."""
    data_end = 12 + _int4.unpack_from(record, 8)[0]
    return record[:8], record[12:data_end], record[data_end:]


def split_oids(s: bytes) -> list[bytes]:
    """The 8-byte oids concatenated in a refs trailer."""
    if len(s) % 8:
        raise ValueError(f"a refs trailer is a multiple of 8 bytes, not {len(s)}")
    return [s[i : i + 8] for i in range(0, len(s), 8)]


def extract_class_name(record: bytes) -> Any:
    """The class name (bytes, without module) a record's class pickle names."""
    data = unpack_record(record)[1]
    parts = data.split(NEWLINE, 2)
    if len(parts) < 2:
        return "?"
    return parts[1]


class _RecordPickler(Pickler):
    """A pickler whose persistent ids are those of its ObjectWriter."""

    writer: ObjectWriter

    def persistent_id(self, obj: Any) -> Any:
        return self.writer._persistent_id(obj)


class _RecordUnpickler(Unpickler):
    """An unpickler whose persistent references go through its ObjectReader."""

    reader: ObjectReader

    def persistent_load(self, pid: Any) -> Any:
        return self.reader._persistent_load(pid)


class ObjectWriter:
    """Serializes the objects of one commit with one reused pickler.

    The persistent-id hook turns every reference to a persistent object into
    ``(oid, class)``, gives never-stored objects an oid and queues them, so a
    commit stores everything newly reachable from what changed.
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.sio = BytesIO()
        self.pickler = _RecordPickler(self.sio, PICKLE_PROTOCOL)
        self.pickler.writer = self
        self.objects_found: list[Any] = []
        #: Every object this writer gave an oid, so a failed commit can undo it.
        self.assigned: list[Any] = []
        self.refs: set[bytes] = set()
        self._generating = False

    def _persistent_id(self, obj: Any) -> tuple[bytes, type] | None:
        if not isinstance(obj, PersistentBase):
            return None
        oid: Any = obj._p_oid
        connection = obj._p_connection
        if connection is None:
            connection = self.connection
            oid = connection.new_oid()
            obj._p_oid = oid
            obj._p_connection = connection
            self.objects_found.append(obj)
            self.assigned.append(obj)
        elif connection is not self.connection:
            raise ValueError(f"Reference to {obj!r} has a different connection.")
        self.refs.add(oid)
        return oid, real_class(obj)

    def gen_new_objects(self, obj: Any) -> Iterator[Any]:
        """``obj``, then every new object discovered while serializing them."""
        if self._generating:
            raise RuntimeError("gen_new_objects() is already running on this writer")
        self._generating = True
        found = self.objects_found
        del found[:]
        found.append(obj)
        try:
            position = 0
            while position < len(found):
                yield found[position]
                position += 1
        finally:
            del found[:]
            self._generating = False

    def get_state(self, obj: Any) -> tuple[bytes, bytes]:
        """``(data, refs)`` of ``obj``'s record."""
        sio = self.sio
        sio.seek(0)
        sio.truncate()
        pickler = self.pickler
        pickler.clear_memo()
        refs = self.refs
        refs.clear()
        pickler.dump(real_class(obj))
        class_end = sio.tell()
        pickler.dump(obj.__getstate__())
        data = sio.getvalue()
        if WRITE_COMPRESSED_STATE_PICKLES and len(data) - class_end >= COMPRESSION_THRESHOLD:
            squeezed = compress(data[class_end:])
            if COMPRESSION_THRESHOLD == 0 or len(squeezed) < len(data) - class_end:
                data = data[:class_end] + squeezed
        refs.discard(obj._p_oid)
        return data, b"".join(sorted(refs))

    def close(self) -> None:
        """Drop references so objects of the commit can be freed."""
        self.refs.clear()
        del self.objects_found[:]
        del self.assigned[:]
        self.sio = BytesIO()
        self.pickler = None  # type: ignore[assignment]


class ObjectReader:
    """Rebuilds classes, ghosts and states from record data for a connection."""

    def __init__(self, connection: Connection | None) -> None:
        self.connection = connection
        self.load_count = 0

    def _persistent_load(self, pid: Any) -> Any:
        oid, cls = pid
        if isinstance(oid, str):
            oid = oid.encode("latin1")
        connection = self.connection
        if connection is None:
            ghost = cls.__new__(cls)
            ghost._p_oid = oid
            ghost._p_status = GHOST
            return ghost
        return connection.cache.get_instance(oid, cls, connection)

    def _unpickler(self, f: BytesIO) -> _RecordUnpickler:
        unpickler = _RecordUnpickler(f)
        unpickler.reader = self
        return unpickler

    def get_class(self, data: bytes) -> Any:
        """The class named by the class pickle at the start of ``data``."""
        return Unpickler(BytesIO(data)).load()

    def get_ghost(self, data: bytes) -> Any:
        """A new ghost of the record's class (no oid, no connection yet)."""
        cls = self.get_class(data)
        ghost = cls.__new__(cls)
        ghost._p_status = GHOST
        return ghost

    def _split(self, data: bytes) -> tuple[_RecordUnpickler, BytesIO, bytes | None]:
        f = BytesIO(data)
        unpickler = self._unpickler(f)
        unpickler.load()
        position = f.tell()
        if position < len(data) and data[position] == COMPRESSED_START_BYTE:
            try:
                return unpickler, f, decompress(data[position:])
            except zlib_error:
                pass
        return unpickler, f, None

    def get_state_pickle(self, data: bytes) -> bytes:
        """The state pickle of ``data``, decompressed."""
        _unpickler, f, expanded = self._split(data)
        if expanded is not None:
            return expanded
        return data[f.tell() :]

    def get_state(self, data: bytes, load: bool = True) -> Any:
        """The state object of ``data`` (or its raw pickle when not ``load``)."""
        unpickler, f, expanded = self._split(data)
        if not load:
            return expanded if expanded is not None else data[f.tell() :]
        self.load_count += 1
        if expanded is None:
            return unpickler.load()
        # The state pickle shares the class pickle's memo (spec 2.2).
        state_unpickler = self._unpickler(BytesIO(expanded))
        state_unpickler.memo = unpickler.memo
        return state_unpickler.load()

    def get_load_count(self) -> int:
        return self.load_count

