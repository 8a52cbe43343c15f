"""A real writer process is killed (SIGKILL) at random moments, during commits and packs.

After every kill the database is reopened (by a writer: that is when recovery
happens) and checked: every commit the killed process had acknowledged (its
``commit()`` had returned) is present, at most the one in flight beyond it,
nothing is half-applied, and the file is a sequence of complete transactions
that a naive reader accepts.  The number of kills is ``DURUS_CRASH_KILLS``
(default 300), a third in each mode:

- "commit": small durable commits (a kill mostly lands in pickling or fsync);
- "write": commits interleaved with multi-megabyte ones without fsync (a
  process kill loses nothing the kernel has, so acknowledged still means
  present) so that kills land inside the ``pwrite`` and leave torn tails;
- "pack": incremental packs with commits between their steps.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest

from durus.btree import BTree
from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent_list import PersistentList

KILLS = int(os.environ.get("DURUS_CRASH_KILLS", "300"))
#: What may be next to the database once a writer opened it after a kill.
SIDE_FILES = {"crash.durus", "crash.durus.index", "crash.durus.prepack"}

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork") or sys.platform == "win32", reason="needs fork and SIGKILL"
)


BLOB = random.Random(7).randbytes(4 << 20)


def writer(path: str, ack_fd: int, mode: str, seed: int) -> None:
    """The child: commit (and pack) forever, acknowledging each returned commit."""
    rng = random.Random(seed)
    storage = FileStorage(path, fsync=mode != "write")
    connection = Connection(storage)
    root = connection.get_root()
    if "tree" not in root:
        root["tree"] = BTree()
        root["n"] = 0
        connection.commit()
    tree = root["tree"]

    def commit_one() -> None:
        n = root["n"] + 1
        tree[n] = PersistentList([n, b"x" * rng.choice((10, 100, 1000, 20000))])
        old = tree.get(rng.randint(1, n - 1)) if n > 1 else None
        if old is not None:
            old._p_note_change()  # rewrite an older object too
        if n % 7 == 0 and n > 10:
            del tree[n - 10]  # garbage for the packs
            root["deleted"] = root.get("deleted", 0) + 1
        root["n"] = n
        connection.commit()
        os.write(ack_fd, n.to_bytes(8, "big"))

    blob = storage.new_oid()  # never referenced: garbage for the packs
    while True:
        if mode == "commit":
            commit_one()
            continue
        if mode == "write":
            storage.begin()
            size = rng.randrange(1 << 20, 4 << 20)
            storage.store(blob, blob + size.to_bytes(4, "big") + BLOB[:size])
            storage.end()
            commit_one()
            continue
        for i, _step in enumerate(storage.get_packer()):
            if i % 4 == 0:
                commit_one()
        commit_one()


def read_acks(fd: int) -> int:
    data = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    os.close(fd)
    last = 0
    for k in range(0, len(data) - len(data) % 8, 8):
        last = max(last, int.from_bytes(data[k : k + 8], "big"))
    return last


def check(path: str, last_ack: int, thorough: bool, reference_records) -> int:
    storage = FileStorage(path)
    assert not os.path.exists(path + ".pack")
    size = os.path.getsize(path)
    assert storage.shelf.end == size
    # The file is complete transactions only (the naive reader asserts that).
    records = reference_records(Path(path).read_bytes())
    connection = Connection(storage)
    root = connection.get_root()
    n = root.get("n", 0)
    assert last_ack <= n <= last_ack + 1, (last_ack, n)
    if n:
        tree = root["tree"]
        deleted = root.get("deleted", 0)
        assert len(tree) == n - deleted
        assert tree.get_max_item()[0] == n
        assert tree[n][0] == n
        keys = range(1, n + 1) if thorough else range(max(1, n - 30), n + 1)
        for key in keys:
            if key in tree:
                value = tree[key]
                assert value[0] == key and len(value) == 2
            else:
                assert (key + 10) % 7 == 0 and key + 10 <= n  # deleted by commit key+10
        if thorough:
            for oid, _record in storage.gen_oid_record(start_oid=b"\0" * 8):
                assert storage.load(oid) == records[oid]
    storage.close()
    return n


def test_sigkill_during_commits_and_packs(tmp_path, reference_records):
    path = str(tmp_path / "crash.durus")
    rng = random.Random(20240601)
    recoveries = 0
    during_pack = 0  # kills that left an unfinished F.pack behind
    last_n = 0
    kills = {"commit": 0, "write": 0, "pack": 0}
    for k in range(KILLS):
        mode = ("commit", "write", "pack")[k % 3]
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns
            code = 3
            try:
                os.close(read_end)
                writer(path, write_end, mode, k)
            except BaseException:
                import traceback

                with open(path + ".child-error", "w") as f:
                    traceback.print_exc(file=f)
            finally:
                os._exit(code)
        os.close(write_end)
        time.sleep(rng.uniform(0.001, 0.05 if mode == "pack" else 0.02))
        os.kill(pid, signal.SIGKILL)
        _pid, status = os.waitpid(pid, 0)
        if os.path.exists(path + ".child-error"):
            pytest.fail("the writer failed:\n" + Path(path + ".child-error").read_text())
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
        kills[mode] += 1
        last_ack = max(read_acks(read_end), last_n)
        folder = os.listdir(tmp_path)
        cut_before = sum(".cut-" in name for name in folder)
        assert "crash.durus" in folder or last_n == 0  # never without the database
        during_pack += "crash.durus.pack" in folder
        n = check(path, last_ack, thorough=k % 50 == 49 or k == KILLS - 1,
                  reference_records=reference_records)
        after = os.listdir(tmp_path)
        recoveries += sum(".cut-" in name for name in after) - cut_before
        # The writer's open removed the temporaries the killed one left (.pack, .tmp).
        stray = [name for name in after if name not in SIDE_FILES and ".cut-" not in name]
        assert not stray, stray
        assert n >= last_n
        last_n = n
        # Keep the disk use modest: the side files were checked, drop them, and
        # pack when the blobs made the file big (one more pack mode, in-process).
        for name in after:
            if ".cut-" in name or name.endswith(".prepack"):
                os.unlink(tmp_path / name)
        if os.path.getsize(path) > 24 << 20:
            storage = FileStorage(path)
            storage.pack()
            storage.close()
    print(f"\nSIGKILLs: {kills} (total {sum(kills.values())}); {during_pack} in the middle "
          f"of a pack; incomplete tails recovered: {recoveries}; commits: {last_n}")
    assert sum(kills.values()) == KILLS
    assert last_n > 0
    if KILLS >= 60:
        assert recoveries > 0  # some kills did land inside a write
        assert during_pack > 0
