"""The commit window of protocol-1 (Durus 4.3) clients: ``C``, then the data.

Such commits are serialized exactly as in Durus 4.3: while one client holds
the window nothing else commits, for at most ``commit_lock_timeout`` (less if
the client goes silent for ``commit_lock_idle``), so one client cannot stall all.
"""

from __future__ import annotations

from collections import deque

from durus.server_base import ServerBase
from durus.server_config import logger
from durus.server_session import C_DATA, COMMAND, RESULT, ClientError, ClientSession
from durus.wire_protocol import COMMIT

_from_int = int.from_bytes


class CommitWindow(ServerBase):
    """Open, feed and break the commit window of protocol-1 clients."""

    def _on_commit(self, client: ClientSession, now: float) -> int:
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
        if client.snapshot is not None:
            client.snapshot = self._seq  # it was told everything up to here
            self._prune_history()
        txn.included = orders
        txn.list_oids = oids
        client.txn = txn
        client.state = C_DATA
        self._lock_holder = client
        self._lock_deadline = now + self.commit_lock_timeout
        self._reply(client, data)
        return 1

    def _on_commit_data(self, client: ClientSession, buf: bytearray, pos: int, size: int) -> int:
        if size - pos < 4:
            return 0
        length = _from_int(buf[pos : pos + 4], "big")
        txn = client.txn
        assert txn is not None
        if length == 0:
            client.txn = None
            client.state = COMMAND
            if self._lock_holder is client:
                self._release_lock()
            return 4
        if length > self.max_commit_bytes:
            raise ClientError(f"commit of {length} bytes exceeds max_commit_bytes")
        if size - pos < 4 + length:
            return 0
        if self._lock_holder is client:
            self._release_lock()
        client.state = COMMAND
        client.txn = None
        if self._parse(client, txn, bytes(buf[pos + 4 : pos + 4 + length])):
            client.state = RESULT
            client.txn = txn
            self._approved.append(txn)
            self._pending[client] = txn
        return 4 + length

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
