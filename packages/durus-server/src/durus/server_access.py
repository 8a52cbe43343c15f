"""Who may talk to the server and who may stop it: the ``A`` handshake and ``Q``.

Kept together so the whole access policy can be reviewed in one place.
"""

from __future__ import annotations

import hmac
import os
from typing import Any

from durus.server_base import ServerBase
from durus.server_config import logger
from durus.server_session import AUTH_PROOF, COMMAND, ClientError, ClientSession
from durus.wire_protocol import NONCE_SIZE, STATUS_KEYERROR, STATUS_OKAY, auth_proof, is_local_peer


def stop_allowed(family: int, peer: Any, allow_remote_stop: bool = False) -> bool:
    """Whether a ``Q`` (stop) from this peer is obeyed.

    By default only peers on this machine may stop the server: Unix-domain
    sockets and loopback TCP.  ``allow_remote_stop`` restores Durus 4.3's
    "anyone who can connect" behaviour.
    """
    return allow_remote_stop or is_local_peer(family, peer)


class AccessControl(ServerBase):
    """Shared-secret authentication and the stop (``Q``) policy."""

    def _on_authenticate(self, client: ClientSession, client_nonce: bytes) -> None:
        if self.secret is None:
            self._reply(client, STATUS_KEYERROR)
            return
        if client.authenticated:
            raise ClientError("authenticated twice")
        server_nonce = os.urandom(NONCE_SIZE)
        client.auth_nonces = (client_nonce, server_nonce)
        proof = auth_proof(self.secret, b"server", client_nonce, server_nonce)
        self._reply(client, STATUS_OKAY + server_nonce + proof)
        client.state = AUTH_PROOF

    def _on_auth_proof(self, client: ClientSession, buf: bytearray, pos: int, size: int) -> int:
        if size - pos < NONCE_SIZE:
            return 0
        assert self.secret is not None and client.auth_nonces is not None
        expected = auth_proof(self.secret, b"client", *client.auth_nonces)
        if not hmac.compare_digest(bytes(buf[pos : pos + NONCE_SIZE]), expected):
            raise ClientError("authentication failed: wrong secret")
        client.authenticated = True
        client.auth_nonces = None
        client.state = COMMAND
        self._reply(client, STATUS_OKAY)
        logger.info("client %s authenticated", client.name,
                    extra={"event": "authenticated", "client": client.name})
        return NONCE_SIZE

    def _on_quit(self, client: ClientSession) -> None:
        family = client.s.family
        if not self.accept_stop:
            raise ClientError("stop (Q) refused: this server does not accept Q")
        if not stop_allowed(family, client.addr, self.allow_remote_stop):
            raise ClientError("stop (Q) refused: only accepted from this machine")
        logger.info("Quit requested by %s", client.name,
                    extra={"event": "quit", "client": client.name})
        self._stop_reason = f"Q from {client.name}"
