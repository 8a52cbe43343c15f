"""``durus recover DAMAGED NEW``: save what can still be read of a damaged file.

Every object whose latest record can still be read (its framing intact, its
pickles well-formed) is copied under its oid into a new SHELF-1 file, written
as a pack writes one.  DAMAGED is only read, without its lock (like ``durus
verify``).  What is lost is reported: the oids, why, and which surviving
objects refer to them.

Dangling references are kept as they are: a surviving object that refers to a
lost one still does, so the application meets a ``ReadConflictError`` naming
the lost oid when it touches it (rather than a silently different object), and
the lost oids are reserved in NEW's offset map: no new object is ever given
one of them.  A pack frees the oids of missing records, so the references
should be removed before NEW is packed (``durus verify NEW`` lists them).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import pickletools
import zlib
from collections.abc import Iterator, Sequence

from durus.cli_admin import open_scan
from durus.cli_common import CliError, CommandParser, non_negative_int, parse, run_command
from durus.cli_progress import Progress, add_progress_options
from durus.cli_records import check_state_pickle, damage_lines, record_parts, split_data
from durus.cli_scan import ScanResult, scan_file
from durus.serialize import pack_record
from durus.shelf_check import write_salvaged_shelf
from durus.storage import ROOT_OID

__all__ = ["recover_main"]

#: The class pickle of a ``PersistentDict`` (spec 2.9): the root a recovery writes
#: when the root was lost.
_ROOT_CLASS = b"\x80\x02cdurus.persistent_dict\nPersistentDict\nq\x00."


def _number(oid: bytes) -> int:
    return int.from_bytes(oid, "big")


def build_recover_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="durus recover",
        description="Copy every object that can still be read from a damaged database "
        "file into a new SHELF-1 file, and report the objects that could not be read and "
        "the surviving objects that refer to them. DAMAGED is only read. References to "
        "lost objects are kept (touching one raises ReadConflictError) and the lost oids "
        "are never given to new objects; remove those references before packing NEW.",
    )
    parser.add_argument("damaged", metavar="DAMAGED",
                        help="the damaged database file (SHELF-1; DFS20 and SQLite files "
                        "are read too)")
    parser.add_argument("new", metavar="NEW", help="the SHELF-1 file to write")
    parser.add_argument("--force", action="store_true", help="replace NEW if it exists")
    parser.add_argument(
        "--max-reports", type=non_negative_int, default=20, metavar="N",
        help="list at most N lost objects (default: 20)",
    )
    add_progress_options(parser)
    return parser


class Salvage:
    """What ``recover`` copied and lost, filled while NEW is written."""

    def __init__(self, scan: ScanResult) -> None:
        self.scan = scan
        #: oid -> CRC-32 of the record copied
        self.copied: dict[bytes, int] = {}
        #: oid -> why its record could not be copied
        self.lost: dict[bytes, str] = {}
        #: referred to by a copied object, but no record of it was found at all
        self.absent: set[bytes] = set()
        #: lost oid -> the copied objects that refer to it (filled by ``check``)
        self.referrers: dict[bytes, list[bytes]] = {}
        #: oid -> where its latest version was damaged (an earlier one was found)
        self.older: dict[bytes, int] = {}
        for region in scan.unreadable:
            oid = region.oid
            if oid is None:
                continue
            if oid not in scan.index:
                self.lost[oid] = f"its item at {region.start} is damaged"
            elif scan.index[oid] < region.start:
                self.older[oid] = region.start
        self.older.update(scan.passed_over)
        #: lost oids too far above the others to reserve (damaged references, surely)
        self.unreserved: list[bytes] = []
        #: the root was lost: the copied objects a new root refers to
        self.orphans: list[bytes] | None = None
        #: the root was lost: oid -> the refs of each copied record
        self._graph: dict[bytes, list[bytes]] | None = None
        self._classes: dict[bytes, bytes] = {}

    def records(self, progress: bool | None) -> Iterator[tuple[bytes, bytes]]:
        """The records that can be read, in oid order; the others go to ``lost``."""
        scan, copied, lost = self.scan, self.copied, self.lost
        with Progress("recovering", total=len(scan.index), enabled=progress) as bar:
            for oid in sorted(scan.index):
                bar.advance()
                try:
                    record = scan.read_record(oid)
                    data, refs = record_parts(record)
                    check_state_pickle(split_data(data)[1])
                except (ValueError, OSError) as error:
                    lost[oid] = str(error)
                    continue
                if oid != ROOT_OID and ROOT_OID not in copied:
                    self._note_orphan_candidate(oid, data, refs)
                copied[oid] = zlib.crc32(record)
                for ref in refs:
                    if ref not in scan.index:
                        self.absent.add(ref)
                yield oid, record
        if ROOT_OID not in copied:
            record = self._new_root()
            copied[ROOT_OID] = zlib.crc32(record)
            yield ROOT_OID, record

    def _note_orphan_candidate(self, oid: bytes, data: bytes, refs: list[bytes]) -> None:
        """Without the root, remember the graph of what is copied (to keep it reachable)."""
        if self._graph is None:
            self._graph = {}
        self._graph[oid] = refs
        klass = _class_global(data)
        if klass is not None:
            self._classes[oid] = klass

    def _new_root(self) -> bytes:
        """A root for a file whose root was lost: ``{oid number: object}`` of the tops.

        The tops are the copied objects nothing else copied refers to (and one
        object of each cycle left over), so that every copied object is reachable
        again: a pack keeps them, and the application finds them.
        """
        graph = self._graph or {}
        referenced = {ref for oid, refs in graph.items() for ref in refs if ref != oid}
        tops = [oid for oid in graph if oid not in referenced and oid in self._classes]
        seen: set[bytes] = set()

        def visit(start: bytes) -> None:
            todo = [start]
            while todo:
                oid = todo.pop()
                if oid in seen:
                    continue
                seen.add(oid)
                todo.extend(ref for ref in graph.get(oid, ()) if ref in graph)

        for oid in tops:
            visit(oid)
        for oid in graph:
            if oid not in seen and oid in self._classes:
                tops.append(oid)
                visit(oid)
        self.orphans = tops
        # A PersistentDict state, {"data": {number: (oid, class)}}, in pickle opcodes:
        # the classes are named, never imported.
        state = bytearray(b"\x80\x03}X\x04\x00\x00\x00data}")
        if tops:
            state += b"("
            for oid in tops:
                state += pickle.dumps(_number(oid), 3)[2:-1]
                state += b"C\x08" + oid + self._classes[oid] + b"\x86Q"
            state += b"u"
        state += b"s."
        return pack_record(ROOT_OID, _ROOT_CLASS + bytes(state), b"".join(tops))

    def reserved(self) -> Iterator[int]:
        """The oids to keep from new objects: every lost one (read after the records).

        An oid far above every oid copied (a reference or a name hit by the
        damage, surely) is not reserved: the offset map has a slot per oid.
        """
        bound = 2 * max(map(_number, self.copied), default=0) + 65536
        for oid in sorted(self.absent | set(self.lost)):
            if oid in self.copied:
                continue
            if _number(oid) > bound:
                self.unreserved.append(oid)
            else:
                yield _number(oid)

    def check(self, path: str, progress: bool | None) -> None:
        """Read NEW back: every copied record, byte for byte; note the dangling references."""
        with scan_file(path) as copy:
            if copy.errors:
                raise CliError(f"the recovered file {path} failed its check: {copy.errors[0]}")
            if len(copy.index) != len(self.copied):
                raise CliError(f"the recovered file {path} holds {len(copy.index)} objects, "
                               f"not the {len(self.copied)} copied")
            with Progress("checking", total=len(self.copied), enabled=progress) as bar:
                for oid, crc in self.copied.items():
                    bar.advance()
                    try:
                        record = copy.read_record(oid)
                    except (KeyError, ValueError):
                        record = b""
                    if zlib.crc32(record) != crc:
                        raise CliError(f"the recovered file {path} differs from what was read "
                                       f"at oid {_number(oid)}")
                    for ref in dict.fromkeys(record_parts(record)[1]):
                        if ref not in self.copied:
                            self.referrers.setdefault(ref, []).append(oid)
        for oid in self.referrers:
            self.lost.setdefault(oid, "no readable record of it was found")


def _class_global(data: bytes) -> bytes | None:
    """The ``GLOBAL`` opcode naming the class of a record's data, as pickle bytes."""
    try:
        for opcode, arg, _position in pickletools.genops(data):
            if opcode.name == "GLOBAL" and isinstance(arg, str):
                module, _space, name = arg.partition(" ")
                return b"c" + module.encode() + b"\n" + name.encode() + b"\n"
            if opcode.name == "STOP":
                return None
    except Exception:
        return None
    return None


