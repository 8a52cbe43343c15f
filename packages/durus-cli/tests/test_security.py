"""TLS and the shared secret from the command line: real servers, real clients.

``durus -s --tls-cert/--tls-key/--secret-file`` against ``durus -c``, ``-p``
and ``--stop`` with and without ``--tls-ca`` and ``--secret-file``.  The
certificate is a throwaway self-signed one made by the ``openssl`` command
(Debian's ``openssl`` package, present wherever CI runs).
"""

from __future__ import annotations

import pathlib
import secrets
import shutil
import socket
import subprocess

import pytest
from durus_cli_testing import free_port, one_error_line


def make_certificate(directory: pathlib.Path, name: str) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = directory / f"{name}-cert.pem", directory / f"{name}-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return str(cert), str(key)


@pytest.fixture
def certificate(tmp_path: pathlib.Path) -> tuple[str, str]:
    return make_certificate(tmp_path, "server")


def secret_file(directory: pathlib.Path, name: str, secret: str | None = None,
                mode: int = 0o600, newline: str = "\n") -> str:
    path = directory / name
    path.write_text((secret or secrets.token_urlsafe(32)) + newline)
    path.chmod(mode)
    return str(path)


def commit_and_read(durus, *options: str) -> str:
    """Commit root['n'] += 1 through a console with ``options``; return what it printed."""
    result = durus.run("-c", *options, input=(
        "root['n'] = root.get('n', 0) + 1\nconnection.commit()\nprint('n is', root['n'])\n"))
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_server_with_a_secret(durus, tmp_path):
    port = str(free_port())
    secret = secret_file(tmp_path, "secret")
    server = durus.start_server("--port", port, "--secret-file", secret,
                                address=("127.0.0.1", int(port)))
    # Without the secret, or with another one: refused, with a message that says why.
    assert one_error_line(durus.run("-c", "--port", port)) == (
        f"durus: error: the Durus server on 127.0.0.1:{port} requires a shared secret: "
        "give the file that holds it with --secret-file")
    other = secret_file(tmp_path, "other")
    assert one_error_line(durus.run("-c", "--port", port, "--secret-file", other)) == (
        f"durus: error: the server at 127.0.0.1:{port} does not know the shared secret (the "
        "server's --secret-file and this command's must hold the same secret)")
    assert "requires a shared secret" in one_error_line(
        durus.run("-s", "--stop", "--port", port))
    assert server.poll() is None
    # With it: the console and --stop work.
    assert "n is 1" in commit_and_read(durus, "--port", port, "--secret-file", secret)
    # The file is read without its trailing newline: the same secret without one works.
    bare = secret_file(tmp_path, "bare", pathlib.Path(secret).read_text().strip(), newline="")
    assert "n is 2" in commit_and_read(durus, "--port", port, "--secret-file", bare)
    stopped = durus.run("-s", "--stop", "--port", port, "--secret-file", secret)
    assert stopped.returncode == 0, stopped.stderr
    assert server.wait(30) == 0


