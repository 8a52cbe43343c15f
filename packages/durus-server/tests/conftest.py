"""Fixtures: real server processes on free loopback ports and Unix sockets.

``start_server(...)`` runs ``server_main.py`` in a subprocess (same
interpreter, same environment, so the same ``durus`` packages), waits until it
accepts connections and returns a handle; every process started is killed at
the end of the test.  Helpers shared by the test modules are fixtures too
(the modules are imported with ``--import-mode=importlib`` and cannot import
each other).
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
SERVER_MAIN = str(HERE / "server_main.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def has_file_storage() -> bool:
    try:
        import durus.file_storage  # noqa: F401
    except ImportError:
        return False
    return True


class ServerHandle:
    def __init__(self, proc: subprocess.Popen, address: Any, file: str | None, log: Path) -> None:
        self.proc = proc
        self.address = address
        self.file = file
        self.log = log

    @property
    def port(self) -> int:
        return self.address[1]

    def client(self, **options: Any) -> Any:
        from durus.client_storage import ClientStorage

        options.setdefault("timeout", 30)
        return ClientStorage(address=self.address, **options)

    def connection(self, **options: Any) -> Any:
        from durus.connection import Connection

        cache_size = options.pop("cache_size", 100000)
        return Connection(self.client(**options), cache_size=cache_size)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)


def _family(address: Any) -> int:
    if isinstance(address, tuple):
        return socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    return socket.AF_UNIX


def _connectable(address: Any) -> bool:
    family = _family(address)
    target = address
    if isinstance(address, str) and address.startswith("@"):
        target = address.replace("@", "\0")
    with socket.socket(family) as sock:
        sock.settimeout(2)
        try:
            sock.connect(target)
        except OSError:
            return False
    return True


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerHandle]]:
    handles: list[ServerHandle] = []

    def start(
        storage: str = "file",
        file: str | None = None,
        address: Any = None,
        log_level: str = "INFO",
        **options: Any,
    ) -> ServerHandle:
        if storage == "file":
            if not has_file_storage():
                pytest.skip("durus-filestorage is not installed")
            if file is None:
                file = str(tmp_path / f"db{len(handles)}.durus")
        if address is None:
            address = ("127.0.0.1", free_port())
        config = {"storage": storage, "address": list(address) if isinstance(address, tuple)
                  else address, "log_level": log_level, **options}
        if file is not None:
            config["file"] = file
        log = tmp_path / f"server{len(handles)}.log"
        import json

        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, SERVER_MAIN, json.dumps(config)],
                stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ),
            )
        handle = ServerHandle(proc, address, file, log)
        handles.append(handle)
        deadline = time.monotonic() + 60
        while not _connectable(address):
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited:\n{handle.log_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not listen in time:\n{handle.log_text()}")
            time.sleep(0.02)
        return handle

    try:
        yield start
    finally:
        for handle in handles:
            handle.kill()


@pytest.fixture
def file_digest() -> Callable[[str], str]:
    def digest(path: str) -> str:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    return digest


@pytest.fixture
def raw_session() -> Callable[..., socket.socket]:
    """A connected raw socket that already did ``V`` (and the hello if asked)."""

    def connect(address: Any, hello: bool = False, timeout: float = 30) -> socket.socket:
        family = _family(address)
        sock = socket.socket(family)
        sock.settimeout(timeout)
        sock.connect(address)
        sock.sendall(b"V\x00\x00\x00\x01")
        assert recv_all(sock, 4) == b"\x00\x00\x00\x01"
        if hello:
            sock.sendall(b"L" + b"\xff" * 8)
            assert recv_all(sock, 1) == b"O"
            recv_all(sock, int.from_bytes(recv_all(sock, 4), "big"))
        return sock

    return connect


def recv_all(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


@pytest.fixture
def recv_exact() -> Callable[[socket.socket, int], bytes]:
    return recv_all


@pytest.fixture
def persistent_class() -> type:
    """A persistent class importable by every process (it lives in durus)."""
    from durus.persistent_dict import PersistentDict

    return PersistentDict
