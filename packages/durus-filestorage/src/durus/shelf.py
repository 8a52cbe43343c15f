"""A SHELF-1 file: opening, crash recovery, reading, appending transactions.

``Shelf`` is the file layer under ``durus.file_storage.FileStorage`` (Durus
4.3 had a class of the same name and purpose; the read API keeps its method
names).  It owns the file descriptor and the writer lock, maps the immutable
head of the file (initial transaction + offset map) into memory, keeps the
positions of later items in a compact array, and appends commits with one
``pwrite`` and, by default, one ``fdatasync``.

Crash recovery happens when a writer opens the file: a last transaction that
was cut short is copied into ``<file>.cut-<offset>`` and the file is truncated
to the end of the last complete transaction.  Anything else that is not
well-formed is reported (``DamagedFileError``) instead of silently dropped,
unless ``repair=True`` asks for Durus's truncation.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import secrets
import tempfile
import threading
from array import array
from collections.abc import Iterable, Iterator
from typing import Any

from durus.file_lock import lock_file, unlock_file
from durus.shelf_errors import (
    DamagedFileError,
    DiskWriteError,
    FileFormatError,
    FileStorageError,
    LegacyFormatError,
    StorageClosedError,
)
from durus.shelf_format import (
    DFS20_MAGIC,
    EMPTY_SHELF,
    FIRST_ITEM,
    INT8,
    MAP_HEADER,
    MAP_HEADER_SIZE,
    PREFIX,
    SQLITE_MAGIC,
    OffsetMapView,
    ScanProblem,
    fsync_directory,
    fsync_file,
    gen_map_bytes,
    map_dimensions,
    pread_exact,
    pwrite_all,
    scan_transactions,
)
from durus.shelf_index import (
    IndexMeta,
    PositionIndex,
    TailIndex,
    load_index_file,
    sample_crcs,
    save_index_file,
)
from durus.shelf_tempfiles import remove_leftovers, watch_at_exit
from durus.utils import int8_to_str

__all__ = ["Shelf", "ShelfFile", "ShelfWriter", "write_new_shelf"]

logger = logging.getLogger("durus.file_storage")

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
#: Rescanning more than this many bytes at open makes a writer save the index at once.
_SAVE_INDEX_AFTER_SCAN = 4 << 20
#: The largest oid an offset map may be built for (its size is proportional).
MAX_MAP_OID = (1 << 34) - 1
_READ_AHEAD = 4096


def _describe_head(head: bytes) -> str:
    return repr(head[:16])


def check_format(fd: int, path: str, size: int) -> None:
    """Raise a clear ``FileFormatError`` unless the file starts like a SHELF-1 file."""
    if size == 0:
        raise FileFormatError(
            f"{path!r} is an empty file, not a Durus database yet (opening it "
            "writable makes it a new database)",
            path,
        )
    head = pread_exact(fd, 20, 0)
    if head.startswith(PREFIX):
        return
    if head.startswith(DFS20_MAGIC):
        raise LegacyFormatError(
            f"{path!r} is a Durus FileStorage2 database (the legacy DFS20 format), "
            "which FileStorage does not open; convert it to the SHELF-1 format with "
            f"`durus convert {path} NEW_FILE` and open NEW_FILE",
            path,
        )
    if head.startswith(SQLITE_MAGIC):
        raise FileFormatError(
            f"{path!r} is an SQLite database (Durus's experimental SqliteStorage), "
            "not a SHELF-1 file",
            path,
        )
    if PREFIX.startswith(head):
        raise FileFormatError(
            f"{path!r} is a {size}-byte fragment of a SHELF-1 header, not a complete "
            "database (its creation was interrupted?)",
            path,
        )
    raise FileFormatError(
        f"{path!r} is not a Durus database: unknown format (it starts with "
        f"{_describe_head(head)}, a SHELF-1 file starts with {PREFIX!r})",
        path,
    )


class ShelfFile:
    """What ``Shelf.get_file()`` returns: Durus 4.3's ``File`` questions about the file."""

    def __init__(self, shelf: Shelf) -> None:
        self._shelf = shelf

    def get_name(self) -> str:
        return self._shelf.path

    def is_temporary(self) -> bool:
        return self._shelf.temporary

    def is_readonly(self) -> bool:
        return self._shelf.readonly

    @property
    def has_lock(self) -> bool:
        return not self._shelf.readonly and not self._shelf.closed

    def stat(self) -> os.stat_result:
        return os.fstat(self._shelf.fd)

    def __len__(self) -> int:
        return os.fstat(self._shelf.fd).st_size

    def fileno(self) -> int:
        return self._shelf.fd

    def flush(self) -> None:
        """Writes go straight to the OS; nothing is buffered."""

    def fsync(self) -> None:
        fsync_file(self._shelf.fd)

    def close(self) -> None:
        self._shelf.close()

    def __repr__(self) -> str:
        return f"<ShelfFile {self._shelf.path!r}>"


