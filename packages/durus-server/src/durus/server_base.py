"""The state every part of ``StorageServer`` shares, declared once for the type checker.

``StorageServer`` is assembled from one class per concern (connections,
requests, loads, commits, ...).  They share this state and call one
another; declaring both here lets each part be checked on its own, without
importing the others.  Nothing here runs: ``StorageServer.__init__`` sets
the attributes and the parts define the methods.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from durus.storage import Storage
from durus.wire_protocol import SocketAddress

if TYPE_CHECKING:
    from durus.server_commits import Transaction
    from durus.server_session import ClientSession
    from durus.server_snapshots import SnapshotHistory


class ServerBase:
    """Attributes (set by ``StorageServer.__init__``) and the parts' shared methods."""

    protocol: bytes
    # Options and limits.
    storage: Storage
    address: SocketAddress
    gcbytes: int
    ssl_context: ssl.SSLContext | None
    secret: bytes | None
    allow_remote_stop: bool
    allow_remote_pack: bool
    accept_stop: bool
    max_clients: int
    max_commit_bytes: int
    max_bulk_oids: int
    max_reserved_oids: int
    max_invalidations: int
    message_timeout: float
    commit_lock_timeout: float
    commit_lock_idle: float
    prefetch_records: int
    prefetch_bytes: int
    pack_slice: float
    max_snapshot_history: int
    # Durus 4.3 attributes.
    clients: list[ClientSession]
    sockets: list[socket.socket]
    packer: Iterator[Any] | None
    bytes_since_pack: int
    load_record: dict[Any, int]
    # Commit bookkeeping.
    _seq: int
    _log: deque[tuple[int, ClientSession | None, int, frozenset[bytes]]]
    _order: int
    _pending: dict[ClientSession, Transaction]
    _approved: list[Transaction]
    _lock_holder: ClientSession | None
    _lock_deadline: float
    _lock_waiters: deque[ClientSession]
    _reserved: dict[bytes, ClientSession]
    _pack_removed: set[bytes]
    _ready: set[ClientSession]
    _dirty: set[ClientSession]
    _next_timeout_check: float
    _group_commit: bool
    _flush_seconds: float
    _batch_since: float
    _readonly: bool
    _history: SnapshotHistory
    # Event loop.
    _selector: selectors.BaseSelector | None
    _listener: socket.socket | None
    _wakeup: tuple[socket.socket, socket.socket] | None
    _stop_reason: str | None
    _started: float
    stats: dict[str, Any]

    if TYPE_CHECKING:
        # Methods one part calls on another (each is defined by exactly one part).
        # server_stats.py
        def get_stats(self) -> dict[str, Any]: ...
        # server_connections.py
        def _reply(self, client: ClientSession, data: bytes) -> None: ...
        def _write(self, client: ClientSession, now: float) -> None: ...
        def _drop(
            self, client: ClientSession, reason: str | None, level: int = logging.INFO
        ) -> None: ...
        # server_requests.py
        def _refuse(
            self, client: ClientSession, message: str, level: int = logging.WARNING
        ) -> None: ...
        # server_access.py
        def _on_authenticate(self, client: ClientSession, client_nonce: bytes) -> None: ...
        def _on_auth_proof(
            self, client: ClientSession, buf: bytearray, pos: int, size: int
        ) -> int: ...
        def _on_quit(self, client: ClientSession) -> None: ...
        # server_loads.py
        def _load_reply(self, client: ClientSession, oid: bytes) -> bytes: ...
        def _on_bulk_load(self, client: ClientSession, oids: list[bytes]) -> None: ...
        def _fetch(self, client: ClientSession, oid: bytes) -> None: ...
        # server_oids.py
        def _on_new_oids(self, client: ClientSession, count: int) -> None: ...
        # server_invalidations.py
        def _handle_invalidations(self, oids: Any) -> None: ...
        def _invalidate(
            self, client: ClientSession, oids: frozenset[bytes] | set[bytes]
        ) -> None: ...
        def _sync_storage(self) -> None: ...
        def _take_list(
            self,
            client: ClientSession,
            extra: set[bytes] | None = None,
            txn: Transaction | None = None,
        ) -> tuple[bytes, set[bytes]]: ...
        def _on_sync(self, client: ClientSession) -> None: ...
        # server_commit_window.py
        def _on_commit(self, client: ClientSession, now: float) -> int: ...
        def _on_commit_data(
            self, client: ClientSession, buf: bytearray, pos: int, size: int
        ) -> int: ...
        def _lock_alive(self, now: float) -> bool: ...
        def _break_lock(self) -> None: ...
        def _release_lock(self) -> None: ...
        # server_commits.py
        def _pending_writes(self, client: ClientSession) -> tuple[set[bytes], set[int]]: ...
        def _new_txn(self, client: ClientSession, kind: bytes) -> Transaction: ...
        def _parse(self, client: ClientSession, txn: Transaction, tdata: Any) -> bool: ...
        def _on_commit_with_data(
            self, client: ClientSession, tdata: bytes, merging: bool = False
        ) -> None: ...
        def _on_decision(
            self, client: ClientSession, buf: bytearray, pos: int, size: int
        ) -> int: ...
        # server_pack.py
        def _on_pack(self, client: ClientSession) -> None: ...
        # server_snapshots.py
        def _on_snapshot_sync(self, client: ClientSession) -> None: ...
        def _prune_history(self) -> None: ...
        def _previous_records(self, oids: Any) -> dict[bytes, Any] | None: ...
        def _save_history(self, previous: dict[bytes, Any] | None) -> None: ...
        def _note_replaced(self, oids: Any) -> None: ...
        def _snapshot_record(self, client: ClientSession, oid: bytes) -> bytes: ...
