"""StorageServer: one storage served to many ``ClientStorage`` processes.

A single thread runs a non-blocking event loop (``selectors``).  Every client
has its own input and output buffers, and a request is handled only once its
whole message has arrived, so a slow, stalled or silent client never holds
up anyone else; a client that stops in the middle of a message is dropped
after ``message_timeout`` seconds without progress.

Each loop round reads what arrived, handles every complete request, then
applies the commits of the round together: each is written with
``end(sync_to_disk=False)`` and one ``flush_to_disk()`` makes them all
durable (group commit; a storage without these hooks gets a plain
``end()``).  Replies of the round, including load replies and invalidation
lists, are sent only after that flush, so nothing reveals a commit before it
is durable, and a commit is acknowledged only once it is.

Conflicts.  A Durus client checks the invalidation list it receives against
the objects its transaction used.  The server additionally refuses (status
``I``) a commit writing an object that another client committed since this
client's last invalidation list, so a faulty client cannot silently
overwrite.  Commits of Durus 4.3 clients (``C``) are serialized exactly as
in Durus 4.3: while one such client holds its commit window (list sent, data
not yet received) nothing else is committed, for at most
``commit_lock_timeout`` seconds; after that the window is broken and its
commit is refused if anything was committed meanwhile.  Clients of this
distribution send their data first (``X``): the list they review also
names the objects other pending commits are writing, so the commits of one
round are validated together and share one flush; a commit that lands
unseen between a client's review and its approval is sent for another
review, never silently accepted.

Bad input gets the offending client an ``E`` refusal (clients that said
hello) or a disconnect, always logged; the server keeps serving everyone
else and the storage is untouched.

Limits (keyword arguments, see the README): ``max_clients``,
``max_commit_bytes``, ``max_bulk_oids``, ``max_reserved_oids`` per client,
``max_invalidations`` queued per idle client, ``message_timeout``,
``commit_lock_timeout``.  When an idle client's invalidation queue
overflows, the queue is dropped and the client is marked "must resync":
every load it makes is answered ``I`` until its next invalidation list,
which then names every oid up to the highest one the client can know
(so it ghosts its whole cache); it never sees stale data.
"""

from __future__ import annotations

import hmac
import logging
import os
import selectors
import signal
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from durus.error import ConflictError, ReadConflictError
from durus.storage import Storage
from durus.wire_protocol import (
    ABANDON,
    APPROVE,
    AUTHENTICATE,
    BULK_LOAD,
    CLOSE,
    COMMIT,
    COMMIT_DATA,
    DEFAULT_GCBYTES,
    DEFAULT_HOST,
    DEFAULT_PORT,
    FETCH,
    HELLO_OID,
    LOAD,
    NEW_OID,
    NEW_OIDS,
    NONCE_SIZE,
    PACK,
    PROTOCOL,
    QUIT,
    STATS,
    STATUS_INVALID,
    STATUS_KEYERROR,
    STATUS_OKAY,
    STATUS_REVIEW,
    SYNC,
    TIMEOUT,
    VERSION,
    HostPortAddress,
    InheritedSocket,
    SocketAddress,
    UnixAbstractAddress,
    UnixDomainSocketAddress,
    as_secret,
    auth_proof,
    decode_transaction,
    encode_error,
    encode_json,
    get_systemd_socket,
    is_local_peer,
    send_stop,
    wait_for_server,
)

__all__ = [
    "DEFAULT_GCBYTES",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "STATUS_INVALID",
    "STATUS_KEYERROR",
    "STATUS_OKAY",
    "TIMEOUT",
    "ClientError",
    "HostPortAddress",
    "InheritedSocket",
    "SocketAddress",
    "StorageServer",
    "UnixAbstractAddress",
    "UnixDomainSocketAddress",
    "send_stop",
    "stop_allowed",
    "wait_for_server",
]

__version__ = "0.1.0"

logger = logging.getLogger("durus.storage_server")

ROOT_OID = b"\x00" * 8
_int4 = int.to_bytes
_from_int = int.from_bytes

# Client states: what the next bytes from the client must be.
_COMMAND = 0  # a command
_C_DATA = 1  # int4 L + L bytes of transaction data (after a C list)
_DECISION = 2  # APPROVE or ABANDON (after an X review list)
_RESULT = 3  # nothing: its commit is waiting to be applied
_AUTH_PROOF = 4  # the 32-byte client proof of the A handshake

_RECV_SIZE = 256 * 1024
_OUTPUT_HIGH_WATER = 4 * 1024 * 1024
_MESSAGES_PER_ROUND = 64


class ClientError(Exception):
    """A client broke the protocol; it is refused or disconnected."""


def stop_allowed(family: int, peer: Any, allow_remote_stop: bool = False) -> bool:
    """Whether a ``Q`` (stop) from this peer is obeyed.

    By default only peers on this machine may stop the server: Unix-domain
    sockets and loopback TCP.  ``allow_remote_stop`` restores Durus 4.3's
    "anyone who can connect" behaviour.
    """
    return allow_remote_stop or is_local_peer(family, peer)


class _Transaction:
    """A commit on its way: its data, and what its client was shown."""

    __slots__ = ("client", "entries", "included", "kind", "list_oids", "list_seq", "list_top",
                 "nbytes", "order", "writes")

    def __init__(self, client: _Client, kind: bytes, order: int, list_seq: int) -> None:
        self.client = client
        self.kind = kind
        self.order = order
        self.list_seq = list_seq
        self.entries: list[tuple[bytes, bytes]] = []
        self.writes: frozenset[bytes] = frozenset()
        self.nbytes = 0
        #: orders of the pending transactions whose writes the client reviewed
        self.included: set[int] = set()
        #: oids of the last list the client reviewed
        self.list_oids: set[bytes] | frozenset[bytes] = frozenset()
        #: the list named every oid below this (an overflowed client's resync)
        self.list_top = 0


class _Client:
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
        self.state = _COMMAND
        self.txn: _Transaction | None = None
        self.authenticated = False
        self.auth_nonces: tuple[bytes, bytes] | None = None
        self.extended = False
        self.handshaking = False
        self.closed = False
        self.connected_at = now
        self.last_recv = now
        self.last_send = now
        self.waiting_since = now
        self.events = 0
        self.ra_end = -1
        self.ra_window = 0
        self.sent_recently: dict[bytes, None] = {}
        self.commits = 0

    def __repr__(self) -> str:
        return f"<client {self.name}>"


