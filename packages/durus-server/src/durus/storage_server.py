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

Limits (one ``ServerLimits``, or the same names as keywords; see the README): ``max_clients``,
``max_commit_bytes``, ``max_bulk_oids``, ``max_reserved_oids`` per client,
``max_invalidations`` queued per idle client, ``message_timeout``,
``commit_lock_timeout``.  When an idle client's invalidation queue
overflows, the queue is dropped and the client is marked "must resync":
every load it makes is answered ``I`` until its next invalidation list,
which then names every oid up to the highest one the client can know
(so it ghosts its whole cache); it never sees stale data.

This module keeps the event loop and the names Durus 4.3 users import from
it; each concern lives in its own ``durus.server_*`` module (see the README).
"""

from __future__ import annotations

import dataclasses
import selectors
import signal
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from durus.server_access import AccessControl, stop_allowed
from durus.server_commit_window import CommitWindow
from durus.server_commits import CommitCoordination, Transaction
from durus.server_config import (
    LIMIT_NAMES,
    SERVER_VERSION,
    ServerLimits,
    create_root_if_missing,
    is_readonly,
    logger,
    supports_group_commit,
)
from durus.server_connections import ClientConnections
from durus.server_invalidations import Invalidations
from durus.server_loads import LoadReplies
from durus.server_oids import OidReservation
from durus.server_pack import Packing
from durus.server_prefetch import Prefetching
from durus.server_requests import RequestDispatch
from durus.server_session import (
    ClientError,
    ClientSession,
)
from durus.server_snapshots import SnapshotHistory, SnapshotReads
from durus.server_stats import StatsReporting, new_counters
from durus.storage import Storage
from durus.wire_protocol import (
    DEFAULT_GCBYTES,
    DEFAULT_HOST,
    DEFAULT_PORT,
    PROTOCOL,
    STATUS_INVALID,
    STATUS_KEYERROR,
    STATUS_OKAY,
    TIMEOUT,
    HostPortAddress,
    InheritedSocket,
    SocketAddress,
    UnixAbstractAddress,
    UnixDomainSocketAddress,
    as_secret,
    get_systemd_socket,
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
    "ServerLimits",
    "SocketAddress",
    "StorageServer",
    "UnixAbstractAddress",
    "UnixDomainSocketAddress",
    "send_stop",
    "stop_allowed",
    "wait_for_server",
]

__version__ = SERVER_VERSION



class StorageServer(
    ClientConnections,
    RequestDispatch,
    AccessControl,
    LoadReplies,
    Prefetching,
    OidReservation,
    Invalidations,
    CommitWindow,
    CommitCoordination,
    Packing,
    SnapshotReads,
    StatsReporting,
):
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
    * ``limits``: a ``durus.server_config.ServerLimits``; each of its fields is
      also a keyword here, which overrides it: ``max_clients`` (1024),
      ``max_commit_bytes`` (256 MiB), ``max_bulk_oids`` (100000), ``max_reserved_oids`` (1000000 per
      client), ``max_invalidations`` (100000 per client),
      ``message_timeout`` (10 s without progress inside a message),
      ``commit_lock_timeout`` (2 s; a window whose client sends nothing for
      ``commit_lock_idle``, 0.25 s, is broken sooner), ``prefetch_records`` (256 records
      sent ahead per fetch, 0 disables), ``pack_slice`` (0.02 s of pack work
      between two looks at the sockets while a pack runs),
      ``max_snapshot_history`` (64 MiB of replaced records kept for the open
      snapshots of ``mvcc`` clients; a snapshot it no longer reaches gets
      ``SnapshotExpiredError``).
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
        create_root: bool = False,
        limits: ServerLimits | None = None,
        **limit_overrides: Any,
    ) -> None:
        if not isinstance(gcbytes, (int, float)) or gcbytes < 0:
            raise ValueError(f"gcbytes must be a number >= 0, not {gcbytes!r}")
        unknown = sorted(set(limit_overrides) - LIMIT_NAMES)
        if unknown:
            raise TypeError(f"StorageServer() got an unexpected keyword argument {unknown[0]!r}")
        self.limits = dataclasses.replace(limits or ServerLimits(), **limit_overrides)
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
        # Each limit is an attribute too, as before ServerLimits (and the
        # mixins read them there).
        for name in LIMIT_NAMES:
            setattr(self, name, getattr(self.limits, name))
        self.create_root = create_root
        # Durus 4.3 attributes.
        self.clients: list[ClientSession] = []
        self.sockets: list[socket.socket] = []
        self.packer: Iterator[Any] | None = None
        self.bytes_since_pack = 0
        self.load_record: dict[Any, int] = {}
        # Commit bookkeeping.
        self._seq = 0
        self._log: deque[tuple[int, ClientSession | None, int, frozenset[bytes]]] = deque()
        self._order = 0
        self._pending: dict[ClientSession, Transaction] = {}
        self._approved: list[Transaction] = []
        self._lock_holder: ClientSession | None = None
        self._lock_deadline = 0.0
        self._lock_waiters: deque[ClientSession] = deque()
        self._reserved: dict[bytes, ClientSession] = {}
        self._pack_removed: set[bytes] = set()
        self._history = SnapshotHistory(self.max_snapshot_history)
        self._ready: set[ClientSession] = set()
        self._dirty: set[ClientSession] = set()  # clients with output to send
        self._next_timeout_check = 0.0
        self._group_commit = supports_group_commit(storage)
        self._flush_seconds = 0.0  # moving average of flush_to_disk() durations
        self._batch_since = 0.0  # when the oldest approved commit arrived
        self._readonly = is_readonly(storage)
        self._selector: selectors.BaseSelector | None = None
        self._listener: socket.socket | None = None
        self._wakeup: tuple[socket.socket, socket.socket] | None = None
        self._stop_reason: str | None = None
        self._started = time.time()
        self.stats: dict[str, Any] = new_counters()


    # -- public API --------------------------------------------------------------------

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
        if self.create_root:
            create_root_if_missing(self.storage)
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
        logger.info("Ready on %s", self.address,
                    extra={"event": "ready", "address": str(self.address),
                           "tls": self.ssl_context is not None, "auth": self.secret is not None})
        try:
            self._loop()
        finally:
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
                elif isinstance(data, ClientSession):
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
                problem = self._start_pack(None)
                if problem is not None:
                    # Try again after another gcbytes, not on every round.
                    logger.warning("automatic pack not started: %s", problem)
                    self.bytes_since_pack = 0

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
