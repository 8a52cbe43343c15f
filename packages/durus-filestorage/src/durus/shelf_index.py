"""Compact oid tables and the persisted index of a shelf's tail.

Durus oids are dense small integers, so per-oid information lives in flat
arrays indexed by the oid number (8 bytes per oid for positions, 1 bit per oid
for sets) instead of dicts of Python objects (about 100 bytes per entry).

The side file ``<database>.index`` stores the position index of the
transactions after the offset map, so that opening a large file does not scan
them again.  It names the region of the database it covers and checksums of
that region's first and last bytes; the storage checks them and rescans when
anything disagrees (a stale or foreign index is never trusted).

Opening costs O(1) in the number of oids: the positions are a flat array of
little-endian 8-byte words indexed by oid number, memory-mapped read-only
(``MappedIndex``); each block of ``BLOCK`` words has its own crc, checked the
first time the block is used, and every position is checked to lie in the
covered region.  The storage also checks that the item found at a position is
the oid looked up.  Any failure rebuilds the index from the database
(``TailIndex.rebuild``) and the right answer is returned.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
import struct
import sys
import zlib
from array import array
from collections.abc import Callable, Iterator
from typing import NamedTuple

from durus.shelf_format import pread_exact
from durus.shelf_tempfiles import replace_file

__all__ = [
    "IndexMeta",
    "MappedIndex",
    "OidBitmap",
    "PositionIndex",
    "TailIndex",
    "load_index_file",
    "save_index_file",
]

logger = logging.getLogger("durus.file_storage")

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

    def set_many(self, entries: list[tuple[int, int]]) -> list[int]:
        """``set`` for each ``(n, position)`` in turn; the old positions.

        One call per transaction instead of one per record: a bulk insert
        spends a few percent of its time here.
        """
        arr = self.array
        olds: list[int] = []
        append = olds.append
        count, top = self.count, self.top
        for n, position in entries:
            if n < len(arr):
                old = arr[n]
                arr[n] = position
                count += (position != 0) - (old != 0)
                if n >= top:
                    top = n + 1
            else:
                self.count, self.top = count, top
                old = self.set(n, position)
                count, top = self.count, self.top
            append(old)
        self.count, self.top = count, top
        return olds

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

#: Version 2: positions as a flat array of little-endian uint64 words indexed by
#: oid number, memory-mapped, each block checked by its own crc the first time it
#: is used.  A version-1 file (whole-body crc, read at open) is simply rebuilt.
INDEX_MAGIC = b"DURUS-SHELF-INDEX-2\n"
#: covered_end, last_start, map_start, map_width, map_count, file_size_seen,
#: head_crc, tail_crc, slots (words in the array), extra length, entries,
#: largest position, extra crc, block size (in words).
_HEADER = struct.Struct("<QQQQQQIIQQQQII")
#: Oids per checksummed block of the array (32 KiB).
BLOCK = 4096
#: Bytes checksummed at the start of the database and before the covered end.
SAMPLE = 1 << 16
_WORD = struct.Struct("<Q")
_CRC = struct.Struct("<I")


def _layout(slots: int, extra_length: int) -> tuple[int, int, int, int]:
    """``(crc table offset, array offset, extra offset, file size)`` of a version-2 file."""
    head = len(INDEX_MAGIC) + _HEADER.size + 4
    crcs_at = head
    blocks = (slots + BLOCK - 1) // BLOCK
    body_at = (crcs_at + 4 * blocks + 7) & ~7
    extra_at = body_at + 8 * slots
    return crcs_at, body_at, extra_at, extra_at + extra_length


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


class IndexDamaged(Exception):
    """A block of a mapped index failed its check (its crc or a position's range)."""


class MappedIndex:
    """The array of a version-2 side index, memory-mapped read-only.

    Opening costs O(1): nothing of the array is read.  A block of ``BLOCK``
    positions is checked against its crc the first time one of its positions is
    used; a block that fails raises ``IndexDamaged`` (the caller rebuilds).
    """

    __slots__ = ("body_at", "covered_end", "crcs_at", "extra", "low", "mm", "slots", "verified")

    def __init__(
        self,
        mm: mmap.mmap | None,
        slots: int,
        crcs_at: int,
        body_at: int,
        extra: dict[int, int],
        low: int,
        covered_end: int,
    ) -> None:
        self.mm = mm
        self.slots = slots
        self.crcs_at = crcs_at
        self.body_at = body_at
        self.extra = extra
        #: Every position lies in ``(low, covered_end)``.
        self.low = low
        self.covered_end = covered_end
        #: Numbers of the blocks whose crc was checked (observable: tests use it).
        self.verified: set[int] = set()

    def _verify(self, block: int) -> None:
        mm = self.mm
        assert mm is not None
        first = block * BLOCK
        words = min(BLOCK, self.slots - first)
        start = self.body_at + 8 * first
        expected = _CRC.unpack_from(mm, self.crcs_at + 4 * block)[0]
        if zlib.crc32(mm[start : start + 8 * words]) != expected:
            raise IndexDamaged(f"block {block} of the index fails its checksum")
        self.verified.add(block)

    def _check(self, n: int, position: int) -> int:
        if position and not self.low < position < self.covered_end:
            raise IndexDamaged(f"oid {n} has the impossible position {position}")
        return position

    def get(self, n: int) -> int:
        if n >= self.slots:
            return self.extra.get(n, 0) if self.extra else 0
        block = n // BLOCK
        if block not in self.verified:
            self._verify(block)
        position: int = _WORD.unpack_from(self.mm, self.body_at + 8 * n)[0]  # type: ignore[arg-type]
        if position and not self.low < position < self.covered_end:
            self._check(n, position)  # raises IndexDamaged
        return position

    def chunk(self, lo: int, hi: int) -> array[int]:
        """Positions of oids ``lo`` to ``hi - 1`` (``lo`` a multiple of ``BLOCK``)."""
        arr = array("Q")
        top = min(hi, self.slots)
        if lo < top:
            assert self.mm is not None
            for block in range(lo // BLOCK, (top + BLOCK - 1) // BLOCK):
                if block not in self.verified:
                    self._verify(block)
            arr.frombytes(self.mm[self.body_at + 8 * lo : self.body_at + 8 * top])
            if _BIG_ENDIAN_HOST:
                arr.byteswap()
            for k, position in enumerate(arr):
                if position:
                    self._check(lo + k, position)
        if len(arr) < hi - lo:
            arr.frombytes(bytes(8 * (hi - lo - len(arr))))
        return arr

    def limit(self) -> int:
        top = self.slots
        if self.extra:
            top = max(top, max(self.extra) + 1)
        return top

    def close(self) -> None:
        if self.mm is not None:
            try:
                self.mm.close()
            except BufferError:  # pragma: no cover - a view is still exported
                pass
            self.mm = None


class TailIndex:
    """The positions of the tail: a mapped side index under an in-memory overlay.

    Same interface as ``PositionIndex``.  Commits and transactions scanned after
    the covered region go to the overlay; the mapped index answers the rest.
    When the mapped index proves damaged (a block's crc, an impossible position,
    or an item that is not the oid it was looked up for), ``rebuild`` rescans the
    covered region into memory, the overlay is replayed on top, and the mapped
    index is dropped: answers stay right, only slower to come by once.
    """

    __slots__ = ("base", "count", "over", "rescan")

    def __init__(
        self,
        base: MappedIndex | None = None,
        count: int = 0,
        rescan: Callable[[], PositionIndex] | None = None,
    ) -> None:
        self.base = base
        self.over = PositionIndex()
        self.count = count
        self.rescan = rescan

    def rebuild(self, why: str) -> None:
        """Forget the mapped index: rescan what it covered, replay the overlay."""
        base = self.base
        if base is None:
            return
        assert self.rescan is not None
        fresh = self.rescan()
        for n, position in self.over.items():
            fresh.set(n, position)
        self.base = None
        self.over = fresh
        self.count = fresh.count
        base.close()
        logger.warning("the side index is damaged (%s); rebuilt it from the database", why)

    def get(self, n: int) -> int:
        # Every load asks this: the overlay's array is read in place.
        over = self.over
        arr = over.array
        if n < len(arr):
            position: int = arr[n]
            if position:
                return position
        elif over.extra:
            position = over.extra.get(n, 0)
            if position:
                return position
        base = self.base
        if base is None:
            return 0
        try:
            return base.get(n)
        except IndexDamaged as error:
            self.rebuild(str(error))
            return self.over.get(n)

    def __contains__(self, n: int) -> bool:
        return self.get(n) != 0

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count != 0

    def set(self, n: int, position: int) -> int:
        """Record ``position`` for oid ``n``; return the old one.

        0 only ever restores the absence of an oid the mapped index lacks too.
        """
        old = self.get(n)
        self.over.set(n, position)
        self.count += (position != 0) - (old != 0)
        return old

    def set_many(self, entries: list[tuple[int, int]]) -> list[int]:
        """``set`` for each ``(n, position)`` in turn; the old positions."""
        base = self.base
        if base is not None and (base.extra or any(n < base.slots for n, _ in entries)):
            return [self.set(n, position) for n, position in entries]
        # The mapped index holds none of these oids: the overlay alone answers.
        over = self.over
        before = over.count
        olds = over.set_many(entries)
        self.count += over.count - before
        return olds

    def limit(self) -> int:
        top = self.over.limit()
        if self.base is not None:
            top = max(top, self.base.limit())
        return top

    def _chunk(self, lo: int, hi: int) -> array[int]:
        while True:
            base = self.base
            if base is None:
                arr = array("Q", bytes(8 * (hi - lo)))
                break
            try:
                arr = base.chunk(lo, hi)
                break
            except IndexDamaged as error:
                self.rebuild(str(error))
        over = self.over
        part = over.array[lo:hi]
        if any(part):
            for k, position in enumerate(part):
                if position:
                    arr[k] = position
        sparse = list(over.extra)
        if base is not None:
            sparse += base.extra
        for n in sparse:
            if lo <= n < hi:
                arr[n - lo] = self.get(n)
        return arr

    def _dense_limit(self) -> int:
        top = len(self.over.array)
        if self.base is not None:
            top = max(top, self.base.slots)
        return top

    def _sparse_beyond(self, top: int) -> list[int]:
        keys = set(self.over.extra)
        if self.base is not None:
            keys.update(self.base.extra)
        return sorted(n for n in keys if n >= top)

    def items(self) -> Iterator[tuple[int, int]]:
        """``(oid number, position)`` in ascending oid order (checks every block)."""
        if self.base is None:
            yield from self.over.items()
            return
        top = self._dense_limit()
        for lo in range(0, top, BLOCK):
            hi = min(top, lo + BLOCK)
            for k, position in enumerate(self._chunk(lo, hi)):
                if position:
                    yield lo + k, position
        if self.base is None:  # rebuilt on the way: the overlay holds everything
            yield from ((n, p) for n, p in self.over.items() if n >= top)
            return
        for n in self._sparse_beyond(top):
            position = self.get(n)
            if position:
                yield n, position

    def flatten(self) -> PositionIndex:
        """The whole index as one in-memory ``PositionIndex`` (checks every block)."""
        if self.base is None:
            return self.over
        flat = PositionIndex()
        top = self._dense_limit()
        arr = array("Q")
        for lo in range(0, top, BLOCK):
            arr.extend(self._chunk(lo, min(top, lo + BLOCK)))
        sparse = {n: self.get(n) for n in self._sparse_beyond(top)}
        if self.base is None:  # damage found on the way: the overlay is now everything
            return self.over
        flat.array = arr
        flat.extra = {n: p for n, p in sparse.items() if p}
        flat.count = self.count
        flat.top = len(arr)
        return flat

    def close(self) -> None:
        if self.base is not None:
            self.base.close()


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
    """Write the side index atomically (``F.index.<pid>.tmp``, then a rename).

    ``largest`` is the largest position in the index (a check when loading).
    """
    body, extra = index.to_bytes()
    slots = len(body) // 8
    step = 8 * BLOCK
    crc_table = b"".join(
        _CRC.pack(zlib.crc32(body[at : at + step])) for at in range(0, len(body), step)
    )
    header = _HEADER.pack(
        meta.covered_end,
        meta.last_start,
        meta.map_start,
        meta.map_width,
        meta.map_count,
        meta.file_size_seen,
        meta.head_crc & 0xFFFFFFFF,
        meta.tail_crc & 0xFFFFFFFF,
        slots,
        len(extra),
        index.count,
        largest,
        zlib.crc32(extra),
        BLOCK,
    )
    crcs_at, body_at, _extra_at, _size = _layout(slots, len(extra))
    head = INDEX_MAGIC + header + zlib.crc32(header).to_bytes(4, "little")
    assert len(head) == crcs_at
    padding = bytes(body_at - crcs_at - len(crc_table))
    replace_file(path, (head, crc_table, padding, body, extra), durable)


def load_index_file(path: str, low: int = 0) -> tuple[IndexMeta, MappedIndex, int, int] | None:
    """``(meta, mapped index, entries, largest position)`` from ``path``.

    None if it is missing, of another version or its header is not intact.
    Costs O(1) in the number of oids: the header is read, the array is mapped
    and checked block by block as it is used.  Positions must lie in
    ``(low, covered_end)``.
    """
    head_size = len(INDEX_MAGIC) + _HEADER.size + 4
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        head = os.pread(fd, head_size, 0)
        if len(head) != head_size or not head.startswith(INDEX_MAGIC):
            return None
        raw = head[len(INDEX_MAGIC) : len(INDEX_MAGIC) + _HEADER.size]
        if zlib.crc32(raw) != int.from_bytes(head[-4:], "little"):
            return None
        fields = _HEADER.unpack(raw)
        slots, extra_length, count, largest, extra_crc, block = fields[8:14]
        if block != BLOCK or extra_length % 16:
            return None
        crcs_at, body_at, extra_at, size = _layout(slots, extra_length)
        if os.fstat(fd).st_size != size:
            return None
        extra_bytes = pread_exact(fd, extra_length, extra_at)
        if len(extra_bytes) != extra_length or zlib.crc32(extra_bytes) != extra_crc:
            return None
        pairs = array("Q")
        pairs.frombytes(extra_bytes)
        if _BIG_ENDIAN_HOST:
            pairs.byteswap()
        extra = dict(zip(pairs[0::2], pairs[1::2], strict=True))
        meta = IndexMeta(*fields[:8])
        if any(not low < p < meta.covered_end for p in extra.values()):
            return None
        mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ) if slots else None
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    mapped = MappedIndex(mm, slots, crcs_at, body_at, extra, low, meta.covered_end)
    return meta, mapped, count, largest
