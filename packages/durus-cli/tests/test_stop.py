"""``durus -s --stop`` (and ``-c``) against something that is not a Durus server.

Real listeners on real sockets: one that accepts and says nothing, an HTTP
server, one that greets with its own banner, one that hangs up at once.  The
command must say within seconds that no Durus server answers there, where it
used to send its stop request blindly and wait 30 seconds.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from durus_cli_testing import free_port, one_error_line

import durus.__main__ as durus_main

#: The old behaviour took 30 s; the handshake timeout is 2 s.  This generous
#: bound only tells the two apart, it measures nothing.
MUCH_LESS_THAN_30_SECONDS = 10.0


class Listener:
    """A TCP server on 127.0.0.1 that does ``on_connect(sock)`` with each connection."""

    def __init__(self, on_connect: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.on_connect = on_connect
        self.sock.settimeout(0.05)  # to notice close() soon
        self.accepted: list[socket.socket] = []
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.closing.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(10)
            self.accepted.append(conn)
            self.on_connect(conn)

    def close(self) -> None:
        self.closing.set()
        self.thread.join(10)
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def listener() -> Iterator[Callable[[Callable[[socket.socket], None]], Listener]]:
    made: list[Listener] = []

    def make(on_connect: Callable[[socket.socket], None]) -> Listener:
        made.append(Listener(on_connect))
        return made[-1]

    yield make
    for one in made:
        one.close()


def timed_stop(durus, port: int):
    started = time.monotonic()
    result = durus.run("-s", "--stop", "--port", str(port))
    return result, time.monotonic() - started


def test_stop_a_listener_that_says_nothing(durus, listener):
    silent = listener(lambda conn: None)
    result, seconds = timed_stop(durus, silent.port)
    assert one_error_line(result) == (
        f"durus: error: no Durus server answers on 127.0.0.1:{silent.port}: something "
        "accepts connections there but did not answer the Durus handshake within 2 s "
        "(another kind of server, or a Durus server too busy to answer)")
    assert seconds < MUCH_LESS_THAN_30_SECONDS
    # No stop request was sent: only the handshake.
    assert silent.accepted and silent.accepted[0].recv(100) == b"V\x00\x00\x00\x01"


def test_stop_an_http_server(durus):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        result, seconds = timed_stop(durus, port)
        assert "no Durus server answers on 127.0.0.1:" in one_error_line(result)
        assert seconds < MUCH_LESS_THAN_30_SECONDS
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.mark.parametrize(("greeting", "message"), [
    (b"SSH-2.0-OpenSSH_9.2\r\n", "it answered the Durus handshake with b'SSH-'"),
    (b"HTTP/1.1 400 Bad Request\r\n\r\n", "it is a web server"),
    (None, "it closed the connection at the handshake"),
])
def test_stop_servers_that_answer_otherwise(durus, listener, greeting, message):
    def answer(conn: socket.socket) -> None:
        if greeting is None:
            conn.close()
        else:
            conn.sendall(greeting)

    other = listener(answer)
    result, seconds = timed_stop(durus, other.port)
    assert one_error_line(result) == (
        f"durus: error: no Durus server answers on 127.0.0.1:{other.port}: {message}")
    assert seconds < MUCH_LESS_THAN_30_SECONDS


def test_console_on_something_else(durus, listener):
    other = listener(lambda conn: conn.sendall(b"220 smtp.example.com ESMTP\r\n"))
    line = one_error_line(durus.run("-c", "--port", str(other.port)))
    assert line == (f"durus: error: no Durus server answers on 127.0.0.1:{other.port}: it "
                    "answered the Durus handshake with b'220 '")


def test_stop_durus_returns_false_when_no_durus_server_answers(listener):
    silent = listener(lambda conn: None)
    started = time.monotonic()
    assert durus_main.stop_durus(("127.0.0.1", silent.port)) is False
    assert time.monotonic() - started < MUCH_LESS_THAN_30_SECONDS


def test_stop_our_server_still_works(durus):
    port = free_port()
    server = durus.start_server("--port", str(port), address=("127.0.0.1", port))
    result, _seconds = timed_stop(durus, port)
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"durus: stopped the server at 127.0.0.1:{port}\n"
    assert server.wait(30) == 0
