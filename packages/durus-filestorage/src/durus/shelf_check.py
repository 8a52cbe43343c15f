"""Read-only checks of SHELF-1 and legacy DFS20 files: the public API the tools use.

``durus info``, ``verify``, ``census``, ``convert`` and ``recover`` scan files
with ``scan_file``: it opens the file for reading only and takes no lock, so
it works on a file a running server is writing (it sees the file as it was
when the scan began).  A scan never raises on damage: every problem is a
``Finding`` with the offset where it was found, and the rest of the file is
still used when it can be.  A damaged SHELF-1 file is reported once, at its
first damage, and then indexed with ``durus.shelf_salvage`` (every item still
readable, past the damage), so that the tools count and check what is left
instead of an empty index; ``write_salvaged_shelf`` writes those items into a
new file.  The results are ``durus.storage_check.ScanResult``s.
"""

from __future__ import annotations

import io
import mmap
import os
import pickle
import zlib
from dataclasses import dataclass
from typing import Any

from durus.file_storage2 import (
    HEADER_SIZE,
    dfs20_index_end,
    read_dfs20_header,
    read_dfs20_record,
    scan_dfs20_transactions,
)
from durus.shelf_errors import DamagedFileError, FileFormatError
from durus.shelf_format import (
    DFS20_MAGIC,
    EMPTY_SHELF,
    FIRST_ITEM,
    INT8,
    MAP_HEADER_SIZE,
    PREFIX,
    SQLITE_MAGIC,
    OffsetMapView,
    ScanProblem,
    pread_exact,
    read_item,
    scan_transactions,
    walk_transactions,
)
from durus.shelf_salvage import (
    ReadableItem,
    gen_readable_items,
    write_salvaged_shelf,
)
from durus.storage_check import Finding, ScanResult, StorageScan, scan_storage
from durus.utils import int8_to_str

__all__ = [
    "Finding",
    "ScanResult",
    "StorageScan",
    "last_transactions",
    "scan_file",
    "scan_storage",
    "write_salvaged_shelf",
]

#: Bytes of framing around each record: SHELF-1 ``int8 R`` + name, DFS20 ``int4 n``.
_FRAMING = {"SHELF-1": 16, "DFS20": 4}


