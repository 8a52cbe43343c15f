"""Commit coordination: conflict checks, reviews and group commit.

Commits of one loop round are validated together and made durable by one
``flush_to_disk()``; nothing is acknowledged before it.  The server refuses a
commit writing an object another client committed since this client's last
list, and sends a commit that another landed beside unseen for another review,
so a faulty or racing client can never silently overwrite.  A one-message
commit colliding with a commit its client has not seen gets a review naming
it (the client may merge and commit again: conflict resolution) instead of a
bare refusal.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from durus.error import ConflictError, ReadConflictError
from durus.server_base import ServerBase
from durus.server_config import logger
from durus.server_session import COMMAND, DECISION, RESULT, ClientError, ClientSession
from durus.wire_protocol import (
    ABANDON,
    APPROVE,
    COMMIT_DATA,
    REPLACE,
    STATUS_INVALID,
    STATUS_OKAY,
    STATUS_REVIEW,
    decode_transaction,
)

_from_int = int.from_bytes


class Transaction:
    """A commit on its way: its data, and what its client was shown."""

    __slots__ = ("client", "entries", "included", "kind", "list_oids", "list_seq", "list_top",
                 "merged", "merging", "nbytes", "order", "writes")

    def __init__(self, client: ClientSession, kind: bytes, order: int, list_seq: int) -> None:
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
        #: ``Y``: reviews carry current records, and the client may answer with a merge
        self.merging = False
        #: oids whose current records the last review sent
        self.merged: frozenset[bytes] = frozenset()


class CommitCoordination(ServerBase):
    """Validate, apply and acknowledge the commits of each round."""

    def _pending_writes(self, client: ClientSession) -> tuple[set[bytes], set[int]]:
        writes: set[bytes] = set()
        orders = set()
        for other, txn in self._pending.items():
            if other is not client:
                writes |= txn.writes
                orders.add(txn.order)
        return writes, orders

    def _new_txn(self, client: ClientSession, kind: bytes) -> Transaction:
        self._order += 1
        return Transaction(client, kind, self._order, self._seq)

    def _parse(self, client: ClientSession, txn: Transaction, tdata: Any) -> bool:
        try:
            entries = decode_transaction(tdata)
        except Exception as exc:
            self._refuse(client, f"malformed commit: {exc}")
            return False
        txn.entries = entries
        txn.writes = frozenset(oid for oid, _record in entries)
        txn.nbytes = len(tdata)
        return True

    def _on_commit_with_data(
        self, client: ClientSession, tdata: bytes, merging: bool = False
    ) -> None:
        """``X`` (``Y``): the data first; a review list if anything changed meanwhile."""
        if not tdata:
            self._refuse(client, "empty commit")
            return
        txn = self._new_txn(client, COMMIT_DATA)
        txn.merging = merging
        if not self._parse(client, txn, tdata):
            return
        self._sync_storage()
        client.txn = txn
        if not client.invalid and not client.overflowed:
            client.state = RESULT
            self._approved.append(txn)
            self._pending[client] = txn
            return
        pending_writes, orders = self._pending_writes(client)
        self._send_review(client, txn, pending_writes, orders, initial=True)

    def _send_review(self, client: ClientSession, txn: Transaction, extra: set[bytes],
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
        client.state = DECISION
        self._pending[client] = txn
        self.stats["reviews"] += 1
        if txn.merging:
            data += self._current_records(txn, oids)
        self._reply(client, STATUS_REVIEW + data)

    def _current_records(self, txn: Transaction, oids: set[bytes]) -> bytes:
        """``Y``: the records now committed of the listed oids the commit writes."""
        parts = []
        merged = []
        for oid in sorted(oids & txn.writes):
            try:
                record = self.storage.load(oid)
            except (KeyError, ReadConflictError):
                continue
            parts.append(oid + len(record).to_bytes(4, "big") + record)
            merged.append(oid)
        txn.merged = frozenset(merged)
        return len(parts).to_bytes(4, "big") + b"".join(parts)

    def _on_decision(self, client: ClientSession, buf: bytearray, pos: int, size: int) -> int:
        """The answer to a review; returns the bytes used (0: not all here yet)."""
        txn = client.txn
        assert txn is not None
        answer = buf[pos : pos + 1]
        if answer == REPLACE and txn.merging:
            if size - pos < 5:
                return 0
            length = _from_int(buf[pos + 1 : pos + 5], "big")
            if length > self.max_commit_bytes:
                raise ClientError(f"commit of {length} bytes exceeds max_commit_bytes")
            if size - pos < 5 + length:
                return 0
            if not self._parse(client, txn, bytes(buf[pos + 5 : pos + 5 + length])):
                client.state = COMMAND
                client.txn = None
                self._pending.pop(client, None)
                return 5 + length
            # Merged with the records the review sent: those may now be written.
            txn.list_oids = frozenset(txn.list_oids) - txn.merged
            self.stats["merges"] += 1
            client.state = RESULT
            self._approved.append(txn)
            return 5 + length
        if answer == APPROVE:
            client.state = RESULT
            self._approved.append(txn)
        elif answer == ABANDON:
            client.state = COMMAND
            client.txn = None
            self._pending.pop(client, None)
            if client.snapshot is not None:
                client.snapshot = txn.list_seq  # it reads what it reviewed
                self._prune_history()
        else:
            raise ClientError(f"expected a commit decision, got {bytes(answer)!r}")
        return 1

    def _validate(self, txn: Transaction) -> tuple[str, Any]:
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
        one_message = txn.kind == COMMIT_DATA
        for seq, author, order, oids in self._log:
            if seq <= txn.list_seq or author is client:
                continue
            if not writes.isdisjoint(oids):
                if not one_message:
                    return "conflict", "writes an object committed by another client meanwhile"
                # Reviewed again: the client merges or abandons (approving a
                # list that names what it writes is refused above).
                unseen |= oids
            elif order not in txn.included:
                unseen |= oids
        if unseen:
            if one_message:
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
        if not any(t.client.state == DECISION for t in self._pending.values()):
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
        done: list[Transaction] = []
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
            client.state = COMMAND
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
                previous = self._previous_records(txn.writes)
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
            self._save_history(previous)
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

    def _committed(self, txn: Transaction) -> None:
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
        if client.snapshot is not None:
            client.snapshot = self._seq  # it saw every commit before its own
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

    def _fatal(self, message: str, unacknowledged: list[Transaction]) -> None:
        """The storage failed to make commits durable: stop without acknowledging."""
        logger.critical("%s; stopping the server", message, extra={"event": "fatal"})
        for txn in unacknowledged:
            self._drop(txn.client, "its commit could not be made durable", logging.ERROR)
        self._stop_reason = message
