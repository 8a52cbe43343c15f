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
from ..common import percentile
from ..protocol import ok
from ..servers import HOST, child_outcome, driver_command, free_port, stop

REQUEST = b"x" * 100
READY = "BENCH-READY"


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


def _wait_listening(port: int, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the floor server exited with status {server.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("the floor server did not listen in time")


def run(adapter: Adapter, params: dict[str, Any], scratch: str) -> dict[str, Any]:
    clients, commits = params["clients"], params["commits"]
    port = free_port()
    system = ["--system", adapter.system]
    server_log = open(os.path.join(scratch, "floor-server.log"), "wb")  # noqa: SIM115
    server = subprocess.Popen(
        driver_command("floor-serve", *system, "--port", str(port),
                       "--path", os.path.join(scratch, "floor.log"),
                       "--out", os.path.join(scratch, "floor-server.json")),
        stdout=server_log, stderr=subprocess.STDOUT,
    )
    started = []
    try:
        _wait_listening(port, server)
        for slot in range(clients):
            out = os.path.join(scratch, f"floor-client-{slot}.json")
            proc = subprocess.Popen(
                driver_command("floor-client", *system, "--port", str(port),
                               "--commits", str(commits), "--out", out),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )
            started.append((proc, out))
        for proc, _ in started:
            for line in proc.stdout:  # type: ignore[union-attr]
                if line.strip() == READY:
                    break
        for proc, _ in started:
            proc.stdin.write("go\n")  # type: ignore[union-attr]
            proc.stdin.close()  # type: ignore[union-attr]
        results = []
        for proc, out in started:
            proc.wait(timeout=600)
            results.append(child_outcome(proc, out, "a floor client"))
    finally:
        for proc, _ in started:
            stop(proc)
        stop(server)
        server_log.close()
    latencies = [x for r in results for x in r["latencies"]]
    span = max(r["end"] for r in results) - min(r["start"] for r in results)
    return ok(
        {
            "commits_per_s": len(latencies) / span,
            "p50_s": percentile(latencies, 0.5),
            "p99_s": percentile(latencies, 0.99),
        },
        {"durability": "fdatasync once per batch of requests", "span_s": span},
    )