def test_a_server_with_tls_and_a_secret(durus, tmp_path, certificate):
    cert, key = certificate
    port = str(free_port())
    secret = secret_file(tmp_path, "secret")
    server = durus.start_server("--port", port, "--tls-cert", cert, "--tls-key", key,
                                "--secret-file", secret, address=("127.0.0.1", int(port)))
    # A plain client is refused, with or without the secret.
    tls_needed = (f"durus: error: the server on 127.0.0.1:{port} speaks TLS: give --tls-ca "
                  "with the certificate that signed its certificate (its own, if self-signed)")
    assert one_error_line(durus.run("-c", "--port", port)) == tls_needed
    assert one_error_line(durus.run("-c", "--port", port, "--secret-file", secret)) == \
        tls_needed
    assert one_error_line(durus.run("-s", "--stop", "--port", port)) == tls_needed
    # TLS without the secret: refused as a secret-less client.
    assert "requires a shared secret" in one_error_line(
        durus.run("-c", "--port", port, "--tls-ca", cert))
    # A client that does not trust the certificate refuses the server.
    stranger, _key = make_certificate(tmp_path, "stranger")
    assert one_error_line(durus.run("-c", "--port", port, "--tls-ca", stranger)) == (
        f"durus: error: the TLS certificate of 127.0.0.1:{port} is not trusted by --tls-ca "
        f"{stranger}: self-signed certificate")
    # The certificate names 127.0.0.1 and localhost: both work.
    assert "n is 1" in commit_and_read(durus, "--port", port, "--tls-ca", cert,
                                       "--secret-file", secret)
    assert "n is 2" in commit_and_read(durus, "--host", "localhost", "--port", port,
                                       "--tls-ca", cert, "--secret-file", secret)
    assert one_error_line(durus.run("-p", "--port", port)) == tls_needed
    packed = durus.run("-p", "--port", port, "--tls-ca", cert, "--secret-file", secret)
    assert packed.returncode == 0, packed.stderr
    assert "to pack" in packed.stdout
    stopped = durus.run("-s", "--stop", "--port", port, "--tls-ca", cert,
                        "--secret-file", secret)
    assert stopped.returncode == 0, stopped.stderr
    assert server.wait(30) == 0
    log = server.stderr.read()
    assert "TLS handshake failed" in log  # the plain clients, refused by the server


def test_tls_without_a_secret_and_a_plain_server(durus, tmp_path, certificate):
    cert, key = certificate
    tls_port, plain_port = str(free_port()), str(free_port())
    tls_server = durus.start_server("--port", tls_port, "--tls-cert", cert, "--tls-key", key,
                                    address=("127.0.0.1", int(tls_port)))
    plain_server = durus.start_server("--port", plain_port,
                                      address=("127.0.0.1", int(plain_port)))
    assert "n is 1" in commit_and_read(durus, "--port", tls_port, "--tls-ca", cert)
    # --tls-ca towards a server without TLS: refused, and the message says so.
    assert one_error_line(durus.run("-c", "--port", plain_port, "--tls-ca", cert)) == (
        f"durus: error: no TLS server answers on 127.0.0.1:{plain_port}: the TLS handshake "
        "failed (UNEXPECTED_EOF_WHILE_READING); a Durus server started without --tls-cert "
        "is reached without --tls-ca")
    # A secret towards a server without one: refused (it cannot prove it knows it).
    secret = secret_file(tmp_path, "secret")
    assert "does not support authentication" in one_error_line(
        durus.run("-c", "--port", plain_port, "--secret-file", secret))
    for port, extra in ((tls_port, ("--tls-ca", cert)), (plain_port, ())):
        assert durus.run("-s", "--stop", "--port", port, *extra).returncode == 0
    assert tls_server.wait(30) == 0
    assert plain_server.wait(30) == 0


def test_secret_files_must_be_private_and_strong(durus, tmp_path):
    port = str(free_port())
    shared = secret_file(tmp_path, "world-readable", mode=0o644)
    assert one_error_line(durus.run("-s", "--port", port, "--secret-file", shared)) == (
        f"durus: error: the secret file {shared} is accessible to every user (mode 0644): "
        f"make it private first (chmod 600 {shared})")
    assert "is accessible to every user" in one_error_line(
        durus.run("-c", "--port", port, "--secret-file", shared))
    group = secret_file(tmp_path, "group-readable", mode=0o640)  # shared with a group: fine
    weak = secret_file(tmp_path, "weak", "hunter2")
    assert one_error_line(durus.run("-s", "--port", port, "--secret-file", weak)).startswith(
        f"durus: error: the secret in {weak} is 7 bytes long, shorter than 16")
    missing = str(tmp_path / "missing")
    assert one_error_line(durus.run("-s", "--stop", "--port", port, "--secret-file",
                                    missing)) == (
        f"durus: error: cannot read the secret file {missing}: No such file or directory")
    server = durus.start_server("--port", port, "--secret-file", group,
                                address=("127.0.0.1", int(port)))
    assert durus.run("-s", "--stop", "--port", port, "--secret-file", group).returncode == 0
    assert server.wait(30) == 0


