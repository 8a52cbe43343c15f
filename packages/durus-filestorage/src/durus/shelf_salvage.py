"""What can still be read of a damaged SHELF-1 file, and a new file to save it in.

``FileStorage`` refuses a file whose structure is broken (``DamagedFileError``):
cut short inside its initial transaction, a transaction length or an item head
overwritten, a damaged offset map.  Tools that save what is left (``durus
recover``, and ``durus verify`` saying what is lost) walk such a file with
``gen_readable_items``, which never raises for the file's content: it follows
the items one after another, skips transaction lengths and the offset map, and
where the bytes make no sense it searches forward for the next well-formed
item (an item names its oid twice: in its head and at the start of its record).

``write_salvaged_shelf`` writes the records saved into a new file, as a pack
writes one (every record in the initial transaction), with the oids of lost
objects kept out of the offset map's free list: surviving objects that still
refer to a lost object keep a dangling reference, and no new object is ever
given that oid.
"""

from __future__ import annotations

import errno
import mmap
import os
import re
import secrets
from array import array
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from durus.serialize import check_record
from durus.shelf_format import (
    FIRST_ITEM,
    INT8,
    ITEM_HEAD,
    ITEM_HEAD_SIZE,
    MAP_HEADER,
    MAP_HEADER_SIZE,
    MIN_ITEM_LENGTH,
    PREFIX,
    fsync_directory,
    fsync_file,
    gen_map_bytes,
    map_dimensions,
    pwrite_all,
)

__all__ = ["ReadableItem", "UnreadableBytes", "gen_readable_items", "write_salvaged_shelf"]

#: Two equal runs of 8 bytes: an item's name followed by its record's own oid.
_NAME_TWICE = re.compile(rb"(?s)(.{8})\1")
#: A slot value no position reaches: neither a record nor a link of the free list.
_BLANK = (1 << 64) - 1
#: The largest oid a new offset map is built for (its size is proportional).
_MAX_OID = (1 << 34) - 1
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class ReadableItem(NamedTuple):
    """An item whose framing is intact: ``read_item(fd, position, eof)`` reads it.

    Its head names ``oid`` and its length fits the file.  ``sound``: its head
    is well-formed too (the record names the same oid, its lengths agree);
    otherwise the record is damaged, or the name is, and another item may be
    the real one of ``oid``.  Even a sound record's pickles may be damaged.
    """

    oid: bytes
    #: The offset of the item's length field.
    position: int
    end: int
    sound: bool = True


class UnreadableBytes(NamedTuple):
    """Bytes ``[start, end)`` holding no item that can be read."""

    start: int
    end: int
    reason: str
    #: True for the last transaction cut short by the end of the file (a commit
    #: a crash interrupted): never part of the database, not damage.
    unfinished: bool = False
    #: The oid of the damaged item at ``start``, when its two copies agree.
    oid: bytes | None = None


def gen_readable_items(fd: int, eof: int | None = None) -> Iterator[ReadableItem | UnreadableBytes]:
    """Every item of the SHELF-1 file ``fd`` that can be read, and the bytes that cannot.

    Events come in file order; an oid may come several times (its versions: the
    last one is the current one).  The 8-byte prefix is not looked at (the
    caller decides whether the file is a SHELF-1 file at all).  The items of a
    last transaction cut short by the end of the file come as one
    ``UnreadableBytes(unfinished=True)``, as FileStorage leaves them out.
    """
    if eof is None:
        eof = os.fstat(fd).st_size
    if eof <= len(PREFIX):
        return
    # Mapped, not read: a damaged file is walked (and searched) byte by byte.
    with mmap.mmap(fd, eof, access=mmap.ACCESS_READ) as buffer:
        yield from _Walker(buffer, eof).walk()


