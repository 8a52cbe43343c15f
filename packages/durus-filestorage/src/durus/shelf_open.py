"""Opening a SHELF-1 file: format check, the side index, crash recovery.

The first half of ``durus.shelf.Shelf``'s life, kept apart from reading and
appending: a writer that opens a file whose last transaction was cut short
copies that tail into ``<file>.cut-<offset>`` and truncates the file to the
end of its last complete transaction; anything else that is not well-formed
is reported (``DamagedFileError``) unless ``repair=True`` asks for Durus's
truncation.  The positions of the items are taken from the side index
(``<file>.index``) when it matches the file, else rescanned.
"""

from __future__ import annotations

import logging
import mmap
import os
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING

from durus.file_lock import lock_file
from durus.shelf_errors import (
    DamagedFileError,
    FileFormatError,
    FileStorageError,
    LegacyFormatError,
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
)
from durus.shelf_tempfiles import remove_leftovers
from durus.shelf_writer import ShelfWriter

__all__ = ["ShelfOpening", "check_format"]

logger = logging.getLogger("durus.file_storage")

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
#: Rescanning more than this many bytes at open makes a writer save the index at once.
_SAVE_INDEX_AFTER_SCAN = 4 << 20


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


class ShelfOpening:
    """What ``Shelf.__init__`` calls to open, check, index and recover its file."""

    # Set by Shelf.__init__ (and by _load here).
    path: str
    fd: int
    mm: mmap.mmap | None
    readonly: bool
    temporary: bool
    fsync: bool
    _use_index_file: bool
    map: OffsetMapView
    map_start: int
    map_end: int
    index: TailIndex
    end: int
    last_start: int
    saved_end: int | None
    durable_end: int
    index_rescan_bytes: int
    open_scan_bytes: int

    if TYPE_CHECKING:

        def save_index(self) -> None: ...  # Shelf's

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

