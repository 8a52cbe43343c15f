"""Object records: turning persistent objects into bytes and back.

A record (spec 2.1) is ``oid + int4 len(data) + data + refs`` where ``data`` is
the class pickle followed by the (maybe zlib-compressed) state pickle, written
by *one* pickler so that the state may refer to the class through the memo,
and ``refs`` lists, sorted and unique, the oids the state refers to.  Packing
trusts ``refs`` alone, so it must be complete.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Callable, Iterator
from io import BytesIO
from pickle import Pickler, Unpickler, UnpicklingError, dumps, loads
from typing import TYPE_CHECKING, Any
from zlib import compress, decompress
from zlib import error as zlib_error

from durus.persistent import PersistentBase, _real_classes, new_ghost, real_class

_oid_of = PersistentBase.__dict__["_p_oid"].__get__
_set_oid = PersistentBase.__dict__["_p_oid"].__set__
_connection_of = PersistentBase.__dict__["_p_connection"].__get__
_set_connection = PersistentBase.__dict__["_p_connection"].__set__

if TYPE_CHECKING:
    from durus.connection import Connection

__all__ = [
    "COMPRESSED_START_BYTE",
    "COMPRESSION_THRESHOLD",
    "NEWLINE",
    "PICKLE_PROTOCOL",
    "STATE_PICKLE_PROTOCOL",
    "WRITE_COMPRESSED_STATE_PICKLES",
    "ObjectReader",
    "ObjectWriter",
    "check_record",
    "extract_class_name",
    "pack_record",
    "split_oids",
    "unpack_record",
]

#: Protocol of class pickles, and of the whole record in Durus 4.3's layout.
PICKLE_PROTOCOL = 2
#: Protocol of state pickles.  At 3 a reference's oid is stored as bytes
#: instead of a call to ``_codecs.encode``: smaller records, faster commits and
#: loads, and Durus 4.3 reads them (its unpickler takes any protocol).  At 2
#: (with ``COMPRESSION_THRESHOLD = 0``) records are Durus 4.3's byte for byte.
STATE_PICKLE_PROTOCOL = 3
#: Compress state pickles with zlib (Durus 4.3 compressed every one).
WRITE_COMPRESSED_STATE_PICKLES = True
#: State pickles shorter than this are stored raw.  zlib spends about 35 us
#: setting up its window and tables for every state it compresses, more than
#: a whole small object costs to write, and saves a few hundred bytes at most
#: below this size.  Set it to 0 to compress every state as Durus 4.3 did
#: (byte-identical records).
COMPRESSION_THRESHOLD = 2048
COMPRESSED_START_BYTE = compress(b"\x80\x02}q\x00.")[0]  # 0x78: zlib, 32 KiB window
NEWLINE = b"\n"
_COMPRESSED = bytes([COMPRESSED_START_BYTE])
#: How state pickles that number their own memo start (PROTO 3, 4, 5): ours.
#: Durus 4.3's protocol-2 states may use the class pickle's memo.
_OWN_MEMO_PROTOCOLS = (b"\x80\x03", b"\x80\x04", b"\x80\x05")
#: The two opcodes that call ``persistent_load``; a state pickle without
#: either byte anywhere cannot refer to a persistent object.
_PERSID = pickle.PERSID
_BINPERSID = pickle.BINPERSID

_int4 = struct.Struct(">I")
_LARGE_RECORD = 16384
_class_pickles: dict[type, bytes] = {}


def _class_pickle(cls: type) -> bytes:
    """The class pickle of ``cls`` (``PROTO 2, GLOBAL, BINPUT 0, STOP``), cached."""
    data = _class_pickles.get(cls)
    if data is None:
        data = _class_pickles[cls] = dumps(cls, PICKLE_PROTOCOL)
    return data


def pack_record(oid: bytes, data: bytes, refs: bytes) -> bytes:
    """The record of spec 2.1."""
    return b"".join((oid, _int4.pack(len(data)), data, refs))


def unpack_record(record: bytes) -> tuple[bytes, bytes, bytes]:
    """``(oid, data, refs)`` of a record, without validation."""
    data_end = 12 + _int4.unpack_from(record, 8)[0]
    return record[:8], record[12:data_end], record[data_end:]


def check_record(oid: bytes, record: bytes) -> None:
    """``ValueError`` unless ``record`` is a well-formed record of ``oid`` (spec 2.1).

    Storages check what they are asked to store, and tools what they read.
    """
    if len(oid) != 8:
        raise ValueError(f"an oid is 8 bytes, not {len(oid)}: {oid!r}")
    if len(record) < 12:
        raise ValueError(f"the record is malformed: {len(record)} bytes, "
                         "shorter than its 12-byte header")
    if record[:8] != oid:
        raise ValueError("the record names another oid than its item "
                         "(it does not start with that oid)")
    refs = len(record) - 12 - _int4.unpack_from(record, 8)[0]
    if refs < 0:
        raise ValueError("the record is malformed: its data length runs past its end")
    if refs % 8:
        raise ValueError("the record is malformed: its refs trailer is not a whole "
                         "number of oids")


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


class _ReferenceFound(Exception):
    """A state handed to the plain pickler holds a persistent object."""


class _RecordPickler(Pickler):
    """A pickler that writes references to persistent objects as ``(oid, class)``.

    Its hook runs for every object pickled, so it does the whole work of a
    reference itself: a never-stored object gets an oid and is queued for the
    same commit; every oid lands in ``writer.refs``.
    """

    def __init__(self, file: BytesIO, protocol: int, writer: ObjectWriter) -> None:
        super().__init__(file, protocol)
        self.writer = writer
        self._connection = writer.connection
        self._found = writer.objects_found
        self._assigned = writer.assigned

    def persistent_id(self, obj: Any) -> Any:
        if not isinstance(obj, PersistentBase):
            return None
        oid: Any = _oid_of(obj)
        connection = _connection_of(obj)
        if connection is None:
            connection = self._connection
            oid = connection.new_oid()
            _set_oid(obj, oid)
            _set_connection(obj, connection)
            self._found.append(obj)
            self._assigned.append(obj)
        elif connection is not self._connection:
            raise ValueError(f"Reference to {obj!r} has a different connection.")
        self.writer.refs.add(oid)
        cls = type(obj)
        return oid, _real_classes.get(cls, cls)


class _RecordUnpickler(Unpickler):
    """An unpickler that turns ``(oid, class)`` references into cached objects or ghosts."""

    def __init__(self, file: Any, reader: ObjectReader) -> None:
        super().__init__(file)
        self.reader = reader

    def persistent_load(self, pid: Any) -> Any:
        oid, cls = pid
        if type(oid) is not bytes:
            oid = oid.encode("latin1")  # Durus 4.3's protocol-2 records
        connection = self.reader.connection
        if connection is None:
            return new_ghost(cls, oid, None)
        return connection.cache.get_instance(oid, cls, connection)


class _PlainPickler(Pickler):
    """Pickles states that hold no persistent object without leaving C.

    The C pickler calls ``reducer_override`` only for objects of no basic type
    (never for ints, strs, dicts, lists, tuples...), while it calls a
    ``persistent_id`` hook for every object.  The first persistent object
    stops this pickler and the writer pickles that state again with the hook.
    Where it finishes, its bytes are the hooked pickler's.
    """

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, PersistentBase):
            raise _ReferenceFound
        return NotImplemented


class _ReusedPickler:
    """A pickler and its buffer, reused record after record.

    Making a pickler per record costs more than pickling a small state.  The
    memo table grows for a large record and never shrinks, so clearing it would
    cost that size on every later record: after one, both are replaced.
    """

    def __init__(self, factory: Callable[[BytesIO], Pickler]) -> None:
        self._factory = factory
        self.sio = BytesIO()
        self.pickler = factory(self.sio)

    def renew(self) -> None:
        """A new pickler and buffer."""
        self.sio = BytesIO()
        self.pickler = self._factory(self.sio)

    def start(self) -> Pickler:
        """The pickler, with an empty buffer and memo."""
        sio = self.sio
        if sio.tell() > _LARGE_RECORD:
            self.renew()
        else:
            sio.seek(0)
            sio.truncate()
            self.pickler.clear_memo()
        return self.pickler

    def dump(self, obj: Any) -> bytes:
        """The pickle of ``obj``."""
        self.start().dump(obj)
        return self.sio.getvalue()


#: Classes whose last state held a persistent reference: the writer goes
#: straight to the hooked pickler for them instead of trying the plain one.
_referring_classes: set[type] = set()


class ObjectWriter:
    """Serializes the objects of one commit with reused picklers.

    The persistent-id hook turns every reference to a persistent object into
    ``(oid, class)``, gives never-stored objects an oid and queues them, so a
    commit stores everything newly reachable from what changed.  States with
    no reference skip the hook (see ``_PlainPickler``).
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        # Durus 4.3's layout: class and state pickles from one pickler, one memo.
        self._shared_memo = STATE_PICKLE_PROTOCOL == PICKLE_PROTOCOL
        protocol = PICKLE_PROTOCOL if self._shared_memo else STATE_PICKLE_PROTOCOL
        self.objects_found: list[Any] = []
        #: Every object this writer gave an oid, so a failed commit can undo it.
        self.assigned: list[Any] = []
        self.refs: set[bytes] = set()
        self._generating = False
        self._hooked = _ReusedPickler(lambda sio: self._new_hooked_pickler(sio, protocol))
        self._plain = _ReusedPickler(lambda sio: _PlainPickler(sio, protocol))

    def _new_hooked_pickler(self, sio: BytesIO, protocol: int) -> Pickler:
        return _RecordPickler(sio, protocol, self)

    @property
    def pickler(self) -> Pickler:
        """The pickler with the persistent-id hook (replaced after large records)."""
        return self._hooked.pickler

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
        cls = real_class(obj)
        state = obj.__getstate__()
        if self._shared_memo:
            return self._get_shared_memo_state(obj, cls, state)
        if cls not in _referring_classes:
            try:
                data = self._plain.dump(state)
            except _ReferenceFound:
                _referring_classes.add(cls)
                # Its memo may have grown for a large state that wrote nothing
                # to the buffer, where start() would not notice it.
                self._plain.renew()
            else:
                return _class_pickle(cls) + _squeezed(data), b""
        refs = self.refs
        refs.clear()
        data = self._hooked.dump(state)
        refs.discard(obj._p_oid)
        if not refs:
            _referring_classes.discard(cls)
        return _class_pickle(cls) + _squeezed(data), b"".join(sorted(refs))

    def _get_shared_memo_state(self, obj: Any, cls: type, state: Any) -> tuple[bytes, bytes]:
        """Durus 4.3's layout: the class and the state pickled by one pickler."""
        refs = self.refs
        refs.clear()
        pickler = self._hooked.start()
        pickler.dump(cls)
        class_end = self._hooked.sio.tell()
        pickler.dump(state)
        data = self._hooked.sio.getvalue()
        refs.discard(obj._p_oid)
        return data[:class_end] + _squeezed(data[class_end:]), b"".join(sorted(refs))

    def suits_settings(self) -> bool:
        """Whether this writer was made under the module's current settings."""
        return self._shared_memo == (STATE_PICKLE_PROTOCOL == PICKLE_PROTOCOL)

    def reset(self) -> None:
        """Forget the commit just written, keeping the picklers for the next one.

        A connection reuses its writer: making two picklers and their buffers
        cost about 3 us, a third of a small commit.  The memos are cleared so
        that no object of the commit stays referenced.
        """
        self.refs.clear()
        del self.objects_found[:]
        del self.assigned[:]
        for reused in (self._hooked, self._plain):
            reused.start()

    def close(self) -> None:
        """Drop references so objects of the commit can be freed."""
        self.refs.clear()
        del self.objects_found[:]
        del self.assigned[:]
        self._hooked = self._plain = None  # type: ignore[assignment]