def _check_names(damaged: str, new: str, force: bool) -> None:
    """Refuse a NEW that is DAMAGED itself, a folder, or (without --force) any file."""
    if not os.path.lexists(new):
        return
    if os.path.exists(damaged) and os.path.exists(new) and os.path.samefile(damaged, new):
        raise CliError(f"{new} is the damaged file itself: name a new file (recover never "
                       "changes the damaged file)")
    if os.path.isdir(new):
        raise CliError(f"{new} is a directory: name a new file")
    if not force:
        raise CliError(f"{new} exists: choose a new file name, or give --force to replace it")


def _in_use(path: str) -> bool:
    """Does a Durus process (a server, say) hold the writer lock of ``path``?"""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory lock check
        return False
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError:
        return False
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return False


def _put_in_place(partial: str, new: str, force: bool) -> None:
    if force:
        if os.path.exists(new) and _in_use(new):
            raise CliError(f"{new} is in use by another process (a running Durus server?): "
                           "stop it first")
        os.replace(partial, new)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{new}.index")  # the side index of the file replaced
        return
    try:
        os.link(partial, new)  # refuses a file created meanwhile
    except FileExistsError:
        raise CliError(f"{new} exists: choose a new file name, or give --force to replace "
                       "it") from None
    except OSError:  # no hard links on this file system
        if os.path.lexists(new):
            raise CliError(f"{new} exists: choose a new file name, or give --force to "
                           "replace it") from None
        os.rename(partial, new)
    else:
        os.unlink(partial)


