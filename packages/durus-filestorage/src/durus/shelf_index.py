"""Compact oid tables and the persisted index of a shelf's tail.

Durus oids are dense small integers, so per-oid information lives in flat
arrays indexed by the oid number (8 bytes per oid for positions, 1 bit per oid
for sets) instead of dicts of Python objects (about 100 bytes per entry).

The side file ``<database>.index`` stores the position index of the
transactions after the offset map, so that opening a large file does not scan
them again.  It names the region of the database it covers and checksums of
that region's first and last bytes; the storage checks them and rescans when
anything disagrees (a stale or foreign index is never trusted).
"""

from __future__ import annotations

import os
import re
import struct
import sys
import zlib
from array import array
from collections.abc import Iterator
from typing import NamedTuple

from durus.shelf_format import fsync_file, pread_exact

__all__ = ["IndexMeta", "OidBitmap", "PositionIndex", "load_index_file", "save_index_file"]

_BIG_ENDIAN_HOST = sys.byteorder == "big"
_NONZERO_BYTE = re.compile(b"[^\x00]")
_NOT_FULL_BYTE = re.compile(b"[^\xff]")


class PositionIndex:
    """oid number -> file position (0 = none), in an ``array('Q')``.

    Oids far beyond the array (sparse oids, which Durus never allocates) go to
    a small dict instead of growing the array without bound.
    """

    __slots__ = ("array", "count", "extra", "top")

    def __init__(self) -> None:
        self.array = array("Q")
        self.extra: dict[int, int] = {}
        self.count = 0
        #: One more than the largest oid number ever set in the array.
        self.top = 0

    def get(self, n: int) -> int:
        try:
            return self.array[n]
        except IndexError:
            return self.extra.get(n, 0) if self.extra else 0

    def __contains__(self, n: int) -> bool:
        return self.get(n) != 0

    def __len__(self) -> int:
        return self.count

    def _grow(self, n: int) -> None:
        arr = self.array
        size = len(arr)
        new_size = max(n + 1, size + (size >> 1), 1024)
        arr.frombytes(bytes(8 * (new_size - size)))
        if self.extra:
            for k in [k for k in self.extra if k < new_size]:
                arr[k] = self.extra.pop(k)

    def set(self, n: int, position: int) -> int:
        """Record ``position`` for oid ``n`` (0 removes it); return the old one."""
        arr = self.array
        if n >= len(arr):
            if n < 2 * len(arr) + (1 << 16):
                self._grow(n)
            else:
                old = self.extra.pop(n, 0) if position == 0 else self.extra.get(n, 0)
                if position:
                    self.extra[n] = position
                self.count += (position != 0) - (old != 0)
                return old
        old = arr[n]
        arr[n] = position
        self.count += (position != 0) - (old != 0)
        if n >= self.top:
            self.top = n + 1
        return old

    def limit(self) -> int:
        """One more than the largest oid number that may be present."""
        top = self.top
        if self.extra:
            top = max(top, max(self.extra) + 1)
        return top

    def items(self) -> Iterator[tuple[int, int]]:
        """``(oid number, position)`` in ascending oid order."""
        arr = self.array
        step = 1 << 16
        for first in range(0, len(arr), step):
            chunk = arr[first : first + step]
            if not any(chunk):
                continue
            for k, position in enumerate(chunk):
                if position:
                    yield first + k, position
        for n in sorted(self.extra):
            yield n, self.extra[n]

    def copy(self) -> PositionIndex:
        other = PositionIndex()
        other.array = array("Q", self.array)
        other.extra = dict(self.extra)
        other.count = self.count
        other.top = self.top
        return other

    def to_bytes(self) -> tuple[bytes, bytes]:
        """``(array bytes, extra bytes)``, both little-endian ``uint64``."""
        arr = self.array
        # Trailing zeros carry nothing: drop them.
        size = len(arr)
        while size and not arr[size - 1]:
            size -= 1
        body = arr[:size]
        if _BIG_ENDIAN_HOST:
            body.byteswap()
        pairs = array("Q")
        for n in sorted(self.extra):
            pairs.append(n)
            pairs.append(self.extra[n])
        if _BIG_ENDIAN_HOST:
            pairs.byteswap()
        return body.tobytes(), pairs.tobytes()

    @classmethod
    def from_bytes(cls, body: bytes, extra: bytes, count: int | None = None) -> PositionIndex:
        """The index ``to_bytes()`` encoded; ``count`` saves counting the entries."""
        index = cls()
        arr = array("Q")
        arr.frombytes(body)
        pairs = array("Q")
        pairs.frombytes(extra)
        if _BIG_ENDIAN_HOST:
            arr.byteswap()
            pairs.byteswap()
        index.array = arr
        index.extra = dict(zip(pairs[0::2], pairs[1::2], strict=True))
        if count is None:
            count = len(arr) - arr.count(0) + len(index.extra)
        index.count = count
        index.top = len(arr)
        return index


