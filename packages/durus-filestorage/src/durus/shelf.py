"""A SHELF-1 file: reading and appending transactions (opening: ``durus.shelf_open``).

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
import tempfile
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from durus.file_lock import lock_file, unlock_file
from durus.shelf_errors import (
    DamagedFileError,
    DiskWriteError,
    FileStorageError,
    StorageClosedError,
)
from durus.shelf_format import (
    INT8,
    PREFIX,
    OffsetMapView,
    fsync_file,
    pread_exact,
    pwrite_all,
    scan_transactions,
)
from durus.shelf_index import (
    IndexMeta,
    sample_crcs,
    save_index_file,
)
from durus.shelf_open import ShelfOpening
from durus.shelf_tempfiles import watch_at_exit
from durus.shelf_writer import ShelfWriter
from durus.utils import int8_to_str

__all__ = ["Shelf", "ShelfFile", "ShelfWriter", "write_new_shelf"]

logger = logging.getLogger("durus.file_storage")

_READ_AHEAD = 4096


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


class Shelf(ShelfOpening):
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