def _recover(options: argparse.Namespace) -> None:
    damaged, new, progress = options.damaged, options.new, options.progress
    _check_names(damaged, new, options.force)
    partial = f"{new}.recovering"
    with open_scan(damaged) as scan:
        salvage = Salvage(scan)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        try:
            try:
                write_salvaged_shelf(partial, salvage.records(progress), salvage.reserved())
            except FileExistsError:
                raise CliError(f"{partial} was created meanwhile: is another recover "
                               "running?") from None
            salvage.check(partial, progress)
            _put_in_place(partial, new, options.force)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
        _report(options, scan, salvage)


def _report(options: argparse.Namespace, scan: ScanResult, salvage: Salvage) -> None:
    copied, lost, referrers = salvage.copied, salvage.lost, salvage.referrers
    count = len(copied) - (salvage.orphans is not None)  # not the new root
    print(f"recovered {options.damaged} ({scan.format}) into {options.new}: "
          f"{count} object{'s' if count != 1 else ''} copied, "
          + (f"{len(lost)} lost" if lost else "nothing lost"))
    lines = damage_lines(scan)
    if lines:
        print("damage found:")
        for line in lines:
            print(f"  {line}")
    for finding in scan.findings:
        if finding.severity == "warning":
            print(f"note: {finding.message} (left out, as FileStorage leaves it out)")
    if lost:
        print(f"lost objects: {len(lost)} (oid: why; the surviving objects that refer to it)")
        for oid in sorted(lost)[: options.max_reports]:
            refs = referrers.get(oid, [])
            by = (f"referred to by oid{'s' if len(refs) != 1 else ''} "
                  + ", ".join(str(_number(r)) for r in refs[:10])
                  + (f" and {len(refs) - 10} more" if len(refs) > 10 else "")
                  if refs else "no surviving object refers to it")
            print(f"  oid {_number(oid)}: {lost[oid]}; {by}")
        if len(lost) > options.max_reports:
            print(f"  ... and {len(lost) - options.max_reports} more (--max-reports N lists "
                  "more)")
    older = [oid for oid in sorted(salvage.older) if oid in copied]
    if older:
        print(f"also damaged: {len(older)} copied object{'s' if len(older) != 1 else ''} had "
              "another, damaged item naming them (a later version, or an item whose name was "
              "hit): the intact one was copied; oids "
              + ", ".join(str(_number(oid)) for oid in older[: options.max_reports])
              + (" ..." if len(older) > options.max_reports else ""))
    if salvage.orphans is not None:
        print(f"the root object (oid 0) was lost: {options.new} has a new root, a "
              f"PersistentDict holding the {len(salvage.orphans)} copied object"
              f"{'s' if len(salvage.orphans) != 1 else ''} nothing else refers to, each under "
              "its oid number, so that every object copied stays reachable")
    if salvage.unreserved:
        print(f"not reserved: {len(salvage.unreserved)} lost oid"
              f"{'s' if len(salvage.unreserved) != 1 else ''} far above every oid in the file "
              "(damaged references?): "
              + ", ".join(str(_number(oid)) for oid in salvage.unreserved[:5])
              + (" ..." if len(salvage.unreserved) > 5 else ""))
    dangling = sum(len(refs) for refs in referrers.values())
    if dangling:
        sources = len({r for refs in referrers.values() for r in refs})
        print(f"dangling references: {dangling}, from {sources} surviving object"
              f"{'s' if sources != 1 else ''} to {len(referrers)} lost "
              f"object{'s' if len(referrers) != 1 else ''}")
        print(f"  {options.new} keeps them as they are: touching one raises "
              "ReadConflictError naming the lost oid,\n  and no new object is ever given a "
              "lost oid; remove the references before packing it\n  (a pack frees the oids "
              f"of missing records): `durus verify {options.new}` lists them")


def recover_main(argv: Sequence[str] | None = None) -> int:
    options = parse(build_recover_parser(), argv)
    return run_command(lambda: _recover(options))