def test_secret_is_not_on_the_command_line(durus):
    help_text = durus.run("-s", "--help").stdout
    assert "--secret-file FILE" in help_text
    assert "--secret " not in help_text
    assert "trailing newline" in help_text and "chmod 600" in help_text
    for mode in ("-c", "-s"):
        assert "--tls-ca FILE" in durus.run(mode, "--help").stdout


def test_tls_option_mistakes(durus, tmp_path, certificate):
    cert, key = certificate
    port = str(free_port())
    assert one_error_line(durus.run("-s", "--port", port, "--tls-cert", cert)) == (
        f"durus: error: --tls-cert {cert} holds no private key: give it with --tls-key")
    assert one_error_line(durus.run("-s", "--port", port, "--tls-key", key)) == (
        "durus: error: --tls-key needs --tls-cert")
    assert one_error_line(durus.run("-s", "--port", port, "--tls-cert", key)) == (
        f"durus: error: --tls-cert {key} holds no PEM certificate")
    assert one_error_line(durus.run("-s", "--port", port, "--tls-ca", cert)) == (
        "durus: error: --tls-ca is for --stop: a server serves TLS with --tls-cert and "
        "--tls-key")
    assert one_error_line(durus.run("-c", "--file", "x.durus", "--tls-ca", cert)) == (
        "durus: error: --tls-ca and --secret-file apply to a server, not to --file")
    if hasattr(socket, "AF_UNIX"):
        assert "applies to TCP addresses" in one_error_line(durus.run(
            "-s", "--address", str(tmp_path / "s.sock"), "--tls-cert", cert, "--tls-key", key))
    _cert, other_key = make_certificate(tmp_path, "other")
    assert one_error_line(durus.run("-s", "--port", port, "--tls-cert", cert,
                                    "--tls-key", other_key)) == (
        f"durus: error: the private key in {other_key} is not the key of the certificate "
        f"in {cert}")
    missing = str(tmp_path / "nope.pem")
    assert one_error_line(durus.run("-s", "--port", port, "--tls-cert", cert,
                                    "--tls-key", missing)) == (
        f"durus: error: --tls-key {missing}: No such file or directory")


def test_warning_when_other_machines_can_connect(durus, tmp_path, certificate):
    cert, key = certificate
    secret = secret_file(tmp_path, "secret")
    port = str(free_port())
    for extra, warning in (
        ((), "this server admits anyone who connects: give it --secret-file"),
        (("--secret-file", secret), "the traffic is not encrypted"),
        (("--secret-file", secret, "--tls-cert", cert, "--tls-key", key), None),
    ):
        server = durus.start_server("--host", "0.0.0.0", "--port", port, *extra,
                                    address=("127.0.0.1", int(port)))
        stop = ["--tls-ca", cert] if "--tls-cert" in extra else []
        if "--secret-file" in extra:
            stop += ["--secret-file", secret]
        assert durus.run("-s", "--stop", "--port", port, *stop).returncode == 0
        assert server.wait(30) == 0
        log = server.stderr.read()
        if warning is None:
            assert "warning" not in log
        else:
            first = log.splitlines()[0]
            assert first.startswith(f"durus: warning: 0.0.0.0:{port} can be reached from "
                                    "other machines and ")
            assert warning in first
    # Loopback: no warning.
    server = durus.start_server("--port", port, address=("127.0.0.1", int(port)))
    assert durus.run("-s", "--stop", "--port", port).returncode == 0
    assert server.wait(30) == 0
    assert "warning" not in server.stderr.read()