@dataclass
class _FileScan(ScanResult):
    """A scan of a file: the descriptor its reader uses."""

    _fd: int = -1

    def read_shelf_item(self, position: int, oid: bytes) -> bytes:
        name, record = read_item(self._fd, position, self.size)
        if name != oid:
            raise ValueError("the item names another oid")
        return record

    def read_dfs20_item(self, position: int, oid: bytes) -> bytes:
        return read_dfs20_record(self._fd, position)

    def close_file(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def scan_file(path: str) -> ScanResult:
    """Scan a SHELF-1 or DFS20 file, without a lock and without writing.

    Other formats give a result that holds only its ``format`` ("SQLite",
    "empty" or "unknown"; an SQLite file is ``durus.sqlite_check``'s).  Close
    the result (or use it as a context manager) to release the file.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        stat = os.fstat(fd)
        head = pread_exact(fd, 20, 0)
    except BaseException:
        os.close(fd)
        raise
    if head.startswith(PREFIX) or _damaged_prefix(head):
        kind = "SHELF-1"
    elif head.startswith(DFS20_MAGIC):
        kind = "DFS20"
    elif head.startswith(SQLITE_MAGIC):
        kind = "SQLite"
    elif not head:
        kind = "empty"
    else:
        kind = "unknown"
    result = _FileScan(path=path, format=kind, size=stat.st_size, mtime=stat.st_mtime,
                       framing=_FRAMING.get(kind, 0), _fd=fd)
    result.closer = result.close_file
    if kind == "SHELF-1":
        result.reader = result.read_shelf_item
        _scan_shelf(result)
    elif kind == "DFS20":
        result.reader = result.read_dfs20_item
        _scan_dfs20(result)
    else:
        result.close()
    return result


def _damaged_prefix(head: bytes) -> bool:
    """Are these the first bytes of a SHELF-1 file whose prefix has one or two bad bytes?

    (Or the file is cut short inside it.)  Another format never comes that
    close to ``SHELF-1\\n``; the scan then reports the damage and reads what it can.
    """
    if len(head) < len(PREFIX):
        return bool(head) and PREFIX.startswith(head)  # cut short inside the prefix
    if head.startswith(PREFIX):
        return False
    return sum(a != b for a, b in zip(head[:len(PREFIX)], PREFIX, strict=True)) <= 2


# -- SHELF-1 ----------------------------------------------------------------


def _incomplete_tail(result: _FileScan, problem: ScanProblem) -> None:
    result.warning(
        "incomplete-tail",
        f"the last transaction is incomplete ({problem.detail}: a commit cut short by a "
        "crash); it is not part of the database",
        problem.offset,
    )


def last_transactions(path: str, count: int) -> list[tuple[int, list[int]]]:
    """The last ``count`` transactions of a SHELF-1 file, newest first: their number
    (1 is the oldest kept) and the oid numbers each wrote.  Read-only; a damaged
    or foreign file gives what could be walked (maybe nothing)."""
    from collections import deque

    found: deque[tuple[int, list[int]]] = deque(maxlen=max(0, count))
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        size = os.fstat(fd).st_size
        if size < len(EMPTY_SHELF) or pread_exact(fd, len(PREFIX), 0) != PREFIX:
            return []
        initial_length = INT8.unpack(pread_exact(fd, 8, len(PREFIX)))[0]
        start = FIRST_ITEM + initial_length
        if start + MAP_HEADER_SIZE > size:
            return []
        numbered = [0]

        def add(_start: int, _end: int, flat: list[int]) -> None:
            numbered[0] += 1
            found.append((numbered[0], flat[0::2]))

        if initial_length:  # the objects a pack wrote, counted as scan_file counts them
            walk_transactions(fd, len(PREFIX), start, add)
        with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as buffer:
            try:
                end = OffsetMapView(buffer, start).end
            except ValueError:
                return list(reversed(found))
        walk_transactions(fd, end, size, add)
    except OSError:
        pass
    finally:
        os.close(fd)
    return list(reversed(found))


def _scan_shelf(result: _FileScan) -> None:
    """Index the file; on damage, report it once and index what can still be read."""
    failure = _check_shelf(result)
    if failure is None:
        return
    message, offset = failure
    result.error("structure", message, offset)
    _salvage_shelf(result)


def _check_shelf(result: _FileScan) -> tuple[str, int | None] | None:
    """Index a SHELF-1 file; ``(message, offset)`` of the first damage found, or None."""
    fd, size, index = result._fd, result.size, result.index
    if size < len(EMPTY_SHELF):
        return f"the file is {size} bytes, shorter than an empty shelf ({len(EMPTY_SHELF)})", 0
    head = pread_exact(fd, len(PREFIX), 0)
    if head != PREFIX:
        return f"the file starts with {head!r}, not SHELF-1's prefix {PREFIX!r}", 0
    initial_length = INT8.unpack(pread_exact(fd, 8, len(PREFIX)))[0]
    start = FIRST_ITEM + initial_length
    if start > size:
        return (f"the file ends inside its initial transaction (the objects written by a "
                f"pack): it claims {initial_length} bytes, the file ends after "
                f"{size - FIRST_ITEM}; the offset map and every later transaction are "
                "missing"), len(PREFIX)
    if start + MAP_HEADER_SIZE > size:
        return (f"the file ends inside the header of its offset map (at {start}); every "
                "later transaction is missing"), start
    initial: dict[bytes, int] = {}

    def add_initial(_start: int, _end: int, flat: list[int]) -> None:
        for i in range(0, len(flat), 2):
            initial[int8_to_str(flat[i])] = flat[i + 1]

    _end, problem = walk_transactions(fd, len(PREFIX), start, add_initial)
    if problem is not None:
        return f"initial transaction: {problem.detail}", len(PREFIX)
    # The offset map (spec 3.3).
    with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as buffer:
        try:
            offset_map = OffsetMapView(buffer, start)
        except ValueError as error:
            return str(error), start
        if offset_map.end > size:
            return (f"the file ends inside its offset map (it ends at {offset_map.end}, the "
                    f"file has {size} bytes); every later transaction is missing"), start
        wrong = _check_offset_map(offset_map, initial)
        if wrong is not None:
            return wrong, start
    result.items += len(initial)
    if initial_length:
        result.transactions += 1
        result.last_transaction_offset = len(PREFIX)
    result.overhead = 16 + offset_map.end - start
    index.update(initial)

    # The transactions appended after the map (spec 3.5).
    def add(transaction_start: int, _end: int, flat: list[int]) -> None:
        for i in range(0, len(flat), 2):
            index[int8_to_str(flat[i])] = flat[i + 1]
        result.items += len(flat) // 2
        result.transactions += 1
        result.overhead += 8
        result.last_transaction_offset = transaction_start

    _end, problem = walk_transactions(fd, offset_map.end, size, add)
    if problem is None or problem.kind == "incomplete":
        # FileStorage opens a file after its own scan, which checks every item head
        # (``walk_transactions`` reads only the framing): what it refuses is damage.
        _end, strict = scan_transactions(fd, offset_map.end, size, _ignore)
        if strict is not None and strict.kind == "malformed":
            return (f"malformed transaction: {strict.detail}; FileStorage refuses to open "
                    "the file"), strict.offset
        if problem is not None:
            _incomplete_tail(result, problem)
        return None
    return (f"malformed transaction: {problem.detail}; the {size - problem.offset} bytes "
            "from here on cannot be read as transactions"), problem.offset


def _ignore(_start: int, _flat: list[int]) -> None:
    pass


def _check_offset_map(offset_map: OffsetMapView, initial: dict[bytes, int]) -> str | None:
    """What is wrong with the offset map (spec 3.3), in one message; None if nothing."""
    start, count = offset_map.start, offset_map.count
    if count == 0:
        if initial:
            return "the initial transaction has items but the offset map is empty"
        return None
    positions = set(initial.values())
    wrong = [int.from_bytes(oid, "big") for oid, position in initial.items()
             if offset_map.get(int.from_bytes(oid, "big")) != position]
    if wrong:
        return (f"the offset map does not point at the items of {len(wrong)} oid"
                f"{'s' if len(wrong) != 1 else ''} of the initial transaction (the first: "
                f"oid {min(wrong)})")
    blank = (1 << (8 * offset_map.width)) - 1
    holes = set()
    stray = []
    for number in range(count):
        value = offset_map.slot(number)
        if value < start:
            if value not in positions:
                stray.append((number, value))
        elif value != blank:
            holes.add(number)
    if stray:
        number, value = stray[0]
        return (f"{len(stray)} offset map slot{'s' if len(stray) != 1 else ''} point where "
                f"no item of the initial transaction starts (the first: slot {number}, at "
                f"{value})")
    # The hole list (spec 3.3.2): from slot N-1 it visits every hole once.
    if count - 1 not in holes:
        return ("the last offset map slot is not a hole: Durus 4.3 cannot allocate new oids "
                "in this file")
    walked = list(offset_map.gen_holes())
    if (not walked or walked[-1] != count - 1 or len(set(walked)) != len(walked)
            or not holes.issuperset(walked)):
        return "the offset map's hole list is broken: Durus 4.3 would allocate wrong oids"
    if len(walked) != len(holes):
        return "the offset map's hole list misses holes"
    return None


def _salvage_shelf(result: _FileScan) -> None:
    """Index the items of a damaged file that can still be read (``durus.shelf_salvage``)."""
    result.index.clear()
    result.items = result.transactions = result.overhead = 0
    result.last_transaction_offset = None
    index = result.index
    intact: set[bytes] = set()
    for event in gen_readable_items(result._fd, result.size):
        if isinstance(event, ReadableItem):
            result.items += 1
            if event.sound:
                index[event.oid] = event.position
                intact.add(event.oid)
                result.passed_over.pop(event.oid, None)
            elif event.oid in intact:
                result.passed_over[event.oid] = event.position
            else:
                index[event.oid] = event.position
        elif event.unfinished:
            result.warning("incomplete-tail", f"{event.reason}; it is not part of the "
                           "database", event.start)
        else:
            result.unreadable.append(event)


# -- DFS20 (legacy FileStorage2) --------------------------------------------


class _IndexUnpickler(pickle.Unpickler):
    """Unpickles the DFS20 index (a dict of oids to offsets) without importing anything."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"the DFS20 index refers to {module}.{name}")


def _walk_dfs20(result: _FileScan, start: int, stop: int, *, tail: bool) -> None:
    """Add the items of the transactions in ``[start, stop)`` to the result."""

    def add(transaction_start: int, flat: list[int]) -> None:
        for i in range(0, len(flat), 2):
            result.index[int8_to_str(flat[i])] = flat[i + 1]
        result.items += len(flat) // 2
        result.transactions += 1
        result.overhead += 4
        result.last_transaction_offset = transaction_start

    _end, problem = scan_dfs20_transactions(result._fd, start, stop, add)
    if problem is None:
        return
    if problem.kind == "incomplete" and tail:
        result.warning("incomplete-tail", "the last transaction is incomplete (a commit cut "
                       "short by a crash); it is not part of the database", problem.offset)
    else:
        result.error("structure", f"malformed transaction: {problem.detail}", problem.offset)


def _scan_dfs20(result: _FileScan) -> None:
    fd, size, path = result._fd, result.size, result.path
    try:
        index_offset = read_dfs20_header(fd, path)
    except DamagedFileError as error:
        result.error("structure", str(error).removeprefix(f"{path!r}: "), error.offset)
        return
    except FileFormatError:
        result.error("structure", "the DFS20 header is damaged", 0)
        return
    _walk_dfs20(result, HEADER_SIZE, index_offset, tail=False)
    try:
        index_end = dfs20_index_end(fd, path, index_offset)
    except DamagedFileError as error:
        result.error("structure", str(error).removeprefix(f"{path!r}: "), error.offset)
        return
    result.overhead += HEADER_SIZE + index_end - index_offset  # header and index
    try:
        block = pread_exact(fd, index_end - index_offset - 8, index_offset + 8)
        table = _IndexUnpickler(io.BytesIO(zlib.decompress(block)), encoding="latin-1").load()
        if not isinstance(table, dict):
            raise ValueError("the index is not a dict")
    except Exception as error:
        result.error("structure", f"the index cannot be read: {error}", index_offset)
        return
    for key, position in table.items():
        oid = key.encode("latin-1") if isinstance(key, str) else bytes(key)
        if len(oid) != 8 or not isinstance(position, int) or not HEADER_SIZE <= position < size:
            result.error("structure", f"the index holds a bad entry {key!r}: {position!r}",
                         index_offset)
            continue
        if result.index.get(oid, position) != position:
            result.error("structure", f"the index disagrees with the file about oid "
                         f"{int.from_bytes(oid, 'big')}", index_offset)
        result.index[oid] = position
    _walk_dfs20(result, index_end, size, tail=True)
