"""Shared-secret authentication and TLS."""

from __future__ import annotations

import shutil
import ssl
import subprocess

import pytest

from durus.client_storage import ClientStorage
from durus.wire_protocol import AuthenticationError, DurusConnectionError, send_stop


def test_authentication(start_server, raw_session):
    server = start_server(storage="memory", secret="s3cret")
    good = server.connection(secret="s3cret")
    good.get_root()["x"] = 1
    good.commit()
    assert good.storage.server_info["auth"] is True
    with pytest.raises(AuthenticationError):
        server.client(secret="wrong")
    with pytest.raises(DurusConnectionError):
        server.client()  # V before A: disconnected
    with pytest.raises(DurusConnectionError):
        server.client(extensions=False)
    # Q without authentication is refused even from loopback.
    assert send_stop(server.address, timeout=10)
    assert server.alive()
    assert server.connection(secret=b"s3cret").get_root()["x"] == 1
    assert send_stop(server.address, timeout=10, secret="s3cret")
    assert server.proc.wait(30) == 0
    log = server.log_text()
    assert "before authentication" in log


def test_a_client_with_a_secret_refuses_a_server_without_auth(start_server):
    server = start_server(storage="memory")
    with pytest.raises(AuthenticationError, match="does not support authentication"):
        server.client(secret="s3cret")


@pytest.fixture
def certificate(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return str(cert), str(key)


def test_tls(start_server, certificate):
    cert, key = certificate
    server = start_server(storage="memory", tls={"cert": cert, "key": key}, secret="both",
                          message_timeout=2)
    context = ssl.create_default_context(cafile=cert)
    connection = server.connection(ssl_context=context, secret="both")
    root = connection.get_root()
    root["big"] = list(range(200000))  # several TLS records each way
    connection.commit()
    other = server.connection(ssl_context=context, secret="both")
    assert other.get_root()["big"] == list(range(200000))
    assert other.storage.server_info["tls"] is True
    # A plain client cannot talk to it: it fails, it does not hang.
    with pytest.raises(DurusConnectionError):
        ClientStorage(address=server.address, timeout=10)
    # A client that does not trust the certificate refuses it.
    with pytest.raises((ssl.SSLError, DurusConnectionError)):
        server.client(ssl_context=ssl.create_default_context())
    root["big"] = None
    connection.commit()
    other.abort()
    assert other.get_root()["big"] is None
    assert server.alive()
