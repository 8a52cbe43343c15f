"""``durus convert``: a database copied into another format or storage, then checked.

Why its own module: unlike the other admin commands it writes, so it takes the
source's lock and never overwrites its target (a partial copy is removed).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from durus.cli_admin import oid_number, open_source, open_url
from durus.cli_common import (
    CliError,
    CommandParser,
    display_name,
    run_command,
)
from durus.cli_progress import Progress, add_progress_options
from durus.cli_records import Walk
from durus.cli_scan import ScanResult, StorageScan, scan_file, scan_storage
from durus.error import DurusError
from durus.sql_errors import SqlStorageError
from durus.storage_url import is_storage_url, sqlite_path

__all__ = ["convert_main"]

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


def reachable_oids(scan: ScanResult, progress: bool | None) -> list[bytes]:
    """The oids reachable from the root, read once; ``CliError`` if the source is damaged."""
    walk = Walk(scan)
    oids: list[bytes] = []
    with Progress("reading", total=len(scan.index), enabled=progress) as bar:
        for oid, _record, _data, _refs in walk:
            oids.append(oid)
            bar.advance()
    problems = [f"oid {oid_number(oid)}: {error}" for oid, error in walk.unreadable]
    problems += [f"oid {oid_number(missing)} (referred to by oid {oid_number(referrer)}) "
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
        highest = max((oid_number(oid) for oid in oids), default=0)
        for _attempt in range(highest + 1):
            if oid_number(storage.new_oid()) >= highest:
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
                               f"oid {oid_number(oid)}")
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
    with open_source(old) as scan:
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
        storage = open_url(url)
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
    storage = open_url(url)               # source leaves it as it was
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
        check_copy(scan_storage(name, open_url(url, readonly=True), "PostgreSQL"),
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
