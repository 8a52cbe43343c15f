"""The ``durus`` command (also ``python -m durus``, or this file run as a script).

``durus -s`` runs a storage server, ``durus -c`` opens an interactive console,
``durus -p`` packs; ``durus info|verify|census|convert|recover|pack`` inspect
and maintain database files, and ``durus browse`` shows one in a web browser.
Durus 4.3's importable helpers keep their names here.
"""

from __future__ import annotations

import logging
import os
import sys

if not __package__:  # run as a plain script path: .../src/durus/__main__.py
    _here = os.path.dirname(os.path.abspath(__file__))
    # The durus/ folder itself is not a place for top-level modules.
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
    try:
        import durus.cli_common  # noqa: F401
    except ImportError:  # a source tree that is not installed: use the src/ folder
        sys.path.insert(0, os.path.dirname(_here))

from collections.abc import Callable, Sequence
from typing import IO

from durus.cli_client import client_main, configure_readline, interactive_client
from durus.cli_common import (
    CliError,
    get_storage,
    get_storage_class,
    import_class,
)
from durus.cli_pack import pack_storage_main
from durus.cli_server import run_durus_main, start_durus, stop_durus

__all__ = [
    "CliError",
    "client_main",
    "configure_readline",
    "get_storage",
    "get_storage_class",
    "import_class",
    "interactive_client",
    "main",
    "pack_storage_main",
    "run_durus_main",
    "start_durus",
    "stop_durus",
    "usage",
]

USAGE = """\
usage: durus MODE [options]      (durus MODE --help describes a mode's options)

Durus 4.3's modes:
  -s       run a storage server (--stop stops one)
  -c       interactive Python console on a server or, with --file, on a file
  -p       pack the database of a server or, with --file, a file
  -h       this help

Tools for database files:
  info FILE        format, size, objects, transactions, garbage, last change
  verify FILE      check every reachable record; exit status 1 if damaged
  census FILE      objects and bytes per class
  convert OLD NEW  copy a database between SHELF-1, SQLite and PostgreSQL, in any
                   direction (legacy DFS20 files too); with only OLD, in place
  recover BAD NEW  copy every object still readable in a damaged file into a
                   new SHELF-1 file; report what was lost
  pack FILE        pack a file (same as -p --file FILE)
  browse TARGET    look inside a database (a file, a storage URL or, with
                   --server-port/--address, a server) in a web browser, read-only

  --version        versions of the installed Durus distributions
"""


def usage(stream: IO[str] | None = None) -> None:
    """Print the short usage text (to stdout by default)."""
    (stream or sys.stdout).write(USAGE)


def _tools() -> dict[str, Callable[[Sequence[str] | None], int]]:
    from durus.cli_admin import census_main, info_main, verify_main
    from durus.cli_browse import browse_main
    from durus.cli_convert import convert_main
    from durus.cli_pack import pack_main
    from durus.cli_recover import recover_main

    return {
        "-s": run_durus_main,
        "-c": client_main,
        "-p": pack_storage_main,
        "info": info_main,
        "verify": verify_main,
        "census": census_main,
        "convert": convert_main,
        "recover": recover_main,
        "pack": pack_main,
        "browse": browse_main,
    }


def _versions() -> str:
    from importlib import metadata

    lines = []
    for name in ("durus-cli", "durus-server", "durus-client", "durus-filestorage",
                 "durus-sqlstorage", "durus-persistent"):
        try:
            lines.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            lines.append(f"{name} (not installed as a distribution)")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        usage()
        return 0
    if args[0] in ("-V", "--version"):
        sys.stdout.write(_versions())
        return 0
    command = _tools().get(args[0])
    if command is None:
        sys.stderr.write(f"durus: error: unknown mode {args[0]!r} (see durus -h)\n")
        return 2
    if args[0] != "-s":  # the server configures its own logging (--logfile, ...)
        from durus.cli_common import configure_logging

        configure_logging(logging.WARNING)
    try:
        status = command(args[1:])
    except KeyboardInterrupt:
        sys.stderr.write("durus: interrupted\n")
        return 130
    except BrokenPipeError:  # e.g. `durus census F | head`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the final flush
        except OSError:
            pass
        return 1
    except OSError as error:
        # Anything the operating system refused that no command foresaw.
        sys.stderr.write(f"durus: error: {error}\n")
        return 1
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
