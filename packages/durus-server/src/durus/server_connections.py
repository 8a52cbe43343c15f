"""Sockets of the clients: accept, TLS handshake, buffered reads and writes, drops.

Non-blocking and buffered per client, so that a slow or stalled client only
ever costs itself; everything a client holds is released when it is dropped.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl

from durus.server_base import ServerBase
from durus.server_config import OUTPUT_HIGH_WATER, RECV_SIZE, logger
from durus.server_session import (
    AUTH_PROOF,
    C_DATA,
    COMMAND,
    DECISION,
    RESULT,
    ClientSession,
    peer_name,
)
from durus.wire_protocol import is_local_peer


class ClientConnections(ServerBase):
    """Moving bytes between the sockets and the client sessions."""

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
                               peer_name(sock.family, addr, 0), len(self.clients),
                               extra={"event": "refused", "reason": "max_clients"})
                sock.close()
                continue
            sock.setblocking(False)
            self.address.set_connection_options(sock)
            name = peer_name(sock.family, addr, self.stats["connections_total"] + 1)
            client = ClientSession(sock, addr, name, now, is_local_peer(sock.family, addr))
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

    def _handshake(self, client: ClientSession, now: float) -> None:
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

    def _want_write(self, client: ClientSession, want: bool) -> None:
        if client.closed or self._selector is None:
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0)
        try:
            if self._selector.get_key(client.s).events != events:
                self._selector.modify(client.s, events, client)
        except (KeyError, ValueError):
            pass

    def _on_readable(self, client: ClientSession, now: float) -> None:
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
                chunk = sock.recv(RECV_SIZE)
                if not chunk:
                    partial = bool(client.inbuf) or client.state not in (COMMAND, RESULT)
                    self._drop(client, "closed the connection in the middle of a request"
                               if partial else None)
                    return
                client.inbuf += chunk
                received += len(chunk)
                pending = getattr(sock, "pending", None)
                if pending is None or not pending() or len(client.inbuf) > 2 * RECV_SIZE:
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

    def _drop(self, client: ClientSession, reason: str | None, level: int = logging.INFO) -> None:
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
        if client.snapshot is not None:
            client.snapshot = None
            self._prune_history()  # what only its snapshot needed can go
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
            elif (client.inbuf and client.state != RESULT and client not in self._ready
                  and client not in self._lock_waiters and now - client.last_recv > limit):
                self._drop(client, f"stalled for {limit:g} s in the middle of a message")
            elif (client.state in (C_DATA, DECISION, AUTH_PROOF)
                  and now - client.last_recv > limit):
                self._drop(client, f"did not continue its exchange for {limit:g} s")
        if self._lock_holder is not None and not self._lock_alive(now):
            self._break_lock()

    def _reply(self, client: ClientSession, data: bytes) -> None:
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

    def _write(self, client: ClientSession, now: float) -> None:
        sock = client.s
        out = client.out
        tls = self.ssl_context is not None
        sent_total = 0
        try:
            while True:
                if client.producer is not None and client.out_size < OUTPUT_HIGH_WATER:
                    for chunk in client.producer:
                        self._reply(client, chunk)
                        if client.out_size >= OUTPUT_HIGH_WATER:
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
            if client.inbuf and client.state == COMMAND:
                self._ready.add(client)  # it may have pipelined requests
        self._want_write(client, pending)
