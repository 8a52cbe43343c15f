"""Load replies (``L`` and ``B``): a record, ``K`` or ``I`` for a stale object.

A client is never sent a record it was told is invalid and has not yet
resynced: that answers ``I`` (a read conflict) instead, or, to a snapshot
client, the record as of its snapshot (``H`` if that can no longer be had).
"""

from __future__ import annotations

from collections.abc import Iterator

from durus.error import ReadConflictError
from durus.server_base import ServerBase
from durus.server_config import logger
from durus.server_session import ClientError, ClientSession
from durus.server_snapshots import SnapshotGone
from durus.wire_protocol import (
    STATUS_EXPIRED,
    STATUS_INVALID,
    STATUS_KEYERROR,
    STATUS_OKAY,
    encode_error,
)

_from_int = int.from_bytes


class LoadReplies(ServerBase):
    """Answer loads one at a time or in bulk (streamed while sending)."""

    def _load(self, client: ClientSession, oid: bytes) -> bytes | None:
        """The record for ``client``; None for ``I``; raise KeyError for ``K``."""
        if client.overflowed or oid in client.invalid:
            if client.snapshot is None:
                return None
            record = self._snapshot_record(client, oid)
        else:
            try:
                record = self.storage.load(oid)
            except ReadConflictError:
                return None
        n = _from_int(oid, "big")
        if n > client.max_oid:
            client.max_oid = n
        return record

    def _load_reply(self, client: ClientSession, oid: bytes) -> bytes:
        self.stats["load_requests"] += 1
        try:
            record = self._load(client, oid)
        except KeyError:
            return STATUS_KEYERROR
        except SnapshotGone as exc:
            self.stats["snapshots_expired"] += 1
            return encode_error(str(exc), STATUS_EXPIRED)
        except Exception as exc:
            logger.exception("loading oid %d failed", _from_int(oid, "big"))
            raise ClientError(f"the storage failed to load an object: {exc}") from exc
        if record is None:
            return STATUS_INVALID
        self.stats["loads"] += 1
        return STATUS_OKAY + len(record).to_bytes(4, "big") + record

    def _on_bulk_load(self, client: ClientSession, oids: list[bytes]) -> None:
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
