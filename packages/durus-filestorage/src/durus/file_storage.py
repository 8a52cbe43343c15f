"""FileStorage: the default Durus storage, one SHELF-1 file on disk.

``Connection(FileStorage("app.durus"))`` (or ``Connection("app.durus")``).
Files are compatible with Durus 4.3 in both directions.  Unlike Durus 4.3 a
commit returns only once it is on stable storage (``fsync=False`` restores
Durus's speed and risk), a crash at any moment is recovered at the next open
without ``repair=True``, and a pack never leaves the database name without a
complete file.  See this distribution's README for the side files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

from durus.error import DurusKeyError
from durus.serialize import check_record
from durus.shelf import Shelf
from durus.shelf_errors import (
    DamagedFileError,
    DiskWriteError,
    FileFormatError,
    FileLockedError,
    FileStorageError,
    LegacyFormatError,
    StorageClosedError,
)
from durus.shelf_index import OidBitmap
from durus.shelf_packer import ProgressCallback, ShelfPacker, numbered_backups
from durus.storage import ROOT_OID, Storage, gen_reachable_records
from durus.utils import int8_to_str

__all__ = [
    "DamagedFileError",
    "DiskWriteError",
    "FileFormatError",
    "FileLockedError",
    "FileStorage",
    "FileStorageError",
    "LegacyFormatError",
    "StorageClosedError",
    "TempFileStorage",
    "numbered_backups",
]

logger = logging.getLogger("durus.file_storage")


class FileStorage(Storage):
    """A storage in one SHELF-1 file.

    ``filename``: the database file (created if missing); None for a temporary
    file removed at close.  ``readonly``: no lock, no writes; ``sync()`` picks
    up what the writer committed since.  ``repair``: cut the file at the first
    malformed transaction (an incomplete *last* transaction is always cut, into
    a side file).  ``fsync``: a commit returns once it is on stable storage;
    ``fsync=False`` leaves flushing to the OS as Durus 4.3 did (faster, a power
    loss may lose recent commits).

    Attributes as in Durus 4.3: ``shelf``, ``pending_records`` (the records of
    the commit being built), ``allocated_unused_oids``, ``pack_extra`` (oids
    committed while a pack runs, else None), ``invalid`` (oids a pack removed,
    not yet reported by ``sync()``).
    """

    def __init__(
        self,
        filename: str | os.PathLike[str] | None = None,
        readonly: bool = False,
        repair: bool = False,
        fsync: bool = True,
    ) -> None:
        self.shelf = Shelf(filename, readonly=readonly, repair=repair, fsync=fsync)
        self.pending_records: dict[bytes, bytes] = {}
        self.allocated_unused_oids: set[bytes] = set()
        self.pack_extra: set[bytes] | None = None
        self.invalid: set[bytes] = set()
        self._packer: ShelfPacker | None = None

    @classmethod
    def has_format(cls, file: Any) -> bool:
        """Does ``file`` (a path or a readable file object) start like a SHELF-1 file?"""
        return Shelf.has_format(file)

    def get_filename(self) -> str:
        return self.shelf.path

    @property
    def fsync(self) -> bool:
        """Whether commits are synced to stable storage before they return."""
        return self.shelf.fsync

    # -- reading ---------------------------------------------------------------------

    def load(self, oid: bytes) -> bytes:
        shelf = self.shelf
        if len(oid) != 8:
            raise DurusKeyError(oid)
        position = shelf.position_of(int.from_bytes(oid, "big"))
        if not position:
            if shelf.closed:
                raise StorageClosedError(f"{shelf.path!r} is closed")
            raise DurusKeyError(oid)
        name, record = shelf.read_item(position)
        if name != oid:
            return self._mismatch(oid, position)
        return record

    def _mismatch(self, oid: bytes, position: int) -> bytes:
        record = self.shelf.get_value(oid)  # raises DamagedFileError with the details
        assert record is not None
        return record

    def bulk_load(self, oids: Any) -> Iterator[bytes]:
        load = self.load
        for oid in oids:
            yield load(oid)

    def gen_oid_record(  # type: ignore[override]  # Durus 4.3's signature
        self, start_oid: bytes | None = None, seen: Any = None, **other: Any
    ) -> Iterator[tuple[bytes, bytes]]:
        """Every record in the file (``start_oid`` None), or those reachable from it.

        ``seen``: the oid numbers (ints) to skip in a traversal; it is filled
        as the traversal goes (Durus 4.3 passes an ``IntSet``).
        """
        if start_oid is None:
            yield from self.shelf.iteritems()
            return
        yield from gen_reachable_records(
            self, start_oid, batch_size=1, seen=OidBitmap() if seen is None else seen
        )

    # -- writing ---------------------------------------------------------------------

    def new_oid(self) -> bytes:
        allocated = self.allocated_unused_oids
        invalid = self.invalid
        next_name = self.shelf.next_name
        name = next_name()
        while name in allocated or name in invalid:
            name = next_name()
        allocated.add(name)
        return name

    def enable_snapshots(self) -> None:
        """Nothing to do: the writer is this process, and a read-only
        storage reads the file as of its last ``sync()`` (its index moves
        only there)."""

    def begin(self) -> None:
        self.pending_records.clear()

    def store(self, oid: bytes, record: bytes) -> None:
        check_record(oid, record)
        self.pending_records[oid] = record
        if (
            oid not in self.allocated_unused_oids
            and oid != ROOT_OID
            and self.shelf.get_position(oid) is None
        ):
            self.begin()
            raise ValueError(f"oid {oid!r} is a surprise")

    def end(
        self,
        handle_invalidations: Callable[[list[bytes]], None] | None = None,
        sync_to_disk: bool = True,
    ) -> None:
        """Commit the stored records as one transaction.

        It is on stable storage when this returns, unless ``sync_to_disk`` is
        false (group commit: it is visible at once, ``flush_to_disk()`` makes
        it durable) or the storage was opened with ``fsync=False``.  On failure
        (``DiskWriteError``) the file is unchanged and the records stay pending.
        """
        pending = self.pending_records
        if pending:
            shelf = self.shelf
            shelf.append(list(pending.items()), durable=sync_to_disk)
            if self.pack_extra is not None:
                self.pack_extra.update(pending)
            self.allocated_unused_oids.difference_update(pending)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "committed %d records to %r, end=%d", len(pending), shelf.path, shelf.end
                )
        self.begin()

    def flush_to_disk(self) -> None:
        """Sync every transaction committed with ``sync_to_disk=False`` so far.

        A no-op when none is pending or with ``fsync=False``.  If syncing fails
        those transactions are rolled back (the file is as after the last
        durable commit) and ``DiskWriteError`` is raised.
        """
        shelf = self.shelf
        if shelf.has_unsynced():
            shelf.flush_to_disk()

    def sync(self) -> list[bytes]:
        """Oids to invalidate: removed by a pack, or (read-only) committed since."""
        result: set[bytes] = set()
        shelf = self.shelf
        if shelf.readonly and not shelf.closed:
            if shelf.is_replaced():
                result.update(self._follow_replacement())
            else:
                result.update(int8_to_str(n) for n in shelf.refresh())
        if self.invalid:
            result.update(self.invalid)
            self.invalid.clear()
        return list(result)

    def _follow_replacement(self) -> list[bytes]:
        """A pack replaced the file under a read-only storage: switch to the new one.

        Every object of either file is reported changed: the writer may have
        committed into files this reader never opened (packs in a row), and
        positions in two files say nothing about whether a record differs.
        Packs are rare; the cost is one reload per cached object afterwards.
        """
        old = self.shelf
        changed = set(old.refresh())
        try:
            new = Shelf(old.path, readonly=True)
        except (OSError, FileFormatError) as error:
            logger.debug("%r was replaced but cannot be opened yet: %s", old.path, error)
            return [int8_to_str(n) for n in changed]
        for shelf in (old, new):
            changed.update(int.from_bytes(name, "big") for name, _position in shelf.iterindex())
        self.shelf = new
        old.close()
        logger.info("%r was packed by its writer: following the new file", new.path)
        return [int8_to_str(n) for n in changed]

    # -- packing ---------------------------------------------------------------------

    def get_packer(
        self, progress: ProgressCallback | None = None, keep_backups: bool = False
    ) -> Iterator[Any]:
        """An incremental pack: each ``next()`` does a little of the work.

        Empty (nothing to do) when a commit is being built, a pack is already
        running, the storage is temporary or read-only, or there is no root;
        ``StorageClosedError`` (a ``ValueError``) once the storage is closed.
        ``progress(phase, done, total)`` is called as the pack advances.  The
        previous file becomes ``F.prepack``, replacing an older one as in Durus
        4.3 (a server packing every ``gcbytes`` must not pile up copies of the
        database); ``keep_backups`` keeps that older one as ``F.prepack.N``.
        """
        shelf = self.shelf
        if shelf.closed:
            raise StorageClosedError(f"{shelf.path!r} is closed: it cannot be packed")
        if (
            self.pending_records
            or self.pack_extra is not None
            or shelf.temporary
            or shelf.readonly
        ):
            return iter(())
        if not shelf.position_of(0):
            logger.info("%r has no root object: nothing to pack", shelf.path)
            return iter(())
        self._packer = ShelfPacker(self, progress, keep_backups)
        return self._packer

    def pack(self, progress: ProgressCallback | None = None, keep_backups: bool = False) -> None:
        """Remove every record not reachable from the root (``get_packer`` says more)."""
        for _step in self.get_packer(progress, keep_backups):
            pass

    # -- closing ---------------------------------------------------------------------

    def close(self) -> None:
        """Abandon a running pack, sync pending commits, release the file."""
        packer = self._packer
        if packer is not None:
            self._packer = None
            packer.close()
        self.shelf.close()

    def __enter__(self) -> FileStorage:
        return self

    def __str__(self) -> str:
        return f"{self.__class__.__name__}({self.get_filename()!r})"

    __repr__ = __str__


def TempFileStorage(fsync: bool = False) -> FileStorage:
    """A FileStorage on a new temporary file, removed when it is closed."""
    return FileStorage(None, fsync=fsync)
