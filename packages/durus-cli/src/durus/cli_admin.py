"""``durus info``, ``durus verify``, ``durus census`` and ``durus convert``.

All but ``convert`` only read the file, without taking its lock: they work on a
file a running server is serving (they see it as it was when they started).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from durus.cli_common import (
    CliError,
    CommandParser,
    display_name,
    format_bytes,
    non_negative_int,
    open_storage,
    parse,
    run_command,
)
from durus.cli_progress import Progress, add_progress_options
from durus.cli_records import Walk, check_state_pickle, damage_lines, split_data
from durus.cli_scan import ROOT_OID, ScanResult, StorageScan, scan_file, scan_storage
from durus.error import DurusError
from durus.sql_errors import SqlStorageError
from durus.storage_url import is_storage_url, sqlite_path

__all__ = ["Walk", "census_main", "convert_main", "info_main", "verify_main"]

EXIT_DAMAGED = 1
#: Problems ``durus recover`` would copy as they are: no point suggesting it for these.
_NOT_RECOVERED = ("dangling references", "objects whose classes cannot be imported")


def _oid_number(oid: bytes) -> int:
    return int.from_bytes(oid, "big")


def open_scan(path: str) -> ScanResult:
    """Scan ``path``; formats the tools cannot read are a ``CliError``."""
    if not os.path.exists(path):
        raise CliError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CliError(f"{path} is a directory, not a database file")
    try:
        scan = scan_file(path)
    except PermissionError:
        raise CliError(f"{path}: permission denied") from None
    if scan.format in ("SHELF-1", "DFS20", "SQLite"):
        return scan
    scan.close()
    if scan.format == "empty":
        raise CliError(f"{path} is an empty file, not a Durus database")
    raise CliError(f"{path} is not a Durus database (unknown storage type)")


# -- info ---------------------------------------------------------------------


def build_info_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="durus info",
        description="Describe a database file: format, size, objects, transactions, "
        "garbage and the time of the last change. Reads the file only (works on a file "
        "a server is serving).",
    )
    parser.add_argument("file", metavar="FILE",
                        help="the database file, or a storage URL (sqlite:///path, "
                        "postgresql://...)")
    parser.add_argument("--json", action="store_true", help="print the facts as JSON")
    add_progress_options(parser)
    return parser


FORMAT_NAMES = {
    "SHELF-1": "SHELF-1 (FileStorage)",
    "DFS20": "DFS20 (legacy FileStorage2; `durus convert` turns it into SHELF-1)",
    "SQLite": "SQLite (SqliteStorage)",
}


def gather_info(path: str, progress: bool | None = None) -> dict[str, Any]:
    with _open_source(path) as scan:
        walk = Walk(scan)
        with Progress("reading", total=len(scan.index), enabled=progress) as bar:
            for _item in walk:
                bar.advance()
        problems = len(scan.errors) + len(walk.dangling) + len(walk.unreadable)
        # A damaged file's figures count only what could be read: no garbage estimate.
        garbage = None if problems else max(0, scan.size - walk.live_bytes - scan.overhead)
        return {
            "file": display_name(path),
            "format": scan.format,
            "size": scan.size,
            "objects": walk.reachable,
            "stored_oids": len(scan.index),
            "object_versions": scan.items,
            "transactions": (None if scan.format == "SQLite" or scan.damaged
                             else scan.transactions),
            "garbage_bytes": garbage,
            "last_change": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(scan.mtime)),
            "problems": problems,
            "damaged": bool(problems),
            "incomplete_tail": any(f.kind == "incomplete-tail" for f in scan.findings),
        }


def _info(options: argparse.Namespace) -> int:
    facts = gather_info(options.file, options.progress)
    status = EXIT_DAMAGED if facts["damaged"] else 0
    if options.json:
        print(json.dumps(facts, indent=2, sort_keys=True))
        return status
    size, damaged = facts["size"], facts["damaged"]
    share = (f", {100 * facts['garbage_bytes'] / size:.0f}% of the file" if size and not damaged
             else "")
    unknown = "unknown: the file is damaged"
    lines = [
        ("file", facts["file"]),
        ("format", FORMAT_NAMES.get(facts["format"], facts["format"])),
        ("size", format_bytes(size)),
        ("objects", f"{facts['objects']} reachable from the root"
                    + (f" could be read ({facts['stored_oids']} oids readable)" if damaged
                       else f" ({facts['stored_oids']} oids stored)")),
        ("transactions", unknown if damaged and facts["format"] != "SQLite"
                         else "not recorded by SQLite storages" if facts["transactions"] is None
                         else f"{facts['transactions']} ({facts['object_versions']} object "
                         "versions written)"),
        ("garbage", unknown if damaged
                    else f"about {format_bytes(facts['garbage_bytes'])}{share}; "
                    + ("`durus pack` removes the unreachable objects"
                       if facts["format"] == "SQLite" else "`durus pack` reclaims it")),
        ("last change", f"{facts['last_change']} (file modification time)"),
    ]
    if facts["incomplete_tail"]:
        lines.append(("note", "the file ends with an incomplete transaction "
                              "(`durus verify` says more)"))
    if damaged:
        lines.append(("problems", f"{facts['problems']} found: the file is DAMAGED; `durus "
                                  f"verify {facts['file']}` lists them"))
    for label, value in lines:
        print(f"{label + ':':14}{value}")
    return status


def info_main(argv: Sequence[str] | None = None) -> int:
    options = parse(build_info_parser(), argv)
    return run_command(lambda: _info(options))


# -- verify -------------------------------------------------------------------


def build_verify_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="durus verify",
        description="Check a database file: its structure, every record reachable from "
        "the root, their pickles and references. Exit status 0 when it is healthy, 1 "
        "when damage was found. Reads the file only (works on a file a server is "
        "serving).",
    )
    parser.add_argument("file", metavar="FILE",
                        help="the database file, or a storage URL (sqlite:///path, "
                        "postgresql://...)")
    parser.add_argument(
        "--load", action="store_true",
        help="also unpickle every object state, importing the application classes "
        "(they must be importable: see --path)",
    )
    parser.add_argument(
        "--path", action="append", default=[], metavar="DIR",
        help="add DIR to the module search path for --load (repeatable)",
    )
    parser.add_argument(
        "--max-reports", type=non_negative_int, default=20, metavar="N",
        help="list at most N problems of each kind (default: 20)",
    )
    add_progress_options(parser)
    return parser


def _make_loader() -> Callable[[bytes], None]:
    from durus.serialize import ObjectReader

    def load(data: bytes) -> None:
        reader = ObjectReader(None)  # a fresh one: a failed load may leave state behind
        ghost = reader.get_ghost(data)
        type(ghost).__setstate__(ghost, reader.get_state(data))  # as Connection.load_state

    return load


def _verify(options: argparse.Namespace) -> int:
    sys.path[:0] = [os.path.abspath(p) for p in options.path]
    problems: dict[str, list[str]] = {}

    def report(kind: str, message: str) -> None:
        problems.setdefault(kind, []).append(message)

    load = _make_loader() if options.load else None
    missing_modules: dict[str, list[Any]] = {}
    with _open_source(options.file) as scan:
        warnings = [f for f in scan.findings if f.severity == "warning"]
        for line in damage_lines(scan):
            report("structural damage", line)
        walk = Walk(scan)
        checked = 0
        with Progress("verifying", total=len(scan.index), enabled=options.progress) as bar:
            for oid, _record, data, _refs in walk:
                checked += 1
                bar.advance()
                try:
                    class_name, state, _compressed = split_data(data)
                    check_state_pickle(state)
                except ValueError as error:
                    report("unpicklable records", f"oid {_oid_number(oid)}: {error}")
                    continue
                if load is not None:
                    try:
                        load(data)
                    except ImportError as error:
                        missing = missing_modules.setdefault(str(error), [0, oid])
                        missing[0] += 1
                    except Exception as error:
                        report("unpicklable records",
                               f"oid {_oid_number(oid)} ({class_name}): cannot be loaded: "
                               f"{type(error).__name__}: {error}")
        if ROOT_OID not in scan.index and scan.index:
            report("structural damage", "the root object (oid 0) is missing")
        for message, (count, first_oid) in sorted(missing_modules.items()):
            report("objects whose classes cannot be imported",
                   f"{message}: {count} object{'s' if count != 1 else ''} (the first is oid "
                   f"{_oid_number(first_oid)}); put the application's modules on the path "
                   "(--path DIR)")
        for bad_oid, reason in walk.unreadable:
            report("unreadable records", f"oid {_oid_number(bad_oid)}: {reason}")
        for absent_oid, referrer in walk.dangling:
            report("dangling references",
                   f"oid {_oid_number(absent_oid)}, referred to by oid {_oid_number(referrer)}, "
                   "has no record")
        print(f"{options.file}: {scan.format}, {format_bytes(scan.size)}, {checked} "
              f"reachable objects checked{' and loaded' if load else ''}")
        if ROOT_OID not in scan.index and not scan.index and not scan.damaged:
            print("no objects yet: a new, empty database")
        for warning in warnings:
            print(f"warning: {str(warning).removeprefix('warning: ')}")
    total = 0
    for kind, messages in problems.items():
        total += len(messages)
        print(f"{kind}: {len(messages)}")
        for message in messages[: options.max_reports]:
            print(f"  {message}")
        if len(messages) > options.max_reports:
            print(f"  ... and {len(messages) - options.max_reports} more")
    if total:
        if not isinstance(scan, StorageScan) and set(problems) - set(_NOT_RECOVERED):
            print(f"to save what can be read: durus recover {options.file} NEW_FILE")
        print(f"DAMAGED: {total} problem{'s' if total != 1 else ''} found")
        return EXIT_DAMAGED
    print("OK: no problems found")
    return 0


def verify_main(argv: Sequence[str] | None = None) -> int:
    options = parse(build_verify_parser(), argv)
    return run_command(lambda: _verify(options))


# -- census -------------------------------------------------------------------


def build_census_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="durus census",
        description="Count the objects reachable from the root, and the bytes their "
        "records take, per class. Reads the file only.",
    )
    parser.add_argument("file", metavar="FILE",
                        help="the database file, or a storage URL (sqlite:///path, "
                        "postgresql://...)")
    parser.add_argument("--json", action="store_true", help="print the census as JSON")
    add_progress_options(parser)
    return parser


def gather_census(
    path: str, progress: bool | None = None, problems: list[int] | None = None
) -> dict[str, dict[str, int]]:
    """Objects and bytes per class; ``problems`` (a one-item list) gets the damage count."""
    census: dict[str, dict[str, int]] = {}
    with _open_source(path) as scan:
        walk = Walk(scan)
        with Progress("counting", total=len(scan.index), enabled=progress) as bar:
            for _oid, record, data, _refs in walk:
                bar.advance()
                try:
                    class_name = split_data(data)[0]
                except ValueError:
                    class_name = "?"
                entry = census.setdefault(class_name, {"objects": 0, "bytes": 0})
                entry["objects"] += 1
                entry["bytes"] += len(record)
        if problems is not None:
            problems[0] = len(scan.errors) + len(walk.dangling) + len(walk.unreadable)
    return census


def _census(options: argparse.Namespace) -> int:
    problems = [0]
    census = gather_census(options.file, options.progress, problems)
    if problems[0]:
        sys.stderr.write(f"durus: error: {display_name(options.file)} is DAMAGED ({problems[0]} "
                         f"problem{'s' if problems[0] != 1 else ''}): the census counts only "
                         "the objects that could be read; "
                         f"`durus verify {display_name(options.file)}` lists the problems\n")
    if options.json:
        print(json.dumps(census, indent=2, sort_keys=True))
        return EXIT_DAMAGED if problems[0] else 0
    rows = sorted(census.items(), key=lambda item: (-item[1]["bytes"], item[0]))
    width = max([len("class"), *(len(name) for name in census)])
    print(f"{'class':<{width}}  {'objects':>9}  {'bytes':>12}")
    for name, entry in rows:
        print(f"{name:<{width}}  {entry['objects']:>9}  {entry['bytes']:>12}")
    objects = sum(entry["objects"] for entry in census.values())
    size = sum(entry["bytes"] for entry in census.values())
    print(f"{'total':<{width}}  {objects:>9}  {size:>12}")
    return EXIT_DAMAGED if problems[0] else 0


def census_main(argv: Sequence[str] | None = None) -> int:
    options = parse(build_census_parser(), argv)
    return run_command(lambda: _census(options))


# -- convert ------------------------------------------------------------------

#: ``--to`` choices, and the format each one writes.
TARGET_KINDS = {"shelf": "SHELF-1", "sqlite": "SQLite"}
#: A plain target path with one of these suffixes is an SQLite database (without --to).
SQLITE_SUFFIXES = (".sqlite", ".sqlite3")


def build_convert_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="durus convert",
        description="Copy a database from one storage format to another: SHELF-1 "
        "(FileStorage), SQLite, PostgreSQL, and legacy DFS20 (FileStorage2) as a source. "
        "SOURCE and TARGET are file paths or storage URLs (sqlite:///path, "
        "postgresql://...). A TARGET path is written as SHELF-1 unless --to sqlite is "
        "given or it ends in .sqlite or .sqlite3. The objects reachable from the root "
        "are copied byte for byte with their oids, then checked against the source. "
        "SOURCE is only read; TARGET must not exist (a file) or must hold no objects "
        "(a database). With only SOURCE (a DFS20 or SQLite file), it is first copied to "
        "SOURCE.dfs20 (or SOURCE.sqlite; it must not exist) and then replaced by a "
        "SHELF-1 file.",
    )
    parser.add_argument("old", metavar="SOURCE",
                        help="the database to copy: a file (SHELF-1, SQLite or DFS20) or a "
                        "storage URL")
    parser.add_argument("new", metavar="TARGET", nargs="?", default=None,
                        help="the database to write: a new file, or the URL of an empty "
                        "database (sqlite:///path, postgresql://...)")
    parser.add_argument("--to", choices=sorted(TARGET_KINDS), default=None,
                        help="the format of a TARGET file: shelf (SHELF-1, the default) or "
                        "sqlite")
    add_progress_options(parser)
    return parser


@contextlib.contextmanager
def _exclusive(path: str) -> Iterator[None]:
    """Hold the writer lock of ``path`` (no Durus process may write it meanwhile)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory lock check
        yield
        return
    with open(path, "rb") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise CliError(f"{path} is in use by another process (a running Durus "
                           "server?): stop it first") from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _open_url(url: str, readonly: bool = False) -> Any:
    """``open_storage`` of a storage URL, its password left out of any message."""
    try:
        return open_storage(url, readonly=readonly)
    except CliError as error:
        raise CliError(str(error).replace(url, display_name(url)), error.status) from None


