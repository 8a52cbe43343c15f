"""The Durus client/server wire protocol (version 1), shared by both ends.

Everything that client and server must agree on lives here, so they cannot
drift apart: command and status bytes, how oid lists, load replies and
transaction data are framed, and the errors raised when a peer breaks the
protocol or disappears.  How an address string becomes a socket is
``durus.socket_address``'s job (its names are importable from here too).

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
* ``Y``: a one-message commit whose reviews (``R``) also carry, after the
  oid list, the current records of the listed oids it writes (``int4 n``,
  then n times oid + ``int4 len`` + record, as ``F`` sends records ahead).
  Besides approving (``g``) or abandoning (``a``), the client may answer
  ``r`` + ``int4 len`` + new transaction data: the commit merged with those
  records (conflict resolution), which keeps its place in line.
* ``W``: snapshot sync, for ``Connection(..., mvcc=True)``.  Answered like
  ``S`` (the oids changed since the client's last list), and from then on
  the client's loads (``L``, ``B``, ``F``) return records as of that list:
  the server keeps the previous version of each record changed while such a
  snapshot is open.  A successful ``X`` commit moves the snapshot to just
  after it, an abandoned one to the list it reviewed.
* ``H`` status, in a load reply to a snapshot client: the snapshot can no
  longer be served, followed by ``int4 n`` and an n-byte UTF-8 reason (the
  history window was exceeded, or a pack removed the record).
* ``E`` status: a refusal with a UTF-8 reason, sent only to clients that
  said hello; Durus 4.3 clients get a disconnect instead.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
import time
from collections.abc import Iterable, Mapping
from typing import Any

from durus.error import DurusError, ProtocolError
from durus.serialize import check_record

# The addresses moved to durus.socket_address; imported here too, where code
# written against this module finds them.
from durus.socket_address import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    HostPortAddress,
    InheritedSocket,
    SocketAddress,
    UnixAbstractAddress,
    UnixDomainSocketAddress,
    get_systemd_socket,
    is_local_peer,
)

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
    "SNAPSHOT_SYNC",
    "STATUS_ERROR",
    "STATUS_EXPIRED",
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
#: Extension, a load reply to a snapshot client: ``int4 n`` + why (UTF-8).
STATUS_EXPIRED = b"H"

#: Durus 4.3's per-operation server timeout, kept as the default time a
#: server waits for the rest of a message that has started to arrive.
TIMEOUT = 10
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
SNAPSHOT_SYNC = b"W"
COMMIT_MERGING = b"Y"
EXTENDED_COMMAND_BYTES = frozenset(b"AXFTWY")
#: Answers inside an ``X`` (or ``Y``) exchange after a review list.
APPROVE = b"g"
ABANDON = b"a"
#: ``Y`` only: new transaction data follows (``int4 len`` + data).
REPLACE = b"r"

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
            try:
                check_record(oid, record)
            except ValueError as problem:
                raise ProtocolError(f"oid {int.from_bytes(oid, 'big')}: {problem}") from None
        entries.append((oid, record))
    return entries


def encode_json(document: Any) -> bytes:
    body = json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return _int4_pack(len(body)) + body


def encode_error(message: str, status: bytes = STATUS_ERROR) -> bytes:
    """A status byte (``E``, or ``H`` for an expired snapshot) and a reason."""
    body = message.encode("utf-8", "replace")[:65536]
    return status + _int4_pack(len(body)) + body


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

