"""Load prefetching (``F``): a record plus those the client will probably want next.

Sending the records a record refers to, and the following oids during a
sequential scan, saves round trips; budgets keep a random load cheap.  Records
sent recently are not sent again, unless the client asks for one of them: its
cache lets records go sooner than that guess assumed.  A snapshot client is
sent records changed since its snapshot in their snapshot version.
"""

from __future__ import annotations

from collections import deque

from durus.server_base import ServerBase
from durus.server_session import ClientSession
from durus.wire_protocol import STATUS_OKAY

_from_int = int.from_bytes


def add_refs(candidates: deque[bytes], record: bytes, limit: int) -> None:
    """Queue the oids in ``record``'s refs trailer (at most ``limit``)."""
    try:
        data_end = 12 + _from_int(record[8:12], "big")
    except (ValueError, IndexError):
        return
    refs = record[data_end:]
    end = min(len(refs) - len(refs) % 8, 8 * limit)
    candidates.extend(refs[i : i + 8] for i in range(0, end, 8))


class Prefetching(ServerBase):
    """Answer ``F`` with the record and a read-ahead of related records."""

    def _fetch(self, client: ClientSession, oid: bytes) -> None:
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
        add_refs(candidates, reply[5:], limit)
        candidates.extend((n + k).to_bytes(8, "big") for k in range(1, window + 1)
                          if n + k < 1 << 64)
        client.ra_end = n + window
        client.ra_window = window
        sent = client.sent_recently
        if oid in sent:
            sent.clear()  # it asks again for what it was sent: it did not keep it
        invalid = client.invalid
        snapshot = client.snapshot
        load = self.storage.load
        parts = [reply]
        extra = []
        budget = self.prefetch_bytes
        count = 0
        # Breadth first: the records it refers to, the following oids, then
        # what those refer to, until the record or byte budget is spent.
        while candidates:
            candidate = candidates.popleft()
            if candidate in sent or candidate == oid:
                continue
            try:
                if candidate not in invalid:
                    other = load(candidate)
                elif snapshot is not None:
                    other = self._snapshot_record(client, candidate)
                else:
                    continue  # changed since the client's last list: it must sync first
            except Exception:  # missing, or gone from the history: the load will say
                continue
            if len(candidates) < limit:
                add_refs(candidates, other, limit - len(candidates))
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
