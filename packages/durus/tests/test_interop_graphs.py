"""Generated object graphs cross between our Durus and a real Durus 4.3, every way (issue 12).

Issue 12: we could not read back most random graphs we wrote (objects referring to
themselves), while Durus 4.3 read them all.  Here the same ``graph_strategies`` specs are
written by one side and described by the other, through files (also after a pack and a
rewrite by the other side) and through servers (ours with Durus 4.3 clients, Durus 4.3's
with ours; TCP on loopback and a unix socket); every description must equal
``graph_spec.expected``.

Each side is one long-lived worker process (``WORKER``, run by our interpreter and by
``DURUS43_PYTHON``) that takes a batch of jobs per line on stdin, so process start-up does
not dominate.  Marked ``interop``: skipped when ``DURUS43_PYTHON`` is not set.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import graph_spec  # this folder is on sys.path (conftest.py)
import graph_strategies
import pytest
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.interop

TESTS = Path(__file__).resolve().parent
DURUS43 = os.environ.get("DURUS43_PYTHON")
#: Examples per test (DURUS_HYPOTHESIS_PROFILE=large runs 20 times as many, see
#: ``graph_strategies.example_settings``).
EXAMPLES = 60
TIMEOUT = 120  # seconds a worker may take over one batch

#: One side's worker: a line of JSON jobs in, a line of JSON replies out.  It runs under
#: both interpreters, so it uses only names that Durus 4.3 has too.
WORKER = r"""
import json, os, shutil, sys, traceback
sys.path.insert(0, sys.argv[1])
replies = os.fdopen(os.dup(1), "w")
sys.stdout = sys.stderr  # stray prints must not mix with the replies
import durus
import durus.serialize
import graph_spec
from durus.connection import Connection
from durus.persistent_dict import PersistentDict


def open_storage(at, readonly):
    if "file" in at:
        from durus.file_storage import FileStorage
        return FileStorage(at["file"], readonly=readonly)
    from durus.client_storage import ClientStorage
    if "address" in at:
        return ClientStorage(address=at["address"])
    return ClientStorage(host="127.0.0.1", port=at["port"])


def run(job):
    op = job["op"]
    if op == "copy":
        shutil.copyfile(job["src"], job["dst"])
        return None
    storage = open_storage(job["at"], readonly=op == "describe" and "file" in job["at"])
    try:
        connection = Connection(storage)  # a new connection (a new client) for every job
        root = connection.get_root()
        key = job.get("key")
        if op == "write" and key is not None and key not in root:
            root[key] = PersistentDict()
        holder = root if key is None else root[key]
        if op == "describe":
            return graph_spec.describe(holder)
        if op == "pack":
            connection.pack()
        elif op == "write":
            graph_spec.build(holder, job["data"])
            connection.commit()
        else:
            graph_spec.mutate(holder, job["data"])
            connection.commit()
        return None
    finally:
        storage.close()


hello = {"durus_init": getattr(durus, "__file__", None), "serialize": durus.serialize.__file__}
replies.write(json.dumps(hello) + "\n")
replies.flush()
for line in sys.stdin:
    results = []
    for job in json.loads(line):
        try:
            results.append({"ok": run(job)})
        except Exception:
            results.append({"error": traceback.format_exc()})
    replies.write(json.dumps(results) + "\n")
    replies.flush()