class ShelfWriter:
    """Writes a new shelf into an empty file: items first, then the offset map.

    Used by pack (the items are the reachable records) and to create a
    database from records (``durus convert``).  Memory: one ``array('Q')`` of
    positions indexed by oid, plus a write buffer.
    """

    def __init__(self, fd: int, buffer_size: int = 1 << 20) -> None:
        self.fd = fd
        self.buffer = bytearray(PREFIX + INT8.pack(0))
        self.buffer_size = buffer_size
        self.flushed = 0
        self.position = FIRST_ITEM
        self.positions = array("Q")
        self.max_oid: int | None = None
        self.count = 0
        self.map_start = 0
        self.map_end = 0

    def add(self, name: bytes, record: bytes) -> None:
        """Append the item of oid ``name`` (a later one for the same oid wins)."""
        self.add_numbered(int.from_bytes(name, "big"), name, record)

    def add_numbered(self, n: int, name: bytes, record: bytes) -> None:
        """``add()`` when the caller knows the oid number ``n`` of ``name``."""
        positions = self.positions
        if n >= len(positions):
            if n > MAX_MAP_OID:
                raise ValueError(
                    f"oid {n} is too large for an offset map (the SHELF format stores one "
                    "slot per oid up to the largest)"
                )
            grow = max(n + 1, len(positions) + (len(positions) >> 1), 1024)
            positions.frombytes(bytes(8 * (grow - len(positions))))
        positions[n] = self.position
        if self.max_oid is None or n > self.max_oid:
            self.max_oid = n
        buffer = self.buffer
        buffer += INT8.pack(8 + len(record))
        buffer += name
        buffer += record
        self.position += 16 + len(record)
        self.count += 1
        if len(buffer) >= self.buffer_size:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            pwrite_all(self.fd, bytes(self.buffer), self.flushed)
            self.flushed += len(self.buffer)
            self.buffer.clear()

    def gen_finish(self) -> Iterator[int]:
        """Write the initial transaction's length and the stitched map, in steps."""
        self.flush()
        self.map_start = start = self.position
        pwrite_all(self.fd, INT8.pack(start - FIRST_ITEM), len(PREFIX))
        width, count = map_dimensions(start, self.max_oid)
        offset = start
        for piece in gen_map_bytes(start, self.positions, count, width):
            pwrite_all(self.fd, piece, offset)
            offset += len(piece)
            yield offset
        self.map_end = offset
        self.positions = array("Q")

    def finish(self) -> None:
        for _step in self.gen_finish():
            pass


def write_new_shelf(
    path: str | os.PathLike[str], items: Iterable[tuple[bytes, bytes]], fsync: bool = True
) -> None:
    """Create the database ``path`` (which must not exist) holding ``items``.

    The records go into the initial transaction, as after a pack (``durus
    convert`` copies a legacy file this way).  The file appears complete or
    not at all; ``FileExistsError`` if ``path`` exists.
    """
    path = os.fspath(path)
    if os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, "the database file already exists", path)
    shelf = Shelf(path, items=items, fsync=fsync)
    shelf.close()


