"""``durus -s``: run a storage server, or stop one with ``--stop``."""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

from durus.cli_common import (
    ClientSecurity,
    CliError,
    CommandParser,
    add_address_options,
    add_security_options,
    add_storage_options,
    cli_int,
    client_security,
    configure_logging,
    describe_address,
    make_address,
    non_negative_int,
    open_storage,
    parse,
    read_secret_file,
    run_command,
    server_tls_context,
)
from durus.cli_connect import STOP_HANDSHAKE_TIMEOUT, open_durus_connection

__all__ = ["run_durus_main", "start_durus", "stop_durus"]

logger = logging.getLogger("durus")


def build_parser(prog: str = "durus -s") -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=prog,
        description="Run a Durus storage server on one database file, or stop a running "
        "one (--stop). Clients connect with `durus -c` or ClientStorage.",
    )
    add_storage_options(
        parser,
        "the database file, created if missing, or a storage URL (sqlite:///path, "
        "postgresql://user@host/db) (default: a new temporary file, removed when the "
        "server stops)",
    )
    add_address_options(parser, "to listen on", socket_file_options=True)
    parser.add_argument(
        "--gcbytes", default=0, type=non_negative_int, metavar="BYTES",
        help="start an incremental pack after this many bytes have been committed "
        "(default: 0, never)",
    )
    parser.add_argument(
        "--snapshot-history", default=None, type=non_negative_int, metavar="BYTES",
        help="keep at most this many bytes of replaced records for the open snapshots of "
        "mvcc clients (Connection(..., mvcc=True)); an older snapshot gets "
        "SnapshotExpiredError (default: 67108864, 64 MiB)",
    )
    parser.add_argument(
        "--create-root", action="store_true",
        help="write the root object of a new, empty database before serving, so that "
        "no client ever finds it rootless (then a client's root_class cannot choose "
        "the root's class, and a new database's first oid is 1)",
    )
    parser.add_argument(
        "--logfile", default=None, metavar="FILE",
        help="append the log to FILE (default: standard error)",
    )
    parser.add_argument(
        "--redirect-output", action="store_true",
        help="with --logfile, also send the process's own standard output and error "
        "there (what Durus 4.3 always did)",
    )
    parser.add_argument(
        "--logginglevel", default=logging.INFO, type=cli_int, metavar="LEVEL",
        help="log records of this level and above; lower numbers log more "
        "(default: 20, informational)",
    )
    parser.add_argument(
        "--repair", action="store_true",
        help="truncate a malformed tail of the file while opening it",
    )
    parser.add_argument(
        "--readonly", action="store_true",
        help="open the file read-only: clients can read but not commit",
    )
    parser.add_argument(
        "--stop", action="store_true",
        help="do not serve: ask the Durus server at this address to stop, and wait until "
        "it has (it must answer the Durus handshake within 2 seconds)",
    )
    add_security_options(parser, server=True)
    return parser


def stop_durus(
    address: Any, *, ssl_context: Any = None, secret: str | bytes | None = None
) -> bool:
    """Ask the server at ``address`` to quit; False if no Durus server answers there.

    Waits (up to 30 seconds) until the address refuses connections.
    ``ssl_context`` and ``secret`` are those of ``ClientStorage``.
    """
    from durus.wire_protocol import as_secret

    security = ClientSecurity(ssl_context=ssl_context, secret=as_secret(secret))
    try:
        return _request_stop(address, security) != "not running"
    except CliError as error:
        logger.info("Not stopping %s: %s", address, error)
        return False


def _request_stop(
    address: Any,
    security: ClientSecurity | None = None,
    timeout: float = 30.0,
    handshake_timeout: float = STOP_HANDSHAKE_TIMEOUT,
) -> str:
    """``"stopped"``, ``"not running"`` or ``"still running"`` (the request was refused).

    The request goes only to a peer that answered the Durus handshake;
    anything else raises ``CliError`` saying what answered.
    """
    from durus.socket_address import SocketAddress
    from durus.wire_protocol import QUIT

    socket_address = SocketAddress.new(address)
    sock = open_durus_connection(socket_address, security or ClientSecurity(),
                                 handshake_timeout)
    if sock is None:
        logger.info("Durus server %s doesn't seem to be running.", socket_address)
        return "not running"
    try:
        sock.sendall(QUIT)
    except OSError:
        pass
    finally:
        sock.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            sock = socket_address.get_connected_socket()
        except OSError:
            return "stopped"
        if sock is None:
            return "stopped"
        sock.close()
    return "still running"


