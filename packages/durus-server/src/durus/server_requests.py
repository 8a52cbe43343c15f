"""Turning a client's buffered bytes into requests, one complete message at a time.

A request is handled only once its whole message has arrived; each round a
client gets a bounded number of messages so that no client starves the others.
"""

from __future__ import annotations

import logging

from durus.server_base import ServerBase
from durus.server_config import MESSAGES_PER_ROUND, OUTPUT_HIGH_WATER, SERVER_VERSION, logger
from durus.server_session import AUTH_PROOF, C_DATA, DECISION, RESULT, ClientError, ClientSession
from durus.wire_protocol import (
    AUTHENTICATE,
    BULK_LOAD,
    CLOSE,
    COMMIT,
    COMMIT_DATA,
    COMMIT_MERGING,
    FETCH,
    HELLO_OID,
    LOAD,
    NEW_OID,
    NEW_OIDS,
    NONCE_SIZE,
    PACK,
    PROTOCOL,
    QUIT,
    SNAPSHOT_SYNC,
    STATS,
    STATUS_OKAY,
    SYNC,
    VERSION,
    encode_error,
    encode_json,
)

_from_int = int.from_bytes


class RequestDispatch(ServerBase):
    """Parse complete messages and call the part of the server that answers."""

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

    def _refuse(self, client: ClientSession, message: str, level: int = logging.WARNING) -> None:
        """An ``E`` reply to a client that said hello, else a disconnect."""
        self.stats["refusals"] += 1
        if client.extended:
            logger.log(level, "refused %s: %s", client.name, message,
                       extra={"event": "refuse", "client": client.name, "reason": message})
            self._reply(client, encode_error(message))
        else:
            raise ClientError(message)

    def _process(self, client: ClientSession, now: float) -> None:
        buf = client.inbuf
        pos = 0
        handled = 0
        size = len(buf)
        while pos < size and not client.closed:
            if handled >= MESSAGES_PER_ROUND:
                self._ready.add(client)  # the rest next round, after the others
                break
            if client.out_size > OUTPUT_HIGH_WATER or client.producer is not None:
                break  # resumed once its output drained
            state = client.state
            if state == RESULT:
                break
            if state == C_DATA:
                used = self._on_commit_data(client, buf, pos, size)
            elif state == DECISION:
                used = self._on_decision(client, buf, pos, size)
            elif state == AUTH_PROOF:
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

    def _on_command(
        self, client: ClientSession, buf: bytearray, pos: int, size: int, now: float
    ) -> int:
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
        if command in (COMMIT_DATA, COMMIT_MERGING):
            if available < 5:
                return 0
            length = _from_int(buf[pos + 1 : pos + 5], "big")
            if length > self.max_commit_bytes:
                raise ClientError(f"commit of {length} bytes exceeds max_commit_bytes")
            if available < 5 + length:
                return 0
            self._on_commit_with_data(client, bytes(buf[pos + 5 : pos + 5 + length]),
                                      merging=command == COMMIT_MERGING)
            return 5 + length
        if command == SYNC:
            self._on_sync(client)
            return 1
        if command == SNAPSHOT_SYNC:
            self._on_snapshot_sync(client)
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

    def _hello(self, client: ClientSession) -> None:
        client.extended = True
        document = {
            "server": "durus-server",
            "version": SERVER_VERSION,
            "protocol": int.from_bytes(PROTOCOL, "big"),
            "features": ["E", "F", "T", "W", "X", "Y"],
            "tls": self.ssl_context is not None,
            "auth": self.secret is not None,
            "limits": {
                "max_commit_bytes": self.max_commit_bytes,
                "max_bulk_oids": self.max_bulk_oids,
                "max_reserved_oids": self.max_reserved_oids,
                "max_invalidations": self.max_invalidations,
                "message_timeout": self.message_timeout,
                "max_snapshot_history": self.max_snapshot_history,
            },
        }
        self._reply(client, STATUS_OKAY + encode_json(document))