def _squeezed(state_pickle: bytes) -> bytes:
    """The state pickle as stored: compressed when that pays (spec 2.2)."""
    if WRITE_COMPRESSED_STATE_PICKLES and len(state_pickle) >= COMPRESSION_THRESHOLD:
        squeezed = compress(state_pickle)
        if COMPRESSION_THRESHOLD == 0 or len(squeezed) < len(state_pickle):
            return squeezed
    return state_pickle


class _Source:
    """A reusable in-memory input for the unpickler.

    The C unpickler reads a file one opcode at a time unless the file offers
    ``peek``; with it, a record is unpickled from memory.  One source and one
    unpickler serve every record a reader loads.
    """

    __slots__ = ("data", "position")

    def __init__(self) -> None:
        self.data = b""
        self.position = 0

    def peek(self, n: int = 0) -> bytes:
        return self.data[self.position :]

    def read(self, n: int = -1) -> bytes:
        start = self.position
        end = start + n
        if n < 0 or end > len(self.data):
            end = len(self.data)
        self.position = end
        return self.data[start:end]

    def readinto(self, buffer: Any) -> int:
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def readline(self) -> bytes:
        start = self.position
        end = self.data.find(b"\n", start)
        end = len(self.data) if end < 0 else end + 1
        self.position = end
        return self.data[start:end]