def _listen_error(error: OSError, address: Any) -> CliError:
    where = describe_address(address)
    if error.errno == errno.EADDRINUSE:
        return CliError(
            f"cannot listen on {where}: the address is already in use (another Durus "
            f"server? `durus -s --stop` with the same address options stops it)"
        )
    if error.errno in (errno.EACCES, errno.EPERM):
        return CliError(f"cannot listen on {where}: permission denied")
    if error.errno == errno.EADDRNOTAVAIL:
        return CliError(f"cannot listen on {where}: no such address on this machine")
    if isinstance(error, socket.gaierror):
        return CliError(f"cannot listen on {where}: unknown host")
    return CliError(f"cannot listen on {where}: {error.strerror or error}")


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def start_durus(
    logfile: str | None,
    logginglevel: int,
    address: Any,
    storage: Any,
    gcbytes: int,
    *,
    ssl_context: Any = None,
    secret: bytes | None = None,
    create_root: bool = False,
    snapshot_history: int | None = None,
) -> None:
    """Log to ``logfile`` (None: stderr) and serve ``storage`` at ``address`` until stopped.

    Returns when a client sends the quit request (``durus -s --stop``) or on
    Control-C / SIGTERM; the storage is closed either way (a temporary file is
    removed).  ``ssl_context``, ``secret`` and ``create_root`` are those of
    ``StorageServer``; ``snapshot_history`` its ``max_snapshot_history``.
    """
    from durus.socket_address import SocketAddress
    from durus.storage_server import ServerLimits, StorageServer

    old_term = None
    if sys.platform != "win32":
        old_term = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        configure_logging(logginglevel, logfile)
        socket_address = SocketAddress.new(address)
        get_filename = getattr(storage, "get_filename", None)
        if get_filename is not None:
            logger.info("Storage file=%s address=%s", get_filename(), socket_address)
        limits = ServerLimits()
        if snapshot_history is not None:
            limits = ServerLimits(max_snapshot_history=snapshot_history)
        server = StorageServer(storage, address=socket_address, gcbytes=gcbytes,
                               ssl_context=ssl_context, secret=secret,
                               create_root=create_root, limits=limits)
        server.serve()
    except KeyboardInterrupt:
        logger.info("Stopped by a signal.")
    except SystemExit as stop:
        # The quit request ends serve() this way (Durus 4.3's protocol handler).
        if stop.code not in (None, 0):
            raise
    except OSError as error:
        if error.errno in (errno.EADDRINUSE, errno.EACCES, errno.EPERM,
                           errno.EADDRNOTAVAIL) or isinstance(error, socket.gaierror):
            raise _listen_error(error, socket_address) from None
        logger.critical("The server stopped on an unexpected error", exc_info=True)
        raise CliError(f"the server stopped on an unexpected error: {error}") from None
    except Exception as error:
        # A defect, not a user error: the traceback goes to the log (--logfile too).
        logger.critical("The server stopped on an unexpected error", exc_info=True)
        raise CliError(f"the server stopped on an unexpected error: {error!r} (details "
                       "in the log)") from None
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        try:
            storage.close()
        except Exception:  # already closed by the quit request
            pass


def run_durus_main(argv: Sequence[str] | None = None) -> int:
    """``durus -s [options]``; ``argv`` excludes the mode (default ``sys.argv[1:]``)."""
    options = parse(build_parser(), argv)
    return run_command(lambda: _serve(options))


def _serve(options: argparse.Namespace) -> int:
    address = make_address(options)
    where = describe_address(address)
    if options.stop:
        if options.tls_cert or options.tls_key:
            raise CliError("--tls-cert and --tls-key are for serving: --stop checks the "
                           "server's certificate with --tls-ca")
        outcome = _request_stop(address, client_security(options, address))
        if outcome == "stopped":
            sys.stderr.write(f"durus: stopped the server at {where}\n")
            return 0
        if outcome == "not running":
            raise CliError(f"no Durus server is listening on {where}")
        raise CliError(f"the server at {where} did not stop (a Durus server obeys stop "
                       "requests from its own machine only)")
    if not getattr(options, "address", None) and any(
        getattr(options, name, None) is not None for name in ("owner", "group", "umask")
    ):
        raise CliError("--owner, --group and --umask apply to a socket file (--address)")
    if options.readonly and options.file is None:
        raise CliError("--readonly needs --file: a new temporary database is empty")
    if options.redirect_output and options.logfile is None:
        raise CliError("--redirect-output needs --logfile")
    if options.tls_ca:
        raise CliError("--tls-ca is for --stop: a server serves TLS with --tls-cert and "
                       "--tls-key")
    ssl_context = server_tls_context(options, address)
    secret = read_secret_file(options.secret_file) if options.secret_file else None
    configure_logging(options.logginglevel, options.logfile)  # fails early on a bad --logfile
    try:
        already = address.get_connected_socket()
    except OSError:
        already = None
    if already is not None:
        already.close()
        raise _listen_error(OSError(errno.EADDRINUSE, "in use"), address)
    _warn_if_exposed(address, ssl_context, secret, options.logfile)
    storage = open_storage(
        options.file, options.storage_class, repair=options.repair, readonly=options.readonly
    )
    if options.redirect_output:
        try:
            stream = open(options.logfile, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        except OSError as error:
            storage.close()
            raise CliError(f"cannot open the log file {options.logfile}: "
                           f"{error.strerror or error}") from None
        sys.stdout = sys.stderr = stream
    start_durus(options.logfile, options.logginglevel, address, storage, options.gcbytes,
                ssl_context=ssl_context, secret=secret, create_root=options.create_root,
                snapshot_history=options.snapshot_history)
    return 0


def _warn_if_exposed(address: Any, ssl_context: Any, secret: bytes | None,
                     logfile: str | None) -> None:
    """Warn when other machines can reach the server without a secret, or in clear."""
    if address.is_local():
        return
    where = describe_address(address)
    if secret is None:
        warning = (f"{where} can be reached from other machines and this server admits "
                   "anyone who connects: give it --secret-file (and --tls-cert/--tls-key "
                   "to encrypt)")
    elif ssl_context is None:
        warning = (f"{where} can be reached from other machines and the traffic is not "
                   "encrypted: anyone on the way reads the records; add --tls-cert/--tls-key")
    else:
        return
    sys.stderr.write(f"durus: warning: {warning}\n")
    if logfile is not None:
        logger.warning("Warning: %s", warning)
