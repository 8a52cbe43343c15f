"""Small helpers shared by every distribution: int encodings and exact I/O.

Durus stores every integer big-endian (``int4``/``int8``) and oids are the
8-byte encoding of an integer, so byte order of oids is numeric order.

Kept for Durus 4.3 applications, and used by nothing here: Durus 4.3 ran on
Python 2 and 3 and exported its compatibility names from this module
(``xrange``, ``next``, ``byte_string``, ``empty_byte_string``, ``iteritems``,
``BytesIO``, ``Pickler``, ``Unpickler``, ``dumps``, ``loads``, ``TRACE``);
its own modules and unit tests import them from here (the durus43suite tox
envs run those tests), and so may code written in its style.  Each is the
Python 3 object it stood for.  Durus 4.3's file-backed arrays (``ByteArray``,
``IntArray``, ``IntSet``, ...) were its offset map's and are not here:
FileStorage's index is ``durus.shelf_index``.
"""

from __future__ import annotations

import struct
from io import BytesIO
from pickle import Pickler, Unpickler, dumps, loads
from typing import Any, Protocol

__all__ = [
    "BytesIO",
    "Pickler",
    "ShortRead",
    "Unpickler",
    "as_bytes",
    "byte_string",
    "dumps",
    "empty_byte_string",
    "int4_to_str",
    "int8_to_str",
    "iteritems",
    "join_bytes",
    "loads",
    "next",
    "read",
    "read_int4",
    "read_int4_str",
    "read_int8",
    "read_int8_str",
    "str_to_int4",
    "str_to_int8",
    "write",
    "write_all",
    "write_int4",
    "write_int4_str",
    "write_int8",
    "write_int8_str",
    "xrange",
]

_int4 = struct.Struct(">I")
_int8 = struct.Struct(">Q")

byte_string = (bytearray, bytes)
empty_byte_string = b""
xrange = range
next = next
TRACE = False


def int8_to_str(n: int) -> bytes:
    """The 8-byte big-endian encoding of ``0 <= n < 2**64``."""
    return _int8.pack(n)


def str_to_int8(s: bytes) -> int:
    return _int8.unpack(s)[0]


def int4_to_str(n: int) -> bytes:
    """The 4-byte big-endian encoding of ``0 <= n < 2**32``."""
    return _int4.pack(n)


def str_to_int4(s: bytes) -> int:
    return _int4.unpack(s)[0]


def as_bytes(s: str | bytes | bytearray) -> bytes | bytearray:
    """Latin-1 bytes of a ``str``; bytes pass through unchanged."""
    if isinstance(s, str):
        return s.encode("latin1")
    return s


def join_bytes(parts: Any) -> bytes:
    return b"".join(parts)


def iteritems(d: Any) -> Any:
    return iter(d.items())


class ShortRead(IOError):
    """Fewer bytes were available than a read required."""


class _Readable(Protocol):
    def read(self, n: int) -> bytes: ...


def read(f: Any, n: int) -> bytes:
    """Exactly ``n`` bytes from a file or a socket, else ``ShortRead``."""
    if hasattr(f, "recv"):
        chunks = []
        remaining = n
        while remaining > 0:
            chunk = f.recv(min(remaining, 1 << 20))
            if not chunk:
                raise ShortRead(f"wanted {n} bytes, connection closed after {n - remaining}")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    data = f.read(n)
    if len(data) != n:
        raise ShortRead(f"wanted {n} bytes, got {len(data)}")
    return data


def write(f: Any, s: bytes | str) -> None:
    """Write all of ``s`` (a ``str`` as latin-1) to a file, a socket or an object
    with only ``send()``, as Durus 4.3 did; more than 10 sends that take nothing
    raise ``OSError`` (a peer that stopped reading)."""
    data = as_bytes(s)
    if hasattr(f, "sendall"):
        f.sendall(data)
    elif hasattr(f, "write"):
        f.write(data)
    else:
        idle = 0
        while data:
            sent = f.send(data)
            if not sent:
                idle += 1
                if idle > 10:
                    raise OSError(f"send() took nothing {idle} times: {len(data)} bytes unsent")
            data = data[sent:]


def write_all(f: Any, *parts: bytes) -> None:
    write(f, b"".join(parts))


def read_int4(f: Any) -> int:
    return _int4.unpack(read(f, 4))[0]


def read_int8(f: Any) -> int:
    return _int8.unpack(read(f, 8))[0]


def write_int4(f: Any, n: int) -> None:
    write(f, _int4.pack(n))


def write_int8(f: Any, n: int) -> None:
    write(f, _int8.pack(n))


def read_int4_str(f: Any) -> bytes:
    return read(f, read_int4(f))


def read_int8_str(f: Any) -> bytes:
    return read(f, read_int8(f))


def write_int4_str(f: Any, s: bytes | str) -> None:
    data = as_bytes(s)  # a str as latin-1, as write() takes it
    write(f, _int4.pack(len(data)) + data)


def write_int8_str(f: Any, s: bytes | str) -> None:
    data = as_bytes(s)
    write(f, _int8.pack(len(data)) + data)