"""


class Worker:
    """One side's worker process; ``run(jobs)`` sends a batch and returns its replies."""

    def __init__(self, name: str, python: str, env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                [python, "-c", WORKER, str(TESTS)], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=err, env=env,
            )
        self.buffer = b""
        self.hello = json.loads(self._line())

    def _line(self, timeout: float = TIMEOUT) -> bytes:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                self.close()  # its state is unknown now: no later batch may read this reply
                raise AssertionError(f"{self.name} worker silent for {timeout}s\n{self.tail()}")
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:
                self.close()
                raise AssertionError(f"{self.name} worker exited\n{self.tail()}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def run(self, jobs: list[dict]) -> list[dict]:
        assert self.proc.poll() is None, f"{self.name} worker is gone\n{self.tail()}"
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(jobs).encode() + b"\n")
        self.proc.stdin.flush()
        replies = json.loads(self._line())
        assert len(replies) == len(jobs)
        return replies

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def close(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()


def env_durus43() -> dict[str, str]:
    """Our environment without PYTHONPATH (which may point at our sources)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    """``(ours, durus43)``: a worker of each side, checked to import the right ``durus``."""
    if not DURUS43:
        pytest.skip("DURUS43_PYTHON is not set (the tox interop envs set it)")
    logs = tmp_path_factory.mktemp("workers")
    started = []
    try:
        ours = Worker("our Durus", sys.executable, dict(os.environ), logs / "ours.log")
        started.append(ours)
        durus43 = Worker("Durus 4.3", DURUS43, env_durus43(), logs / "durus43.log")
        started.append(durus43)
        # Ours is a namespace package (no durus/__init__.py), Durus 4.3's is not.
        assert ours.hello["durus_init"] is None, ours.hello
        assert durus43.hello["durus_init"] is not None, durus43.hello
        import durus.serialize

        assert ours.hello["serialize"] == durus.serialize.__file__
        yield ours, durus43
    finally:
        for worker in started:
            worker.close()


def cases():
    """A spec and a change of it; issue 12's self-referring objects about a third of the time."""
    spec = st.one_of(graph_strategies.self_referring_specs(), graph_strategies.specs(),
                     graph_strategies.specs())
    return spec.flatmap(lambda s: st.tuples(st.just(s), graph_strategies.changes(s)))


def wanted(spec: dict, change: dict) -> tuple[object, object]:
    """``expected`` after the build and after the change, as JSON gives them back."""
    return tuple(json.loads(json.dumps(graph_spec.expected(spec, c))) for c in ([], [change]))


#: A step: (what it does, in words, the job, the description it must give or None).
Step = tuple[str, dict, object]


class Checks:
    """Runs steps on workers and gathers every wrong or failed description, so that one
    report names every direction that broke; a failed action (write, rewrite, pack, copy)
    ends the example at once, since what follows would only repeat it."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def run(self, worker: Worker, steps: list[Step]) -> None:
        replies = worker.run([job for _what, job, _want in steps])
        broken = []
        for (what, job, want), reply in zip(steps, replies, strict=True):
            who = f"{worker.name} {what}"
            if "error" in reply:
                (self.failures if job["op"] == "describe" else broken).append(
                    f"{who}: raised\n{reply['error']}")
            elif job["op"] == "describe" and reply["ok"] != want:
                self.failures.append(
                    f"{who}: wrong description\n  got      {json.dumps(reply['ok'])[:3000]}"
                    f"\n  expected {json.dumps(want)[:3000]}")
        if broken:
            raise AssertionError("\n".join(self.failures + broken))

    def verdict(self) -> None:
        if self.failures:
            raise AssertionError("\n".join(self.failures))


def write(at: dict, spec: dict, key: str | None = None) -> dict:
    return {"op": "write", "at": at, "key": key, "data": spec}


def mutate(at: dict, change: dict, key: str | None = None) -> dict:
    return {"op": "mutate", "at": at, "key": key, "data": change}


def describe(at: dict, key: str | None = None) -> dict:
    return {"op": "describe", "at": at, "key": key}


def pack(at: dict) -> dict:
    return {"op": "pack", "at": at}


def copy(src: Path, dst: Path) -> dict:
    return {"op": "copy", "src": str(src), "dst": str(dst)}


def at_file(path: Path) -> dict:
    return {"file": str(path)}


def packed(path: Path) -> Path:
    return path.with_suffix(".packed")


def rewritten_packed(path: Path) -> Path:
    return path.with_suffix(".rewritten-packed")


def pack_and_rewrite(path: Path, built: object, change: dict) -> list[Step]:
    """The other side reads a file, packs a copy, rewrites the file and packs a copy of that
    (a pack after a rewrite has garbage to drop)."""
    return [
        ("reads the other side's file", describe(at_file(path)), built),
        ("copies it", copy(path, packed(path)), None),
        ("packs the copy", pack(at_file(packed(path))), None),
        ("rewrites the file", mutate(at_file(path), change), None),
        ("copies it", copy(path, rewritten_packed(path)), None),
        ("packs the copy of the rewrite", pack(at_file(rewritten_packed(path))), None),
    ]


def read_back(path: Path, built: object, changed: object) -> list[Step]:
    """The writer reads what the other side made of its file."""
    return [
        ("reads its file packed by the other side", describe(at_file(packed(path))), built),
        ("reads its file rewritten by the other side", describe(at_file(path)), changed),
        ("reads its file rewritten and packed by the other side",
         describe(at_file(rewritten_packed(path))), changed),
    ]


def test_files_both_ways_with_pack_and_rewrite(workers, tmp_path):
    """Each side writes a file of a spec; the other reads it, packs a copy, rewrites it and
    packs a copy of the rewrite; the writer reads those three."""
    ours, durus43 = workers
    counter = itertools.count()

    @graph_strategies.example_settings(EXAMPLES)
    @given(case=cases())
    def check(case):
        spec, change = case
        built, changed = wanted(spec, change)
        folder = tmp_path / f"ex{next(counter)}"
        folder.mkdir()
        mine, theirs = folder / "ours.durus", folder / "durus43.durus"
        checks = Checks()
        try:
            checks.run(ours, [("writes a file", write(at_file(mine), spec), None)])
            checks.run(durus43, [
                *pack_and_rewrite(mine, built, change),
                ("writes a file", write(at_file(theirs), spec), None),
            ])
            checks.run(ours, [*pack_and_rewrite(theirs, built, change),
                              *read_back(mine, built, changed)])
            checks.run(durus43, read_back(theirs, built, changed))
            checks.verdict()
        finally:
            shutil.rmtree(folder)

    check()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def connectable(at: dict) -> bool:
    family = socket.AF_UNIX if "address" in at else socket.AF_INET
    with socket.socket(family) as sock:
        sock.settimeout(2)
        try:
            sock.connect(at["address"] if "address" in at else ("127.0.0.1", at["port"]))
        except OSError:
            return False
    return True


class Server:
    """A server process of one side on a fresh file, killed by ``close`` whatever happened."""

    #: What each side's server logs once a pack requested by a client has ended.
    PACK_DONE = {"ours": ("Pack completed",), "durus43": ("gc at ", "Pack completed")}

    def __init__(self, side: str, transport: str, folder: Path) -> None:
        self.side = side
        self.file = folder / f"{side}-server.durus"
        self.log = folder / f"{side}-server.log"
        self.socket_dir = None
        if transport == "unix":  # a short path: unix socket names are limited to ~100 bytes
            self.socket_dir = tempfile.mkdtemp(prefix="durus-graphs-")
            self.at = {"address": os.path.join(self.socket_dir, "socket")}
            where = ["--address", self.at["address"]]
        else:
            self.at = {"port": free_port()}
            where = ["--port", str(self.at["port"])]
        python, env = (sys.executable, dict(os.environ)) if side == "ours" else (
            DURUS43, env_durus43())
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [python, "-m", "durus", "-s", "--file", str(self.file), *where],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )
        deadline = time.monotonic() + 60
        while not connectable(self.at):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise AssertionError(f"the {side} server did not listen\n{self.log_text()}")
            time.sleep(0.02)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_pack(self) -> None:
        """Both servers pack in steps between requests, after answering the pack request."""
        deadline = time.monotonic() + 60
        while not any(done in self.log_text() for done in self.PACK_DONE[self.side]):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the {self.side} server's pack did not end\n"
                                     f"{self.log_text()[-4000:]}")
            time.sleep(0.02)

    def stop(self) -> int:
        """Stop it with the protocol's stop request; its exit status."""
        from durus.wire_protocol import send_stop

        address = self.at.get("address") or ("127.0.0.1", self.at["port"])
        assert send_stop(address), self.log_text()[-4000:]
        return self.proc.wait(30)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        if self.socket_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)


