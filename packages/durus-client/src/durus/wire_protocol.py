"""The Durus client/server wire protocol (version 1), shared by both ends.

Everything that client and server must agree on lives here, so they cannot
drift apart: command and status bytes, how oid lists, load replies and
transaction data are framed, how an address string becomes a socket, and the
errors raised when a peer breaks the protocol or disappears.

Protocol 1 (spec section 4) is spoken exactly as Durus 4.3 speaks it.  The
extensions below are only ever used by a client after the server announced
them, and a Durus 4.3 client never sends them:

* ``L`` of :data:`HELLO_OID` (an oid no storage ever hands out) answers, from
  a server of this distribution, ``O`` + a JSON document describing the
  server (``features``, ``limits``); a Durus 4.3 server answers ``K``.
* ``A``: shared-secret challenge/response authentication (HMAC-SHA256),
  mutual: the server proves it knows the secret before the client does.
* ``X``: one-message commit (the data comes first, the invalidation list
  after, see :func:`encode_transaction` and ``durus.storage_server``).
* ``F``: load one record plus records the server expects to be wanted next
  (the ones it refers to, or the following oids during a sequential scan).
* ``T``: the server's counters as JSON.
* ``E`` status: a refusal with a UTF-8 reason, sent only to clients that
  said hello; Durus 4.3 clients get a disconnect instead.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
import stat
import struct
import time
from collections.abc import Iterable, Mapping
from typing import Any

from durus.error import DurusError, ProtocolError

__all__ = [
    "CLOSE",
    "COMMAND_BYTES",
    "DEFAULT_CLIENT_TIMEOUT",
    "DEFAULT_GCBYTES",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "EXTENDED_COMMAND_BYTES",
    "HELLO_OID",
    "PROTOCOL",
    "STATUS_ERROR",
    "STATUS_INVALID",
    "STATUS_KEYERROR",
    "STATUS_OKAY",
    "STATUS_REVIEW",
    "TIMEOUT",
    "AuthenticationError",
    "DurusConnectionError",
    "HostPortAddress",
    "InheritedSocket",
    "RequestRefusedError",
    "SocketAddress",
    "UnixAbstractAddress",
    "UnixDomainSocketAddress",
    "auth_proof",
    "decode_oid_list",
    "decode_transaction",
    "encode_oid_list",
    "encode_transaction",
    "get_systemd_socket",
    "is_local_peer",
    "recv_exact",
    "send_stop",
    "wait_for_server",
]

#: The protocol version, sent by the client in ``V`` and echoed by the server.
PROTOCOL = b"\x00\x00\x00\x01"

STATUS_OKAY = b"O"
STATUS_KEYERROR = b"K"
STATUS_INVALID = b"I"
#: Extension: a refusal followed by ``int4 n`` and an n-byte UTF-8 reason.
STATUS_ERROR = b"E"
#: Extension, inside an ``X`` commit: an oid list the client must review.
STATUS_REVIEW = b"R"

#: Durus 4.3's per-operation server timeout, kept as the default time a
#: server waits for the rest of a message that has started to arrive.
TIMEOUT = 10
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 2972
DEFAULT_GCBYTES = 0
#: Seconds a client waits for any reply before it gives the server up.
DEFAULT_CLIENT_TIMEOUT = 60.0

# Protocol 1 commands (spec 4.3) and what a client sends when it closes.
VERSION = b"V"
NEW_OID = b"N"
NEW_OIDS = b"M"
LOAD = b"L"
BULK_LOAD = b"B"
SYNC = b"S"
COMMIT = b"C"
PACK = b"P"
QUIT = b"Q"
CLOSE = b"."
COMMAND_BYTES = frozenset(b"VNMLBSCPQ")

# Extensions (never sent to a server that did not announce them, except
# AUTHENTICATE, which a client sends only when it was given a secret).
AUTHENTICATE = b"A"
COMMIT_DATA = b"X"
FETCH = b"F"
STATS = b"T"
EXTENDED_COMMAND_BYTES = frozenset(b"AXFT")
#: Answers inside an ``X`` exchange after a review list.
APPROVE = b"g"
ABANDON = b"a"

#: ``L`` of this oid is the hello of the extensions (see the module doc).
HELLO_OID = b"\xff" * 8
NONCE_SIZE = 32

_int4 = struct.Struct(">I")
_int4_pack = _int4.pack
_int4_unpack_from = _int4.unpack_from
MAX_INT4 = 0xFFFFFFFF


class DurusConnectionError(DurusError, OSError):
    """The server could not be reached, went away, or stopped answering.

    It is an ``OSError`` too, so code that treats network failures alike
    catches it.  The message names the address.  After it the storage is
    closed: make a new one to reconnect.
    """


class AuthenticationError(DurusConnectionError):
    """The shared-secret handshake failed (wrong secret on either side)."""


class RequestRefusedError(DurusError):
    """The server refused a request and said why (the ``E`` status)."""


# -- framing ---------------------------------------------------------------------------


def encode_oid_list(oids: Iterable[bytes]) -> bytes:
    """``int4 n`` followed by the n oids."""
    joined = b"".join(oids)
    return _int4_pack(len(joined) >> 3) + joined


def decode_oid_list(data: bytes | bytearray | memoryview) -> list[bytes]:
    """The oids of a concatenation of 8-byte oids (no count prefix)."""
    raw = bytes(data)
    if len(raw) % 8:
        raise ProtocolError(f"an oid list is a multiple of 8 bytes, not {len(raw)}")
    return [raw[i : i + 8] for i in range(0, len(raw), 8)]


def encode_transaction(records: Mapping[bytes, bytes] | Iterable[tuple[bytes, bytes]]) -> bytes:
    """Transaction data of spec 4.4: ``int4 8+len(record)``, oid, record, ..."""
    items = records.items() if isinstance(records, Mapping) else records
    parts = []
    for oid, record in items:
        parts.append(_int4_pack(8 + len(record)))
        parts.append(oid)
        parts.append(record)
    return b"".join(parts)


def check_record(oid: bytes, record: bytes | memoryview) -> str | None:
    """Why ``record`` is not a well-formed record of ``oid`` (None if it is)."""
    size = len(record)
    if size < 12:
        return f"record of {size} bytes is too short"
    if record[:8] != oid:
        return "record does not start with its oid"
    data_end = 12 + _int4_unpack_from(record, 8)[0]
    if data_end > size:
        return "record data length overruns the record"
    if (size - data_end) % 8:
        return "refs trailer is not a multiple of 8 bytes"
    return None


def decode_transaction(
    tdata: bytes | bytearray | memoryview, check_records: bool = True
) -> list[tuple[bytes, bytes]]:
    """The ``(oid, record)`` entries of transaction data, strictly validated.

    Raises ``ProtocolError`` on any inconsistency: an entry length that
    overruns the data or is shorter than an oid, a duplicated oid, and (with
    ``check_records``) a record that is not a record of its oid.
    """
    view = memoryview(tdata)
    size = len(view)
    entries = []
    seen = set()
    i = 0
    while i < size:
        if size - i < 4:
            raise ProtocolError("transaction data ends inside an entry length")
        rlen = _int4_unpack_from(view, i)[0]
        i += 4
        if rlen < 8:
            raise ProtocolError(f"transaction entry of {rlen} bytes has no room for an oid")
        end = i + rlen
        if end > size:
            raise ProtocolError("transaction entry overruns the transaction data")
        oid = bytes(view[i : i + 8])
        record = bytes(view[i + 8 : end])
        i = end
        if oid in seen:
            raise ProtocolError(f"oid {int.from_bytes(oid, 'big')} appears twice in one commit")
        seen.add(oid)
        if check_records:
            problem = check_record(oid, record)
            if problem is not None:
                raise ProtocolError(f"oid {int.from_bytes(oid, 'big')}: {problem}")
        entries.append((oid, record))
    return entries


def encode_json(document: Any) -> bytes:
    body = json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return _int4_pack(len(body)) + body


def encode_error(message: str) -> bytes:
    body = message.encode("utf-8", "replace")[:65536]
    return STATUS_ERROR + _int4_pack(len(body)) + body


def auth_proof(secret: bytes, role: bytes, client_nonce: bytes, server_nonce: bytes) -> bytes:
    """HMAC-SHA256 proof that ``role`` (b"server" or b"client") knows ``secret``."""
    import hmac

    message = b"durus-auth-v1 " + role + b" " + client_nonce + server_nonce
    return hmac.new(secret, message, "sha256").digest()


def as_secret(secret: str | bytes | None) -> bytes | None:
    if secret is None:
        return None
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not secret:
        raise ValueError("an authentication secret must not be empty")
    return bytes(secret)


# -- blocking I/O used by clients ------------------------------------------------------


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes from ``sock``; ``EOFError`` if the peer closed first."""
    if n == 0:
        return b""
    data = sock.recv(n)
    if len(data) == n:
        return data
    if not data:
        raise EOFError("the peer closed the connection")
    buf = bytearray(data)
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError(f"the peer closed the connection after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


# -- addresses -------------------------------------------------------------------------


def _set_nodelay(sock: socket.socket) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class SocketAddress:
    """Where a server listens: make one with :meth:`SocketAddress.new`."""

    family: int = socket.AF_INET

    @staticmethod
    def new(address: Any, **kwargs: Any) -> SocketAddress:
        """An address from ``(host, port)``, ``"@name"``, a socket path, or an address."""
        if isinstance(address, SocketAddress):
            return address
        if isinstance(address, tuple):
            if len(address) != 2:
                raise ValueError(f"a TCP address is (host, port), not {address!r}")
            host, port = address
            return HostPortAddress(host=host, port=port)
        if isinstance(address, bytes):
            address = os.fsdecode(address)
        if not isinstance(address, str) or not address:
            raise ValueError(f"not a socket address: {address!r}")
        if address.startswith("@"):
            return UnixAbstractAddress(address, **kwargs)
        return UnixDomainSocketAddress(address, **kwargs)

    def get_address_family(self) -> int:
        return self.family

    def get_listening_socket(self) -> socket.socket:
        sock = socket.socket(self.get_address_family(), socket.SOCK_STREAM)
        try:
            if self.get_address_family() != socket.AF_UNIX:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.bind_socket(sock)
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
        return sock

    def bind_socket(self, sock: socket.socket) -> None:
        raise NotImplementedError

    def _connect_target(self) -> Any:
        raise NotImplementedError

    _refused: tuple[int, ...] = (errno.ECONNREFUSED,)

    def get_connected_socket(self, timeout: float | None = None) -> socket.socket | None:
        """A socket connected to this address, or None if nothing listens there.

        ``timeout`` bounds the connect itself and stays set on the socket.
        """
        sock = socket.socket(self.get_address_family(), socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(self._connect_target())
        except OSError as exc:
            sock.close()
            if exc.errno in self._refused:
                return None
            raise
        _set_nodelay(sock)
        return sock

    def set_connection_options(self, s: socket.socket) -> None:
        """Options for an accepted connection (the server is non-blocking)."""
        _set_nodelay(s)

    def close(self, s: socket.socket) -> None:
        s.close()

    def is_local(self) -> bool:
        """Whether every peer of this address is on this machine."""
        return False


class HostPortAddress(SocketAddress):
    """A TCP address; a host containing ``:`` is IPv6 (brackets are allowed)."""

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
        host = str(host)
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        self.host = host
        self.port = int(port)
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port out of range: {port!r}")
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"HostPortAddress({self.host!r}, {self.port!r})"

    def bind_socket(self, sock: socket.socket) -> None:
        if self.family == socket.AF_INET6:
            try:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            except OSError:
                pass
        sock.bind((self.host, self.port))

    def _connect_target(self) -> Any:
        return (self.host, self.port)

    def is_local(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


class UnixAbstractAddress(SocketAddress):
    """A Linux abstract socket, written ``@name``.

    As in Durus 4.3 every ``@`` becomes a NUL byte, so both name the same
    socket.  ``owner``, ``group`` and ``umask`` are accepted and ignored
    (an abstract socket has no file), which is what lets ``durus -s
    --address @name`` work.
    """

    family = socket.AF_UNIX
    _refused = (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK)

    def __init__(
        self, filename: str, owner: Any = None, group: Any = None, umask: Any = None
    ) -> None:
        if not hasattr(socket, "AF_UNIX"):
            raise OSError("this platform has no Unix-domain sockets")
        self.filename = filename.replace("@", "\0")

    def __str__(self) -> str:
        return self.filename.replace("\0", "@")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def bind_socket(self, sock: socket.socket) -> None:
        sock.bind(self.filename)

    def _connect_target(self) -> Any:
        return self.filename

    def is_local(self) -> bool:
        return True


class UnixDomainSocketAddress(UnixAbstractAddress):
    """A Unix-domain socket file, with optional owner, group and umask."""

    def __init__(
        self,
        filename: str,
        owner: str | int | None = None,
        group: str | int | None = None,
        umask: int | None = None,
    ) -> None:
        if not hasattr(socket, "AF_UNIX"):
            raise OSError("this platform has no Unix-domain sockets")
        self.filename = os.fspath(filename)
        self.owner = owner
        self.group = group
        self.umask = umask
        self._bound_inode: int | None = None

    def __str__(self) -> str:
        result = self.filename
        try:
            st = os.stat(self.filename)
        except OSError:
            return result
        rwx = ["---", "--x", "-w-", "-wx", "r--", "r-x", "rw-", "rwx"]
        mode = "".join(rwx[(st.st_mode >> shift) & 7] for shift in (6, 3, 0))
        return f"{result} ({mode} {_user_name(st.st_uid)} {_group_name(st.st_gid)})"

    def bind_socket(self, sock: socket.socket) -> None:
        old_umask = os.umask(self.umask) if self.umask is not None else None
        try:
            try:
                sock.bind(self.filename)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or not self._is_stale_socket():
                    raise
                os.unlink(self.filename)
                sock.bind(self.filename)
        finally:
            if old_umask is not None:
                os.umask(old_umask)
        if self.owner is not None or self.group is not None:
            uid = -1 if self.owner is None else _uid_of(self.owner)
            gid = -1 if self.group is None else _gid_of(self.group)
            os.chown(self.filename, uid, gid)
        self._bound_inode = os.stat(self.filename).st_ino

    def _is_stale_socket(self) -> bool:
        """A socket file nobody listens on (never a file of another kind)."""
        try:
            st = os.stat(self.filename)
        except OSError:
            return False
        if not stat.S_ISSOCK(st.st_mode):
            return False
        probe = self.get_connected_socket(timeout=2.0)
        if probe is not None:
            probe.close()
            return False
        return True

    def close(self, s: socket.socket) -> None:
        s.close()
        try:
            st = os.stat(self.filename)
        except OSError:
            return
        # Remove the file only if it is still the socket this process bound.
        if self._bound_inode is None or st.st_ino == self._bound_inode:
            try:
                os.unlink(self.filename)
            except OSError:
                pass


class InheritedSocket(SocketAddress):
    """A listening socket handed over by the service manager (socket activation)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.family = sock.family
        self.name = sock.getsockname()

    def __str__(self) -> str:
        name = self.name
        if isinstance(name, bytes):
            name = os.fsdecode(name)
        if isinstance(name, str):
            return name.replace("\0", "@")
        host, port = name[0], name[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def get_listening_socket(self) -> socket.socket:
        return self.sock

    def _connect_target(self) -> Any:
        return self.name

    def is_local(self) -> bool:
        if self.family == getattr(socket, "AF_UNIX", None):
            return True
        try:
            return ipaddress.ip_address(self.name[0]).is_loopback
        except ValueError:
            return False


def _uid_of(owner: str | int) -> int:
    if isinstance(owner, int):
        return owner
    import pwd

    return pwd.getpwnam(owner).pw_uid


def _gid_of(group: str | int) -> int:
    if isinstance(group, int):
        return group
    import grp

    return grp.getgrnam(group).gr_gid


def _user_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        import grp

        return grp.getgrgid(gid).gr_name
    except (ImportError, KeyError):
        return str(gid)


def is_local_peer(family: int, peer: Any) -> bool:
    """Whether a connected peer is on this machine: a Unix socket or loopback.

    ``peer`` is what ``accept()`` / ``getpeername()`` returned.  IPv4-mapped
    IPv6 loopback (``::ffff:127.0.0.1``) counts as loopback.
    """
    if family == getattr(socket, "AF_UNIX", object()):
        return True
    if family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        host = peer[0]
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except (TypeError, ValueError, IndexError):
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    return address.is_loopback


def get_systemd_socket() -> socket.socket | None:
    """The one listening socket passed by socket activation (fd 3), if any.

    ``LISTEN_PID`` must name this process; more than one socket is an error.
    """
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = int(os.environ.get("LISTEN_FDS", "0") or 0)
    if count == 0:
        return None
    if count != 1:
        raise OSError(f"socket activation passed {count} sockets, one is supported")
    os.set_inheritable(3, False)
    sock = socket.socket(fileno=3)
    return sock


def wait_for_server(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    maxtries: int = 300,
    sleeptime: float = 2,
    address: Any = None,
) -> None:
    """Return once something accepts connections at the address.

    Polls ``maxtries`` times, ``sleeptime`` seconds apart, then raises
    ``SystemExit`` as Durus 4.3 does.
    """
    server_address = SocketAddress.new(address or (host, port))
    for _attempt in range(maxtries):
        try:
            connected = server_address.get_connected_socket(timeout=max(sleeptime, 1.0))
        except OSError:
            connected = None
        if connected is not None:
            connected.close()
            return
        time.sleep(sleeptime)
    raise SystemExit(f"Timeout waiting for address: {server_address}.")


def send_stop(address: Any, timeout: float = 10.0, secret: str | bytes | None = None) -> bool:
    """Ask the server at ``address`` to stop (``Q``); False if none was listening.

    With ``secret`` it authenticates first (a server requiring it refuses a
    bare ``Q``).  Returns as soon as the request is sent.
    """
    target = SocketAddress.new(address)
    sock = target.get_connected_socket(timeout=timeout)
    if sock is None:
        return False
    try:
        key = as_secret(secret)
        if key is not None:
            client_authenticate(sock, key, str(target))
        sock.sendall(QUIT)
    finally:
        sock.close()
    return True


def client_authenticate(sock: socket.socket, secret: bytes, where: str) -> None:
    """Run the client side of the ``A`` handshake on a blocking socket."""
    client_nonce = os.urandom(NONCE_SIZE)
    sock.sendall(AUTHENTICATE + client_nonce)
    status = recv_exact(sock, 1)
    if status == STATUS_KEYERROR:
        raise AuthenticationError(f"the server at {where} does not support authentication")
    if status != STATUS_OKAY:
        raise AuthenticationError(f"unexpected authentication reply {status!r} from {where}")
    reply = recv_exact(sock, 2 * NONCE_SIZE)
    server_nonce, proof = reply[:NONCE_SIZE], reply[NONCE_SIZE:]
    import hmac

    expected = auth_proof(secret, b"server", client_nonce, server_nonce)
    if not hmac.compare_digest(proof, expected):
        raise AuthenticationError(f"the server at {where} does not know the shared secret")
    sock.sendall(auth_proof(secret, b"client", client_nonce, server_nonce))
    if recv_exact(sock, 1) != STATUS_OKAY:
        raise AuthenticationError(f"the server at {where} refused our credentials")


def connection_lost(where: str, exc: BaseException | None) -> DurusConnectionError:
    """The error for a server that went away while we talked to it."""
    if isinstance(exc, socket.timeout):
        reason = "no reply in time (timed out)"
        code = errno.ETIMEDOUT
    elif isinstance(exc, EOFError):
        reason = "the server closed the connection"
        code = errno.ECONNRESET
    elif isinstance(exc, OSError) and exc.errno is not None:
        reason = os.strerror(exc.errno)
        code = exc.errno
    else:
        reason = str(exc) if exc is not None else "connection closed"
        code = errno.EPIPE
    return DurusConnectionError(code, f"lost the Durus server at {where}: {reason}")

