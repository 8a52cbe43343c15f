"""The SHELF-1 file format: constants, the offset map, transaction scanning.

Layout (all integers big-endian ``int8``)::

    b"SHELF-1\\n"  [initial transaction]  [offset map]  [transaction]*

A transaction is ``int8 L`` followed by L bytes of items; an item is
``int8 R`` followed by the 8-byte oid and the record (which starts with the
same oid again).  Only a pack writes items into the initial transaction; the
offset map after it has one slot per oid: the position of its item, or a link
in the circular list of holes that Durus walks to reuse oids.

This module is pure format: reading and writing bytes, no policy.  The file
storage decides what to do with an incomplete or malformed tail.
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from collections.abc import Callable, Iterator
from typing import NamedTuple

__all__ = [
    "DFS20_MAGIC",
    "EMPTY_SHELF",
    "PREFIX",
    "SQLITE_MAGIC",
    "OffsetMapView",
    "ScanProblem",
    "fsync_directory",
    "fsync_file",
    "gen_map_bytes",
    "map_dimensions",
    "pread_exact",
    "pwrite_all",
    "read_item",
    "scan_transactions",
    "significant_bytes",
    "walk_transactions",
]

PREFIX = b"SHELF-1\n"
DFS20_MAGIC = b"DFS20"
SQLITE_MAGIC = b"SQLite format "

INT8 = struct.Struct(">Q")
#: The head of an item: R, name, the record's own oid, the record's data length.
ITEM_HEAD = struct.Struct(">QQQI")
ITEM_HEAD_SIZE = ITEM_HEAD.size  # 28
#: The smallest legal R: the name (8) + the record's oid (8) and length (4).
MIN_ITEM_LENGTH = 20
#: The framing of an item: R and the name (what ``walk_transactions`` reads).
ITEM_FRAME = struct.Struct(">QQ")
MAP_HEADER = struct.Struct(">QQQ")
MAP_HEADER_SIZE = 24
#: Where the initial transaction's items start.
FIRST_ITEM = len(PREFIX) + 8

_SCAN_CHUNK = 1 << 20


def significant_bytes(n: int) -> int:
    """How many bytes the big-endian encoding of ``n`` needs (at least 1)."""
    return max(1, (n.bit_length() + 7) // 8)


def map_dimensions(map_start: int, max_oid: int | None) -> tuple[int, int]:
    """``(W, N)``: bytes per slot and slot count Durus chooses for a map at ``map_start``.

    ``max_oid`` is the largest oid among the initial transaction's items, or
    None when it has none (every new file).  N = M + 2 so that the top slot is
    always a hole; W = significant bytes of S + M + 3 (spec 3.3.1).
    """
    m = -2 if max_oid is None else max_oid
    return significant_bytes(map_start + m + 3), m + 2


def _empty_shelf() -> bytes:
    width, count = map_dimensions(FIRST_ITEM, None)
    return PREFIX + INT8.pack(0) + MAP_HEADER.pack(16 + width * count, width, count)


#: A new, empty database: 40 bytes (spec 3.3.3).
EMPTY_SHELF = _empty_shelf()


def gen_map_bytes(
    map_start: int, positions: array, count: int, width: int, chunk: int = 1 << 16
) -> Iterator[bytes]:
    """The bytes of an offset map, in pieces: header first, then the slots.

    ``positions[i]`` is the position of oid i's item (0: none).  Every slot
    without a position is stitched into Durus's circular hole list: the lowest
    hole links to N-1, every other hole to the next lower one (spec 3.3.2).
    """
    yield MAP_HEADER.pack(16 + width * count, width, count)
    previous = count - 1
    have = len(positions)
    swap = sys.byteorder == "little"
    for first in range(0, count, chunk):
        last = min(first + chunk, count)
        if first < have:
            values = positions[first : min(last, have)]
            if len(values) < last - first:
                values.frombytes(bytes(8 * (last - first - len(values))))
        else:
            values = array("Q", bytes(8 * (last - first)))
        i = 0
        while True:
            try:
                i = values.index(0, i)
            except ValueError:
                break
            values[i] = previous + map_start
            previous = first + i
            i += 1
        if swap:
            values.byteswap()
        raw = values.tobytes()
        if width == 8:
            yield raw
        else:
            out = bytearray(width * (last - first))
            skip = 8 - width
            for k in range(width):
                out[k::width] = raw[skip + k :: 8]
            yield bytes(out)


class OffsetMapView:
    """Read access to an offset map lying in ``buffer`` (usually an mmap).

    Mirrors the read side of Durus's ``OffsetMap``: ``get_start``, ``get``,
    ``__getitem__``, ``__iter__``, ``iteritems``, ``get_array_size``,
    ``gen_holes``.
    """

    def __init__(self, buffer: object, start: int) -> None:
        self.buffer = buffer
        self.start = start
        total, self.width, self.count = MAP_HEADER.unpack_from(buffer, start)  # type: ignore[arg-type]
        if not 1 <= self.width <= 8 or total != 16 + self.width * self.count:
            raise ValueError(
                f"offset map header at {start} is inconsistent: B={total} W={self.width} "
                f"N={self.count}"
            )
        self.slots_start = start + MAP_HEADER_SIZE
        self.end = self.slots_start + self.width * self.count

    def slot(self, j: int) -> int:
        """The raw value of slot ``j`` (a position if < start, else a hole link)."""
        a = self.slots_start + j * self.width
        return int.from_bytes(self.buffer[a : a + self.width], "big")  # type: ignore[index]

    def get_start(self) -> int:
        return self.start

    def get_array_size(self) -> int:
        return self.count

    def get(self, j: int, default: int | None = None) -> int | None:
        if 0 <= j < self.count:
            value = self.slot(j)
            if value < self.start:
                return value
        return default

    def __getitem__(self, j: int) -> int:
        value = self.get(j)
        if value is None:
            raise IndexError(j)
        return value

    def iteritems(self) -> Iterator[tuple[int, int]]:
        """``(oid number, position)`` of every slot holding a position."""
        start, width, base = self.start, self.width, self.slots_start
        step = 1 << 16
        for first in range(0, self.count, step):
            last = min(first + step, self.count)
            raw = self.buffer[base + first * width : base + last * width]  # type: ignore[index]
            for k in range(last - first):
                value = int.from_bytes(raw[k * width : (k + 1) * width], "big")
                if value < start:
                    yield first + k, value

    items = iteritems

    def __iter__(self) -> Iterator[int]:
        for j, _position in self.iteritems():
            yield j

    def gen_holes(self) -> Iterator[int]:
        """The free oids of the map in Durus's order: holes below N-1 descending, then N-1.

        A map that is not stitched as Durus stitches it ends the walk early
        instead of looping or reading garbage.
        """
        count, start = self.count, self.start
        if count <= 0:
            return
        j = count - 1
        for _step in range(count):
            value = self.slot(j)
            k = value - start
            if value < start or k >= count:
                return
            yield k
            if k == count - 1:
                return
            j = k


class ScanProblem(NamedTuple):
    """Why a tail scan stopped before the end of the file."""

    #: "incomplete": the last transaction was cut short (a crash while
    #: appending), everything before ``offset`` is intact;
    #: "malformed": bytes that no writer produces, at ``offset``.
    kind: str
    #: Where the damaged transaction starts: cutting here removes it.
    offset: int
    detail: str


class _Window:
    """A sliding read buffer over a file descriptor, for scanning."""

    __slots__ = ("data", "fd", "start")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.data = b""
        self.start = 0

    def fill(self, position: int, need: int, eof: int) -> int:
        """Make ``[position, position+need)`` available; return its offset in data."""
        offset = position - self.start
        if offset >= 0 and offset + need <= len(self.data):
            return offset
        size = min(max(need, _SCAN_CHUNK), eof - position)
        self.data = pread_exact(self.fd, size, position)
        self.start = position
        return 0


def _check_item(
    window: _Window, position: int, limit: int, eof: int
) -> tuple[str | None, int, int]:
    """``(error or None, oid number, next position)`` of the item at ``position``.

    ``limit`` is where the item must end at the latest.  A head cut by the end
    of the file is not an error: the next position is then past ``eof``.
    """
    if eof - position < ITEM_HEAD_SIZE:
        if position + ITEM_HEAD_SIZE > limit:
            return f"an item head at {position} overruns its transaction", 0, 0
        return None, -1, eof + 1
    offset = window.fill(position, ITEM_HEAD_SIZE, eof)
    length, name, record_oid, data_length = ITEM_HEAD.unpack_from(window.data, offset)
    after = position + 8 + length
    if length < MIN_ITEM_LENGTH:
        return f"item at {position} has length {length}", 0, 0
    if name != record_oid:
        return f"item at {position} is named {name} but holds a record of oid {record_oid}", 0, 0
    refs_length = length - MIN_ITEM_LENGTH - data_length
    if refs_length < 0 or refs_length % 8:
        return f"item at {position} has a record with inconsistent lengths", 0, 0
    if after > limit:
        return f"item at {position} overruns its transaction (ends at {after} > {limit})", 0, 0
    return None, name, after


def _is_bare_item_chain(window: _Window, position: int, eof: int) -> bool:
    """Do the bytes from ``position`` to ``eof`` parse as items, the last maybe cut?

    This is what Durus 4.3 leaves when it dies while appending: its length
    placeholder (an empty transaction) followed by the items it managed to write.
    """
    limit = 1 << 64
    while position < eof:
        error, _name, position = _check_item(window, position, limit, eof)
        if error is not None:
            return False
    return True


def scan_transactions(
    fd: int,
    start: int,
    eof: int,
    on_transaction: Callable[[int, list[int]], None],
    consume_trailing_empty: bool = True,
) -> tuple[int, ScanProblem | None]:
    """Scan the transactions in ``[start, eof)`` and validate every item head.

    For each complete transaction ``on_transaction(transaction_start, flat)``
    is called, ``flat`` alternating oid numbers and item positions.  Returns
    ``(end, problem)``: ``end`` is the end of the last complete transaction
    consumed, ``problem`` None when the scan reached ``eof`` cleanly.

    A reader passes ``consume_trailing_empty=False``: an empty transaction at
    the very end may be Durus 4.3's length placeholder of a commit still being
    written, so the scan must resume before it.
    """
    window = _Window(fd)
    position = start
    end = start
    empty_run: int | None = None
    last_empty = -1
    while True:
        if position == eof:
            if empty_run is not None and consume_trailing_empty:
                end = eof
            return end, None
        problem = None
        flat: list[int] = []
        transaction_end = 0
        if eof - position < 8:
            problem = ScanProblem(
                "incomplete", position, f"{eof - position} bytes of a transaction length"
            )
        else:
            offset = window.fill(position, 8, eof)
            length = INT8.unpack_from(window.data, offset)[0]
            transaction_end = position + 8 + length
            if length == 0:
                if empty_run is None:
                    empty_run = position
                last_empty = position
                position += 8
                continue
            problem = _scan_items(window, position, transaction_end, eof, flat)
        if problem is not None:
            if last_empty == position - 8 and _is_bare_item_chain(window, position, eof):
                problem = ScanProblem(
                    "incomplete",
                    last_empty,
                    f"an unfinished Durus 4.3 commit (length placeholder at {last_empty})",
                )
            elif problem.kind == "malformed" and empty_run is not None and consume_trailing_empty:
                end = position
            return end, problem
        on_transaction(position, flat)
        empty_run = None
        position = end = transaction_end


def _scan_items(
    window: _Window, start: int, transaction_end: int, eof: int, flat: list[int]
) -> ScanProblem | None:
    """Check the items of the transaction at ``start``; fill ``flat`` with (oid, position)."""
    limit = min(transaction_end, eof)
    item = start + 8
    while item < limit:
        error, name, after = _check_item(window, item, transaction_end, eof)
        if error is not None:
            return ScanProblem("malformed", start, error)
        if name >= 0:
            flat.append(name)
            flat.append(item)
        item = after
    if transaction_end > eof:
        cut = "inside an item" if item > eof else "between items"
        return ScanProblem(
            "incomplete",
            start,
            f"transaction at {start} claims {transaction_end - start - 8} bytes, the file "
            f"ends {transaction_end - eof} bytes short ({cut})",
        )
    if item != transaction_end:
        return ScanProblem(
            "malformed",
            start,
            f"items end at {item}, the transaction at {start} ends at {transaction_end}",
        )
    return None


def walk_transactions(
    fd: int,
    start: int,
    eof: int,
    on_transaction: Callable[[int, int, list[int]], None],
) -> tuple[int, ScanProblem | None]:
    """Walk the framing of the transactions in ``[start, eof)``, for inspection tools.

    The lenient, read-only counterpart of ``scan_transactions``: only the
    lengths and names of the items are read, so an item whose record is damaged
    is still reported (its caller reads and checks the record), and an empty
    transaction is reported too.  For each complete transaction
    ``on_transaction(transaction_start, transaction_end, flat)`` is called,
    ``flat`` alternating oid numbers and item positions.

    Returns ``(end, problem)``: ``end`` is the end of the last transaction
    reported, ``problem`` None when the walk reached ``eof`` cleanly, else a
    ``ScanProblem``: "incomplete" when the last transaction is cut by ``eof``
    (including Durus 4.3's length placeholder followed by the items of a
    commit it did not finish: that placeholder is then not reported), or
    "malformed" at the start of the first transaction whose items do not
    tile it.  Nothing is ever raised for the file's content.
    """
    window = _Window(fd)
    position = start
    held: int | None = None  # a trailing empty transaction: maybe a 4.3 placeholder
    problem: ScanProblem | None = None
    while position < eof:
        if eof - position < 8:
            problem = ScanProblem(
                "incomplete", position, f"{eof - position} of the 8 bytes of its length"
            )
            break
        offset = window.fill(position, 8, eof)
        length = INT8.unpack_from(window.data, offset)[0]
        end = position + 8 + length
        if end > eof:
            problem = ScanProblem("incomplete", position, f"{eof - position} of {8 + length} bytes")
            break
        flat: list[int] = []
        error = _walk_items(window, position + 8, end, eof, flat)
        if error is not None:
            problem = ScanProblem("malformed", position, error)
            break
        if held is not None:
            on_transaction(held, held + 8, [])
            held = None
        if length == 0:
            held = position
        else:
            on_transaction(position, end, flat)
        position = end
    if held is not None:
        if (
            problem is not None
            and held == position - 8
            and _is_bare_item_chain(window, position, eof)
        ):
            return held, ScanProblem(
                "incomplete",
                held,
                f"the length placeholder of an unfinished Durus 4.3 commit and "
                f"{eof - position} bytes of its items",
            )
        on_transaction(held, held + 8, [])
    return position, problem


def _walk_items(
    window: _Window, item: int, transaction_end: int, eof: int, flat: list[int]
) -> str | None:
    """Check that items tile ``[item, transaction_end)``; fill ``flat``; the error or None."""
    while item < transaction_end:
        if transaction_end - item < ITEM_FRAME.size:
            return f"an item head at {item} overruns its transaction (ends at {transaction_end})"
        offset = window.fill(item, ITEM_FRAME.size, eof)
        length, name = ITEM_FRAME.unpack_from(window.data, offset)
        if length < MIN_ITEM_LENGTH:
            return f"item at {item} claims an impossible length {length}"
        after = item + 8 + length
        if after > transaction_end:
            return (
                f"item at {item} overruns its transaction (ends at {after} > {transaction_end})"
            )
        flat.append(name)
        flat.append(item)
        item = after
    return None


def read_item(fd: int, position: int, eof: int) -> tuple[bytes, bytes]:
    """``(name, record)`` of the item at ``position`` of a file of ``eof`` bytes.

    ``ValueError`` if the item's length is impossible or runs past ``eof``.
    The record itself is not checked.
    """
    head = pread_exact(fd, 16, position)
    if len(head) < 16:
        raise ValueError(f"the item at {position} is cut short by the end of the file")
    length, _name = ITEM_FRAME.unpack(head)
    if length < MIN_ITEM_LENGTH:
        raise ValueError(f"the item at {position} claims an impossible length {length}")
    if position + 8 + length > eof:
        raise ValueError(f"item length {length} runs past the end of the file")
    body = pread_exact(fd, length, position + 8)
    if len(body) != length:
        raise ValueError(f"the item at {position} is cut short by the end of the file")
    return body[:8], body[8:]


def pread_exact(fd: int, size: int, offset: int) -> bytes:
    """Up to ``size`` bytes at ``offset`` (fewer only at the end of the file)."""
    data = os.pread(fd, size, offset)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (short writes are continued)."""
    view = memoryview(data)
    done = 0
    total = len(view)
    while done < total:
        written = os.pwrite(fd, view[done:], offset + done)
        if written <= 0:  # pragma: no cover - pwrite raises instead
            raise OSError(28, "short write")
        done += written


if sys.platform == "darwin":  # pragma: no cover - macOS needs F_FULLFSYNC for durability
    import fcntl

    def fsync_file(fd: int) -> None:
        """Push the file's data to stable storage."""
        try:
            fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
        except OSError:
            os.fsync(fd)

else:

    def fsync_file(fd: int) -> None:
        """Push the file's data (and its size) to stable storage."""
        (getattr(os, "fdatasync", None) or os.fsync)(fd)


def fsync_directory(path: str) -> None:
    """Make a new name or a rename in directory ``path`` durable (best effort)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(path or ".", flags)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse
        pass
    finally:
        os.close(fd)
