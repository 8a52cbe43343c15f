"""A commit that cannot be written (disk full, file too large) leaves the file as it was.

Disk full is simulated without privileges: the child process lowers its
RLIMIT_FSIZE (with SIGXFSZ ignored, writes past the limit fail with EFBIG,
after a short write when they straddle it), exactly like a full disk for the
storage; raising the limit again is "space returns".
"""

from __future__ import annotations

import json
import sys

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX resource limits")

CHILD = r"""
import json, os, resource, signal, sys
from pathlib import Path
from durus.connection import Connection
from durus.file_storage import DiskWriteError, FileStorage
from durus.persistent_list import PersistentList

path = sys.argv[1]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
out = {}
storage = FileStorage(path)
connection = Connection(storage)
root = connection.get_root()
root["small"] = 1
connection.commit()
before = Path(path).read_bytes()
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 3000, hard))

# 1. A commit too big for the space left: a clear error, the file unchanged.
root["big"] = PersistentList([os.urandom(100000)])
try:
    connection.commit()
except DiskWriteError as error:
    out["error"] = [error.errno, str(error), error.usable, isinstance(error, OSError)]
out["unchanged"] = Path(path).read_bytes() == before
out["size"] = [os.path.getsize(path), len(before)]
connection.abort()

# 2. Still usable: a small commit fits.
root["small"] = 2
connection.commit()
out["small"] = Connection(FileStorage(path, readonly=True)).get_root()["small"]

# 3. The same with the storage API and group commit: the records stay pending.
middle = Path(path).read_bytes()
storage.begin()
name = storage.new_oid()
record = name + (100000).to_bytes(4, "big") + os.urandom(100000)
storage.store(name, record)
try:
    storage.end(sync_to_disk=False)
except DiskWriteError as error:
    out["group_error"] = error.errno
out["group_unchanged"] = Path(path).read_bytes() == middle

# 4. Space returns: the pending commit can be retried, then normal commits.
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
storage.end(sync_to_disk=False)
storage.flush_to_disk()
out["retried"] = storage.load(name) == record
root["big"] = PersistentList([b"x" * 100000])
connection.commit()
storage.close()
storage = FileStorage(path)
connection = Connection(storage)
out["reopened"] = [connection.get_root()["small"], len(connection.get_root()["big"][0]),
                   storage.load(name) == record]
storage.close()
print(json.dumps(out))
"""


def test_disk_full_during_commit(tmp_path, run_python):
    path = str(tmp_path / "full.durus")
    result = run_python(CHILD, path)
    out = json.loads(result.stdout)
    errno_value, message, usable, is_os_error = out["error"]
    assert errno_value == 27  # EFBIG: the simulated full disk
    assert "rolled back" in message and path in message
    assert usable is True and is_os_error is True
    assert out["unchanged"] is True, out["size"]
    assert out["small"] == 2
    assert out["group_error"] == 27
    assert out["group_unchanged"] is True
    assert out["retried"] is True
    assert out["reopened"] == [2, 100000, True]


RECOVERY_CHILD = r"""
import json, os, resource, signal, sys
from durus.file_storage import FileStorage

path = sys.argv[1]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
before = open(path, "rb").read()
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (10, hard))
out = {}
try:
    FileStorage(path)
except OSError as error:
    out["error"] = error.errno
out["unchanged"] = open(path, "rb").read() == before
out["files"] = sorted(os.listdir(os.path.dirname(path)))
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
storage = FileStorage(path)
out["recovered"] = os.path.getsize(path) < len(before)
storage.close()
print(json.dumps(out))
"""


def test_no_room_to_keep_the_cut_tail_leaves_the_file_alone(tmp_path, run_python):
    from durus.connection import Connection
    from durus.file_storage import FileStorage

    path = str(tmp_path / "cut.durus")
    connection = Connection(FileStorage(path))
    connection.get_root()["x"] = "y" * 1000
    connection.commit()
    connection.get_storage().close()
    with open(path, "r+b") as f:
        f.truncate(f.seek(0, 2) - 5)
    out = json.loads(run_python(RECOVERY_CHILD, path).stdout)
    assert out["error"] == 27
    assert out["unchanged"] is True
    assert out["files"] == ["cut.durus", "cut.durus.index"]
    assert out["recovered"] is True
