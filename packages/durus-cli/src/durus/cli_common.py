"""What every ``durus`` command shares: option parsing, addresses, storages, logging.

Nothing here runs at import time; the libraries configure no logging, so the
command line is the one place that installs a handler on the ``durus`` logger.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import socket
import stat
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from durus.storage_url import is_storage_url, open_storage_url

if TYPE_CHECKING:  # ssl is imported only by the commands that use TLS
    import ssl

__all__ = [
    "CliError",
    "ClientSecurity",
    "CommandParser",
    "add_address_options",
    "add_security_options",
    "cli_int",
    "client_security",
    "configure_logging",
    "detect_format",
    "format_bytes",
    "get_storage",
    "get_storage_class",
    "import_class",
    "make_address",
    "open_storage",
    "read_secret_file",
    "server_tls_context",
]

#: Exit status of a command that failed because of something the user can fix.
EXIT_FAILURE = 1
#: Exit status of a command line that could not be parsed.
EXIT_USAGE = 2

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 2972

HAS_UNIX_SOCKETS = hasattr(socket, "AF_UNIX")


class CliError(Exception):
    """An error a person can cause and fix: shown as one line, never a traceback."""

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status


class CommandParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_USAGE)


def cli_int(text: str) -> int:
    """An integer the way Durus 4.3's options read them.

    ``0x1f`` is hexadecimal, ``0b101`` binary, ``0o17`` and a leading ``0``
    (``077``) octal, anything else decimal.
    """
    value = text.strip().replace("_", "")
    sign = 1
    if value[:1] in ("-", "+"):
        sign = -1 if value[0] == "-" else 1
        value = value[1:]
    lower = value.lower()
    try:
        if lower.startswith("0x"):
            number = int(lower[2:], 16)
        elif lower.startswith("0b"):
            number = int(lower[2:], 2)
        elif lower.startswith("0o"):
            number = int(lower[2:], 8)
        elif len(lower) > 1 and lower.startswith("0"):
            number = int(lower[1:], 8)
        else:
            number = int(lower, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer value: {text!r}") from None
    return sign * number


def non_negative_int(text: str) -> int:
    number = cli_int(text)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return number


def port_number(text: str) -> int:
    number = cli_int(text)
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port (0-65535): {text!r}")
    return number


def add_storage_options(parser: argparse.ArgumentParser, file_help: str) -> None:
    """``--file`` (what it means for this command: ``file_help``) and ``--storage-class``."""
    parser.add_argument("--file", default=None, metavar="FILE", help=file_help)
    parser.add_argument(
        "--storage-class", dest="storage_class", default=None, metavar="MODULE.CLASS",
        help="storage class to open FILE with (default: chosen from the file's format)",
    )


def add_address_options(
    parser: argparse.ArgumentParser, what: str, *, socket_file_options: bool = False
) -> None:
    """``--host``, ``--port``, ``--address`` (and the socket file's owner/group/umask)."""
    group = parser.add_argument_group("address")
    group.add_argument(
        "--host", default=DEFAULT_HOST, metavar="HOST",
        help=f"host {what} (default: {DEFAULT_HOST})",
    )
    group.add_argument(
        "--port", default=DEFAULT_PORT, type=port_number, metavar="PORT",
        help=f"TCP port {what} (default: {DEFAULT_PORT})",
    )
    if HAS_UNIX_SOCKETS:
        group.add_argument(
            "--address", default=None, metavar="ADDRESS",
            help="a Unix domain socket instead of host and port: a file path, or @NAME "
            "for a Linux abstract socket",
        )
    if socket_file_options and HAS_UNIX_SOCKETS:
        group.add_argument(
            "--owner", default=None, metavar="USER",
            help="owner (user name or number) given to the socket file of --address",
        )
        group.add_argument(
            "--group", default=None, metavar="GROUP",
            help="group (name or number) given to the socket file of --address",
        )
        group.add_argument(
            "--umask", default=None, type=non_negative_int, metavar="MASK",
            help="umask while the socket file of --address is created "
            "(077 and 0o77 are octal, 0x3f hexadecimal, 0b111111 binary)",
        )


def _owner_or_group(value: str | None) -> str | int | None:
    if value is not None and value.isdigit():
        return int(value)
    return value


def make_address(options: argparse.Namespace) -> Any:
    """The ``SocketAddress`` the options name (``--address`` wins over host/port)."""
    from durus.socket_address import SocketAddress

    address = getattr(options, "address", None)
    if not address:
        return SocketAddress.new((options.host, options.port))
    if address.startswith("@"):
        # An abstract socket has no file: owner, group and umask do not apply.
        return SocketAddress.new(address)
    extra = {}
    for name in ("owner", "group"):
        value = _owner_or_group(getattr(options, name, None))
        if value is not None:
            extra[name] = value
    umask = getattr(options, "umask", None)
    if umask is not None:
        extra["umask"] = umask
    return SocketAddress.new(address, **extra)


def describe_address(address: Any) -> str:
    """The address as people write it (no mode/owner suffix for socket files)."""
    filename = getattr(address, "filename", None)
    if isinstance(filename, str):
        return filename.replace("\0", "@")
    return str(address)


# -- TLS and the shared secret ---------------------------------------------

#: Bounds of a secret file's content: shorter is guessable by anyone who records
#: one authentication (the handshake's proofs can be attacked offline), longer
#: is surely the wrong file.
SECRET_MIN_BYTES = 16
SECRET_MAX_BYTES = 4096

SECRET_FILE_HELP = (
    "authenticate with the shared secret held in FILE: its bytes, less one trailing "
    "newline, at least 16 of them. FILE must not be accessible to other users "
    "(chmod 600, or 640 to share it with a group): a secret never goes on the "
    "command line, where any user sees it"
)


class ClientSecurity(NamedTuple):
    """How a command reaches a server: TLS (checked against ``ca_file``) and a secret."""

    ca_file: str | None = None
    ssl_context: ssl.SSLContext | None = None
    secret: bytes | None = None


def add_security_options(parser: argparse.ArgumentParser, *, server: bool = False) -> None:
    """``--tls-ca`` and ``--secret-file``; for ``durus -s`` also ``--tls-cert``/``--tls-key``."""
    group = parser.add_argument_group("security")
    if server:
        group.add_argument(
            "--tls-cert", default=None, metavar="FILE",
            help="serve TLS only, with the certificate (chain) in FILE, PEM; clients then "
            "need --tls-ca",
        )
        group.add_argument(
            "--tls-key", default=None, metavar="FILE",
            help="the private key of --tls-cert, PEM (default: read from the --tls-cert file)",
        )
    group.add_argument(
        "--tls-ca", default=None, metavar="FILE",
        help=("with --stop: " if server else "")
        + "speak TLS, trusting only the certificates in FILE, PEM (the server's own "
        "certificate if it is self-signed); the server's --host name or address must "
        "match its certificate",
    )
    group.add_argument(
        "--secret-file", dest="secret_file", default=None, metavar="FILE",
        help=SECRET_FILE_HELP + (" (the server then admits only clients that know it; "
                                 "--stop uses it too)" if server else ""),
    )


def read_secret_file(path: str) -> bytes:
    """The secret in ``path`` (see ``SECRET_FILE_HELP``), or ``CliError``.

    The permission check is made on the open file, so it is the file read.
    """
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if os.name == "posix" and mode & 0o007:
                raise CliError(
                    f"the secret file {path} is accessible to every user (mode "
                    f"{stat.S_IMODE(mode):04o}): make it private first (chmod 600 {path})"
                )
            data = f.read(SECRET_MAX_BYTES + 3)
    except CliError:
        raise
    except IsADirectoryError:
        raise CliError(f"the secret file {path} is a directory") from None
    except OSError as error:
        raise CliError(f"cannot read the secret file {path}: {error.strerror or error}") \
            from None
    if data.endswith(b"\n"):
        data = data[:-2] if data.endswith(b"\r\n") else data[:-1]
    if len(data) > SECRET_MAX_BYTES:
        raise CliError(f"the secret file {path} holds more than {SECRET_MAX_BYTES} bytes: "
                       "is it the right file?")
    if len(data) < SECRET_MIN_BYTES:
        raise CliError(
            f"the secret in {path} is {len(data)} bytes long, shorter than "
            f"{SECRET_MIN_BYTES}: make a strong one, e.g. with "
            f"`python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > {path}`"
        )
    return data


def _tls_over_tcp_only(address: Any, option: str) -> None:
    if not isinstance(getattr(address, "host", None), str):
        raise CliError(f"{option} applies to TCP addresses (--host/--port): a Unix socket "
                       "is protected by its file's permissions (--umask, --owner, --group)")


def client_security(options: argparse.Namespace, address: Any) -> ClientSecurity:
    """The ``ClientSecurity`` that ``--tls-ca`` and ``--secret-file`` ask for."""
    ca_file = getattr(options, "tls_ca", None)
    secret_file = getattr(options, "secret_file", None)
    secret = read_secret_file(secret_file) if secret_file else None
    if not ca_file:
        return ClientSecurity(secret=secret)
    _tls_over_tcp_only(address, "--tls-ca")
    import ssl

    try:
        context = ssl.create_default_context(cafile=ca_file)
    except FileNotFoundError:
        raise CliError(f"--tls-ca {ca_file}: no such file") from None
    except (ssl.SSLError, OSError) as error:
        raise CliError(f"--tls-ca {ca_file} holds no usable certificate: "
                       f"{getattr(error, 'reason', None) or error}") from None
    return ClientSecurity(ca_file=ca_file, ssl_context=context, secret=secret)


def server_tls_context(options: argparse.Namespace, address: Any) -> ssl.SSLContext | None:
    """The server's TLS context from ``--tls-cert``/``--tls-key`` (None: plain TCP)."""
    cert, key = getattr(options, "tls_cert", None), getattr(options, "tls_key", None)
    if key and not cert:
        raise CliError("--tls-key needs --tls-cert")
    if not cert:
        return None
    _tls_over_tcp_only(address, "--tls-cert")
    if "CERTIFICATE-----" not in _pem_text("--tls-cert", cert):
        raise CliError(f"--tls-cert {cert} holds no PEM certificate")
    if "PRIVATE KEY-----" not in _pem_text("--tls-key", key or cert):
        raise CliError(f"--tls-key {key} holds no PEM private key" if key else
                       f"--tls-cert {cert} holds no private key: give it with --tls-key")
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as error:
        reason = getattr(error, "reason", None) or error
        if reason == "KEY_VALUES_MISMATCH":
            raise CliError(f"the private key in {key or cert} is not the key of the "
                           f"certificate in {cert}") from None
        raise CliError(f"cannot use {cert} as a TLS certificate: {reason}") from None
    return context


def _pem_text(option: str, path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read(1 << 20)
    except OSError as error:
        raise CliError(f"{option} {path}: {error.strerror or error}") from None


# -- storages ---------------------------------------------------------------

SHELF_MAGIC = b"SHELF-1\n"
DFS20_MAGIC = b"DFS20"
SQLITE_MAGIC = b"SQLite format "


def detect_format(path: str) -> str:
    """``"missing"``, ``"empty"``, ``"SHELF-1"``, ``"DFS20"``, ``"SQLite"`` or ``"unknown"``."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except FileNotFoundError:
        return "missing"
    except IsADirectoryError:
        raise CliError(f"{path} is a directory, not a database file") from None
    except PermissionError:
        raise CliError(f"{path}: permission denied") from None
    if not head:
        return "empty"
    if head.startswith(SHELF_MAGIC[:7]):
        return "SHELF-1"
    if head.startswith(DFS20_MAGIC):
        return "DFS20"
    if head.startswith(SQLITE_MAGIC):
        return "SQLite"
    return "unknown"


def import_class(name: str) -> Any:
    """The object ``module.Name`` names (Durus 4.3's ``import_class``)."""
    module_name, _, class_name = name.rpartition(".")
    if not module_name or not class_name:
        raise CliError(f"--storage-class needs a dotted name such as "
                       f"durus.file_storage.FileStorage, not {name!r}")
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise CliError(f"cannot import {module_name} for {name}: {error}") from None
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise CliError(f"module {module_name} has no {class_name}") from None


def get_storage_class(file: str) -> Any:
    """The storage class for a file, chosen from its first bytes (spec 3.1)."""
    kind = detect_format(file)
    if kind in ("missing", "SHELF-1"):
        from durus.file_storage import FileStorage

        return FileStorage
    if kind == "DFS20":
        raise CliError(
            f"{file} is a legacy DFS20 (FileStorage2) database; this version reads only "
            f"SHELF-1 files: convert it first with `durus convert {file} NEW_FILE`"
        )
    if kind == "SQLite":
        from durus.sqlite_storage import SqliteStorage

        return SqliteStorage
    if kind == "empty":
        raise CliError(
            f"{file} is an empty file, not a Durus database (remove it to start a new one)"
        )
    raise CliError(f"{file} is not a Durus database (unknown storage type)")


def get_storage(file: str | None, storage_class: str | None = None, **kwargs: Any) -> Any:
    """Open ``file`` with ``storage_class`` (a dotted name) or the class its bytes call for.

    ``file`` None is a new temporary file, removed when the storage is closed;
    a storage URL (``sqlite:///path``, ``postgresql://...``) opens that database.
    """
    if storage_class is None and file is not None and is_storage_url(file):
        kwargs.pop("repair", None)
        return open_storage_url(file, **kwargs)
    if storage_class is not None:
        cls = import_class(storage_class)
    elif file is None:
        from durus.file_storage import FileStorage

        cls = FileStorage
    else:
        cls = get_storage_class(file)
    return cls(file, **kwargs)


def display_name(text: str) -> str:
    """``text`` for messages: a URL's password is never shown."""
    if not is_storage_url(text):
        return text
    parts = urllib.parse.urlsplit(text)
    if parts.password is None:
        return text
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


def explain_open_error(file: str | None, error: BaseException, locked_hint: str = "") -> str:
    """One line saying why ``file`` could not be opened."""
    name = display_name(file) if file else "the temporary file"
    if isinstance(error, BlockingIOError) or getattr(error, "errno", None) in (
        errno.EAGAIN, errno.EWOULDBLOCK,
    ):
        hint = locked_hint or (
            "stop it, connect to the server instead (durus -c --port/--address), "
            "or add --readonly"
        )
        return f"{name} is in use by another process (a running Durus server?): {hint}"
    if isinstance(error, FileNotFoundError):
        return f"{name}: no such file"
    if isinstance(error, PermissionError):
        return f"{name}: permission denied"
    if isinstance(error, IsADirectoryError):
        return f"{name} is a directory, not a database file"
    text = str(error) or type(error).__name__
    return f"cannot open {name}: {text}"


def open_storage(
    file: str | None,
    storage_class: str | None = None,
    *,
    must_exist: bool = False,
    locked_hint: str = "",
    **kwargs: Any,
) -> Any:
    """``get_storage`` with every failure a person can cause turned into ``CliError``."""
    if file is not None and is_storage_url(file):
        must_exist = False  # a database server's database: the storage says if it is missing
    elif file is not None and kwargs.get("readonly") and not os.path.exists(file):
        raise CliError(f"{file}: no such file (--readonly cannot create one)")
    if file is not None and must_exist and not os.path.exists(file):
        raise CliError(f"{file}: no such file")
    try:
        return get_storage(file, storage_class=storage_class, **kwargs)
    except CliError:
        raise
    except ImportError as error:  # e.g. postgresql:// without psycopg
        raise CliError(f"cannot open {display_name(file or '')}: {error}") from None
    except (OSError, ValueError, AssertionError, EOFError) as error:
        raise CliError(explain_open_error(file, error, locked_hint)) from None
    except Exception as error:
        # Storage classes of other authors (--storage-class) may raise anything.
        from durus.error import DurusError

        if isinstance(error, DurusError):
            raise CliError(explain_open_error(file, error, locked_hint)) from None
        raise


# -- logging ----------------------------------------------------------------

_handler_tag = "durus-cli"


def configure_logging(level: int = logging.INFO, logfile: str | None = None) -> logging.Handler:
    """Send the ``durus`` logger's records to stderr, or append them to ``logfile``."""
    logger = logging.getLogger("durus")
    for old in list(logger.handlers):
        if getattr(old, "_durus_cli", None) == _handler_tag:
            logger.removeHandler(old)
            old.close()
    handler: logging.Handler
    if logfile is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        try:
            handler = logging.FileHandler(logfile, mode="a", encoding="utf-8")
        except OSError as error:
            raise CliError(f"cannot open the log file {logfile}: "
                           f"{error.strerror or error}") from None
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    setattr(handler, "_durus_cli", _handler_tag)  # noqa: B010 - a marker of our handler
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return handler


# -- output -----------------------------------------------------------------


def format_bytes(n: int | float) -> str:
    """``1234567`` -> ``"1.2 MB (1234567 bytes)"``; small sizes stay plain."""
    n = int(n)
    if n < 1000:
        return f"{n} bytes"
    value = float(n)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000.0
        if value < 1000 or unit == "TB":
            return f"{value:.1f} {unit} ({n} bytes)"
    raise AssertionError("unreachable")


def run_command(function: Callable[[], int | None]) -> int:
    """Run a command body; a ``CliError`` becomes one line on stderr and its status."""
    try:
        status = function()
    except CliError as error:
        sys.stderr.write(f"durus: error: {error}\n")
        return error.status
    return 0 if status is None else status


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    return parser.parse_args(list(sys.argv[1:] if argv is None else argv))
