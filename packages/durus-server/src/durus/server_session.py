"""What the server knows about one connected client, and how it names it.

One ``ClientSession`` per connection holds everything that is that client's
own: its input and output buffers, the exchange it is in the middle of, its
invalidation queue, its reserved oids and its read-ahead window, so that
dropping a client is forgetting one object.
"""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from durus.server_commits import Transaction

# Client states: what the next bytes from the client must be.
COMMAND = 0  # a command
C_DATA = 1  # int4 L + L bytes of transaction data (after a C list)
DECISION = 2  # APPROVE or ABANDON (after an X review list)
RESULT = 3  # nothing: its commit is waiting to be applied
AUTH_PROOF = 4  # the 32-byte client proof of the A handshake


class ClientError(Exception):
    """A client broke the protocol; it is refused or disconnected."""


class ClientSession:
    """Per-connection state (spec 4.5 plus buffers and bookkeeping)."""

    def __init__(self, sock: socket.socket, addr: Any, name: str, now: float, local: bool) -> None:
        self.s = sock
        self.addr = addr
        self.name = name
        self.local = local
        self.inbuf = bytearray()
        self.out: deque[bytes] = deque()
        self.out_offset = 0
        self.out_size = 0
        self.producer: Iterator[bytes] | None = None
        self.invalid: set[bytes] = set()
        self.unused_oids: set[bytes] = set()
        self.overflowed = False
        self.max_oid = -1
        self.state = COMMAND
        self.txn: Transaction | None = None
        self.authenticated = False
        self.auth_nonces: tuple[bytes, bytes] | None = None
        self.extended = False
        self.handshaking = False
        self.closed = False
        self.connected_at = now
        self.last_recv = now
        self.last_send = now
        self.ra_end = -1
        self.ra_window = 0
        self.sent_recently: dict[bytes, None] = {}
        self.commits = 0
        #: ``W`` clients: the ``_seq`` of the list their loads read as of.
        self.snapshot: int | None = None

    def __repr__(self) -> str:
        return f"<client {self.name}>"


def peer_name(family: int, addr: Any, number: int) -> str:
    """How logs name a client: its host and port, or ``unix#N`` for a Unix socket."""
    if family == getattr(socket, "AF_UNIX", None):
        return f"unix#{number}"
    try:
        host, port = addr[0], addr[1]
    except (TypeError, IndexError):
        return repr(addr)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
