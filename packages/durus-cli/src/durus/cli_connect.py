"""Telling a Durus server from whatever else listens at an address.

Before ``durus -s --stop`` sends its stop request, and before ``durus -c``
opens a console, the command runs the protocol's first steps on a
connection of its own, each with a short timeout: TLS (``--tls-ca``), the
shared-secret handshake (``--secret-file``) and the version handshake
(``V`` + protocol, answered by the same four bytes).  Only a peer that gets
through them is treated as a Durus server; anything else is one clear line
within seconds (a web server on the port, a server that wants TLS or a
secret the command was not given), never a 30-second wait.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from durus.cli_common import ClientSecurity, CliError, describe_address
from durus.wire_protocol import (
    AUTHENTICATE,
    CLOSE,
    NONCE_SIZE,
    PROTOCOL,
    STATUS_OKAY,
    VERSION,
    AuthenticationError,
    client_authenticate,
)

__all__ = ["NoDurusServer", "close_quietly", "open_durus_connection"]

#: Seconds ``durus -s --stop`` waits for each handshake reply.
STOP_HANDSHAKE_TIMEOUT = 2.0
#: Seconds ``durus -c``/``-p`` wait for each handshake reply: a Durus 4.3 server
#: held up by a stalled client answers within its own 10 s timeout.
CONNECT_HANDSHAKE_TIMEOUT = 10.0


class NoDurusServer(CliError):
    """Something accepts connections at the address, but not as a Durus server we can use."""


def open_durus_connection(
    address: Any, security: ClientSecurity, timeout: float
) -> socket.socket | None:
    """A connection that got through TLS, the secret and ``V``; None if nothing listens.

    Raises ``NoDurusServer`` (or ``CliError``) saying what answers instead.
    """
    sock = _connect(address, timeout)
    if sock is None:
        return None
    try:
        sock = _handshakes(sock, address, security, timeout)
        reply = _send_version(sock, address, timeout)
    except BaseException:
        sock.close()
        raise
    if reply == PROTOCOL:
        return sock
    sock.close()
    raise NoDurusServer(_explain_version_reply(reply, address, security, timeout))


def close_quietly(sock: socket.socket) -> None:
    """Say goodbye the way ``ClientStorage.close`` does, then close."""
    try:
        sock.sendall(CLOSE)
    except OSError:
        pass
    sock.close()


def _connect(address: Any, timeout: float) -> socket.socket | None:
    where = describe_address(address)
    try:
        return address.get_connected_socket(timeout=timeout)
    except TimeoutError:
        raise NoDurusServer(f"cannot connect to {where}: no answer within {timeout:g} s") \
            from None
    except OSError as error:
        raise CliError(f"cannot connect to {where}: {error.strerror or error}") from None


def _handshakes(
    sock: socket.socket, address: Any, security: ClientSecurity, timeout: float
) -> socket.socket:
    """TLS and the secret, as asked; returns the (possibly wrapped) socket."""
    where = describe_address(address)
    if security.ssl_context is not None:
        sock = _start_tls(sock, address, security, timeout)
    if security.secret is not None:
        try:
            client_authenticate(sock, security.secret, where)
        except AuthenticationError as error:
            raise CliError(f"{error} (the server's --secret-file and this command's must "
                           "hold the same secret)") from None
        except TimeoutError:
            raise NoDurusServer(f"no Durus server answers on {where}: no reply to the "
                                f"authentication within {timeout:g} s") from None
        except (EOFError, OSError):
            if security.ssl_context is None and _speaks_tls(address, timeout):
                raise NoDurusServer(_tls_needed(where)) from None
            raise NoDurusServer(
                f"{where} closed the connection at the authentication: a Durus server "
                "that does not support it (Durus 4.3), or not a Durus server") from None
    return sock


def _tls_needed(where: str) -> str:
    return (f"the server on {where} speaks TLS: give --tls-ca with the certificate that "
            "signed its certificate (its own, if self-signed)")


def _start_tls(
    sock: socket.socket, address: Any, security: ClientSecurity, timeout: float
) -> socket.socket:
    import ssl

    where = describe_address(address)
    assert security.ssl_context is not None
    try:
        return security.ssl_context.wrap_socket(sock, server_hostname=address.host)
    except ssl.SSLCertVerificationError as error:
        reason = error.verify_message or error.reason or error
        raise CliError(f"the TLS certificate of {where} is not trusted by --tls-ca "
                       f"{security.ca_file}: {reason}") from None
    except TimeoutError:
        raise NoDurusServer(f"no TLS server answers on {where}: no reply to the TLS "
                            f"handshake within {timeout:g} s") from None
    except (ssl.SSLError, OSError, EOFError) as error:
        reason = getattr(error, "reason", None) or error.__class__.__name__
        raise NoDurusServer(f"no TLS server answers on {where}: the TLS handshake failed "
                            f"({reason}); a Durus server started without --tls-cert is "
                            "reached without --tls-ca") from None


def _send_version(sock: socket.socket, address: Any, timeout: float) -> bytes:
    """The peer's reply to ``V`` + protocol: 4 bytes, or fewer if it closed."""
    where = describe_address(address)
    reply = b""
    try:
        sock.settimeout(timeout)
        sock.sendall(VERSION + PROTOCOL)
        while len(reply) < len(PROTOCOL):
            chunk = sock.recv(len(PROTOCOL) - len(reply))
            if not chunk:
                break
            reply += chunk
    except TimeoutError:
        if reply:
            return reply
        raise NoDurusServer(
            f"no Durus server answers on {where}: something accepts connections there but "
            f"did not answer the Durus handshake within {timeout:g} s (another kind of "
            "server, or a Durus server too busy to answer)") from None
    except OSError:
        return reply  # reset by the peer: treated as closed
    return reply