class StorageServer:
    """Serve ``storage`` (any ``durus.storage.Storage``) to Durus clients.

    ``address`` wins over ``host``/``port`` (same forms as ``ClientStorage``;
    a Unix path may take ``owner``, ``group`` and ``umask``).  The server
    binds 127.0.0.1 unless told otherwise.  Options (keyword-only):

    * ``gcbytes``: after that many committed bytes start an incremental pack
      (0 = never); packing is interleaved with serving.
    * ``ssl_context``: a server-side ``ssl.SSLContext``: every connection
      must speak TLS.
    * ``secret``: shared secret; every client must authenticate (``A``)
      before any other command.  Without TLS it proves identity but does
      not encrypt.
    * ``allow_remote_stop`` (False): obey ``Q`` from non-local peers too.
    * ``allow_remote_pack`` (True): obey ``P`` from non-local peers.
    * ``accept_stop`` (True): False refuses ``Q`` from anyone (stop the
      server with a signal instead).
    * limits: ``max_clients`` (1024), ``max_commit_bytes`` (256 MiB),
      ``max_bulk_oids`` (100000), ``max_reserved_oids`` (1000000 per
      client), ``max_invalidations`` (100000 per client),
      ``message_timeout`` (10 s without progress inside a message),
      ``commit_lock_timeout`` (2 s; a window whose client sends nothing for
      ``commit_lock_idle``, 0.25 s, is broken sooner), ``prefetch_records`` (256 records
      sent ahead per fetch, 0 disables), ``pack_slice`` (0.02 s of pack work
      between two looks at the sockets while a pack runs).
    """

    protocol = PROTOCOL

    def __init__(
        self,
        storage: Storage,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        address: Any = None,
        gcbytes: int = DEFAULT_GCBYTES,
        *,
        owner: str | int | None = None,
        group: str | int | None = None,
        umask: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
        secret: str | bytes | None = None,
        allow_remote_stop: bool = False,
        allow_remote_pack: bool = True,
        accept_stop: bool = True,
        max_clients: int = 1024,
        max_commit_bytes: int = 256 * 1024 * 1024,
        max_bulk_oids: int = 100_000,
        max_reserved_oids: int = 1_000_000,
        max_invalidations: int = 100_000,
        message_timeout: float = TIMEOUT,
        commit_lock_timeout: float = 2.0,
        commit_lock_idle: float = 0.25,
        prefetch_records: int = 256,
        prefetch_bytes: int = 512 * 1024,
        pack_slice: float = 0.02,
    ) -> None:
        if not isinstance(gcbytes, (int, float)) or gcbytes < 0:
            raise ValueError(f"gcbytes must be a number >= 0, not {gcbytes!r}")
        self.storage = storage
        if address is None:
            self.address = SocketAddress.new((host, port))
        else:
            extra = {k: v for k, v in (("owner", owner), ("group", group), ("umask", umask))
                     if v is not None}
            self.address = SocketAddress.new(address, **extra)
        self.gcbytes = gcbytes
        self.ssl_context = ssl_context
        self.secret = as_secret(secret)
        self.allow_remote_stop = allow_remote_stop
        self.allow_remote_pack = allow_remote_pack
        self.accept_stop = accept_stop
        self.max_clients = max_clients
        self.max_commit_bytes = min(int(max_commit_bytes), 0xFFFFFFFF)
        self.max_bulk_oids = int(max_bulk_oids)
        self.max_reserved_oids = int(max_reserved_oids)
        self.max_invalidations = int(max_invalidations)
        self.message_timeout = float(message_timeout)
        self.commit_lock_timeout = float(commit_lock_timeout)
        self.commit_lock_idle = float(commit_lock_idle)
        self.prefetch_records = max(0, int(prefetch_records))
        self.prefetch_bytes = int(prefetch_bytes)
        self.pack_slice = float(pack_slice)
        # Durus 4.3 attributes.
        self.clients: list[_Client] = []
        self.sockets: list[socket.socket] = []
        self.packer: Iterator[Any] | None = None
        self.bytes_since_pack = 0
        self.load_record: dict[Any, int] = {}
        # Commit bookkeeping.
        self._seq = 0
        self._log: deque[tuple[int, _Client | None, int, frozenset[bytes]]] = deque()
        self._order = 0
        self._pending: dict[_Client, _Transaction] = {}
        self._approved: list[_Transaction] = []
        self._lock_holder: _Client | None = None
        self._lock_deadline = 0.0
        self._lock_waiters: deque[_Client] = deque()
        self._reserved: dict[bytes, _Client] = {}
        self._pack_removed: set[bytes] = set()
        self._ready: set[_Client] = set()
        self._dirty: set[_Client] = set()  # clients with output to send
        self._next_timeout_check = 0.0
        self._group_commit = _supports_group_commit(storage)
        self._flush_seconds = 0.0  # moving average of flush_to_disk() durations
        self._batch_since = 0.0  # when the oldest approved commit arrived
        self._readonly = _is_readonly(storage)
        self._selector: selectors.BaseSelector | None = None
        self._listener: socket.socket | None = None
        self._wakeup: tuple[socket.socket, socket.socket] | None = None
        self._stop_reason: str | None = None
        self._serving = False
        self._started = time.time()
        self.stats: dict[str, Any] = {
            "connections_total": 0,
            "clients_dropped": 0,
            "loads": 0,
            "load_requests": 0,
            "prefetched": 0,
            "bulk_requests": 0,
            "syncs": 0,
            "commits": 0,
            "commit_objects": 0,
            "commit_bytes": 0,
            "conflicts": 0,
            "reviews": 0,
            "refusals": 0,
            "flushes": 0,
            "group_commits": 0,
            "oids_allocated": 0,
            "bytes_received": 0,
            "bytes_sent": 0,
            "packs": 0,
            "pack_running": False,
            "last_pack_start": None,
            "last_pack_end": None,
            "last_pack_error": None,
            "overflows": 0,
        }

    # -- public API --------------------------------------------------------------------

    def get_stats(self) -> dict[str, Any]:
        """The server's counters (also sent to clients by the ``T`` command)."""
        stats = dict(self.stats)
        stats["clients"] = len(self.clients)
        stats["uptime_s"] = round(time.time() - self._started, 3)
        stats["bytes_since_pack"] = self.bytes_since_pack
        stats["pending_commits"] = len(self._pending)
        stats["reserved_oids"] = len(self._reserved)
        stats["address"] = str(self.address)
        stats["server_version"] = __version__
        return stats

    def stop(self, reason: str = "stop requested") -> None:
        """Ask a running ``serve()`` to finish its round and shut down (thread-safe)."""
        self._stop_reason = self._stop_reason or reason
        wakeup = self._wakeup
        if wakeup is not None:
            try:
                wakeup[1].send(b"x")
            except OSError:
                pass

    def serve(self) -> None:
        """Serve until ``Q``, SIGTERM/SIGINT or ``stop()``; then close the storage."""
        sock = get_systemd_socket()
        if sock is None:
            sock = self.address.get_listening_socket()
        else:
            self.address = InheritedSocket(sock)
        sock.setblocking(False)
        self._listener = sock
        self.sockets = [sock]
        selector = selectors.DefaultSelector()
        self._selector = selector
        wakeup = socket.socketpair()
        for s in wakeup:
            s.setblocking(False)
        self._wakeup = wakeup
        selector.register(sock, selectors.EVENT_READ, None)
        selector.register(wakeup[0], selectors.EVENT_READ, wakeup)
        previous = self._install_signal_handlers()
        self._serving = True
        logger.info("Ready on %s", self.address,
                    extra={"event": "ready", "address": str(self.address),
                           "tls": self.ssl_context is not None, "auth": self.secret is not None})
        try:
            self._loop()
        finally:
            self._serving = False
            self._shutdown(previous)

    # -- event loop --------------------------------------------------------------------

    def _loop(self) -> None:
        selector = self._selector
        assert selector is not None
        listener = self._listener
        while self._stop_reason is None:
            selector_timeout = self._select_timeout()
            try:
                events = selector.select(selector_timeout)
            except InterruptedError:
                events = []
            now = time.monotonic()
            for key, mask in events:
                data = key.data
                if data is None:
                    self._accept(listener, now)  # type: ignore[arg-type]
                elif isinstance(data, _Client):
                    if mask & selectors.EVENT_READ:
                        self._on_readable(data, now)
                    if mask & selectors.EVENT_WRITE:
                        if data.handshaking:
                            self._handshake(data, now)
                        else:
                            self._dirty.add(data)
                else:
                    try:
                        data[0].recv(4096)
                    except OSError:
                        pass
            if self._ready:
                self._process_ready(now)
            if self._approved:
                self._apply_commits()
            if self._dirty:
                self._send_outputs(now)
            if now >= self._next_timeout_check:
                self._next_timeout_check = now + 0.25
                self._check_timeouts(now)
            if self.packer is not None:
                self._pack_steps()
            elif 0 < self.gcbytes <= self.bytes_since_pack:
                self._start_pack(None)

    def _select_timeout(self) -> float:
        if self._ready or self.packer is not None:
            return 0.0
        if self._approved and self._lock_holder is None:
            return max(0.0, self._batch_since + self._group_delay() - time.monotonic())
        if self._approved and self._lock_holder is not None:
            return max(0.0, min(self.commit_lock_idle, self._lock_deadline - time.monotonic()))
        return 1.0  # timeouts are checked at least once a second

    def _install_signal_handlers(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return previous

        def handler(signum: int, _frame: Any) -> None:
            self.stop(f"signal {signal.Signals(signum).name}")

        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                previous[signum] = signal.signal(signum, handler)
            except (ValueError, OSError):
                pass
        return previous

    def _shutdown(self, previous_handlers: dict[int, Any]) -> None:
        reason = self._stop_reason or "error"
        logger.info("Stopping (%s)", reason, extra={"event": "stop", "reason": reason})
        # Replies already earned (acknowledged commits, loads) get a short chance to go out.
        deadline = time.monotonic() + 1.0
        while any(c.out or c.producer for c in self.clients) and time.monotonic() < deadline:
            self._dirty.update(self.clients)
            self._send_outputs(time.monotonic())
            if any(c.out for c in self.clients):
                time.sleep(0.01)
        for client in list(self.clients):
            self._drop(client, None)
        if self._listener is not None:
            try:
                self.address.close(self._listener)
            except OSError:
                pass
        if self._wakeup is not None:
            for s in self._wakeup:
                s.close()
            self._wakeup = None
        if self._selector is not None:
            self._selector.close()
        for signum, old in previous_handlers.items():
            try:
                signal.signal(signum, old)
            except (ValueError, OSError):
                pass
        try:
            self.storage.close()
        except Exception:
            logger.exception("closing the storage failed")

    # -- connections -------------------------------------------------------------------

    def _accept(self, listener: socket.socket, now: float) -> None:
        for _ in range(64):
            try:
                sock, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.warning("accept failed: %s", exc)
                return
            if len(self.clients) >= self.max_clients:
                logger.warning("refusing a connection from %s: %d clients connected",
                               _peer_name(sock.family, addr, 0), len(self.clients),
                               extra={"event": "refused", "reason": "max_clients"})
                sock.close()
                continue
            sock.setblocking(False)
            self.address.set_connection_options(sock)
            name = _peer_name(sock.family, addr, self.stats["connections_total"] + 1)
            client = _Client(sock, addr, name, now, is_local_peer(sock.family, addr))
            if self.ssl_context is not None:
                try:
                    client.s = self.ssl_context.wrap_socket(
                        sock, server_side=True, do_handshake_on_connect=False)
                except (OSError, ValueError) as exc:
                    logger.info("TLS setup with %s failed: %s", name, exc)
                    sock.close()
                    continue
                client.handshaking = True
            self.clients.append(client)
            self.sockets.append(client.s)
            assert self._selector is not None
            self._selector.register(client.s, selectors.EVENT_READ, client)
            self.stats["connections_total"] += 1
            logger.info("client connected: %s", name,
                        extra={"event": "connect", "client": name})
            if client.handshaking:
                self._handshake(client, now)

    def _handshake(self, client: _Client, now: float) -> None:
        sock = client.s
        try:
            sock.do_handshake()  # type: ignore[attr-defined]
        except ssl.SSLWantReadError:
            self._want_write(client, False)
            return
        except ssl.SSLWantWriteError:
            self._want_write(client, True)
            return
        except (OSError, ValueError) as exc:
            self._drop(client, f"TLS handshake failed: {exc}")
            return
        client.handshaking = False
        client.last_recv = now
        self._want_write(client, bool(client.out))
        logger.debug("TLS established with %s (%s)", client.name,
                     sock.version())  # type: ignore[attr-defined]

    def _want_write(self, client: _Client, want: bool) -> None:
        if client.closed or self._selector is None:
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0)
        try:
            if self._selector.get_key(client.s).events != events:
                self._selector.modify(client.s, events, client)
        except (KeyError, ValueError):
            pass

    def _on_readable(self, client: _Client, now: float) -> None:
        if client.closed:
            return
        if client.handshaking:
            self._handshake(client, now)
            if client.handshaking or client.closed:
                return
        sock = client.s
        received = 0
        try:
            while True:
                chunk = sock.recv(_RECV_SIZE)
                if not chunk:
                    partial = bool(client.inbuf) or client.state not in (_COMMAND, _RESULT)
                    self._drop(client, "closed the connection in the middle of a request"
                               if partial else None)
                    return
                client.inbuf += chunk
                received += len(chunk)
                pending = getattr(sock, "pending", None)
                if pending is None or not pending() or len(client.inbuf) > 2 * _RECV_SIZE:
                    break
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
            pass
        except ssl.SSLWantWriteError:
            self._want_write(client, True)
        except OSError as exc:
            self._drop(client, f"receive failed: {exc}")
            return
        if received:
            client.last_recv = now
            self.stats["bytes_received"] += received
            self._ready.add(client)

    def _drop(self, client: _Client, reason: str | None, level: int = logging.INFO) -> None:
        """Forget a client: close its socket, release its reservations and locks."""
        if client.closed:
            return
        client.closed = True
        if reason is not None:
            self.stats["clients_dropped"] += 1
            logger.log(level, "dropping client %s: %s", client.name, reason,
                       extra={"event": "drop", "client": client.name, "reason": reason})
        else:
            logger.info("client disconnected: %s", client.name,
                        extra={"event": "disconnect", "client": client.name})
        if self._selector is not None:
            try:
                self._selector.unregister(client.s)
            except (KeyError, ValueError):
                pass
        try:
            client.s.close()
        except OSError:
            pass
        if client in self.clients:
            self.clients.remove(client)
        if client.s in self.sockets:
            self.sockets.remove(client.s)
        self._ready.discard(client)
        self._pending.pop(client, None)
        if client.txn is not None:
            client.txn = None
        if self._lock_holder is client:
            self._release_lock()
        if client in self._lock_waiters:
            self._lock_waiters.remove(client)
        reserved = self._reserved
        for oid in client.unused_oids:
            if reserved.get(oid) is client:
                del reserved[oid]
        client.unused_oids = set()
        client.invalid = set()
        client.out.clear()
        client.producer = None
        client.inbuf = bytearray()

    def _check_timeouts(self, now: float) -> None:
        limit = self.message_timeout
        for client in list(self.clients):
            if client.handshaking:
                if now - client.connected_at > limit:
                    self._drop(client, "TLS handshake did not complete in time")
                continue
            if client.out and now - client.last_send > limit:
                self._drop(client, f"did not read its replies for {limit:g} s")
            elif (client.inbuf and client.state != _RESULT and client not in self._ready
                  and client not in self._lock_waiters and now - client.last_recv > limit):
                self._drop(client, f"stalled for {limit:g} s in the middle of a message")
            elif (client.state in (_C_DATA, _DECISION, _AUTH_PROOF)
                  and now - client.last_recv > limit):
                self._drop(client, f"did not continue its exchange for {limit:g} s")
        if self._lock_holder is not None and not self._lock_alive(now):
            self._break_lock()

    # -- output ------------------------------------------------------------------------

    def _reply(self, client: _Client, data: bytes) -> None:
        if data:
            client.out.append(data)
            client.out_size += len(data)
            self._dirty.add(client)

    def _send_outputs(self, now: float) -> None:
        """Send what the round produced (only ever after the round's flush)."""
        dirty = self._dirty
        self._dirty = set()
        for client in dirty:
            if client.closed or client.handshaking:
                continue
            if client.out or client.producer is not None:
                self._write(client, now)

    def _write(self, client: _Client, now: float) -> None:
        sock = client.s
        out = client.out
        tls = self.ssl_context is not None
        sent_total = 0
        try:
            while True:
                if client.producer is not None and client.out_size < _OUTPUT_HIGH_WATER:
                    for chunk in client.producer:
                        self._reply(client, chunk)
                        if client.out_size >= _OUTPUT_HIGH_WATER:
                            break
                    else:
                        client.producer = None
                if not out:
                    break
                head = out[0]
                offset = client.out_offset
                if tls:
                    view = memoryview(head)[offset : offset + 16384]
                else:
                    view = memoryview(head)[offset:] if offset else head  # type: ignore[assignment]
                sent = sock.send(view)
                sent_total += sent
                client.out_size -= sent
                if offset + sent >= len(head):
                    out.popleft()
                    client.out_offset = 0
                else:
                    client.out_offset = offset + sent
                    if not tls:
                        break
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            pass
        except OSError as exc:
            self._drop(client, f"send failed: {exc}")
            return
        if sent_total:
            client.last_send = now
            self.stats["bytes_sent"] += sent_total
        pending = bool(out) or client.producer is not None
        if not pending:
            client.last_send = now
            if client.inbuf and client.state == _COMMAND:
                self._ready.add(client)  # it may have pipelined requests
        self._want_write(client, pending)

    # -- requests ----------------------------------------------------------------------

    def _process_ready(self, now: float) -> None:
        ready = self._ready
        self._ready = set()
        for client in sorted(ready, key=lambda c: c.connected_at):
            if not client.closed:
                try:
                    self._process(client, now)
                except ClientError as exc:
                    self._drop(client, str(exc), logging.WARNING)
                except Exception as exc:
                    # A bug of ours must cost one client, never the server.
                    logger.exception("internal error while serving %s", client.name)
                    self._drop(client, f"internal error: {exc!r}", logging.ERROR)

    def _refuse(self, client: _Client, message: str, level: int = logging.WARNING) -> None:
        """An ``E`` reply to a client that said hello, else a disconnect."""
        self.stats["refusals"] += 1
        if client.extended:
            logger.log(level, "refused %s: %s", client.name, message,
                       extra={"event": "refuse", "client": client.name, "reason": message})
            self._reply(client, encode_error(message))
        else:
            raise ClientError(message)

    def _process(self, client: _Client, now: float) -> None:
        buf = client.inbuf
        pos = 0
        handled = 0
        size = len(buf)
        while pos < size and not client.closed:
            if handled >= _MESSAGES_PER_ROUND:
                self._ready.add(client)  # the rest next round, after the others
                break
            if client.out_size > _OUTPUT_HIGH_WATER or client.producer is not None:
                break  # resumed once its output drained
            state = client.state
            if state == _RESULT:
                break
            if state == _C_DATA:
                used = self._on_commit_data(client, buf, pos, size)
            elif state == _DECISION:
                used = self._on_decision(client, buf[pos : pos + 1])
            elif state == _AUTH_PROOF:
                used = self._on_auth_proof(client, buf, pos, size)
            else:
                used = self._on_command(client, buf, pos, size, now)
            if used == 0:
                break
            pos += used
            handled += 1
        if client.closed:
            return
        if pos:
            del buf[:pos]

    def _on_command(self, client: _Client, buf: bytearray, pos: int, size: int, now: float) -> int:
        """Handle one complete command at ``pos``; return its length (0: incomplete)."""
        command = buf[pos : pos + 1]
        available = size - pos
        if self.secret is not None and not client.authenticated and command != AUTHENTICATE:
            raise ClientError(f"command {bytes(command)!r} before authentication")
        if command in (LOAD, FETCH):
            if available < 9:
                return 0
            oid = bytes(buf[pos + 1 : pos + 9])
            if command == LOAD:
                if oid == HELLO_OID:
                    self._hello(client)
                else:
                    self._reply(client, self._load_reply(client, oid))
            else:
                self._fetch(client, oid)
            return 9
        if command == COMMIT_DATA:
            if available < 5:
                return 0
            length = _from_int(buf[pos + 1 : pos + 5], "big")
            if length > self.max_commit_bytes:
                raise ClientError(f"commit of {length} bytes exceeds max_commit_bytes")
            if available < 5 + length:
                return 0
            self._on_commit_with_data(client, bytes(buf[pos + 5 : pos + 5 + length]))
            return 5 + length
        if command == SYNC:
            self._on_sync(client)
            return 1
        if command == COMMIT:
            return self._on_commit(client, now)
        if command == NEW_OIDS:
            if available < 2:
                return 0
            self._on_new_oids(client, buf[pos + 1])
            return 2
        if command == BULK_LOAD:
            if available < 5:
                return 0
            count = _from_int(buf[pos + 1 : pos + 5], "big")
            if count > self.max_bulk_oids:
                raise ClientError(f"bulk load of {count} oids exceeds max_bulk_oids")
            need = 5 + 8 * count
            if available < need:
                return 0
            raw = bytes(buf[pos + 5 : pos + need])
            self._on_bulk_load(client, [raw[i : i + 8] for i in range(0, len(raw), 8)])
            return need
        if command == NEW_OID:
            self._on_new_oids(client, 1)
            return 1
        if command == VERSION:
            if available < 5:
                return 0
            client_protocol = bytes(buf[pos + 1 : pos + 5])
            self._reply(client, self.protocol)
            if client_protocol != self.protocol:
                self._dirty.discard(client)
                self._write(client, now)
                raise ClientError(f"protocol {client_protocol!r} not supported")
            return 5
        if command == PACK:
            self._on_pack(client)
            return 1
        if command == CLOSE:
            self._drop(client, None)
            return 1
        if command == QUIT:
            self._on_quit(client)
            return 1
        if command == STATS:
            self._reply(client, encode_json(self.get_stats()))
            return 1
        if command == AUTHENTICATE:
            if available < 1 + NONCE_SIZE:
                return 0
            self._on_authenticate(client, bytes(buf[pos + 1 : pos + 1 + NONCE_SIZE]))
            return 1 + NONCE_SIZE
        raise ClientError(f"No such command code: {bytes(command)!r}")

    # -- authentication ----------------------------------------------------------------

    def _on_authenticate(self, client: _Client, client_nonce: bytes) -> None:
        if self.secret is None:
            self._reply(client, STATUS_KEYERROR)
            return
        if client.authenticated:
            raise ClientError("authenticated twice")
        server_nonce = os.urandom(NONCE_SIZE)
        client.auth_nonces = (client_nonce, server_nonce)
        proof = auth_proof(self.secret, b"server", client_nonce, server_nonce)
        self._reply(client, STATUS_OKAY + server_nonce + proof)
        client.state = _AUTH_PROOF

    def _on_auth_proof(self, client: _Client, buf: bytearray, pos: int, size: int) -> int:
        if size - pos < NONCE_SIZE:
            return 0
        assert self.secret is not None and client.auth_nonces is not None
        expected = auth_proof(self.secret, b"client", *client.auth_nonces)
        if not hmac.compare_digest(bytes(buf[pos : pos + NONCE_SIZE]), expected):
            raise ClientError("authentication failed: wrong secret")
        client.authenticated = True
        client.auth_nonces = None
        client.state = _COMMAND
        self._reply(client, STATUS_OKAY)
        logger.info("client %s authenticated", client.name,
                    extra={"event": "authenticated", "client": client.name})
        return NONCE_SIZE

    # -- loads -------------------------------------------------------------------------

    def _hello(self, client: _Client) -> None:
        client.extended = True
        document = {
            "server": "durus-server",
            "version": __version__,
            "protocol": 1,
            "features": ["E", "F", "T", "X"],
            "tls": self.ssl_context is not None,
            "auth": self.secret is not None,
            "limits": {
                "max_commit_bytes": self.max_commit_bytes,
                "max_bulk_oids": self.max_bulk_oids,
                "max_reserved_oids": self.max_reserved_oids,
                "max_invalidations": self.max_invalidations,
                "message_timeout": self.message_timeout,
            },
        }
        self._reply(client, STATUS_OKAY + encode_json(document))

    def _load(self, client: _Client, oid: bytes) -> bytes | None:
        """The record for ``client``; None for ``I``; raise KeyError for ``K``."""
        if client.overflowed or oid in client.invalid:
            return None
        try:
            record = self.storage.load(oid)
        except ReadConflictError:
            return None
        n = _from_int(oid, "big")
        if n > client.max_oid:
            client.max_oid = n
        return record

    def _load_reply(self, client: _Client, oid: bytes) -> bytes:
        self.stats["load_requests"] += 1
        try:
            record = self._load(client, oid)
        except KeyError:
            return STATUS_KEYERROR
        except Exception as exc:
            logger.exception("loading oid %d failed", _from_int(oid, "big"))
            raise ClientError(f"the storage failed to load an object: {exc}") from exc
        if record is None:
            return STATUS_INVALID
        self.stats["loads"] += 1
        return STATUS_OKAY + len(record).to_bytes(4, "big") + record

    def _on_bulk_load(self, client: _Client, oids: list[bytes]) -> None:
        self.stats["bulk_requests"] += 1
        if len(oids) <= 64:
            self._reply(client, b"".join([self._load_reply(client, oid) for oid in oids]))
            return

        def produce() -> Iterator[bytes]:
            # Produced while sending, after every commit applied so far was
            # flushed; oids changed since the client's last list answer I.
            for start in range(0, len(oids), 256):
                yield b"".join([self._load_reply(client, oid) for oid in oids[start : start + 256]])

        client.producer = produce()
        self._dirty.add(client)

    def _fetch(self, client: _Client, oid: bytes) -> None:
        """``F``: one load reply, then records the client will probably want next."""
        reply = self._load_reply(client, oid)
        if reply[:1] != STATUS_OKAY or self.prefetch_records == 0 or client.overflowed:
            self._reply(client, reply + b"\x00\x00\x00\x00")
            return
        n = _from_int(oid, "big")
        # Sequential scans (the oid follows or falls inside the last read-ahead
        # window) get a doubling window; a jump halves it, so a scan hopping
        # between regions keeps most of it and random loads soon waste little.
        if client.ra_end >= 0 and client.ra_end - client.ra_window <= n <= client.ra_end + 64:
            window = min(max(client.ra_window * 2, 16), self.prefetch_records)
        else:
            window = max(8, client.ra_window // 2)
        limit = self.prefetch_records
        candidates: deque[bytes] = deque()
        _add_refs(candidates, reply[5:], limit)
        candidates.extend((n + k).to_bytes(8, "big") for k in range(1, window + 1)
                          if n + k < 1 << 64)
        client.ra_end = n + window
        client.ra_window = window
        sent = client.sent_recently
        invalid = client.invalid
        load = self.storage.load
        parts = [reply]
        extra = []
        budget = self.prefetch_bytes
        count = 0
        # Breadth first: the records it refers to, the following oids, then
        # what those refer to, until the record or byte budget is spent.
        while candidates:
            candidate = candidates.popleft()
            if candidate in sent or candidate in invalid or candidate == oid:
                continue
            try:
                other = load(candidate)
            except Exception:
                continue
            if len(candidates) < limit:
                _add_refs(candidates, other, limit - len(candidates))
            extra.append(candidate + len(other).to_bytes(4, "big") + other)
            sent[candidate] = None
            count += 1
            budget -= len(other) + 12
            m = _from_int(candidate, "big")
            if m > client.max_oid:
                client.max_oid = m
            if count >= self.prefetch_records or budget <= 0:
                break
        sent[oid] = None
        if len(sent) > 8192:
            for key in list(sent)[: len(sent) - 4096]:
                del sent[key]
        parts.append(count.to_bytes(4, "big"))
        parts.extend(extra)
        self.stats["prefetched"] += count
        self.stats["loads"] += count
        self._reply(client, b"".join(parts))

    # -- oids --------------------------------------------------------------------------

    def _on_new_oids(self, client: _Client, count: int) -> None:
        if self._readonly:
            self._refuse(client, "the storage is read-only")
            if client.extended:
                return
        if len(client.unused_oids) + count > self.max_reserved_oids:
            raise ClientError(f"more than {self.max_reserved_oids} reserved oids")
        oids: list[bytes] = []
        reserved = self._reserved
        removed = self._pack_removed
        try:
            while len(oids) < count:
                oid = self.storage.new_oid()
                if oid in reserved:
                    continue
                if removed and oid in removed:
                    # Still named in some client's pending invalidations: a
                    # client may hold the removed object; leak it (as 4.3 does).
                    if any(oid in c.invalid for c in self.clients):
                        continue
                    removed.discard(oid)
                oids.append(oid)
        except Exception as exc:
            logger.exception("allocating oids failed")
            self._refuse(client, f"the storage cannot allocate oids: {exc}")
            return
        for oid in oids:
            reserved[oid] = client
        client.unused_oids.update(oids)
        top = max(_from_int(oid, "big") for oid in oids) if oids else -1
        if top > client.max_oid:
            client.max_oid = top
        self.stats["oids_allocated"] += len(oids)
        self._reply(client, b"".join(oids))

    # -- invalidations -----------------------------------------------------------------

    def _handle_invalidations(self, oids: Any) -> None:
        """Oids the storage reports changed or removed: tell every client."""
        oids = frozenset(oids)
        if not oids:
            return
        for client in self.clients:
            self._invalidate(client, oids)

    def _invalidate(self, client: _Client, oids: frozenset[bytes] | set[bytes]) -> None:
        if client.overflowed:
            return
        invalid = client.invalid
        invalid.update(oids)
        if len(invalid) > self.max_invalidations:
            client.overflowed = True
            client.invalid = set()
            self.stats["overflows"] += 1
            logger.warning("invalidation queue of %s overflowed (%d oids): it must resync",
                           client.name, len(invalid),
                           extra={"event": "overflow", "client": client.name})

    def _sync_storage(self) -> None:
        removed = self.storage.sync()
        if removed:
            removed_set = frozenset(removed)
            self._pack_removed.update(removed_set)
            self._handle_invalidations(removed_set)
            self._seq += 1
            self._log.append((self._seq, None, -1, removed_set))

    def _take_list(
        self, client: _Client, extra: set[bytes] | None = None, txn: _Transaction | None = None
    ) -> tuple[bytes, set[bytes]]:
        """Encode and clear what ``client`` must be told; return (bytes, oids).

        An overflowed client is told every oid up to the highest it may know
        (streamed by a producer, after anything already queued for it).
        """
        if client.overflowed:
            client.overflowed = False
            client.invalid = set()
            top = client.max_oid
            count = top + 1

            def produce() -> Iterator[bytes]:
                yield count.to_bytes(4, "big")
                for start in range(0, count, 65536):
                    yield b"".join(n.to_bytes(8, "big")
                                   for n in range(start, min(count, start + 65536)))

            client.producer = produce()
            self._dirty.add(client)
            if txn is not None:
                txn.list_top = count
            return b"", set()
        oids = client.invalid
        client.invalid = set()
        if extra:
            oids |= extra
        return len(oids).to_bytes(4, "big") + b"".join(oids), oids

    def _on_sync(self, client: _Client) -> None:
        self.stats["syncs"] += 1
        self._sync_storage()
        data, _oids = self._take_list(client)
        self._reply(client, data)

    # -- commits -----------------------------------------------------------------------

    def _pending_writes(self, client: _Client) -> tuple[set[bytes], set[int]]:
        writes: set[bytes] = set()
        orders = set()
        for other, txn in self._pending.items():
            if other is not client:
                writes |= txn.writes
                orders.add(txn.order)
        return writes, orders

    def _new_txn(self, client: _Client, kind: bytes) -> _Transaction:
        self._order += 1
        return _Transaction(client, kind, self._order, self._seq)

    def _parse(self, client: _Client, txn: _Transaction, tdata: Any) -> bool:
        try:
            entries = decode_transaction(tdata)
        except Exception as exc:
            self._refuse(client, f"malformed commit: {exc}")
            return False
        txn.entries = entries
        txn.writes = frozenset(oid for oid, _record in entries)
        txn.nbytes = len(tdata)
        return True

    def _on_commit(self, client: _Client, now: float) -> int:
        """``C`` (protocol 1): send the list, then wait for the data."""
        holder = self._lock_holder
        if holder is not None and holder is not client:
            if self._lock_alive(now):
                if client not in self._lock_waiters:
                    self._lock_waiters.append(client)
                return 0  # Left in the buffer until the window closes.
            self._release_lock()
        if client in self._lock_waiters:
            self._lock_waiters.remove(client)
        self._sync_storage()
        txn = self._new_txn(client, COMMIT)
        pending_writes, orders = self._pending_writes(client)
        data, oids = self._take_list(client, pending_writes, txn)
        txn.included = orders
        txn.list_oids = oids
        client.txn = txn
        client.state = _C_DATA
        self._lock_holder = client
        self._lock_deadline = now + self.commit_lock_timeout
        self._reply(client, data)
        return 1

    def _on_commit_data(self, client: _Client, buf: bytearray, pos: int, size: int) -> int:
        if size - pos < 4:
            return 0
        length = _from_int(buf[pos : pos + 4], "big")
        txn = client.txn
        assert txn is not None
        if length == 0:
            client.txn = None
            client.state = _COMMAND
            if self._lock_holder is client:
                self._release_lock()
            return 4
        if length > self.max_commit_bytes:
            raise ClientError(f"commit of {length} bytes exceeds max_commit_bytes")
        if size - pos < 4 + length:
            return 0
        if self._lock_holder is client:
            self._release_lock()
        client.state = _COMMAND
        client.txn = None
        if self._parse(client, txn, bytes(buf[pos + 4 : pos + 4 + length])):
            client.state = _RESULT
            client.txn = txn
            self._approved.append(txn)
            self._pending[client] = txn
        return 4 + length

    def _on_commit_with_data(self, client: _Client, tdata: bytes) -> None:
        """``X``: the data first; a review list if anything changed meanwhile."""
        if not tdata:
            self._refuse(client, "empty commit")
            return
        txn = self._new_txn(client, COMMIT_DATA)
        if not self._parse(client, txn, tdata):
            return
        self._sync_storage()
        client.txn = txn
        if not client.invalid and not client.overflowed:
            client.state = _RESULT
            self._approved.append(txn)
            self._pending[client] = txn
            return
        pending_writes, orders = self._pending_writes(client)
        self._send_review(client, txn, pending_writes, orders, initial=True)

    def _send_review(self, client: _Client, txn: _Transaction, extra: set[bytes],
                     orders: set[int], initial: bool = False) -> None:
        txn.list_top = 0
        if initial:
            data, oids = self._take_list(client, extra, txn)
        else:
            oids = extra
            data = len(oids).to_bytes(4, "big") + b"".join(oids)
        txn.list_seq = self._seq
        txn.included = orders
        txn.list_oids = oids
        client.state = _DECISION
        self._pending[client] = txn
        self.stats["reviews"] += 1
        self._reply(client, STATUS_REVIEW + data)

    def _on_decision(self, client: _Client, answer: bytearray) -> int:
        txn = client.txn
        assert txn is not None
        if answer == APPROVE:
            client.state = _RESULT
            self._approved.append(txn)
        elif answer == ABANDON:
            client.state = _COMMAND
            client.txn = None
            self._pending.pop(client, None)
        else:
            raise ClientError(f"expected a commit decision, got {bytes(answer)!r}")
        return 1

    def _lock_alive(self, now: float) -> bool:
        """Whether the open protocol-1 commit window still holds other commits back.

        It does for at most ``commit_lock_timeout`` seconds, and only while its
        client keeps sending (a healthy client sends its data at once).
        """
        holder = self._lock_holder
        if holder is None:
            return False
        return now <= self._lock_deadline and now - holder.last_recv <= self.commit_lock_idle

    def _break_lock(self) -> None:
        holder = self._lock_holder
        assert holder is not None
        logger.warning("commit window of %s broken: it stopped sending or held it too long",
                       holder.name, extra={"event": "commit_lock_broken", "client": holder.name})
        self._release_lock()

    def _release_lock(self) -> None:
        self._lock_holder = None
        waiters = self._lock_waiters
        self._lock_waiters = deque()
        self._ready.update(c for c in waiters if not c.closed)

    def _validate(self, txn: _Transaction) -> tuple[str, Any]:
        """("ok"|"conflict"|"review"|"refuse"|"drop", detail) for an approved commit."""
        client = txn.client
        if self._readonly:
            return "refuse", "the storage is read-only"
        reserved = self._reserved
        for oid in txn.writes:
            owner = reserved.get(oid)
            if owner is client:
                continue
            if owner is not None:
                return "drop", f"invalid oid {_from_int(oid, 'big')}: reserved by another client"
            if not self._exists(oid):
                return "refuse", f"oid {_from_int(oid, 'big')} was never allocated to this client"
        writes = txn.writes
        if not writes.isdisjoint(txn.list_oids) or (
            txn.list_top and any(_from_int(oid, "big") < txn.list_top for oid in writes)
        ):
            return "conflict", "writes an object named in its invalidation list"
        unseen: set[bytes] = set()
        for seq, author, order, oids in self._log:
            if seq <= txn.list_seq or author is client:
                continue
            if not writes.isdisjoint(oids):
                return "conflict", "writes an object committed by another client meanwhile"
            if order not in txn.included:
                unseen |= oids
        if unseen:
            if txn.kind == COMMIT_DATA:
                return "review", unseen
            return "conflict", "another commit landed inside its commit window"
        return "ok", None

    def _exists(self, oid: bytes) -> bool:
        try:
            self.storage.load(oid)
        except KeyError:
            return False
        except ReadConflictError:
            return True
        return True

    def _group_delay(self) -> float:
        """How long approved commits may wait for others about to approve.

        Half of what a flush costs, at most 5 ms, and only while some client
        is reviewing a list (its approval follows within one round trip).
        """
        if not self._group_commit or self._flush_seconds <= 0.0:
            return 0.0
        if not any(t.client.state == _DECISION for t in self._pending.values()):
            return 0.0
        return min(self._flush_seconds * 0.5, 0.005)

    def _apply_commits(self) -> None:
        now = time.monotonic()
        if self._lock_holder is not None:
            if self._lock_alive(now):
                return  # A protocol-1 commit window is open: nothing commits now.
            self._break_lock()
        if not self._batch_since:
            self._batch_since = now
        if now - self._batch_since < self._group_delay():
            return  # Gather the commits that are about to join this flush.
        self._batch_since = 0.0
        approved = sorted(self._approved, key=lambda t: t.order)
        self._approved = []
        done: list[_Transaction] = []
        storage = self.storage
        for txn in approved:
            client = txn.client
            if client.closed or client.txn is not txn:
                self._pending.pop(client, None)
                continue
            verdict, detail = self._validate(txn)
            if verdict == "review":
                pending_writes, orders = self._pending_writes(client)
                self._send_review(client, txn, detail | pending_writes, orders)
                continue
            self._pending.pop(client, None)
            client.txn = None
            client.state = _COMMAND
            if client.inbuf:
                self._ready.add(client)  # it sent more than it should have: parse it next
            if verdict == "conflict":
                self.stats["conflicts"] += 1
                logger.info("conflict: %s %s", client.name, detail,
                            extra={"event": "conflict", "client": client.name})
                self._reply(client, STATUS_INVALID)
                continue
            if verdict != "ok":
                try:
                    if verdict == "drop":
                        raise ClientError(detail)
                    self._refuse(client, detail)
                except ClientError as exc:
                    self._drop(client, str(exc), logging.WARNING)
                continue
            try:
                storage.begin()
                for oid, record in txn.entries:
                    storage.store(oid, record)
                if self._group_commit:
                    storage.end(self._handle_invalidations, sync_to_disk=False)  # type: ignore[call-arg]
                else:
                    storage.end(self._handle_invalidations)
            except ConflictError:
                self.stats["conflicts"] += 1
                logger.info("conflict reported by the storage for %s", client.name)
                self._reply(client, STATUS_INVALID)
                continue
            except OSError as exc:
                self._fatal(f"the storage failed to write a commit: {exc}", done + [txn])
                return
            except Exception as exc:
                logger.exception("the storage refused a commit of %s", client.name)
                try:
                    storage.begin()
                except Exception:
                    pass
                try:
                    self._refuse(client, f"the storage refused the commit: {exc}")
                except ClientError as error:
                    self._drop(client, str(error), logging.WARNING)
                continue
            self._committed(txn)
            done.append(txn)
        if not done:
            self._prune_log()
            return
        if self._group_commit:
            started = time.monotonic()
            try:
                storage.flush_to_disk()  # type: ignore[attr-defined]
            except OSError as exc:
                self._fatal(f"flushing commits to disk failed: {exc}", done)
                return
            spent = time.monotonic() - started
            self._flush_seconds = 0.8 * self._flush_seconds + 0.2 * spent if \
                self._flush_seconds else spent
        self.stats["flushes"] += 1
        if len(done) > 1:
            self.stats["group_commits"] += 1
        for txn in done:
            if not txn.client.closed:
                self._reply(txn.client, STATUS_OKAY)
        self._prune_log()

    def _committed(self, txn: _Transaction) -> None:
        client = txn.client
        writes = txn.writes
        reserved = self._reserved
        for oid in writes:
            if reserved.get(oid) is client:
                del reserved[oid]
        client.unused_oids -= writes
        for other in self.clients:
            if other is not client:
                self._invalidate(other, writes)
        self._seq += 1
        self._log.append((self._seq, client, txn.order, writes))
        client.commits += 1
        self.bytes_since_pack += txn.nbytes + 8
        stats = self.stats
        stats["commits"] += 1
        stats["commit_objects"] += len(txn.entries)
        stats["commit_bytes"] += txn.nbytes
        if logger.isEnabledFor(logging.INFO):
            logger.info("Committed %d objects %d bytes from %s", len(txn.entries), txn.nbytes,
                        client.name, extra={"event": "commit", "client": client.name,
                                            "objects": len(txn.entries), "bytes": txn.nbytes})

    def _prune_log(self) -> None:
        log = self._log
        if not log:
            return
        active = [t.list_seq for t in self._pending.values()]
        holder = self._lock_holder
        if holder is not None and holder.txn is not None:
            active.append(holder.txn.list_seq)
        for client in self.clients:
            if client.txn is not None:
                active.append(client.txn.list_seq)
        if not active:
            log.clear()
            return
        oldest = min(active)
        while log and log[0][0] <= oldest:
            log.popleft()

    def _fatal(self, message: str, unacknowledged: list[_Transaction]) -> None:
        """The storage failed to make commits durable: stop without acknowledging."""
        logger.critical("%s; stopping the server", message, extra={"event": "fatal"})
        for txn in unacknowledged:
            self._drop(txn.client, "its commit could not be made durable", logging.ERROR)
        self._stop_reason = message

    # -- pack and stop -----------------------------------------------------------------

    def _on_pack(self, client: _Client) -> None:
        if not client.local and not self.allow_remote_pack:
            self._refuse(client, "pack is only accepted from this machine")
            return
        if self._readonly:
            self._refuse(client, "the storage is read-only")
            return
        if self.packer is not None:
            logger.info("Pack already in progress", extra={"event": "pack_busy"})
            self._reply(client, STATUS_OKAY)
            return
        problem = self._start_pack(client)
        if problem is not None:
            self._refuse(client, problem)
            return
        self._reply(client, STATUS_OKAY)

    def _start_pack(self, client: _Client | None) -> str | None:
        """Start packing; a reason if it cannot start."""
        try:
            self.storage.load(ROOT_OID)
        except KeyError:
            if client is None:
                self.bytes_since_pack = 0
            return "the database has no root object: nothing to pack"
        except Exception as exc:
            return f"cannot pack: {exc}"
        who = client.name if client is not None else f"gcbytes={self.gcbytes}"
        self.stats["last_pack_start"] = _now_iso()
        logger.info("Pack started (%s)", who, extra={"event": "pack_start", "by": who})
        try:
            packer = self.storage.get_packer()
            if packer is None:
                self.storage.pack()
                self._pack_done()
            else:
                self.packer = packer
                self.stats["pack_running"] = True
        except Exception as exc:
            logger.exception("pack failed")
            self.stats["last_pack_error"] = str(exc)
            self.packer = None
            self.stats["pack_running"] = False
            return f"pack failed: {exc}"
        return None

    def _pack_steps(self) -> None:
        packer = self.packer
        assert packer is not None
        deadline = time.monotonic() + self.pack_slice
        try:
            while True:  # at least one step per round, then until the slice is spent
                step = next(packer)
                if isinstance(step, str):
                    logger.debug("pack: %s", step, extra={"event": "pack_step"})
                if time.monotonic() >= deadline:
                    break
        except StopIteration:
            self.packer = None
            self._pack_done()
        except Exception as exc:
            logger.exception("pack failed")
            self.stats["last_pack_error"] = str(exc)
            self.stats["pack_running"] = False
            self.packer = None
            close = getattr(packer, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    pass
            self.bytes_since_pack = 0

    def _pack_done(self) -> None:
        self.bytes_since_pack = 0
        self.stats["packs"] += 1
        self.stats["pack_running"] = False
        self.stats["last_pack_end"] = _now_iso()
        self._sync_storage()
        logger.info("Pack completed", extra={"event": "pack_end"})

    def _on_quit(self, client: _Client) -> None:
        family = client.s.family
        if not self.accept_stop:
            raise ClientError("stop (Q) refused: this server does not accept Q")
        if not stop_allowed(family, client.addr, self.allow_remote_stop):
            raise ClientError("stop (Q) refused: only accepted from this machine")
        logger.info("Quit requested by %s", client.name,
                    extra={"event": "quit", "client": client.name})
        self._stop_reason = f"Q from {client.name}"


def _add_refs(candidates: deque[bytes], record: bytes, limit: int) -> None:
    """Queue the oids in ``record``'s refs trailer (at most ``limit``)."""
    try:
        data_end = 12 + _from_int(record[8:12], "big")
    except (ValueError, IndexError):
        return
    refs = record[data_end:]
    end = min(len(refs) - len(refs) % 8, 8 * limit)
    candidates.extend(refs[i : i + 8] for i in range(0, end, 8))


def _is_readonly(storage: Storage) -> bool:
    readonly = getattr(storage, "readonly", None)
    if readonly is None:
        readonly = getattr(getattr(storage, "shelf", None), "readonly", False)
    return bool(readonly)


def _supports_group_commit(storage: Storage) -> bool:
    if not callable(getattr(storage, "flush_to_disk", None)):
        return False
    import inspect

    try:
        parameters = inspect.signature(storage.end).parameters
    except (TypeError, ValueError):
        return False
    return "sync_to_disk" in parameters


def _peer_name(family: int, addr: Any, number: int) -> str:
    if family == getattr(socket, "AF_UNIX", None):
        return f"unix#{number}"
    try:
        host, port = addr[0], addr[1]
    except (TypeError, IndexError):
        return repr(addr)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