def reachable_oids(scan: ScanResult, progress: bool | None) -> list[bytes]:
    """The oids reachable from the root, read once; ``CliError`` if the source is damaged."""
    walk = Walk(scan)
    oids: list[bytes] = []
    with Progress("reading", total=len(scan.index), enabled=progress) as bar:
        for oid, _record, _data, _refs in walk:
            oids.append(oid)
            bar.advance()
    problems = [f"oid {_oid_number(oid)}: {error}" for oid, error in walk.unreadable]
    problems += [f"oid {_oid_number(missing)} (referred to by oid {_oid_number(referrer)}) "
                 "has no record" for missing, referrer in walk.dangling]
    if scan.errors or problems:
        first = (problems or [str(f) for f in scan.errors])[0]
        hint = (f": see `durus verify {scan.path}`" if scan.format != "PostgreSQL" else "")
        raise CliError(f"{scan.path} is damaged ({first}); nothing was written{hint}")
    return oids


def write_shelf(target: str, scan: ScanResult, progress: bool | None,
                oids: list[bytes] | None = None) -> int:
    """Write the objects reachable in ``scan`` into a new SHELF-1 file; returns their count."""
    from durus.file_storage import FileStorage

    if oids is None:
        oids = reachable_oids(scan, progress)
    storage = FileStorage(target)
    try:
        # A new file accepts records only for oids it handed out itself (or oid 0):
        # draw oids up to the largest one copied; the unused ones stay free.
        highest = max((_oid_number(oid) for oid in oids), default=0)
        for _attempt in range(highest + 1):
            if _oid_number(storage.new_oid()) >= highest:
                break
        batch = 0
        storage.begin()
        with Progress("writing", total=len(oids), enabled=progress) as bar:
            for oid in oids:
                record = scan.read_record(oid)
                storage.store(oid, record)
                batch += len(record)
                bar.advance()
                if batch > 8_000_000:
                    storage.end()
                    storage.begin()
                    batch = 0
            storage.end()
    except ValueError as error:
        raise CliError(f"writing {target} failed: {error}") from None
    finally:
        storage.close()
    return len(oids)


