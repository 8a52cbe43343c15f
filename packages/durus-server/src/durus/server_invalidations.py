"""Invalidation lists: which objects each client must forget before it goes on.

Queued per client and bounded by ``max_invalidations``; an overflowed
client is made to resync by a list naming every oid it can know.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from durus.server_base import ServerBase
from durus.server_commits import Transaction
from durus.server_config import logger
from durus.server_session import ClientSession


class Invalidations(ServerBase):
    """Queue, overflow and hand out the invalidations of each client."""

    def _handle_invalidations(self, oids: Any) -> None:
        """Oids the storage reports changed or removed: tell every client."""
        oids = frozenset(oids)
        if not oids:
            return
        for client in self.clients:
            self._invalidate(client, oids)

    def _invalidate(self, client: ClientSession, oids: frozenset[bytes] | set[bytes]) -> None:
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
            self._note_replaced(removed_set)

    def _take_list(
        self, client: ClientSession, extra: set[bytes] | None = None, txn: Transaction | None = None
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

    def _on_sync(self, client: ClientSession) -> None:
        self.stats["syncs"] += 1
        self._sync_storage()
        data, _oids = self._take_list(client)
        self._reply(client, data)