def _explain_version_reply(
    reply: bytes, address: Any, security: ClientSecurity, timeout: float
) -> str:
    where = describe_address(address)
    if len(reply) == len(PROTOCOL) and reply[:2] == b"\x00\x00":
        version = int.from_bytes(reply, "big")
        return f"the Durus server on {where} speaks protocol {version}, this one 1"
    if reply[:2] == b"\x15\x03":  # a TLS alert record
        return _tls_needed(where)
    if reply.startswith(b"HTTP") or reply.startswith(b"<"):
        return f"no Durus server answers on {where}: it is a web server"
    if reply:
        return (f"no Durus server answers on {where}: it answered the Durus handshake "
                f"with {reply!r}")
    # Closed without a word: our server does that to a client that skips TLS or
    # the secret it requires; ask it in ways it would answer.
    if security.secret is None and _wants_secret(address, security, timeout):
        return (f"the Durus server on {where} requires a shared secret: give the file "
                "that holds it with --secret-file")
    if security.ssl_context is None and _speaks_tls(address, timeout):
        return _tls_needed(where)
    return f"no Durus server answers on {where}: it closed the connection at the handshake"


def _wants_secret(address: Any, security: ClientSecurity, timeout: float) -> bool:
    """Whether the server answers a secret handshake (``A``) with its own proof."""
    try:
        sock = _connect(address, timeout)
        if sock is None:
            return False
        try:
            if security.ssl_context is not None:
                sock = _start_tls(sock, address, security, timeout)
            sock.settimeout(timeout)
            sock.sendall(AUTHENTICATE + os.urandom(NONCE_SIZE))
            reply = sock.recv(1)
            if reply != STATUS_OKAY:
                return False
            proof = b""
            while len(proof) < 2 * NONCE_SIZE:
                chunk = sock.recv(2 * NONCE_SIZE - len(proof))
                if not chunk:
                    return False
                proof += chunk
            return True
        finally:
            sock.close()
    except (CliError, OSError):
        return False


def _speaks_tls(address: Any, timeout: float) -> bool:
    """Whether a TLS handshake succeeds, certificate unchecked (nothing else is sent)."""
    if not isinstance(getattr(address, "host", None), str):
        return False
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        sock = _connect(address, timeout)
        if sock is None:
            return False
        try:
            context.wrap_socket(sock).close()
        finally:
            sock.close()
        return True
    except (CliError, OSError):
        return False