class _Walker:
    def __init__(self, buffer: mmap.mmap, eof: int) -> None:
        self.buffer = buffer
        self.eof = eof
        # Where the initial transaction's length says the offset map is, if one is there.
        self.map_start = self.map_end = -1
        if eof >= FIRST_ITEM:
            start = FIRST_ITEM + INT8.unpack_from(buffer, len(PREFIX))[0]
            end = self.map_at(start)
            if end > 0:
                self.map_start, self.map_end = start, end

    def map_at(self, p: int) -> int:
        """The end of an offset map with a consistent header at ``p``; -1 none; -2 cut short."""
        if p + MAP_HEADER_SIZE > self.eof:
            return -1
        total, width, count = MAP_HEADER.unpack_from(self.buffer, p)
        if not 1 <= width <= 8 or total != 16 + width * count:
            return -1
        end = p + 8 + total
        return end if end <= self.eof else -2

    def limit(self, p: int) -> int:
        """Where an item at ``p`` must end: items before the offset map end by it."""
        return self.map_start if 0 <= p < self.map_start else self.eof

    def sound_item(self, p: int) -> int:
        """The end of a well-formed item at ``p`` (name twice, consistent lengths), or -1."""
        limit = self.limit(p)
        if p + ITEM_HEAD_SIZE > limit:
            return -1
        length, name, record_oid, data_length = ITEM_HEAD.unpack_from(self.buffer, p)
        end = p + 8 + length
        if length < MIN_ITEM_LENGTH or end > limit or name != record_oid:
            return -1
        refs = length - MIN_ITEM_LENGTH - data_length
        if refs < 0 or refs % 8:
            return -1
        return end

    def framed_item(self, p: int) -> int:
        """The end of an item at ``p`` whose length alone is plausible and leads on, or -1.

        Its record may be damaged (another oid, bad lengths): the reader says so
        for its oid, instead of losing it without a name.
        """
        limit = self.limit(p)
        if p + 16 > limit:
            return -1
        length = INT8.unpack_from(self.buffer, p)[0]
        end = p + 8 + length
        if length < MIN_ITEM_LENGTH or end > limit or not self.leads_on(end):
            return -1
        return end

    def transaction_at(self, p: int) -> bool:
        """Is ``p`` a transaction length (followed by an item, the end, another length)?"""
        if p + 8 > self.eof or p < self.map_start < p + 8:
            return False
        if p + 8 == self.eof or INT8.unpack_from(self.buffer, p)[0] == 0:
            return True
        return self.sound_item(p + 8) > 0

    def chain_to_end(self, p: int) -> bool:
        """Do well-formed items run from ``p`` to the end of the file, the last maybe cut?

        What a commit a crash cut short leaves (FileStorage's own scan accepts it
        as such, and leaves it out).
        """
        buffer, eof = self.buffer, self.eof
        while p < eof:
            if eof - p < ITEM_HEAD_SIZE:
                return True
            length, name, record_oid, data_length = ITEM_HEAD.unpack_from(buffer, p)
            refs = length - MIN_ITEM_LENGTH - data_length
            if length < MIN_ITEM_LENGTH or name != record_oid or refs < 0 or refs % 8:
                return False
            p += 8 + length
        return True

    def leads_on(self, p: int) -> bool:
        """Does well-formed structure start at ``p`` (or the file end there)?"""
        return (
            p == self.eof
            or p == self.map_start
            or self.sound_item(p) > 0
            or self.transaction_at(p)
        )

    def resync(self, start: int) -> int:
        """The first offset >= ``start`` where items can be read again (or the map starts)."""
        stop = self.map_start if self.map_start >= start else self.eof
        buffer = self.buffer
        search = start + 8
        while True:
            match = _NAME_TWICE.search(buffer, search)
            if match is None:
                return stop
            q = match.start() - 8
            if q >= stop:
                return stop
            end = self.sound_item(q)
            if end > 0 and self.leads_on(end):
                return q
            search = match.start() + 1

    def describe(self, p: int, q: int) -> tuple[str, bytes | None]:
        """Why the bytes ``[p, q)`` cannot be read, and the oid of the item there if known."""
        buffer, eof = self.buffer, self.eof
        oid = None
        if p + 24 <= eof and buffer[p + 8 : p + 16] == buffer[p + 16 : p + 24]:
            oid = bytes(buffer[p + 8 : p + 16])
        if p + 16 <= eof:
            length = INT8.unpack_from(buffer, p)[0]
            if q == eof and length >= MIN_ITEM_LENGTH and p + 8 + length > eof:
                return f"an item of {length + 8} bytes cut short by the end of the file", oid
        if q == eof and eof - p < 16:
            return "a fragment cut short by the end of the file", oid
        if oid is not None:
            return f"the item of oid {int.from_bytes(oid, 'big')} has a damaged head", oid
        return "bytes that are neither items, transaction lengths nor the offset map", oid

    def walk(self) -> Iterator[ReadableItem | UnreadableBytes]:
        buffer, eof = self.buffer, self.eof
        p = len(PREFIX)
        # Past the initial transaction, the events of each transaction wait for
        # the next one (or the end of the file): a last transaction cut short is
        # an unfinished commit, left out.
        in_tail = False
        last_start = -1
        last_length = 0
        pending: list[ReadableItem | UnreadableBytes] = []
        while p < eof:
            if in_tail and p == last_start + 8 + last_length and (
                eof - p < 8
                or (p + 8 + INT8.unpack_from(buffer, p)[0] > eof and self.chain_to_end(p + 8))
            ):
                # The last transaction, cut short by the end of the file.
                yield from pending
                yield UnreadableBytes(p, eof, f"the last transaction (at {p}) is cut short by "
                                      "the end of the file: a commit a crash interrupted",
                                      unfinished=True)
                return
            if p == self.map_start:
                p = last_start = self.map_end
                last_length = -8  # the map ends where a transaction may start
                self.map_start = -1
                in_tail = True
                continue
            # A transaction length first: no item looks like one (an item is
            # never 8 bytes, never of length 0, never followed by an item at +8).
            if p == len(PREFIX) or self.transaction_at(p):
                if p > len(PREFIX):
                    in_tail = True
                    yield from pending
                    pending.clear()
                    last_start, last_length = p, INT8.unpack_from(buffer, p)[0]
                p += 8
                continue
            end = self.sound_item(p)
            if end > 0 and not self.leads_on(end) and self.resync(p + 1) < end:
                end = -1  # its length is hit: items start again inside what it claims
            sound = end > 0
            if end < 0 and not in_tail and self.map_start < 0:
                # The initial transaction's length is damaged: is the map here?
                map_end = self.map_at(p)
                if map_end > 0:
                    p = last_start = map_end
                    last_length = -8
                    in_tail = True
                    continue
                if map_end == -2:
                    yield UnreadableBytes(p, eof, "an offset map cut short by the end of the file")
                    return
            if end < 0:
                end = self.framed_item(p)
            if end > 0:
                item = ReadableItem(bytes(buffer[p + 8 : p + 16]), p, end, sound)
                if in_tail:
                    pending.append(item)
                else:
                    yield item
                p = end
                continue
            q = self.resync(p + 1)
            reason, oid = self.describe(p, q)
            gap = UnreadableBytes(p, q, reason, oid=oid)
            if in_tail:
                pending.append(gap)
            else:
                yield gap
            p = q
        has_items = any(isinstance(event, ReadableItem) for event in pending)
        if last_start >= 0 and (
            last_start + 8 + last_length > eof or (last_length == 0 and has_items)
        ):
            yield UnreadableBytes(
                last_start,
                eof,
                f"the last transaction (at {last_start}) is cut short by the end of the file: "
                "a commit a crash interrupted",
                unfinished=True,
            )
            return
        yield from pending


