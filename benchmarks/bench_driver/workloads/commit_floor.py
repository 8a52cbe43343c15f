"""commit floor: the most durable round trips per second this machine allows, no database.

Four client processes each send a 100-byte request and wait for a 1-byte answer.
One server process appends every request it has read to a file, fdatasyncs once
for the whole batch (group commit) and then answers the batch.  Every storage
server pays at least this for a durable one-object commit (an event loop in
Python, loopback sockets, one fsync per group), so ``server_commits`` (durable)
is read against it: a target above this floor cannot be met on this machine.
It runs with the ours system only because it measures none of them.
"""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import sys
import time
from typing import Any

from ..adapters.base import Adapter
from ..protocol import ok
from ..servers import HOST, READY, driver_command, free_port, stop, wait_until_listening
from .server_commits import run_clients

REQUEST = b"x" * 100


def serve(port: int, path: str) -> None:
    """Append, fdatasync once per batch, answer the batch; until terminated."""
    listener = socket.create_server((HOST, port))
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    while True:
        batch = []
        for key, _mask in selector.select():
            if key.data is None:
                conn, _ = listener.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                selector.register(conn, selectors.EVENT_READ, "client")
                continue
            conn = key.fileobj
            data = conn.recv(65536)  # type: ignore[union-attr]
            if not data:
                selector.unregister(conn)
                conn.close()  # type: ignore[union-attr]
                continue
            os.write(fd, data)
            batch.append(conn)
        if batch:
            os.fdatasync(fd)
            for conn in batch:
                conn.sendall(b"k")


def client(port: int, commits: int) -> dict[str, Any]:
    """Say READY, wait for a line on stdin, then time ``commits`` round trips."""
    sock = socket.create_connection((HOST, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    print(READY, flush=True)
    sys.stdin.readline()
    latencies = []
    start = time.monotonic()
    for _ in range(commits):
        before = time.perf_counter()
        sock.sendall(REQUEST)
        if not sock.recv(1):
            raise RuntimeError("the floor server closed the connection")
        latencies.append(time.perf_counter() - before)
    end = time.monotonic()
    sock.close()
    return {"status": "ok", "start": start, "end": end, "latencies": latencies}


def run(adapter: Adapter, params: dict[str, Any], scratch: str) -> dict[str, Any]:
    port = free_port()
    out_path = os.path.join(scratch, "floor-server.json")
    log_path = os.path.join(scratch, "floor-server.log")
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            driver_command("floor-serve", "--system", adapter.system, "--port", str(port),
                           "--path", os.path.join(scratch, "floor.log"), "--out", out_path),
            stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        wait_until_listening(server, port, out_path, log_path)
        figures = run_clients(adapter.system, ["--port", str(port)], params["clients"],
                              params["commits"], scratch, action="floor-client")
    finally:
        stop(server)
    span = figures.pop("span_s")
    return ok(figures, {"durability": "fdatasync once per batch of requests", "span_s": span})