class Shelf:
    """A SHELF-1 file opened for reading, or for reading and appending.

    ``file``: a path; None for a new temporary file (removed at close).
    ``items``: records ``(oid, record)`` for the initial transaction of a
    file that does not exist yet.  ``fsync``: make every append durable
    before it returns.
    """

    prefix = PREFIX

    def __init__(
        self,
        file: str | os.PathLike[str] | None = None,
        items: Iterable[tuple[bytes, bytes]] | None = None,
        repair: bool = False,
        readonly: bool = False,
        *,
        fsync: bool = True,
        _locked_fd: int | None = None,
    ) -> None:
        self.closed = True
        self.fd = -1
        self.mm: mmap.mmap | None = None
        self.readonly = bool(readonly)
        self.temporary = file is None
        self.fsync = bool(fsync) and not self.temporary
        self.broken: BaseException | None = None
        self._lock = threading.Lock()
        self._undo: list[tuple[int, int, list[tuple[int, int]]]] = []
        self._name_generator: Iterator[bytes] | None = None
        self._use_index_file = _locked_fd is None
        if _locked_fd is not None:
            # A pack hands over the file it wrote, locked, now under its final name.
            self.path = os.fspath(file)  # type: ignore[arg-type]
            fd = _locked_fd
        elif self.temporary:
            if readonly or repair:
                raise ValueError("a temporary shelf is neither read-only nor repaired")
            fd, name = tempfile.mkstemp(prefix="durus-", suffix=".durus")
            self.path = name
            try:
                lock_file(fd, name)
                self._write_initial(fd, items)
            except BaseException:
                os.close(fd)
                os.unlink(name)
                raise
        else:
            path = os.path.abspath(os.fspath(file))  # type: ignore[arg-type]
            self.path = path
            if readonly and repair:
                raise ValueError("repair=True needs write access (readonly=True was given)")
            if readonly:
                fd = self._open_readonly(path)
            else:
                fd = self._open_writable(path, items)
        self.fd = fd
        try:
            self._load(repair)
        except BaseException:
            self._release()
            raise
        self.closed = False
        if not self.readonly:
            watch_at_exit(self)  # its index saved (a temporary one removed) even unclosed

    # -- opening ---------------------------------------------------------------------

    @staticmethod
    def _open_readonly(path: str) -> int:
        if os.path.isdir(path):
            raise FileFormatError(f"{path!r} is a directory, not a Durus database file", path)
        return os.open(path, os.O_RDONLY | _O_CLOEXEC)

    def _open_writable(self, path: str, items: Iterable[tuple[bytes, bytes]] | None) -> int:
        for _attempt in range(100):
            try:
                fd = os.open(path, os.O_RDWR | _O_CLOEXEC)
            except FileNotFoundError:
                created = self._create(path, items)
                if created is None:
                    continue  # somebody else created it meanwhile: open theirs
                return created
            except IsADirectoryError:
                raise FileFormatError(
                    f"{path!r} is a directory, not a Durus database file", path
                ) from None
            try:
                lock_file(fd, path)
                try:
                    named = os.stat(path)
                except FileNotFoundError:
                    named = None
                mine = os.fstat(fd)
            except BaseException:
                os.close(fd)
                raise
            if named is None or (named.st_dev, named.st_ino) != (mine.st_dev, mine.st_ino):
                # A pack replaced the file between open and lock: lock the new one.
                os.close(fd)
                continue
            if mine.st_size == 0:
                # An existing empty file (e.g. from mkstemp) becomes a new
                # database, as in Durus 4.3: there is nothing in it to lose.
                try:
                    self._write_initial(fd, items)
                    if self.fsync:
                        fsync_file(fd)
                except BaseException:
                    os.close(fd)
                    raise
                return fd
            if items is not None:
                os.close(fd)
                raise ValueError(f"{path!r} exists: items are only for a new shelf")
            return fd
        raise FileStorageError(f"could not open {path!r}: it keeps being replaced")

    def _create(self, path: str, items: Iterable[tuple[bytes, bytes]] | None) -> int | None:
        """Create ``path`` complete or not at all: write a temporary file, then link it."""
        directory = os.path.dirname(path)
        temporary = f"{path}.{os.getpid()}-{secrets.token_hex(4)}.new"
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o666)
        try:
            self._write_initial(fd, items)
            if self.fsync:
                fsync_file(fd)
            lock_file(fd, path)
            try:
                os.link(temporary, path)
            except FileExistsError:
                os.close(fd)
                return None
            except OSError:
                # No hard links here (some network/FAT file systems): rename instead.
                if os.path.exists(path):
                    os.close(fd)
                    return None
                os.rename(temporary, path)
        except BaseException:
            try:
                os.close(fd)
            except OSError:
                pass
            raise
        finally:
            try:
                os.unlink(temporary)
            except FileNotFoundError:
                pass
        if self.fsync:
            fsync_directory(directory)
        logger.info("created the new database %r", path)
        return fd

    @staticmethod
    def _write_initial(fd: int, items: Iterable[tuple[bytes, bytes]] | None) -> None:
        if items is None:
            pwrite_all(fd, EMPTY_SHELF, 0)
            return
        writer = ShelfWriter(fd)
        for name, record in items:
            writer.add(name, record)
        writer.finish()

    def _load(self, repair: bool) -> None:
        fd, path = self.fd, self.path
        size = os.fstat(fd).st_size
        check_format(fd, path, size)
        if size < FIRST_ITEM + MAP_HEADER_SIZE:
            raise DamagedFileError(f"{path!r} is cut short inside its header ({size} bytes)", path)
        initial_length = INT8.unpack(pread_exact(fd, 8, len(PREFIX)))[0]
        map_start = FIRST_ITEM + initial_length
        header = pread_exact(fd, MAP_HEADER_SIZE, map_start)
        if len(header) != MAP_HEADER_SIZE:
            raise DamagedFileError(
                f"{path!r} ends inside its initial transaction or offset map "
                f"(the map should start at {map_start}, the file has {size} bytes)",
                path,
                map_start,
            )
        total, width, count = MAP_HEADER.unpack(header)
        if not 1 <= width <= 8 or total != 16 + width * count:
            raise DamagedFileError(
                f"{path!r} has an inconsistent offset map header at {map_start} "
                f"(B={total}, W={width}, N={count})",
                path,
                map_start,
            )
        map_end = map_start + MAP_HEADER_SIZE + width * count
        if map_end > size:
            raise DamagedFileError(
                f"{path!r} ends inside its offset map ({size} < {map_end} bytes)", path, map_end
            )
        self.mm = mmap.mmap(fd, map_end, access=mmap.ACCESS_READ)
        self.map = OffsetMapView(self.mm, map_start)
        self.map_start = map_start
        self.map_end = map_end
        self.index = TailIndex()
        self.end = map_end
        self.last_start = map_end
        self.saved_end: int | None = None
        #: Bytes rescanned after open because the side index proved damaged when used.
        self.index_rescan_bytes = 0
        if not self.temporary and self._use_index_file:
            self._adopt_index_file(size)
        scanned_from = self.end
        end, problem = scan_transactions(
            fd, self.end, size, self._apply_transaction, consume_trailing_empty=not self.readonly
        )
        self.end = end
        #: Bytes of transactions scanned while opening (0 when the side index covered all).
        self.open_scan_bytes = end - scanned_from
        if problem is not None:
            self._handle_problem(problem, size, repair)
        self.durable_end = self.end
        if not self.readonly and not self.temporary:
            remove_leftovers(self.path)  # we hold the lock: any other is abandoned
            if self.end - scanned_from > _SAVE_INDEX_AFTER_SCAN:
                self.save_index()

    def _index_path(self) -> str:
        return self.path + ".index"

    def _adopt_index_file(self, size: int) -> None:
        # O(1) in the number of oids: the header is checked against the file
        # here, the array is mapped and each block checked when first used.
        loaded = load_index_file(self._index_path(), low=self.map_end)
        if loaded is None:
            return
        meta, mapped, count, largest = loaded
        if not self._index_matches(meta, count, size, largest):
            mapped.close()
            logger.info("%r: its side index is stale; rebuilding it from the file", self.path)
            return
        self.index = TailIndex(mapped, count, self._rescan_covered)
        self.end = meta.covered_end
        self.last_start = meta.last_start
        self.saved_end = meta.covered_end

    def _index_matches(self, meta: IndexMeta, count: int, size: int, largest: int) -> bool:
        covered_end = meta.covered_end
        if (meta.map_start, meta.map_width, meta.map_count) != (
            self.map_start,
            self.map.width,
            self.map.count,
        ):
            return False
        if not self.map_end <= covered_end <= size:
            return False
        if covered_end > self.map_end:
            if not self.map_end <= meta.last_start < covered_end:
                return False
            length = INT8.unpack(pread_exact(self.fd, 8, meta.last_start))[0]
            if meta.last_start + 8 + length != covered_end:
                return False
        elif meta.last_start != self.map_end or count:
            return False
        if (meta.head_crc, meta.tail_crc) != sample_crcs(self.fd, self.map_end, covered_end):
            return False
        # Positions are below covered_end; each block's checksum, checked when the
        # block is first used, and the oid of every item loaded vouch for the rest.
        return largest < covered_end and (count == 0) == (largest == 0)

    def _rescan_covered(self) -> PositionIndex:
        """The positions of ``[map_end, covered_end)``, scanned again (the side index
        proved damaged after open)."""
        base = self.index.base
        assert base is not None
        fresh = PositionIndex()
        fresh_set = fresh.set

        def apply(_start: int, flat: list[int]) -> None:
            for i in range(0, len(flat), 2):
                fresh_set(flat[i], flat[i + 1])

        end, problem = scan_transactions(
            self.fd, self.map_end, base.covered_end, apply, consume_trailing_empty=False
        )
        if problem is not None or end != base.covered_end:
            raise DamagedFileError(
                f"{self.path!r}: rescanning after a damaged side index stopped at {end}"
                + (f": {problem.detail}" if problem is not None else ""),
                self.path,
                end,
            )
        self.saved_end = None  # a writer saves a sound index at close
        self.index_rescan_bytes += end - self.map_end
        logger.warning("%r: rescanned %d bytes", self.path, end - self.map_end)
        return fresh

    def _apply_transaction(self, start: int, flat: list[int]) -> None:
        index_set = self.index.set
        for i in range(0, len(flat), 2):
            index_set(flat[i], flat[i + 1])
        self.last_start = start

    def _handle_problem(self, problem: ScanProblem, size: int, repair: bool) -> None:
        path = self.path
        if problem.kind == "incomplete":
            if self.readonly:
                logger.debug(
                    "%r: ignoring an incomplete last transaction at %d (%s)",
                    path,
                    problem.offset,
                    problem.detail,
                )
                return
            self._cut_tail(
                problem, size, "an incomplete last transaction (a crash while committing)"
            )
            return
        if repair and not self.readonly:
            self._cut_tail(problem, size, "a malformed transaction (repair=True)")
            return
        raise DamagedFileError(
            f"{path!r} is damaged at offset {problem.offset}: {problem.detail}; the "
            f"transactions after it cannot be read. Open it with repair=True to move "
            f"everything from offset {problem.offset} into a side file and truncate there.",
            path,
            problem.offset,
        )

    def _side_file_name(self, offset: int) -> str:
        base = f"{self.path}.cut-{offset}"
        name = base
        k = 1
        while os.path.lexists(name):
            k += 1
            name = f"{base}.{k}"
        return name

    def _cut_tail(self, problem: ScanProblem, size: int, what: str) -> None:
        """Copy ``[offset, size)`` aside, then truncate the file at ``offset``."""
        offset = problem.offset
        side = self._side_file_name(offset)
        out = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o666)
        try:
            position = offset
            while position < size:
                chunk = pread_exact(self.fd, min(1 << 20, size - position), position)
                if not chunk:
                    break
                pwrite_all(out, chunk, position - offset)
                position += len(chunk)
            if self.fsync:
                fsync_file(out)
        except BaseException:
            # Could not keep a copy (disk full?): leave the database untouched.
            os.close(out)
            os.unlink(side)
            raise
        os.close(out)
        if self.fsync:
            fsync_directory(os.path.dirname(self.path))
        os.ftruncate(self.fd, offset)
        if self.fsync:
            fsync_file(self.fd)
        self.end = offset
        logger.warning(
            "%r: found %s at offset %d (%s); moved its %d bytes to %r and truncated the "
            "file at %d: every transaction before it is intact",
            self.path,
            what,
            offset,
            problem.detail,
            size - offset,
            side,
            offset,
        )

    # -- Durus 4.3's Shelf questions ----------------------------------------------------------

    @classmethod
    def has_format(cls, file: Any) -> bool:
        """Does ``file`` (a path, or an object with seek/read) start with the SHELF prefix?"""
        if isinstance(file, (str, bytes, os.PathLike)):
            try:
                with open(file, "rb") as f:
                    return f.read(len(PREFIX)) == PREFIX
            except OSError:
                return False
        if isinstance(file, ShelfFile):
            return pread_exact(file.fileno(), len(PREFIX), 0) == PREFIX
        file.seek(0)
        return bool(file.read(len(PREFIX)) == PREFIX)

    def get_offset_map(self) -> OffsetMapView:
        return self.map

    def get_file(self) -> ShelfFile:
        return ShelfFile(self)

    def position_of(self, n: int) -> int:
        """Position of the current item of oid number ``n``, 0 if it has none."""
        position = self.index.get(n)
        if position:
            return position
        offset_map = self.map
        if n < offset_map.count:
            value = offset_map.slot(n)
            if value < self.map_start:
                return value
        return 0

    def get_position(self, name: bytes) -> int | None:
        if len(name) != 8:
            raise ValueError("an oid is a string of 8 bytes")
        return self.position_of(int.from_bytes(name, "big")) or None

    def __contains__(self, name: bytes) -> bool:
        return self.get_position(name) is not None

    def read_item(self, position: int) -> tuple[bytes, bytes]:
        """``(name, record)`` of the item at ``position``.

        Records are read with ``pread``, not through the map of the file's head:
        a scan of the whole database then leaves them in the page cache instead
        of in this process's resident memory.
        """
        if self.fd < 0:
            raise StorageClosedError(f"{self.path!r} is closed")
        data = os.pread(self.fd, _READ_AHEAD, position)
        if len(data) >= 16:
            need = 8 + INT8.unpack_from(data)[0]
            if position < self.map_start and position + need > self.map_start:
                raise DamagedFileError(
                    f"{self.path!r}: the item at {position} overruns the initial transaction",
                    self.path,
                    position,
                )
            if len(data) >= need:
                return data[8:16], data[16:need]
            data += pread_exact(self.fd, need - len(data), position + len(data))
            if len(data) == need:
                return data[8:16], data[16:need]
        raise DamagedFileError(
            f"{self.path!r}: the item at {position} is cut short by the end of the file",
            self.path,
            position,
        )

    get_item_at_position = read_item

    def get_value(self, name: bytes) -> bytes | None:
        """The record stored under ``name``, or None."""
        position = self.get_position(name)
        if position is None:
            return None
        item_name, record = self.read_item(position)
        if item_name != name and self.index.base is not None:
            # Every item starts with its oid: the side index was wrong.
            self.index.rebuild(f"the item at {position} is not oid {name.hex()}")
            return self.get_value(name)
        if item_name != name:
            raise DamagedFileError(
                f"{self.path!r}: the item at {position} belongs to oid "
                f"{int.from_bytes(item_name, 'big')}, not {int.from_bytes(name, 'big')} "
                "(a stale .index file? remove it)",
                self.path,
                position,
            )
        return record

    def iterindex(self) -> Iterator[tuple[bytes, int]]:
        """``(name, position)`` of every current item: the map's, then the later ones."""
        index_get = self.index.get
        for n, position in self.map.iteritems():
            if not index_get(n):
                yield int8_to_str(n), position
        for n, position in self.index.items():
            yield int8_to_str(n), position

    def __iter__(self) -> Iterator[bytes]:
        for name, _position in self.iterindex():
            yield name

    def iteritems(self) -> Iterator[tuple[bytes, bytes]]:
        for name, position in self.iterindex():
            item_name, record = self.read_item(position)
            if item_name != name and self.index.base is not None:
                self.index.rebuild(f"the item at {position} is not oid {name.hex()}")
                value = self.get_value(name)
                assert value is not None
                yield name, value
                continue
            if item_name != name:
                raise DamagedFileError(
                    f"{self.path!r}: the item at {position} is not oid {name!r}",
                    self.path,
                    position,
                )
            yield name, record

    items = iteritems

    def oid_limit(self) -> int:
        """One more than the largest oid number that may have a record."""
        return max(self.map.count, self.index.limit())

    def next_name(self) -> bytes:
        """The next never-handed-out oid in Durus's order (spec 1.3)."""
        names = self._name_generator
        if names is None:
            names = self._name_generator = self._generate_names()
        return next(names)

    def _generate_names(self) -> Iterator[bytes]:
        index_get = self.index.get
        for j in self.map.gen_holes():
            if not index_get(j):
                yield int8_to_str(j)
        j = self.map.count
        # Above the index's limit nothing is stored: only names handed out
        # here get stored later, and those are behind ``j``.
        limit = self.index.limit()
        pack = INT8.pack
        while True:
            if j >= limit or not index_get(j):
                yield pack(j)
            j += 1

    # -- appending -----------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self.closed:
            raise StorageClosedError(f"{self.path!r} is closed")
        if self.readonly:
            raise FileStorageError(f"{self.path!r} is open read-only")
        if self.broken is not None:
            raise DiskWriteError(
                getattr(self.broken, "errno", None),
                f"{self.path!r} could not be restored after a failed write "
                f"({self.broken}); close the storage and open it again",
                self.path,
                usable=False,
            )

    def append(self, pairs: list[tuple[bytes, bytes]], durable: bool = True) -> int:
        """Append one transaction holding ``pairs``; return its start offset.

        With ``durable`` (and ``fsync`` enabled) the bytes are on stable storage
        when this returns.  Otherwise they are visible at once and made durable by
        the next durable append or ``flush_to_disk()``.  On any error the file is
        truncated back and ``DiskWriteError`` raised: nothing of it stays.
        """
        with self._lock:
            self._check_writable()
            start = self.end
            parts = [b""]
            total = 0
            # (oid number, position) of each record, for the index.
            entries: list[tuple[int, int]] = []
            pack = INT8.pack
            from_bytes = int.from_bytes
            for name, record in pairs:
                length = 8 + len(record)
                parts += (pack(length), name, record)
                entries.append((from_bytes(name, "big"), start + 8 + total))
                total += 8 + length
            parts[0] = pack(total)
            data = b"".join(parts)
            del parts
            sync_now = durable and self.fsync
            try:
                pwrite_all(self.fd, data, start)
            except OSError as error:
                self._roll_back(start, error, "writing the transaction")
            except BaseException:
                self._abandon(start)  # e.g. KeyboardInterrupt between two writes
                raise
            if sync_now:
                try:
                    fsync_file(self.fd)
                except OSError as error:
                    self._roll_back(self.durable_end, error, "syncing the transaction to disk")
                except BaseException:
                    self._abandon(start)
                    raise
            olds = self.index.set_many(entries)
            if self.fsync and not sync_now:
                undo = [(n, old) for (n, _), old in zip(entries, olds, strict=True)]
                self._undo.append((start, self.last_start, undo))
            self.last_start = start
            self.end = start + 8 + total
            if sync_now:
                self.durable_end = self.end
                self._undo.clear()
            return start

    def flush_to_disk(self) -> None:
        """Make every transaction appended so far durable (no-op if there is none)."""
        with self._lock:
            if not self.fsync or self.closed or self.durable_end == self.end:
                return
            self._check_writable()
            try:
                fsync_file(self.fd)
            except OSError as error:
                self._roll_back(self.durable_end, error, "syncing transactions to disk")
            self.durable_end = self.end
            self._undo.clear()

    def has_unsynced(self) -> bool:
        return self.fsync and self.durable_end != self.end

    def _abandon(self, offset: int) -> None:
        """Remove the bytes of an append interrupted by a non-I/O exception."""
        try:
            os.ftruncate(self.fd, offset)
        except OSError as error:
            self.broken = error

    def _roll_back(self, offset: int, error: OSError, action: str) -> None:
        """Cut the file back to ``offset`` after ``error`` and raise ``DiskWriteError``."""
        if offset < self.end:
            # Undo the visible but not yet durable transactions after ``offset``.
            while self._undo and self._undo[-1][0] >= offset:
                _start, last_start, changes = self._undo.pop()
                for n, old in reversed(changes):
                    self.index.set(n, old)
                self.last_start = last_start
            self.end = offset
        try:
            os.ftruncate(self.fd, offset)
            if self.fsync:
                fsync_file(self.fd)
        except OSError as second:
            self.broken = second
            raise DiskWriteError(
                error.errno,
                f"could not commit to {self.path!r}: {action} failed ({error.strerror or error}),"
                f" and truncating back failed too ({second.strerror or second}); close the "
                "storage: the next open recovers the last complete transaction",
                self.path,
                usable=False,
            ) from error
        raise DiskWriteError(
            error.errno,
            f"could not commit to {self.path!r}: {action} failed ({error.strerror or error}); "
            "the transaction was rolled back, the file is as it was before it and the "
            "storage remains usable",
            self.path,
        ) from error

    def store(self, pairs: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, int | None, int]]:
        """Durus 4.3's ``Shelf.store``: append a transaction, return (name, old, new) triples."""
        pairs = list(pairs)
        old_positions = [self.get_position(name) for name, _record in pairs]
        start = self.append(pairs)
        result = []
        position = start + 8
        for (name, record), old in zip(pairs, old_positions, strict=True):
            result.append((name, old, position))
            position += 16 + len(record)
        return result

    # -- readers catching up -------------------------------------------------------------------

    def refresh(self) -> list[int]:
        """Index the transactions appended since the last look; their oid numbers.

        For read-only shelves: an incomplete last transaction (the writer is
        busy) is left for the next call.
        """
        size = os.fstat(self.fd).st_size
        if size <= self.end:
            return []
        changed: list[int] = []

        def apply(start: int, flat: list[int]) -> None:
            self._apply_transaction(start, flat)
            changed.extend(flat[0::2])

        end, problem = scan_transactions(
            self.fd, self.end, size, apply, consume_trailing_empty=not self.readonly
        )
        self.end = end
        if problem is not None and problem.kind == "malformed":
            raise DamagedFileError(
                f"{self.path!r} is damaged at offset {problem.offset}: {problem.detail}",
                self.path,
                problem.offset,
            )
        return changed

    def is_replaced(self) -> bool:
        """Does the path now name another file (a pack replaced it)?"""
        try:
            named = os.stat(self.path)
        except OSError:
            return False
        mine = os.fstat(self.fd)
        return (named.st_dev, named.st_ino) != (mine.st_dev, mine.st_ino)

    # -- the side index ------------------------------------------------------------------------

    def save_index(self) -> None:
        """Persist the tail index (a cache: losing it only costs a rescan)."""
        if self.temporary or self.readonly or (self.closed and self.fd < 0):
            return
        covered_end = self.durable_end if self.fsync else self.end
        if covered_end != self.end:
            return  # only index what is on disk
        if self.saved_end == covered_end:
            return
        if covered_end == self.map_end and not os.path.exists(self._index_path()):
            return
        head_crc, tail_crc = sample_crcs(self.fd, self.map_end, covered_end)
        meta = IndexMeta(
            covered_end,
            self.last_start,
            self.map_start,
            self.map.width,
            self.map.count,
            covered_end,
            head_crc,
            tail_crc,
        )
        index = self.index.flatten()  # checks every block not yet used
        largest = max(index.array, default=0)
        if index.extra:
            largest = max(largest, *index.extra.values())
        try:
            save_index_file(self._index_path(), meta, index, durable=False, largest=largest)
        except OSError as error:
            logger.warning("could not save the index %r: %s", self._index_path(), error)
            return
        self.saved_end = covered_end

    # -- closing ---------------------------------------------------------------------------

    def _release(self) -> None:
        index = getattr(self, "index", None)
        if index is not None:
            index.close()
        if self.mm is not None:
            try:
                self.mm.close()
            except BufferError:  # pragma: no cover - a view is still exported
                pass
            self.mm = None
        if self.fd >= 0:
            if not self.readonly:
                unlock_file(self.fd)
            os.close(self.fd)
            self.fd = -1
        if self.temporary:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def close(self, save_index: bool = True) -> None:
        """Sync what is pending, save the index, release the lock and the file."""
        if self.closed:
            return
        try:
            if not self.readonly and self.broken is None:
                try:
                    self.flush_to_disk()
                finally:
                    if save_index:
                        self.save_index()
        finally:
            self.closed = True
            self._release()

    def __del__(self) -> None:
        # A storage dropped without close(): release the file and its lock.
        if not getattr(self, "closed", True):
            try:
                self.close()
            except Exception:  # pragma: no cover - e.g. at interpreter shutdown
                pass

    def __repr__(self) -> str:
        return f"<Shelf {self.path!r}{' read-only' if self.readonly else ''}>"
