"""Incremental, crash-safe pack of a SHELF-1 file storage.

``ShelfPacker`` is the iterator ``FileStorage.get_packer()`` returns; every
``next()`` does a small amount of work so that a server can keep serving (and
committing) between steps.  The steps:

1. Copy every record reachable from the root into the initial transaction of
   ``F.pack``, smallest pending oid first (the order of Durus 4.3's heap), with
   two bitmaps (visited, pending) and an ``array('Q')`` of positions: memory is
   a few bytes per oid, never a Python object per oid.
2. Write the stitched offset map, fsync ``F.pack``.
3. Records committed meanwhile (``storage.pack_extra``) and what they reach are
   copied again, as transactions after the map, in rounds; the last round runs
   in one step so that no commit can slip between it and the switch.
4. Switch, so that ``F`` always names a complete database: hard-link ``F`` to
   ``F.prepack``, ``os.replace(F.pack, F)``, fsync the directory.  The storage
   goes on with the new file, which it had locked before the rename.  An older
   ``F.prepack`` is replaced, as Durus 4.3 did, or with ``keep_backups`` kept
   as ``F.prepack.N`` (``durus pack`` does that: see ``keep_backup``).

Oids that had a record before and have none now are put in
``storage.invalid`` so that ``sync()`` reports them and ``new_oid()`` does not
hand them out before that.
"""

from __future__ import annotations

import filecmp
import heapq
import logging
import mmap
import os
import struct
import time
from collections.abc import Callable, Generator, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from durus.file_lock import lock_file, unlock_file
from durus.shelf import Shelf
from durus.shelf_format import INT8, fsync_directory, fsync_file, pwrite_all
from durus.shelf_index import OidBitmap
from durus.shelf_tempfiles import watch_at_exit
from durus.shelf_writer import ShelfWriter
from durus.utils import int8_to_str

if TYPE_CHECKING:
    from durus.file_storage import FileStorage

__all__ = ["ProgressCallback", "ShelfPacker", "keep_backup", "numbered_backups"]

logger = logging.getLogger("durus.file_storage")

#: ``progress(phase, done, total)``: phase is "copy", "map", "extra" or "finish".
ProgressCallback = Callable[[str, int, int], Any]

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DATA_LENGTH = struct.Struct(">I")
_INT8 = struct.Struct(">Q")
#: Records copied per step.
STEP_OBJECTS = 200
#: Once this few records were committed during the pack, copy them in the final step.
FINAL_ROUND_MAX = 2000
#: Rounds of copying commits made during the pack before the final one.
MAX_ROUNDS = 4
#: Transactions written after the map hold at most about this many bytes each.
_EXTRA_TRANSACTION_BYTES = 4 << 20


class _ItemReader:
    """Reads items of a shelf through a private map of the whole file as it was.

    A pack reads every live record once, in oid order, which is not file
    order: mapping the file avoids a system call per record.  Items appended
    after the map was made are read through the shelf.
    """

    def __init__(self, shelf: Shelf) -> None:
        self.shelf = shelf
        self.size = shelf.end
        self.mm: mmap.mmap | None = None
        if self.size > 0:
            try:
                self.mm = mmap.mmap(shelf.fd, self.size, access=mmap.ACCESS_READ)
            except (OSError, ValueError):  # pragma: no cover - e.g. no address space
                self.mm = None

    def read_item(self, position: int) -> tuple[bytes, bytes]:
        mm = self.mm
        if mm is not None and position + 16 <= self.size:
            end = position + 8 + _INT8.unpack_from(mm, position)[0]
            if end <= self.size:
                return mm[position + 8 : position + 16], mm[position + 16 : end]
        return self.shelf.read_item(position)

    def close(self) -> None:
        if self.mm is not None:
            self.mm.close()
            self.mm = None


def _refs_of(record: bytes) -> Iterator[tuple[int]]:
    refs_start = 12 + _DATA_LENGTH.unpack_from(record, 8)[0]
    return struct.iter_unpack(">Q", memoryview(record)[refs_start:])