def write_sql(storage: Any, scan: ScanResult, oids: list[bytes], progress: bool | None,
              started: list[bool] | None = None) -> int:
    """Copy the records of ``oids`` into the empty SQL ``storage``; returns their count.

    ``started`` (a one-item list) is set once the first record was handed over:
    until then nothing was written (a refusal of a non-empty database, say).
    """

    def records() -> Iterator[tuple[bytes, bytes]]:
        with Progress("writing", total=len(oids), enabled=progress) as bar:
            for oid in oids:
                record = scan.read_record(oid)
                if started is not None:
                    started[0] = True
                yield oid, record
                bar.advance()

    return int(storage.create_from_records(records()))


def check_copy(target: str | ScanResult, scan: ScanResult, count: int | None = None) -> None:
    """Every reachable record of ``scan`` must be in ``target``, byte for byte.

    ``target`` is a file name (read with ``scan_file``) or an open scan (closed
    here).  With ``count``, the target must hold exactly that many objects.
    """
    copy = scan_file(target) if isinstance(target, str) else target
    name = target if isinstance(target, str) else copy.path
    with copy:
        if copy.errors:
            raise CliError(f"the converted database {name} failed its check: {copy.errors[0]}")
        for oid, record, _data, _refs in Walk(scan):
            try:
                same = copy.read_record(oid) == record
            except (KeyError, ValueError):
                same = False
            if not same:
                raise CliError(f"the converted database {name} differs from the original at "
                               f"oid {_oid_number(oid)}")
        if count is not None and len(copy.index) != count:
            raise CliError(f"the converted database {name} holds {len(copy.index)} objects, "
                           f"not the {count} copied")


