"""Helpers of the durus-cli tests: run the real command, real servers, real files.

(Imported by ``conftest.py``, which puts this folder on ``sys.path``; the
unusual module name keeps it apart from other distributions' test helpers.)

Every test runs ``durus`` in a subprocess with the interpreter running the
tests (``python -m durus``), the way a person or a script would.  The
subprocesses inherit the environment (so ``PYTHONPATH`` in a development tree,
or the installed distributions under tox) plus ``tests/data`` (the classes the
Durus 4.3 fixtures refer to) and a private ``HOME``.
"""

from __future__ import annotations

import os
import pathlib
import pickle
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib

import pytest

DATA = pathlib.Path(__file__).resolve().parent / "data"
SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "src" / "durus" / "__main__.py"
#: Seconds any single command may take before the test fails (a hang is a failure).
COMMAND_TIMEOUT = 60


def durus_env(home: pathlib.Path) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(DATA)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["HOME"] = str(home)
    env.pop("DURUSSTARTUP", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["TERM"] = "xterm"
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_listening(address: tuple[str, int] | str, process: subprocess.Popen | None,
                         limit: float = COMMAND_TIMEOUT) -> None:
    """Return once ``address`` accepts connections; fail if the server died or never did."""
    deadline = time.monotonic() + limit
    family = socket.AF_INET if isinstance(address, tuple) else socket.AF_UNIX
    target = address
    if isinstance(address, str) and address.startswith("@"):
        target = "\0" + address[1:]
    while True:
        if process is not None and process.poll() is not None:
            out = process.stderr.read() if process.stderr else ""
            pytest.fail(f"the server exited with {process.returncode}: {out}")
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.connect(target)
                return
            except OSError:
                pass
        if time.monotonic() > deadline:
            pytest.fail(f"nothing listens on {address}")
        time.sleep(0.05)


def wait_for(condition, what: str, limit: float = COMMAND_TIMEOUT) -> None:
    """Poll ``condition()`` until it is true; fail (naming ``what``) if it never becomes so."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.05)


class Durus:
    """Runs ``durus`` commands in ``cwd`` with the test environment."""

    def __init__(self, cwd: pathlib.Path, home: pathlib.Path) -> None:
        self.cwd = cwd
        self.env = durus_env(home)
        self.servers: list[subprocess.Popen] = []

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "durus", *args]

    def run(self, *args: str, input: str | None = None,
            script: bool = False) -> subprocess.CompletedProcess:
        argv = [sys.executable, str(SCRIPT), *args] if script else self.command(*args)
        return subprocess.run(
            argv, cwd=self.cwd, env=self.env, input=input, capture_output=True, text=True,
            timeout=COMMAND_TIMEOUT,
        )

    def start_server(self, *args: str, address: tuple[str, int] | str) -> subprocess.Popen:
        process = subprocess.Popen(
            self.command("-s", *args), cwd=self.cwd, env=self.env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.servers.append(process)
        wait_until_listening(address, process)
        return process

    def stop_servers(self) -> None:
        for process in self.servers:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=COMMAND_TIMEOUT)


def copy_fixture(name: str, directory: pathlib.Path) -> pathlib.Path:
    target = directory / name
    shutil.copyfile(DATA / name, target)
    return target


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The single stderr line of a failed command (asserting it is just that)."""
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("durus"), lines[0]
    return lines[0]


# -- a legacy DFS20 file (spec 3.8), built from records of our own Durus ----------------


def sample_records() -> dict[bytes, bytes]:
    """The records of a small database: a root, nested containers, fixture classes."""
    sys.path.insert(0, str(DATA))
    try:
        from fixture_classes import Account, Slotted

        from durus.connection import Connection
        from durus.persistent_dict import PersistentDict
        from durus.persistent_list import PersistentList
        from durus.storage import MemoryStorage

        storage = MemoryStorage()
        connection = Connection(storage)
        root = connection.get_root()
        root["alice"] = Account("alice", 100)
        root["box"] = Slotted("box", 7)
        root["numbers"] = PersistentList(range(10))
        root["nested"] = PersistentDict(inner=PersistentList(["x"]))
        connection.commit()
        root["garbage"] = PersistentList([1, 2, 3])
        connection.commit()
        del root["garbage"]
        connection.commit()
        storage.pack()
        return dict(storage.records)
    finally:
        sys.path.remove(str(DATA))


def write_dfs20(path: pathlib.Path, records: dict[bytes, bytes], *, packed: int = 2) -> None:
    """A DFS20 file: ``packed`` records before the index (as after a pack), the rest after.

    The records after the index go in two transactions.
    """
    items = sorted(records.items())
    before, after = items[:packed], items[packed:]
    header = b"DFS20\0"
    body = bytearray()
    offsets: dict[bytes, int] = {}
    position = 14
    if before:
        for oid, record in before:
            offsets[oid] = position + len(body)
            body += struct.pack(">I", len(record)) + record
        body += struct.pack(">I", 0)
    index_offset = position + len(body)
    index = zlib.compress(pickle.dumps(offsets, protocol=4))
    out = bytearray(header + struct.pack(">Q", index_offset) + body)
    out += struct.pack(">Q", len(index)) + index
    half = len(after) // 2
    for chunk in (after[:half], after[half:]):
        for _oid, record in chunk:
            out += struct.pack(">I", len(record)) + record
        out += struct.pack(">I", 0)
    path.write_bytes(bytes(out))
