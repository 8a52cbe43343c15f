"""``durus -c``: an interactive Python console on a Durus database."""

from __future__ import annotations

import argparse
import itertools
import os
import reprlib
import sys
import time
from code import InteractiveConsole
from collections.abc import Sequence
from pprint import pprint
from types import ModuleType
from typing import Any

from durus.cli_common import (
    ClientSecurity,
    CliError,
    CommandParser,
    add_address_options,
    add_security_options,
    add_storage_options,
    client_security,
    describe_address,
    make_address,
    non_negative_int,
    open_storage,
    parse,
    run_command,
)
from durus.cli_connect import CONNECT_HANDSHAKE_TIMEOUT, close_quietly, open_durus_connection

__all__ = ["client_main", "configure_readline", "interactive_client"]

HISTORY_FILE = "~/.durushistory"


def build_parser(prog: str = "durus -c") -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=prog,
        description="An interactive Python console with a connection to a Durus database: "
        "through a running server (the default), or straight on a file (--file).",
    )
    add_storage_options(
        parser,
        "open FILE (or a storage URL: sqlite:///path, postgresql://...) directly "
        "instead of connecting to a server",
    )
    add_address_options(parser, "of the server")
    parser.add_argument(
        "--wait", default=0, type=non_negative_int, metavar="SECONDS",
        help="wait up to SECONDS for the server to start listening (default: 0)",
    )
    parser.add_argument(
        "--cache_size", "--cache-size", dest="cache_size", default=10000,
        type=non_negative_int, metavar="N",
        help="number of objects the connection's cache aims to keep (default: 10000)",
    )
    parser.add_argument(
        "--mvcc", action="store_true",
        help="read one consistent snapshot per transaction (Connection(..., mvcc=True)): "
        "loads never raise ReadConflictError; needs a server of this project, a "
        "file or a storage URL",
    )
    parser.add_argument(
        "--repair", action="store_true",
        help="with --file: truncate a malformed tail of the file while opening it",
    )
    parser.add_argument(
        "--readonly", action="store_true",
        help="with --file: open the file read-only (works while a server serves it)",
    )
    parser.add_argument(
        "--startup", default=os.environ.get("DURUSSTARTUP", ""), metavar="FILE",
        help="a Python file run in the console's namespace before the first prompt "
        "(default: $DURUSSTARTUP)",
    )
    add_security_options(parser)
    return parser


def configure_readline(namespace: dict[str, Any], history_path: str) -> None:
    """Tab completion on ``namespace`` and a persistent history in ``history_path``."""
    try:
        import atexit
        import readline
        import rlcompleter
    except ImportError:  # no readline on this platform: a plain console still works
        return
    readline.set_completer(rlcompleter.Completer(namespace).complete)
    if "libedit" in (getattr(readline, "__doc__", "") or ""):
        readline.parse_and_bind("bind ^I rl_complete")
    else:
        readline.parse_and_bind("tab: complete")
    try:
        readline.read_history_file(history_path)
    except OSError:  # no history yet, or unreadable
        pass

    def save_history() -> None:
        try:
            readline.write_history_file(history_path)
        except OSError:
            pass

    atexit.register(save_history)


# -- pp: one level of a persistent object ------------------------------------

#: Entries of one container that ``pp`` shows; the rest are counted.
PP_ENTRIES = 30
PP_WIDTH = 79