class ShelfPacker:
    """An incremental pack: iterate it to the end (``FileStorage.pack()`` does).

    Closing it (or closing the storage) before the end abandons the pack and
    removes ``F.pack``; the database is untouched.  So does the end of the
    process.  ``keep_backups``: an existing ``F.prepack`` is kept as
    ``F.prepack.N`` (named in ``kept_backup`` afterwards) instead of replaced.
    """

    def __init__(
        self,
        storage: FileStorage,
        progress: ProgressCallback | None = None,
        keep_backups: bool = False,
    ) -> None:
        self.storage = storage
        self.progress = progress
        self.keep_backups = keep_backups
        #: Where the previous ``F.prepack`` went (``keep_backups``), else None.
        self.kept_backup: str | None = None
        self.fd = -1
        self.pack_path = storage.shelf.path + ".pack"
        self.finished = False
        self._cleaned = False
        storage.pack_extra = set()
        self._steps: Generator[Any, None, None] = self._run()
        watch_at_exit(self, ShelfPacker._abandon_at_exit)

    def __iter__(self) -> ShelfPacker:
        return self

    def __next__(self) -> Any:
        return next(self._steps)

    def close(self) -> None:
        """Abandon the pack (no effect once it finished)."""
        self._steps.close()
        self._cleanup()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def _abandon_at_exit(self) -> None:
        # A daemon thread may still be packing: remove the file, leave the
        # descriptor; F is complete whatever step the pack is at.
        if self.fd >= 0 and not self.finished:
            try:
                os.unlink(self.pack_path)
            except FileNotFoundError:
                pass

    def _cleanup(self) -> None:
        if self._cleaned:
            return
        self._cleaned = True
        storage = self.storage
        if getattr(storage, "_packer", None) is self:
            storage._packer = None
        storage.pack_extra = None
        if self.fd >= 0 and not self.finished:
            try:
                unlock_file(self.fd)
                os.close(self.fd)
            finally:
                self.fd = -1
                try:
                    os.unlink(self.pack_path)
                except FileNotFoundError:
                    pass

    def _report(self, phase: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(phase, done, total)

    def _run(self) -> Generator[Any, None, None]:
        try:
            yield from self._pack()
        finally:
            self._cleanup()

    def _pack(self) -> Iterator[Any]:
        storage = self.storage
        old = storage.shelf
        path = old.path
        began = time.monotonic()
        self.fd = fd = os.open(
            self.pack_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | _O_CLOEXEC, 0o666
        )
        lock_file(fd, self.pack_path)
        os.ftruncate(fd, 0)
        logger.info("pack of %r started", path)
        yield f"started {datetime.now()}"

        # 1. The reachable records, smallest pending oid first.
        writer = ShelfWriter(fd)
        limit = old.oid_limit()
        visited = OidBitmap(limit)
        pending = OidBitmap(limit)
        total = self._estimate_records(old)
        self._report("copy", 0, total)
        pending.add(0)
        copied = 0
        missing = 0
        reader = _ItemReader(old)
        try:
            cursor = 0
            visited_bits = visited.bits
            pending_bits = pending.bits
            position_of = old.position_of
            read_item = reader.read_item
            add = writer.add_numbered
            iter_refs = struct.iter_unpack
            data_length = _DATA_LENGTH.unpack_from
            while True:
                # The smallest pending oid >= cursor (there is none below it).
                i = cursor >> 3
                byte = pending_bits[i] >> (cursor & 7) if i < len(pending_bits) else 0
                if byte:
                    n = cursor + ((byte & -byte).bit_length() - 1)
                else:
                    n = pending.first_at_or_after(cursor)
                    if n < 0:
                        break
                i = n >> 3
                bit = 1 << (n & 7)
                pending_bits[i] &= ~bit
                visited_bits[i] |= bit
                cursor = n
                position = position_of(n)
                if not position:
                    missing += 1
                    continue
                name, record = read_item(position)
                add(n, name, record)
                refs_start = 12 + data_length(record, 8)[0]
                if refs_start < len(record):
                    for (ref,) in iter_refs(">Q", memoryview(record)[refs_start:]):
                        i = ref >> 3
                        bit = 1 << (ref & 7)
                        if i >= len(visited_bits):
                            visited.ensure(ref)
                            pending.ensure(ref)
                            visited_bits = visited.bits
                            pending_bits = pending.bits
                        elif visited_bits[i] & bit or pending_bits[i] & bit:
                            continue
                        pending_bits[i] |= bit
                        if ref < cursor:
                            cursor = ref
                copied += 1
                if copied % STEP_OBJECTS == 0:
                    self._report("copy", copied, max(total, copied))
                    yield copied
        finally:
            reader.close()
        if missing:
            logger.warning(
                "pack of %r: %d referenced oids have no record (dangling references)",
                path,
                missing,
            )
        self._report("copy", copied, copied)

        # 2. The offset map.
        for offset in writer.gen_finish():
            self._report("map", offset - writer.map_start, 0)
            yield offset
        pack_end = writer.map_end
        fsync_file(fd)
        logger.info("pack of %r: %d records copied, base written", path, copied)
        yield f"base written {datetime.now()}"

        # Oids with a record that the copy did not reach: removed, unless a commit
        # made during the pack reaches them again (they are visited then).
        candidates = OidBitmap()
        for checked, n in enumerate(visited.iter_absent(old.oid_limit()), 1):
            if old.position_of(n):
                candidates.add(n)
            if checked % (STEP_OBJECTS * 10) == 0:
                yield f"looking for removed objects: {checked}"

        # 3. Records committed during the pack, in rounds while commits go on.
        for round_number in range(MAX_ROUNDS):
            extra = storage.pack_extra
            assert extra is not None
            if len(extra) <= FINAL_ROUND_MAX:
                break
            storage.pack_extra = set()
            copier = self._copy_extra(extra, visited, pack_end)
            while True:
                try:
                    step = next(copier)
                except StopIteration as stop:
                    pack_end = stop.value
                    break
                self._report("extra", step, len(extra))
                yield f"round {round_number + 1}: {step} of {len(extra)} committed meanwhile"

        # 4. The final round, the removed oids and the switch, in one step.
        extra = storage.pack_extra
        assert extra is not None
        copier = self._copy_extra(extra, visited, pack_end)
        for _step in copier:
            pass
        fsync_file(fd)
        removed = [n for n in candidates if n not in visited]
        self._switch(old, path)
        storage.invalid.update(int8_to_str(n) for n in removed)
        storage.pack_extra = None
        self._report("finish", 1, 1)
        logger.info(
            "pack of %r finished in %.2f s: %d records kept, %d removed",
            path,
            time.monotonic() - began,
            copied,
            len(removed),
        )
        yield f"finished {datetime.now()}"

    @staticmethod
    def _estimate_records(shelf: Shelf) -> int:
        holes = sum(1 for _hole in shelf.map.gen_holes())
        return max(0, shelf.map.count - holes) + len(shelf.index)

    def _copy_extra(self, extra: set[bytes], visited: OidBitmap, pack_end: int) -> Any:
        """Copy ``extra`` and the unvisited records it reaches after the map.

        A generator (one step per starting oid); its return value is the new
        end of the pack file.
        """
        storage = self.storage
        starts = sorted(int.from_bytes(oid, "big") for oid in extra)
        for n in starts:
            visited.discard(n)
        batch: list[tuple[bytes, bytes]] = []
        batch_bytes = 0
        for done, start in enumerate(starts):
            todo = [start]
            while todo:
                n = heapq.heappop(todo)
                if n in visited:
                    continue
                visited.add(n)
                live = storage.shelf
                position = live.position_of(n)
                if not position:
                    continue
                name, record = live.read_item(position)
                batch.append((name, record))
                batch_bytes += 16 + len(record)
                for (ref,) in _refs_of(record):
                    if ref not in visited:
                        heapq.heappush(todo, ref)
                if batch_bytes >= _EXTRA_TRANSACTION_BYTES:
                    pack_end = self._write_transaction(batch, pack_end)
                    batch = []
                    batch_bytes = 0
            yield done + 1
        if batch:
            pack_end = self._write_transaction(batch, pack_end)
        return pack_end

    def _write_transaction(self, batch: list[tuple[bytes, bytes]], offset: int) -> int:
        parts = [b""]
        total = 0
        for name, record in batch:
            parts.append(INT8.pack(8 + len(record)))
            parts.append(name)
            parts.append(record)
            total += 16 + len(record)
        parts[0] = INT8.pack(total)
        pwrite_all(self.fd, b"".join(parts), offset)
        return offset + 8 + total

    def _switch(self, old: Shelf, path: str) -> None:
        """Put ``F.pack`` under the name ``F``; keep the previous file as ``F.prepack``."""
        prepack = path + ".prepack"
        directory = os.path.dirname(path)
        if self.keep_backups:
            self.kept_backup = keep_backup(path)
        try:
            os.unlink(prepack)
        except FileNotFoundError:
            pass
        try:
            os.link(path, prepack)
        except OSError as error:
            # No hard links on this file system: Durus 4.3's two renames, with a
            # moment where F does not exist (F.prepack and F.pack are both complete).
            logger.warning("pack: cannot hard-link %r (%s); renaming it instead", path, error)
            os.replace(path, prepack)
        os.replace(self.pack_path, path)
        fsync_directory(directory)
        fd = self.fd
        self.finished = True
        new = Shelf(path, fsync=old.fsync, _locked_fd=fd)
        self.fd = -1
        self.storage.shelf = new
        old.close(save_index=False)
        new.save_index()


def numbered_backups(path: str) -> list[tuple[int, str]]:
    """``(N, name)`` of every ``F.prepack.N`` of the database ``path``, oldest first."""
    directory, base = os.path.split(path)
    prefix = base + ".prepack."
    found = []
    for name in os.listdir(directory or "."):
        number = name[len(prefix) :]
        if name.startswith(prefix) and number.isascii() and number.isdigit() and number[0] != "0":
            found.append((int(number), os.path.join(directory, name)))
    return sorted(found)


def keep_backup(path: str) -> str | None:
    """Give ``F.prepack`` the next free number (``F.prepack.N``); that name, or None.

    Called just before ``F`` becomes the new ``F.prepack``.  Numbers grow with
    time (``F.prepack.1`` is the oldest) and a backup keeps its name once
    numbered; ``F.prepack`` stays the newest, as in Durus 4.3.  Never
    overwrites: the number is one more than the largest in use.  None when
    there is no ``F.prepack``, or when it holds the same bytes as ``F`` (packing
    a packed file again): the new ``F.prepack`` keeps them, and repeated packs
    of a quiet database do not pile up copies.
    """
    prepack = path + ".prepack"
    if not os.path.lexists(prepack) or filecmp.cmp(prepack, path, shallow=False):
        return None
    existing = numbered_backups(path)
    number = existing[-1][0] + 1 if existing else 1
    while True:
        numbered = f"{prepack}.{number}"
        try:
            os.link(prepack, numbered)
        except FileExistsError:
            number += 1
            continue
        except OSError:  # no hard links on this file system
            if os.path.lexists(numbered):
                number += 1
                continue
            os.rename(prepack, numbered)
            return numbered
        os.unlink(prepack)
        return numbered
