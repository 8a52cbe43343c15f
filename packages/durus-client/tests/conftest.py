"""Fixtures for the client tests: real sockets served by small threads.

durus-client is tested alone (only durus-persistent installed), so there is no
StorageServer here.  ``mini_server`` is a tiny protocol-1 peer written for the
tests: it answers like a Durus 4.3 server (``K`` to the hello, so the client
uses plain protocol 1) from a dict of records, and can be told to misbehave.
``raw_listener`` gives a bare listening socket whose connections the test
drives byte by byte.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

_int4 = struct.Struct(">I")


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


class MiniServer:
    """A protocol-1 server over one dict, a thread per connection."""

    def __init__(self, family: int = socket.AF_INET, address: Any = ("127.0.0.1", 0)) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(address)
        self.sock.listen(8)
        self.records: dict[bytes, bytes] = {}
        self.next_oid = 0
        self.invalid: list[bytes] = []  # sent (once) on the next S or C
        self.invalid_loads: set[bytes] = set()  # L answers I for these
        self.commits: list[bytes] = []
        self.received: list[bytes] = []  # command bytes, in order
        self.stall_after: bytes | None = None  # stop answering after this command
        self.close_after: bytes | None = None  # close the connection after this command
        self.stopped = threading.Event()
        self.connections: list[socket.socket] = []
        self.workers: list[threading.Thread] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def address(self) -> Any:
        return self.sock.getsockname()

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _addr = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)
            worker = threading.Thread(target=self._serve_one, args=(conn,), daemon=True)
            self.workers.append(worker)
            worker.start()

    def _serve_one(self, conn: socket.socket) -> None:
        with conn:
            try:
                self._serve(conn)
            except (EOFError, OSError):
                pass

    def _take_invalid(self) -> bytes:
        oids, self.invalid = self.invalid, []
        return _int4.pack(len(oids)) + b"".join(oids)

    def _serve(self, conn: socket.socket) -> None:
        while True:
            command = conn.recv(1)
            if not command:
                return
            self.received.append(command)
            if command == b"V":
                _recv_exact(conn, 4)
                conn.sendall(b"\x00\x00\x00\x01")
            elif command == b"L":
                oid = _recv_exact(conn, 8)
                conn.sendall(self._load_reply(oid))
            elif command == b"B":
                count = _int4.unpack(_recv_exact(conn, 4))[0]
                raw = _recv_exact(conn, 8 * count)
                conn.sendall(b"".join(self._load_reply(raw[i : i + 8])
                                      for i in range(0, len(raw), 8)))
            elif command == b"M":
                count = _recv_exact(conn, 1)[0]
                oids = []
                for _ in range(count):
                    oids.append(self.next_oid.to_bytes(8, "big"))
                    self.next_oid += 1
                conn.sendall(b"".join(oids))
            elif command == b"S":
                conn.sendall(self._take_invalid())
            elif command == b"C":
                conn.sendall(self._take_invalid())
                length = _int4.unpack(_recv_exact(conn, 4))[0]
                if length:
                    tdata = _recv_exact(conn, length)
                    self.commits.append(tdata)
                    i = 0
                    while i < len(tdata):
                        rlen = _int4.unpack(tdata[i : i + 4])[0]
                        self.records[tdata[i + 4 : i + 12]] = tdata[i + 12 : i + 4 + rlen]
                        i += 4 + rlen
                    conn.sendall(b"O")
            elif command == b"P":
                conn.sendall(b"O")
            elif command == b".":
                return
            else:
                return
            if command == self.stall_after:
                self.stopped.wait(30)
                return
            if command == self.close_after:
                return

    def _load_reply(self, oid: bytes) -> bytes:
        if oid in self.invalid_loads:
            return b"I"
        record = self.records.get(oid)
        if record is None:
            return b"K"
        return b"O" + _int4.pack(len(record)) + record

    def close(self) -> None:
        """Stop every thread of this server: none may outlive its test.

        Closing a socket does not wake a thread blocked in ``accept`` or
        ``recv`` on it; shutting it down does.  (Threads left behind made
        later tests that fork warn about forking a multi-threaded process.)
        """
        self.stopped.set()
        for sock in (self.sock, *self.connections):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.sock.close()
        self.thread.join(10)
        for worker in self.workers:
            worker.join(10)
        assert not self.thread.is_alive(), "the mini server's accept loop did not stop"


@pytest.fixture
def mini_server() -> Iterator[MiniServer]:
    server = MiniServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def make_mini_server() -> Iterator[Callable[..., MiniServer]]:
    servers: list[MiniServer] = []

    def make(*args: Any, **kwargs: Any) -> MiniServer:
        server = MiniServer(*args, **kwargs)
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.close()


@pytest.fixture
def record_for() -> Callable[..., bytes]:
    """A well-formed record of an oid (data need not be a real pickle here)."""

    def make(oid: bytes, data: bytes = b"state", refs: bytes = b"") -> bytes:
        return oid + _int4.pack(len(data)) + data + refs

    return make


class RawListener:
    """A listening socket; ``accept()`` hands the test the server side."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(30)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []

    def accept(self) -> socket.socket:
        conn, _addr = self.sock.accept()
        conn.settimeout(30)
        self.accepted.append(conn)
        return conn

    def serve_in_thread(self, script: Callable[[socket.socket], None]) -> threading.Thread:
        def run() -> None:
            try:
                script(self.accept())
            except (OSError, EOFError):
                pass

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def raw_listener() -> Iterator[RawListener]:
    listener = RawListener()
    try:
        yield listener
    finally:
        listener.close()


@pytest.fixture
def recv_exact() -> Callable[[socket.socket, int], bytes]:
    return _recv_exact