def write_salvaged_shelf(
    path: str | os.PathLike[str],
    items: Iterable[tuple[bytes, bytes]],
    reserved: Iterable[int] = (),
    *,
    fsync: bool = True,
) -> int:
    """Create the database ``path`` (which must not exist) holding ``items``; their count.

    ``items`` are ``(oid, record)`` pairs, each oid once; they go into the
    initial transaction, as after a pack.  The oid numbers in ``reserved``
    (those of lost objects) get no record and stay out of the offset map's
    free list, so ``FileStorage`` (and Durus 4.3) never hands them out to new
    objects: a reference to one stays dangling until a pack, which frees the
    oids of records that are missing.  ``reserved`` is read after the last
    item, so a generator of items may still add to it.  The file appears
    complete or not at all; ``FileExistsError`` if ``path`` exists.
    """
    path = os.fspath(path)
    if os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, "the database file already exists", path)
    directory = os.path.dirname(path) or "."
    temporary = f"{path}.{os.getpid()}-{secrets.token_hex(4)}.new"
    fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o666)
    try:
        count = _write_items(fd, items, reserved)
        if fsync:
            fsync_file(fd)
        try:
            os.link(temporary, path)
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, "the database file already exists", path) from None
        except OSError:
            # No hard links here (some network/FAT file systems): rename instead.
            if os.path.lexists(path):
                raise FileExistsError(errno.EEXIST, "the database file already exists",
                                      path) from None
            os.rename(temporary, path)
    finally:
        os.close(fd)
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
    if fsync:
        fsync_directory(directory)
    return count


def _grow(positions: array, n: int) -> None:
    if n > _MAX_OID:
        raise ValueError(f"oid {n} is too large for an offset map (the SHELF format stores "
                         "one slot per oid up to the largest)")
    if n >= len(positions):
        grow = max(n + 1, len(positions) + (len(positions) >> 1), 1024)
        positions.frombytes(bytes(8 * (grow - len(positions))))


def _write_items(fd: int, items: Iterable[tuple[bytes, bytes]], reserved: Iterable[int]) -> int:
    buffer = bytearray(PREFIX + INT8.pack(0))
    flushed = 0
    position = FIRST_ITEM
    positions = array("Q")
    highest = -1
    count = 0
    for name, record in items:
        check_record(name, record)
        n = int.from_bytes(name, "big")
        _grow(positions, n)
        if positions[n]:
            raise ValueError(f"oid {n} is given twice")
        positions[n] = position
        highest = max(highest, n)
        buffer += INT8.pack(8 + len(record))
        buffer += name
        buffer += record
        position += 16 + len(record)
        count += 1
        if len(buffer) >= 1 << 20:
            pwrite_all(fd, bytes(buffer), flushed)
            flushed += len(buffer)
            buffer.clear()
    pwrite_all(fd, bytes(buffer), flushed)
    for n in reserved:
        _grow(positions, n)
        if not positions[n]:
            positions[n] = _BLANK
            highest = max(highest, n)
    map_start = position
    pwrite_all(fd, INT8.pack(map_start - FIRST_ITEM), len(PREFIX))
    width, slots = map_dimensions(map_start, highest if highest >= 0 else None)
    offset = map_start
    for piece in gen_map_bytes(map_start, positions, slots, width):
        pwrite_all(fd, piece, offset)
        offset += len(piece)
    return count