def _move_without_overwriting(source: str, target: str) -> None:
    exists = CliError(f"{target} exists: choose a new file name (convert never overwrites)")
    try:
        # A hard link refuses to replace a file created meanwhile.
        os.link(source, target)
    except FileExistsError:
        raise exists from None
    except OSError:  # no hard links on this file system
        if os.path.exists(target):
            raise exists from None
        os.rename(source, target)
    else:
        os.unlink(source)


def _remove_partial(path: str) -> None:
    """Remove a partial target file, and the files SQLite or FileStorage left beside it."""
    for name in (path, f"{path}-wal", f"{path}-shm", f"{path}-journal", f"{path}.index"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def _target_kind(target: str, to: str | None) -> str:
    """"SHELF-1", "SQLite" or "PostgreSQL": what ``durus convert`` writes into ``target``."""
    if is_storage_url(target):
        scheme = target.partition("://")[0].lower()
        kind = "SQLite" if scheme == "sqlite" else "PostgreSQL"
        if to is not None and TARGET_KINDS[to] != kind:
            raise CliError(f"--to {to} contradicts the target URL {display_name(target)} "
                           f"(a {kind} database)")
        return kind
    if to is not None:
        return TARGET_KINDS[to]
    if target.lower().endswith(SQLITE_SUFFIXES):
        return "SQLite"
    return "SHELF-1"


def _open_source(text: str) -> ScanResult:
    """The scan of a source file or storage URL (opened read-only)."""
    if not is_storage_url(text):
        return open_scan(text)
    if text.partition("://")[0].lower() == "sqlite":
        try:
            return open_scan(sqlite_path(text))
        except ValueError as error:
            raise CliError(str(error)) from None
    storage = _open_url(text, readonly=True)
    try:
        return scan_storage(display_name(text), storage, "PostgreSQL")
    except DurusError as error:
        raise CliError(f"cannot read {display_name(text)}: {error}") from None


def _convert(options: argparse.Namespace) -> None:
    try:
        _convert_checked(options)
    except DurusError as error:  # a storage's error (a lost database connection, say)
        raise CliError(f"convert failed: {error}") from None


def _convert_checked(options: argparse.Namespace) -> None:
    old, new = options.old, options.new
    in_place = new is None
    if in_place:
        if is_storage_url(old):
            raise CliError(f"{display_name(old)} is a database URL: name the TARGET to copy "
                           "it into (only files are converted in place)")
        if options.to not in (None, "shelf"):
            raise CliError(f"--to {options.to} needs a TARGET (a file is converted in place "
                           "only into SHELF-1)")
        kind = "SHELF-1"
    else:
        kind = _target_kind(new, options.to)
    with _open_source(old) as scan:
        if in_place and scan.format == "SHELF-1":
            raise CliError(f"{old} is already a SHELF-1 database: nothing to convert")
        source_file = None if isinstance(scan, StorageScan) else scan.path
        lock = _exclusive(source_file) if source_file else contextlib.nullcontext()
        with lock:
            if kind == "PostgreSQL":
                count, final = _convert_into_database(new, scan, options.progress), new
            else:
                count, final = _convert_into_file(old, new, kind, scan, options.progress)
    dropped = len(scan.index) - count
    print(f"converted {display_name(old)} ({scan.format}) into {display_name(final)} "
          f"({kind}): {count} objects copied"
          + (f", {dropped} unreachable ones left out" if dropped else ""))
    if in_place:
        print(f"the original file is kept as {old}.{scan.format.lower()}")


def _convert_into_file(
    old: str, new: str | None, kind: str, scan: ScanResult, progress: bool | None
) -> tuple[int, str]:
    """Write a new SHELF-1 or SQLite file (``new``, or ``old`` replaced); ``(count, name)``."""
    in_place = new is None
    final_name = old if new is None else new
    final = sqlite_path(final_name) if is_storage_url(final_name) else final_name
    backup = f"{old}.{scan.format.lower()}"
    if in_place and os.path.exists(backup):
        raise CliError(f"{backup} exists: move it away first (it would be the "
                       f"backup of {old})")
    if not in_place and (os.path.lexists(final) or os.path.exists(f"{final}-wal")):
        raise CliError(f"{final} exists: choose a new file name (convert never overwrites)")
    oids = reachable_oids(scan, progress)
    partial = f"{final}.converting"
    _remove_partial(partial)
    try:
        if kind == "SHELF-1":
            count = write_shelf(partial, scan, progress, oids)
        else:
            from durus.sqlite_storage import SqliteStorage

            storage = SqliteStorage(partial)
            try:
                count = write_sql(storage, scan, oids, progress)
            finally:
                storage.close()
            _single_sqlite_file(partial)
        check_copy(partial, scan, count)
        if in_place:
            shutil.copy2(old, backup)
            os.replace(partial, old)
        else:
            _move_without_overwriting(partial, final)
    except BaseException:
        _remove_partial(partial)
        raise
    _remove_partial(partial)  # what the storages left beside it (a SHELF-1 .index cache)
    return count, final_name


def _single_sqlite_file(path: str) -> None:
    """Leave the new SQLite database whole in its one file, in rollback-journal mode.

    SqliteStorage writes in WAL mode (it switches back on its next writable
    open); a file at rest in rollback mode can be moved or copied alone, and
    readers do not create ``-wal``/``-shm`` files beside it.
    """
    import sqlite3

    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("PRAGMA journal_mode=DELETE")
    finally:
        db.close()
    if os.path.exists(f"{path}-wal"):
        raise CliError(f"SQLite left the write-ahead log {path}-wal behind: the copy is "
                       "not complete in its file")


def _empty_postgres(url: str) -> str | None:
    """Remove every object (a partial copy); None, or why it failed."""
    try:
        storage = _open_url(url)
        try:
            storage.remove_every_object()
        finally:
            storage.close()
    except Exception as error:
        return (str(error).strip() or type(error).__name__).splitlines()[0]
    return None


def _convert_into_database(url: str, scan: ScanResult, progress: bool | None) -> int:
    """Copy into the PostgreSQL database ``url`` (it must hold no objects); the count."""
    name = display_name(url)
    oids = reachable_oids(scan, progress)  # before the target is touched: a damaged
    storage = _open_url(url)               # source leaves it as it was
    started = [False]
    try:
        try:
            if next(iter(storage.gen_oid_record()), None) is not None:
                raise CliError(f"{name} already holds a Durus database: convert copies only "
                               "into an empty database (it never overwrites)")
            count = write_sql(storage, scan, oids, progress, started)
        except SqlStorageError as error:
            if started[0]:
                raise
            raise CliError(f"{name} cannot take the copy: {error}") from None
        finally:
            storage.close()
        check_copy(scan_storage(name, _open_url(url, readonly=True), "PostgreSQL"),
                   scan, count)
    except BaseException as error:
        if not started[0]:
            raise
        failure = _empty_postgres(url)
        if failure is None:
            note = f"the partial copy was removed: {name} holds no objects again"
        else:
            note = (f"{name} holds a partial copy that could not be removed ({failure}): "
                    "remove it (durus.pg_storage.PostgresStorage(url).remove_every_object(), "
                    "or `DELETE FROM objects`) before converting into it again")
        if isinstance(error, (CliError, DurusError)):
            raise CliError(f"{error}; {note}") from None
        sys.stderr.write(f"durus: {note}\n")
        raise
    return count


def convert_main(argv: Sequence[str] | None = None) -> int:
    # Intermixed: ``durus convert SOURCE --to sqlite TARGET`` reads TARGET too.
    options = build_convert_parser().parse_intermixed_args(
        list(sys.argv[1:] if argv is None else argv))
    return run_command(lambda: _convert(options))
