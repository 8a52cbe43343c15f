"""Oid reservation (``M``/``N``): oids handed to one client are no one else's.

A commit may only write oids reserved to its client or already stored, so
the reservations are tracked until used or until the client leaves.
"""

from __future__ import annotations

from durus.server_base import ServerBase
from durus.server_config import logger
from durus.server_session import ClientError, ClientSession

_from_int = int.from_bytes


class OidReservation(ServerBase):
    """Allocate oids for a client and remember who holds them."""

    def _on_new_oids(self, client: ClientSession, count: int) -> None:
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