class _ShortRepr(reprlib.Repr):
    """``reprlib`` limits, and persistent objects as ``<Class oid>``, never loaded."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxdict = self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = 8
        self.maxstring = self.maxother = 70
        self.maxlong = 40

    def repr1(self, x: Any, level: int) -> str:
        from durus.persistent import PersistentBase

        if isinstance(x, PersistentBase):
            return _persistent_name(x)
        return super().repr1(x, level)


def _persistent_name(obj: Any) -> str:
    """``<PersistentList 3>``: what ``repr`` shows, without loading (a set's repr does)."""
    oid = obj._p_format_oid()
    return f"<{obj.__class__.__name__} {oid if oid != 'None' else 'unsaved'}>"


#: Per kind of contents: the one-line form's brackets, an entry in it, and an
#: entry on a line of its own.
_LAYOUTS = {
    "mapping": ("{", "}", "{k}: {v}", "  {k}: {v}"),
    "sequence": ("[", "]", "{v}", "  [{k}] {v}"),
    "set": ("{", "}", "{v}", "  {v}"),
    "attributes": ("", "", "{k}={v}", "  {k} = {v}"),
}


def _entries(obj: Any, limit: int) -> tuple[str, str, list[tuple[str, str]], int | None]:
    """(kind, empty form, the first ``limit`` entries as (key, value), count or None)."""
    from durus.btree import BTree
    from durus.persistent_dict import PersistentDict
    from durus.persistent_list import PersistentList
    from durus.persistent_set import PersistentSet

    short = _ShortRepr().repr
    if isinstance(obj, BTree):  # len() would load every node: count only what is shown
        items = list(itertools.islice(obj.iteritems(), limit + 1))
        count = len(items) if len(items) <= limit else None
        return "mapping", "{}", [(short(k), short(v)) for k, v in items[:limit]], count
    if isinstance(obj, PersistentDict):
        shown = itertools.islice(obj.data.items(), limit)
        return "mapping", "{}", [(short(k), short(v)) for k, v in shown], len(obj.data)
    if isinstance(obj, PersistentList):
        indexed = itertools.islice(enumerate(obj.data), limit)
        return "sequence", "[]", [(str(i), short(v)) for i, v in indexed], len(obj.data)
    if isinstance(obj, PersistentSet):
        members: list[Any] | set[Any] = obj.s
        try:
            members = sorted(members)
        except TypeError:  # unorderable members: the set's own order
            pass
        return "set", "set()", [("", short(v)) for v in itertools.islice(members, limit)], \
            len(obj.s)
    state = obj.__getstate__()
    if not isinstance(state, dict):  # e.g. a ComputedAttribute: no state is stored
        return "attributes", "(no attributes)", [], 0
    shown = itertools.islice(state.items(), limit)
    return "attributes", "(no attributes)", [(str(k), short(v)) for k, v in shown], len(state)


def format_persistent(obj: Any, limit: int = PP_ENTRIES, width: int = PP_WIDTH) -> str:
    """``<PersistentDict 0> {'a': <PersistentList 3>, 'n': 1}``, or one entry a line.

    Only ``obj`` itself is loaded: the persistent objects it refers to show as
    ``<Class oid>``, so that ``get(oid)`` or the key goes one level further.
    """
    kind, empty, entries, count = _entries(obj, limit)
    head = _persistent_name(obj)
    if not entries:
        return f"{head} {empty}"
    opening, closing, inline, own_line = _LAYOUTS[kind]
    complete = count == len(entries)
    if complete:
        parts = ", ".join(inline.format(k=k, v=v) for k, v in entries)
        line = f"{head} {opening}{parts}{closing}"
        if len(line) <= width:
            return line
    noun = "attributes" if kind == "attributes" else "items"
    if count is None:
        total = f"more than {len(entries)} {noun}, the first {len(entries)}:"
    elif complete:
        total = f"{count} {noun}:"
    else:
        total = f"{count} {noun}, the first {len(entries)}:"
    lines = [f"{head} {total}", *(own_line.format(k=k, v=v) for k, v in entries)]
    if count is None:
        lines.append("  ...")
    elif not complete:
        lines.append(f"  ... {count - len(entries)} more")
    return "\n".join(lines)


def pp(obj: Any, limit: int = PP_ENTRIES, stream: Any = None) -> None:
    """The console's ``pp``: a persistent object with one level of its contents.

    Anything else is ``pprint``-ed.  ``limit`` bounds the entries shown of a
    large container (a BTree is not even counted past it: that loads every node).
    """
    from durus.persistent import PersistentBase

    out = sys.stdout if stream is None else stream
    if isinstance(obj, PersistentBase):
        out.write(format_persistent(obj, limit) + "\n")
    else:
        pprint(obj, stream=out)


def connect_to_server(
    address: Any, wait: float = 0, security: ClientSecurity | None = None
) -> Any:
    """A ``ClientStorage`` on the Durus server at ``address``, or ``CliError``.

    A connection of its own first checks that a Durus server answers there
    (``durus.cli_connect``), so a wrong address fails within seconds.
    """
    from durus.client_storage import ClientStorage
    from durus.error import DurusError
    from durus.wire_protocol import AuthenticationError

    security = security or ClientSecurity()
    where = describe_address(address)
    deadline = time.monotonic() + wait
    while True:
        probe = open_durus_connection(address, security, CONNECT_HANDSHAKE_TIMEOUT)
        if probe is not None:
            close_quietly(probe)
            break
        if time.monotonic() >= deadline:
            raise CliError(
                f"no Durus server is listening on {where} (start one with `durus -s`, or "
                "open a file directly with --file)"
            )
        time.sleep(0.2)
    try:
        return ClientStorage(address=address, ssl_context=security.ssl_context,
                             secret=security.secret)
    except AuthenticationError as error:
        raise CliError(str(error)) from None
    except (OSError, DurusError, EOFError) as error:
        raise CliError(
            f"{where} does not answer as a Durus server: {error or type(error).__name__}"
        ) from None


def banner(description: str) -> str:
    return (
        f"Durus console on {description}\n"
        "  root        the root object, a PersistentDict\n"
        "  connection  commit(), abort(), pack(); get(oid) fetches any object\n"
        "  pp          pretty-prints; sys, os, int8_to_str, str_to_int8 are imported\n"
        "Changes are saved by connection.commit(); Control-D leaves."
    )


def interactive_client(
    file: str | None,
    address: Any,
    cache_size: int,
    readonly: bool,
    repair: bool,
    startup: str | None,
    storage_class: str | None = None,
    wait: float = 0,
    security: ClientSecurity | None = None,
    mvcc: bool = False,
) -> None:
    """Open the storage (``file``, else the server at ``address``) and run the console."""
    from durus.connection import Connection
    from durus.socket_address import SocketAddress
    from durus.utils import int8_to_str, str_to_int8

    if startup:
        startup = os.path.expanduser(startup)
        if not os.path.isfile(startup):
            raise CliError(f"startup file {startup} does not exist")
    if file:
        storage = open_storage(file, storage_class, readonly=readonly, repair=repair)
        description = f"{file}{' (read-only)' if readonly else ''}"
    else:
        socket_address = SocketAddress.new(address)
        storage = connect_to_server(socket_address, wait, security)
        description = describe_address(socket_address)
    try:
        try:
            connection = Connection(storage, cache_size=cache_size, mvcc=mvcc)
        except Exception as error:
            raise CliError(f"cannot open the database: {error or type(error).__name__}") \
                from None
        console_module = ModuleType("__console__")
        sys.modules["__console__"] = console_module
        namespace = vars(console_module)
        namespace.update(
            connection=connection,
            root=connection.get_root(),
            get=connection.get,
            sys=sys,
            os=os,
            int8_to_str=int8_to_str,
            str_to_int8=str_to_int8,
            pp=pp,
        )
        configure_readline(namespace, os.path.expanduser(HISTORY_FILE))
        console = InteractiveConsole(namespace, filename="<durus>")
        if startup:
            with open(startup, encoding="utf-8") as f:
                source = f.read()
            try:
                code = compile(source, startup, "exec")
            except (SyntaxError, ValueError):
                console.showsyntaxerror(startup)
            else:
                console.runcode(code)
        console.interact(banner(description), exitmsg="")
    finally:
        storage.close()


def client_main(argv: Sequence[str] | None = None) -> int:
    """``durus -c [options]``; ``argv`` excludes the mode (default ``sys.argv[1:]``)."""
    options = parse(build_parser(), argv)
    return run_command(lambda: _client(options))


def _client(options: argparse.Namespace) -> None:
    security = None
    if options.file is None:
        if options.readonly or options.repair:
            raise CliError("--readonly and --repair apply to --file only")
        address = make_address(options)
        security = client_security(options, address)
    else:
        if options.tls_ca or options.secret_file:
            raise CliError("--tls-ca and --secret-file apply to a server, not to --file")
        address = None
    interactive_client(
        options.file, address, options.cache_size, options.readonly, options.repair,
        options.startup, options.storage_class, wait=options.wait, security=security,
        mvcc=options.mvcc,
    )