class OidBitmap:
    """A set of oid numbers as a bit array (grows as needed)."""

    __slots__ = ("bits",)

    def __init__(self, size: int = 0) -> None:
        self.bits = bytearray((size + 7) >> 3)

    def ensure(self, n: int) -> None:
        """Make room for oid ``n``."""
        need = (n >> 3) + 1
        have = len(self.bits)
        if need > have:
            self.bits.extend(bytes(max(need - have, have >> 1)))

    def add(self, n: int) -> None:
        if (n >> 3) >= len(self.bits):
            self.ensure(n)
        self.bits[n >> 3] |= 1 << (n & 7)

    def discard(self, n: int) -> None:
        if (n >> 3) < len(self.bits):
            self.bits[n >> 3] &= ~(1 << (n & 7)) & 0xFF

    def __contains__(self, n: object) -> bool:
        if not isinstance(n, int):
            return False
        i = n >> 3
        return i < len(self.bits) and bool(self.bits[i] & (1 << (n & 7)))

    def first_at_or_after(self, n: int) -> int:
        """The smallest member >= ``n``, or -1."""
        bits = self.bits
        i = n >> 3
        if i >= len(bits):
            return -1
        byte = bits[i] >> (n & 7)
        if byte:
            return n + ((byte & -byte).bit_length() - 1)
        match = _NONZERO_BYTE.search(bits, i + 1)
        if match is None:
            return -1
        i = match.start()
        byte = bits[i]
        return (i << 3) + ((byte & -byte).bit_length() - 1)

    def __iter__(self) -> Iterator[int]:
        """The members, ascending."""
        bits = self.bits
        for match in _NONZERO_BYTE.finditer(bits):
            i = match.start()
            byte = bits[i]
            for k in range(8):
                if byte & (1 << k):
                    yield (i << 3) + k

    def iter_absent(self, limit: int) -> Iterator[int]:
        """Every n < ``limit`` that is not a member, ascending."""
        bits = self.bits
        full_bytes = min(len(bits), limit >> 3)
        for match in _NOT_FULL_BYTE.finditer(bits, 0, full_bytes):
            i = match.start()
            byte = bits[i]
            for k in range(8):
                if not byte & (1 << k):
                    yield (i << 3) + k
        for n in range(full_bytes << 3, limit):
            if n not in self:
                yield n


# -- the side file ------------------------------------------------------------------

INDEX_MAGIC = b"DURUS-SHELF-INDEX-1\n"
#: covered_end, last_start, map_start, map_width, map_count, file_size_seen,
#: head_crc, tail_crc, body length, extra length, body crc, extra crc, entries,
#: largest position.
_HEADER = struct.Struct("<QQQQQQIIQQIIQQ")
#: Bytes checksummed at the start of the database and before the covered end.
SAMPLE = 1 << 16


class IndexMeta(NamedTuple):
    """What a side index says about the database region it covers."""

    #: The index covers every transaction in ``[map_end, covered_end)``.
    covered_end: int
    #: Where the last covered transaction starts (== map_end when there is none).
    last_start: int
    map_start: int
    map_width: int
    map_count: int
    file_size_seen: int
    head_crc: int
    tail_crc: int


def region_crc(fd: int, start: int, end: int) -> int:
    return zlib.crc32(pread_exact(fd, max(0, end - start), start))


def sample_crcs(fd: int, map_end: int, covered_end: int) -> tuple[int, int]:
    """Checksums of the first bytes of the file and of the bytes before ``covered_end``."""
    head = region_crc(fd, 0, min(covered_end, SAMPLE))
    tail = region_crc(fd, max(map_end, covered_end - SAMPLE), covered_end)
    return head, tail


def save_index_file(
    path: str, meta: IndexMeta, index: PositionIndex, durable: bool, largest: int
) -> None:
    """Write the side index atomically (temp file + rename).

    ``largest`` is the largest position in the index (a check when loading).
    """
    body, extra = index.to_bytes()
    header = _HEADER.pack(
        meta.covered_end,
        meta.last_start,
        meta.map_start,
        meta.map_width,
        meta.map_count,
        meta.file_size_seen,
        meta.head_crc & 0xFFFFFFFF,
        meta.tail_crc & 0xFFFFFFFF,
        len(body),
        len(extra),
        zlib.crc32(body),
        zlib.crc32(extra),
        index.count,
        largest,
    )
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        with os.fdopen(fd, "wb", closefd=False) as out:
            out.write(INDEX_MAGIC)
            out.write(header)
            out.write(zlib.crc32(header).to_bytes(4, "little"))
            out.write(body)
            out.write(extra)
        if durable:
            fsync_file(fd)
    finally:
        os.close(fd)
    try:
        os.replace(temporary, path)
    except OSError:
        try:
            os.unlink(temporary)
        finally:
            raise


def load_index_file(path: str) -> tuple[IndexMeta, PositionIndex, int] | None:
    """``(meta, index, largest position)`` from ``path``; None if missing or not intact."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(INDEX_MAGIC) + _HEADER.size + 4)
            if len(head) != len(INDEX_MAGIC) + _HEADER.size + 4 or not head.startswith(
                INDEX_MAGIC
            ):
                return None
            raw = head[len(INDEX_MAGIC) : len(INDEX_MAGIC) + _HEADER.size]
            if zlib.crc32(raw) != int.from_bytes(head[-4:], "little"):
                return None
            fields = _HEADER.unpack(raw)
            body_length, extra_length, body_crc, extra_crc, count, largest = fields[8:14]
            if body_length % 8 or extra_length % 16:
                return None
            body = f.read(body_length)
            extra = f.read(extra_length)
    except OSError:
        return None
    if len(body) != body_length or len(extra) != extra_length:
        return None
    if zlib.crc32(body) != body_crc or zlib.crc32(extra) != extra_crc:
        return None
    meta = IndexMeta(*fields[:8])
    return meta, PositionIndex.from_bytes(body, extra, count), largest