SERVER_CASES = [
    pytest.param("ours", "tcp", EXAMPLES, id="our-server-tcp"),
    pytest.param("durus43", "tcp", EXAMPLES, id="durus43-server-tcp"),
    pytest.param("ours", "unix", EXAMPLES // 4, id="our-server-unix"),
    pytest.param("durus43", "unix", EXAMPLES // 4, id="durus43-server-unix"),
]


@pytest.mark.parametrize(("side", "transport", "n"), SERVER_CASES)
def test_servers_both_ways(workers, tmp_path, side, transport, n):
    """One server for the test, one root key per example.  Clients of the other side than
    the server's (guests) write and read back; a client of the server's side reads and
    rewrites; a guest reads the rewrite.  Then a guest packs through the server, the
    server's side reads every graph, the server stops, and a guest reads its file."""
    ours, durus43 = workers
    host, guest = (ours, durus43) if side == "ours" else (durus43, ours)
    server = Server(side, transport, tmp_path)
    stored: dict[str, object] = {}
    try:
        at = server.at
        counter = itertools.count()

        @graph_strategies.example_settings(n)
        @given(case=cases())
        def check(case):
            spec, change = case
            built, changed = wanted(spec, change)
            key = f"ex{next(counter)}"
            checks = Checks()
            checks.run(guest, [
                ("writes through the other side's server", write(at, spec, key), None),
                ("reads it back with another client", describe(at, key), built),
            ])
            checks.run(host, [
                ("reads what the other side wrote through its server", describe(at, key),
                 built),
                ("rewrites it", mutate(at, change, key), None),
            ])
            checks.run(guest, [("reads the other side's rewrite", describe(at, key), changed)])
            checks.verdict()
            stored[key] = changed

        check()
        checks = Checks()
        checks.run(guest, [("asks the other side's server to pack", pack(at), None)])
        server.wait_for_pack()
        checks.run(host, [(f"reads {key} after the pack", describe(at, key), want)
                          for key, want in stored.items()])
        assert server.stop() == 0, server.log_text()[-4000:]
        checks.run(guest, [(f"reads {key} in the other side's server file",
                            describe(at_file(server.file), key), want)
                           for key, want in stored.items()])
        checks.verdict()
    finally:
        server.close()
