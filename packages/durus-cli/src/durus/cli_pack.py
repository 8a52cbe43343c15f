"""``durus -p`` and ``durus pack FILE``: remove unreachable objects from a database."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NamedTuple

from durus.cli_common import (
    ClientSecurity,
    CliError,
    CommandParser,
    add_address_options,
    add_security_options,
    client_security,
    describe_address,
    format_bytes,
    non_negative_int,
    open_storage,
    parse,
    run_command,
)
from durus.cli_progress import Progress, add_progress_options

__all__ = ["PackedFile", "pack_file", "pack_main", "pack_server", "pack_storage_main"]

_BACKUPS = (
    "The file as it was before the pack is kept as FILE.prepack; an earlier FILE.prepack "
    "is kept too, as FILE.prepack.N (N one more than the largest: FILE.prepack.1 is the "
    "oldest). Delete the backups you no longer need."
)


def _add_replace_backup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--replace-backup", action="store_true",
        help="replace an earlier FILE.prepack instead of keeping it as FILE.prepack.N "
        "(Durus 4.3's behaviour, which a server packing by itself keeps)",
    )


def build_parser(prog: str = "durus -p") -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=prog,
        description="Pack a Durus database: a file directly (--file), or the database of "
        "a running server (the default). Packing removes the objects no longer "
        "reachable from the root. " + _BACKUPS + " A server keeps only one FILE.prepack.",
    )
    parser.add_argument(
        "--file", default=None, metavar="FILE",
        help="pack FILE (or the database of a storage URL: sqlite:///path, "
        "postgresql://...) in this process (a file must not be in use by a server)",
    )
    add_address_options(parser, "of the server")
    add_security_options(parser)
    parser.add_argument(
        "--wait", default=0, type=non_negative_int, metavar="SECONDS",
        help="wait up to SECONDS for the server to start listening (default: 0)",
    )
    _add_replace_backup(parser)
    add_progress_options(parser)
    return parser


def build_file_parser(prog: str = "durus pack") -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=prog,
        description="Pack a database file in this process (the same as durus -p --file "
        "FILE): remove the objects no longer reachable from the root. " + _BACKUPS,
    )
    parser.add_argument("file", metavar="FILE", help="the database file")
    _add_replace_backup(parser)
    add_progress_options(parser)
    return parser


class PackedFile(NamedTuple):
    """What ``pack_file`` did: sizes before and after, where the earlier backup went."""

    before: int
    after: int
    #: ``FILE.prepack.N`` if an earlier ``FILE.prepack`` was kept under that name.
    kept_backup: str | None = None


def pack_file(
    file: str, progress: bool | None = None, replace_backup: bool = False
) -> PackedFile:
    """Pack ``file`` in this process, keeping an earlier backup unless ``replace_backup``.

    The command never loses a backup by itself; the API's ``pack()`` and a
    server's packs keep Durus 4.3's one ``FILE.prepack``.
    """
    from durus.connection import Connection
    from durus.file_storage import FileStorage

    storage = open_storage(
        file, must_exist=True,
        locked_hint="ask that server to pack it instead (durus -p with its --port or "
        "--address)",
    )
    try:
        before = _size(file, storage)
        Connection(storage)  # Durus 4.3 creates the root of a root-less file here too
        with Progress(f"packing {file}", enabled=progress) as bar:

            def report(phase: str, done: int, total: int) -> None:
                bar.label = f"packing ({phase})"
                bar.set_total(total or None)
                bar.done = done
                bar.advance(0)

            if isinstance(storage, FileStorage):
                packer = storage.get_packer(report, keep_backups=not replace_backup)
            else:
                try:
                    packer = storage.get_packer(report)
                except TypeError:  # a storage class whose packer reports no progress
                    packer = storage.get_packer()
            if packer is None:
                storage.pack()
            else:
                for _step in packer:
                    pass
        after = _size(file, storage)
    finally:
        storage.close()
    return PackedFile(before, after, getattr(packer, "kept_backup", None))


def _size(file: str, storage: object) -> int:
    """Bytes the database takes: its file, or what an SQL storage reports."""
    get_size = getattr(storage, "get_size", None)
    return int(get_size()) if callable(get_size) else os.path.getsize(file)


def pack_server(
    address: object, wait: float = 0, security: ClientSecurity | None = None
) -> None:
    """Ask the server at ``address`` to pack (it packs in the background)."""
    from durus.cli_client import connect_to_server
    from durus.connection import Connection
    from durus.socket_address import SocketAddress

    storage = connect_to_server(SocketAddress.new(address), wait, security)
    try:
        Connection(storage).pack()
    finally:
        storage.close()


def pack_storage_main(argv: Sequence[str] | None = None) -> int:
    """``durus -p [options]``; ``argv`` excludes the mode (default ``sys.argv[1:]``)."""
    options = parse(build_parser(), argv)
    return run_command(lambda: _pack(options))


def pack_main(argv: Sequence[str] | None = None) -> int:
    """``durus pack FILE``."""
    options = parse(build_file_parser(), argv)
    return run_command(lambda: _pack(options))


def _pack(options: argparse.Namespace) -> None:
    if options.file is not None:
        done = pack_file(options.file, options.progress, options.replace_backup)
        sys.stdout.write(
            f"packed {options.file}: {format_bytes(done.before)} -> {format_bytes(done.after)}\n"
        )
        if done.kept_backup is not None:
            sys.stdout.write(_describe_backups(options.file, done.kept_backup))
        return
    if options.replace_backup:
        raise CliError("--replace-backup is for a file packed here (--file); a server "
                       "always replaces its FILE.prepack")
    from durus.socket_address import SocketAddress

    address = getattr(options, "address", None) or (options.host, options.port)
    socket_address = SocketAddress.new(address)
    try:
        pack_server(socket_address, options.wait, client_security(options, socket_address))
    except CliError:
        raise
    except (OSError, EOFError) as error:
        raise CliError(f"the server at {describe_address(socket_address)} failed to "
                       f"pack: {error}") from None
    sys.stdout.write(
        f"asked the server at {describe_address(socket_address)} to pack; it packs in "
        "the background\n"
    )


def _describe_backups(file: str, kept: str) -> str:
    from durus.file_storage import numbered_backups

    numbered = numbered_backups(os.path.abspath(file))
    size = 0
    for _number, name in numbered:
        try:
            size += os.path.getsize(name)
        except OSError:
            pass
    return (
        f"kept the earlier backup as {os.path.basename(kept)}; {os.path.basename(file)}"
        f".prepack is the file before this pack ({len(numbered)} numbered backup"
        f"{'s' if len(numbered) != 1 else ''}, {format_bytes(size)}: delete those you no "
        "longer need)\n"
    )
