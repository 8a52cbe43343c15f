"""``durus info``, ``durus verify`` and ``durus census`` (``durus convert``: cli_convert).

They only read the file, without taking its lock: they work on a file a
running server is serving (they see it as it was when they started).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
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
from durus.cli_scan import ScanResult, StorageScan, scan_file, scan_storage
from durus.error import DurusError
from durus.storage import ROOT_OID
from durus.storage_url import is_storage_url, sqlite_path

__all__ = [
    "Walk",
    "census_main",
    "info_main",
    "oid_number",
    "open_scan",
    "open_source",
    "open_url",
    "verify_main",
]

EXIT_DAMAGED = 1
#: Problems ``durus recover`` would copy as they are: no point suggesting it for these.
_NOT_RECOVERED = ("dangling references", "objects whose classes cannot be imported")


def oid_number(oid: bytes) -> int:
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
    with open_source(path) as scan:
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
    with open_source(options.file) as scan:
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
                    report("unpicklable records", f"oid {oid_number(oid)}: {error}")
                    continue
                if load is not None:
                    try:
                        load(data)
                    except ImportError as error:
                        missing = missing_modules.setdefault(str(error), [0, oid])
                        missing[0] += 1
                    except Exception as error:
                        report("unpicklable records",
                               f"oid {oid_number(oid)} ({class_name}): cannot be loaded: "
                               f"{type(error).__name__}: {error}")
        if ROOT_OID not in scan.index and scan.index:
            report("structural damage", "the root object (oid 0) is missing")
        for message, (count, first_oid) in sorted(missing_modules.items()):
            report("objects whose classes cannot be imported",
                   f"{message}: {count} object{'s' if count != 1 else ''} (the first is oid "
                   f"{oid_number(first_oid)}); put the application's modules on the path "
                   "(--path DIR)")
        for bad_oid, reason in walk.unreadable:
            report("unreadable records", f"oid {oid_number(bad_oid)}: {reason}")
        for absent_oid, referrer in walk.dangling:
            report("dangling references",
                   f"oid {oid_number(absent_oid)}, referred to by oid {oid_number(referrer)}, "
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
    with open_source(path) as scan:
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


def open_url(url: str, readonly: bool = False) -> Any:
    """``open_storage`` of a storage URL, its password left out of any message."""
    try:
        return open_storage(url, readonly=readonly)
    except CliError as error:
        raise CliError(str(error).replace(url, display_name(url)), error.status) from None


def open_source(text: str) -> ScanResult:
    """The scan of a source file or storage URL (opened read-only)."""
    if not is_storage_url(text):
        return open_scan(text)
    if text.partition("://")[0].lower() == "sqlite":
        try:
            return open_scan(sqlite_path(text))
        except ValueError as error:
            raise CliError(str(error)) from None
    storage = open_url(text, readonly=True)
    try:
        return scan_storage(display_name(text), storage, "PostgreSQL")
    except DurusError as error:
        raise CliError(f"cannot read {display_name(text)}: {error}") from None
