"""Start, wait for and stop a storage server in a child process.

Why a child: the server must not share the GIL with the clients it serves, and
both Durus servers and ZEO are meant to run as their own process.  Only the
loopback interface is ever used.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .protocol import EXIT_UNAVAILABLE, Unavailable

HOST = "127.0.0.1"
READY_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0


def free_port() -> int:
    """A loopback port that was free a moment ago (the server binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def driver_command(action: str, *args: str) -> list[str]:
    """How to run another driver process with this very interpreter."""
    return [sys.executable, "-m", "bench_driver", action, *args]


def _last_line(log_path: str | None) -> str:
    if not log_path or not os.path.exists(log_path):
        return ""
    with open(log_path, encoding="utf-8", errors="replace") as f:
        lines = [x.strip() for x in f if x.strip()]
    return f": {lines[-1]}" if lines else ""


def child_outcome(
    proc: subprocess.Popen, out_path: str, what: str, log_path: str | None = None
) -> dict:
    """Turn a finished child into its result, or raise what it reported."""
    if proc.returncode == EXIT_UNAVAILABLE and os.path.exists(out_path):
        with open(out_path, encoding="utf-8") as f:
            raise Unavailable(json.load(f)["reason"])
    if proc.returncode != 0 or not os.path.exists(out_path):
        detail = _last_line(log_path)
        raise RuntimeError(f"{what} exited with status {proc.returncode}{detail}")
    with open(out_path, encoding="utf-8") as f:
        return json.load(f)


def wait_until_listening(proc: subprocess.Popen, port: int, out_path: str, log_path: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            child_outcome(proc, out_path, "the storage server", log_path)
            raise RuntimeError("the storage server exited before listening")
        try:
            with socket.create_connection((HOST, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the storage server did not listen on {HOST}:{port} in time")


@contextmanager
def running_server(system: str, path: str, fsync: bool | None, workdir: str) -> Iterator[int]:
    """Serve ``path`` for the duration of the block; yield the port."""
    port = free_port()
    out_path = os.path.join(workdir, f"server-{port}.json")
    log_path = os.path.join(workdir, f"server-{port}.log")
    args = ["--system", system, "--path", path, "--port", str(port)]
    args += ["--fsync", json.dumps(fsync), "--out", out_path]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            driver_command("serve", *args), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_until_listening(proc, port, out_path, log_path)
        yield port
    finally:
        stop(proc)


#: What a client process prints once it is connected and waits for "go".
READY = "BENCH-READY"


def run_together(
    clients: list[tuple[list[str], str, str]], what: str, timeout: float
) -> list[dict]:
    """Start every ``(command, out_path, log_path)``, let them go together, collect.

    Each client prints ``READY`` once connected and then waits for a line on
    stdin, so that none starts its clock before all are connected.
    """
    started = []
    try:
        for command, out_path, log_path in clients:
            log = open(log_path, "wb")  # noqa: SIM115 -- closed below
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=log, text=True)
            started.append((proc, out_path, log, log_path))
        for proc, *_ in started:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.strip() == READY:
                    break
        for proc, *_ in started:
            if proc.poll() is None:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.close()
        results = []
        for proc, out_path, _log, log_path in started:
            proc.wait(timeout=timeout)
            results.append(child_outcome(proc, out_path, what, log_path))
        return results
    finally:
        for proc, _out, log, _log_path in started:
            stop(proc)
            log.close()


def stop(proc: subprocess.Popen) -> None:
    """Terminate a child we started, killing it if it does not go in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