def _class_pickle_end(data: bytes) -> int:
    """End of a class pickle of the usual form (``PROTO 2 GLOBAL BINPUT 0 STOP``), or 0."""
    if data[:3] != b"\x80\x02c":
        return 0
    module_end = data.find(b"\n", 3)
    name_end = data.find(b"\n", module_end + 1)
    if module_end < 0 or name_end < 0 or data[name_end + 1 : name_end + 4] != b"q\x00.":
        return 0
    return name_end + 4


class ObjectReader:
    """Rebuilds classes, ghosts and states from record data for a connection."""

    def __init__(self, connection: Connection | None) -> None:
        self.connection = connection
        self.load_count = 0
        # class pickle -> (class, the memo an unpickler has after reading it)
        self._classes: dict[bytes, tuple[Any, Any]] = {}
        # (class pickle, its memo, its length) of the last record read.
        self._last_class: tuple[bytes, Any, int] = (b"\x80\x02c\xff", None, 4)  # matches nothing
        self._source = _Source()
        self._unpickler = self._new_unpickler(self._source)
        self._busy = False

    def _new_unpickler(self, source: Any) -> _RecordUnpickler:
        return _RecordUnpickler(source, self)

    def _class_and_memo(self, key: bytes) -> tuple[Any, Any]:
        known = self._classes.get(key)
        if known is None:
            unpickler = Unpickler(BytesIO(key))
            # Keep the memo proxy: assigning it is how an unpickler's memo is
            # seeded (assigning a dict does not work on every CPython).
            known = self._classes[key] = (unpickler.load(), unpickler.memo)
        return known

    def get_class(self, data: bytes) -> Any:
        """The class named by the class pickle at the start of ``data``."""
        end = _class_pickle_end(data)
        if end:
            return self._class_and_memo(data[:end])[0]
        return Unpickler(BytesIO(data)).load()

    def get_ghost(self, data: bytes) -> Any:
        """A new ghost of the record's class (no oid, no connection yet)."""
        return new_ghost(self.get_class(data), None, None)

    def _split(self, data: bytes) -> tuple[Any, bytes, int]:
        """The memo after the class pickle, and the state pickle's bytes and start."""
        last = self._last_class
        if data.startswith(last[0]):
            # Most records in a row are of one class: skip parsing its pickle.
            end = last[2]
            memo = last[1]
        elif end := _class_pickle_end(data):
            key = data[:end]
            memo = self._class_and_memo(key)[1]
            self._last_class = (key, memo, end)
        else:
            f = BytesIO(data)
            unpickler = self._new_unpickler(f)
            unpickler.load()
            memo = unpickler.memo
            end = f.tell()
        if end < len(data) and data[end] == COMPRESSED_START_BYTE:
            try:
                return memo, decompress(data[end:]), 0
            except zlib_error:
                pass
        return memo, data, end

    def get_state_pickle(self, data: bytes) -> bytes:
        """The state pickle of ``data``, decompressed."""
        _memo, state, start = self._split(data)
        return state[start:]

    def get_state(self, data: bytes, load: bool = True, references: bool = True) -> Any:
        """The state object of ``data`` (or its raw pickle when not ``load``).

        ``references=False`` says the record's refs trailer is empty.  That is
        only a hint: the trailer leaves out the object's own oid (Durus 4.3
        does the same), so a state may still refer to its own object.  The
        state pickle is read by ``pickle.loads`` instead of the hooked
        unpickler only when its bytes prove it needs no hook: it numbers its
        own memo (protocol 3 or more) and holds no ``PERSID``/``BINPERSID``
        opcode byte at all (a byte scan; a ``P`` or ``Q`` inside string data
        merely sends the state down the general path).  A state that reaches
        into the class pickle's memo fails in ``loads`` and is read again by
        the general path.
        """
        if not load:
            return self.get_state_pickle(data)
        self.load_count += 1
        key, memo, start = self._last_class
        if data.startswith(key) and data[start : start + 1] != _COMPRESSED:
            # The usual case, inlined: a record of the class of the last one,
            # with a raw state pickle.
            state = data
        else:
            memo, state, start = self._split(data)
        if (
            not references
            and state[start : start + 2] in _OWN_MEMO_PROTOCOLS
            and state.find(_BINPERSID, start) < 0
            and state.find(_PERSID, start) < 0
        ):
            try:
                return loads(state[start:])
            except UnpicklingError:
                pass  # a memo reference to the class pickle: the general path below
        if self._busy:
            # Unpickling reached back into the reader (a load from __setstate__
            # or a reduce function): use a private unpickler.
            source = _Source()
            unpickler = self._new_unpickler(source)
        else:
            source = self._source
            unpickler = self._unpickler
        source.data = state
        source.position = start
        # The state pickle shares the class pickle's memo (spec 2.2).
        unpickler.memo = memo
        self._busy = True
        try:
            return unpickler.load()
        finally:
            # Let go of what this record held (the memo keeps every object).
            unpickler.memo.clear()
            if unpickler is self._unpickler:
                self._busy = False
                source.data = b""

    def get_load_count(self) -> int:
        return self.load_count

