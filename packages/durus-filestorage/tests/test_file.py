"""durus.file.File: Durus 4.3's locked file wrapper, on real files and real processes."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durus.connection import Connection
from durus.error import DurusError
from durus.file import File, FileLockedError, FileOperationError
from durus.file_storage import FileStorage
from durus.utils import (
    ShortRead,
    read,
    read_int4,
    read_int4_str,
    read_int8,
    read_int8_str,
    write,
    write_int4,
    write_int4_str,
    write_int8,
    write_int8_str,
)

#: A child that takes the lock of argv[1] with durus.file.File (ours or Durus 4.3's).
HOLD = """
import sys
from durus.file import File
f = File(sys.argv[1])
f.obtain_lock()
print("locked", flush=True)
sys.stdin.read()
f.close()
"""

#: A child that tries to lock argv[1], with File and with FileStorage.
PROBE = """
import sys
from durus.file import File
from durus.file_storage import FileStorage
f = File(sys.argv[1])
try:
    f.write(b"probe")
except IOError as error:
    print("file refused", type(error).__name__)
else:
    print("file locked")
f.close()
try:
    FileStorage(sys.argv[1])
except ValueError:  # not a database, but not locked either
    print("storage free")
except IOError as error:
    print("storage refused", type(error).__name__)
"""


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


@contextmanager
def lock_held_by_child(path: str, python: str = sys.executable, env=None) -> Iterator[None]:
    child = subprocess.Popen(
        [python, "-c", HOLD, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env() if env is None else env,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        yield
    finally:
        child.communicate("", timeout=60)
    assert child.returncode == 0


def run(code: str, *args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout.split()


def test_a_missing_file_is_created_an_existing_one_kept_bytes_unchanged(tmp_path):
    path = str(tmp_path / "f.bin")
    f = File(path)
    assert os.path.exists(path) and len(f) == 0 and f.tell() == 0
    assert (f.get_name(), f.name, f.is_temporary(), f.is_readonly()) == (path, path, False, False)
    data = bytes(range(256)) + b"\r\n\n\r"
    f.write(data)
    assert f.has_lock
    f.close()
    f.close()  # twice is fine
    assert not f.has_lock and f.closed
    assert len(f) == len(data)  # a closed File still answers from its name
    g = File(path)  # opening never truncates
    assert g.read() == data
    g.seek(10)
    assert g.read(3) == data[10:13] and g.read(0) == b"" and g.tell() == 13
    g.seek_end()
    assert g.tell() == len(data) and g.read(5) == b""
    g.close()
    with pytest.raises(ValueError):
        g.read(1)


def test_readonly_files_cannot_change(tmp_path):
    path = str(tmp_path / "ro.bin")
    with pytest.raises(FileNotFoundError):
        File(path, readonly=True)
    assert not os.path.exists(path)
    with File(path) as f:
        f.write(b"content")
    r = File(path, readonly=True)
    assert r.is_readonly() and r.readonly and not r.has_lock
    for action in (
        lambda: r.write(b"x"),
        r.truncate,
        r.obtain_lock,
        lambda: r.rename(path + ".moved"),
    ):
        with pytest.raises(FileOperationError) as caught:
            action()
        # What Durus 4.3 raised (an assert) and what read-only Python files raise.
        assert isinstance(caught.value, AssertionError)
        assert isinstance(caught.value, io.UnsupportedOperation)
        assert isinstance(caught.value, DurusError)
    with pytest.raises(OSError):
        r.file.write(b"x")
    assert not r.has_lock and not os.path.exists(path + ".moved")
    assert r.read() == b"content"
    r.flush()
    r.fsync()
    r.close()
    with open(path, "rb") as f:
        assert f.read() == b"content"
    with pytest.raises(FileOperationError):
        File(readonly=True)


def test_one_writer_at_a_time_in_one_process(tmp_path):
    path = str(tmp_path / "lock.bin")
    g, h = File(path), File(path)
    assert not g.has_lock and not h.has_lock  # opening takes no lock
    g.write(b"a")
    with pytest.raises(FileLockedError) as caught:
        h.write(b"b")
    error = caught.value
    assert isinstance(error, BlockingIOError) and error.errno == errno.EAGAIN
    assert error.filename == path and path in str(error) and "readonly=True" in str(error)
    for action in (h.truncate, h.obtain_lock, lambda: h.rename(path + ".2")):
        with pytest.raises(FileLockedError):
            action()
    assert not h.has_lock and os.path.exists(path) and not os.path.exists(path + ".2")
    g.release_lock()
    assert not g.has_lock
    h.seek_end()
    h.write(b"b")
    with pytest.raises(FileLockedError):
        g.write(b"c")
    h.close()
    g.obtain_lock()
    g.obtain_lock()  # already held: nothing to do
    g.close()
    with open(path, "rb") as f:
        assert f.read() == b"ab"


def test_a_file_and_a_file_storage_exclude_each_other(tmp_path):
    path = str(tmp_path / "db.durus")
    storage = FileStorage(path)
    f = File(path)
    with pytest.raises(FileLockedError):
        f.obtain_lock()
    assert FileStorage.has_format(f)  # a File is what Durus 4.3's has_format took
    f.close()
    storage.close()
    f = File(path)
    f.obtain_lock()
    with pytest.raises(FileLockedError):
        FileStorage(path)
    f.close()
    FileStorage(path).close()


def test_a_lock_held_by_another_process(tmp_path):
    path = str(tmp_path / "shared.bin")
    with lock_held_by_child(path):
        f = File(path)
        with pytest.raises(FileLockedError):
            f.write(b"mine")
        with pytest.raises(FileLockedError):
            FileStorage(path)
        assert not f.has_lock
    f.write(b"mine")  # the child has closed its File
    refused = ["file", "refused", "FileLockedError", "storage", "refused", "FileLockedError"]
    assert run(PROBE, path) == refused
    f.close()
    assert run(PROBE, path) == ["file", "locked", "storage", "free"]


@pytest.mark.interop
def test_durus43_and_our_file_locks_exclude_each_other(tmp_path, durus43):
    path = str(tmp_path / "both.bin")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    with lock_held_by_child(path, os.environ["DURUS43_PYTHON"], env):
        f = File(path)
        with pytest.raises(FileLockedError):
            f.write(b"ours")
        with pytest.raises(FileLockedError):
            FileStorage(path)
    f.write(b"ours")
    refused = ["file", "refused", "BlockingIOError", "storage", "refused", "BlockingIOError"]
    assert durus43(PROBE, path).stdout.split() == refused
    f.close()
    with open(path, "rb") as g:
        assert g.read() == b"ours"


def test_truncate(tmp_path):
    f = File(str(tmp_path / "t.bin"))
    f.write(b"0123456789")
    f.seek(4)
    f.truncate()
    assert len(f) == 4 and f.tell() == 4
    f.truncate(2)
    assert len(f) == 2 and f.tell() == 4
    f.truncate(6)
    f.seek(0)
    assert f.read() == b"01\0\0\0\0"
    f.close()


def test_rename_replaces_the_target_and_keeps_the_lock(tmp_path):
    old, new = str(tmp_path / "old.bin"), str(tmp_path / "new.bin")
    with open(new, "wb") as target:
        target.write(b"replaced")
    f = File(old)
    f.write(b"hello")
    f.rename(new)
    assert f.get_name() == new and not os.path.exists(old)
    assert f.has_lock and f.tell() == 0  # as Durus 4.3: locked, at the start
    other = File(new)
    with pytest.raises(FileLockedError):
        other.obtain_lock()
    other.close()
    assert f.read() == b"hello"
    f.write(b"!")
    f.fsync()
    f.rename(new)  # its own name: nothing happens
    f.close()
    with open(new, "rb") as g:
        assert g.read() == b"hello!"


def test_rename_to_another_spelling_of_its_own_path_keeps_the_file(tmp_path, monkeypatch):
    # Durus 4.3 unlinked the target first: here that deleted the file itself.
    monkeypatch.chdir(tmp_path)
    f = File("same.bin")
    f.write(b"keep me")
    f.rename(str(tmp_path / "same.bin"))
    f.rename("./same.bin")
    assert f.get_name() == "./same.bin"
    f.close()
    with open(tmp_path / "same.bin", "rb") as g:
        assert g.read() == b"keep me"


def test_a_failed_rename_leaves_the_file_usable(tmp_path):
    path = str(tmp_path / "a.bin")
    f = File(path)
    f.write(b"data")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "x").write_bytes(b"")
    with pytest.raises(OSError):
        f.rename(str(tmp_path / "dir"))
    assert f.get_name() == path and f.has_lock
    # If its name was taken by another file meanwhile, that file is not moved.
    os.rename(path, path + ".moved")
    with open(path, "wb") as impostor:
        impostor.write(b"someone else")
    with pytest.raises(FileNotFoundError):
        f.rename(str(tmp_path / "b.bin"))
    assert not os.path.exists(tmp_path / "b.bin")
    assert len(f) == 4  # the open file's size, not the impostor's
    f.seek(0)
    assert f.read() == b"data"
    f.close()


def test_temporary_files(tmp_path):
    f = File()
    name = f.get_name()
    assert f.is_temporary() and os.path.dirname(name) == tempfile.gettempdir()
    f.rename(name)  # its own name: allowed, nothing happens
    with pytest.raises(FileOperationError) as caught:
        f.rename(name + ".renamed")
    assert isinstance(caught.value, AssertionError)
    assert os.path.exists(name) and not os.path.exists(name + ".renamed")
    f.write(b"abc")
    f.seek(0)
    assert len(f) == 3 and f.read(1) == b"a" and f.read() == b"bc"
    f.close()
    assert not os.path.exists(name)
    with pytest.raises(OSError):
        len(f)
    g = File(prefix="pre-", suffix=".tmp", dir=str(tmp_path))
    base = os.path.basename(g.get_name())
    assert os.path.dirname(g.get_name()) == str(tmp_path)
    assert base.startswith("pre-") and base.endswith(".tmp")
    del g
    assert os.listdir(tmp_path) == []  # removed when garbage
    kept = File(dir=str(tmp_path), delete=False)
    assert kept.is_temporary()
    kept.close()
    assert os.path.exists(kept.get_name())
    # tempfile's choices are ignored for a named file (as in Durus 4.3), others refused.
    named = File(str(tmp_path / "named.bin"), prefix="ignored-")
    assert named.get_name() == str(tmp_path / "named.bin")
    named.close()
    with pytest.raises(TypeError):
        File(str(tmp_path / "other.bin"), mode="w")
    assert not os.path.exists(tmp_path / "other.bin")


def test_the_durus43_pattern_temporary_name_then_file_storage():
    f = File(prefix="shelftest")
    name = f.get_name()
    f.close()
    connection = Connection(FileStorage(name))
    connection.get_root()["x"] = 1
    connection.commit()
    connection.get_storage().close()
    with File(name, readonly=True) as g:
        assert FileStorage.has_format(g)
    for leftover in (name, name + ".index"):
        if os.path.exists(leftover):
            os.unlink(leftover)


def test_temporary_files_are_removed_at_exit_even_if_a_daemon_thread_holds_them(tmp_path):
    # Durus 4.3 left this one behind: the thread's frame never releases it.
    code = """
        import sys, threading
        from durus.file import File
        ready = threading.Event()
        def hold():
            f = File(dir=sys.argv[1])
            f.write(b"x")
            print(f.get_name(), flush=True)
            ready.set()
            threading.Event().wait()
        threading.Thread(target=hold, daemon=True).start()
        ready.wait()
        kept = File(dir=sys.argv[1])  # a module global at exit
    """
    (name,) = run(code, str(tmp_path))
    assert os.path.dirname(name) == str(tmp_path)
    assert os.listdir(tmp_path) == []


def test_a_forked_child_leaves_the_parents_temporary_file_and_lock_alone():
    code = """
        import os, sys
        from durus.file import File
        f = File()
        f.write(b"data")
        pid = os.fork()
        if pid == 0:
            f.close()
            sys.exit(0)
        os.waitpid(pid, 0)
        print(os.path.exists(f.get_name()), f.has_lock)
        probe = File(f.get_name())
        try:
            probe.obtain_lock()
        except OSError:
            print("held")
        else:
            print("free")
        probe.close()
        name = f.get_name()
        f.close()
        print(os.path.exists(name))
    """
    assert run(code) == ["True", "True", "held", "False"]


def test_durus_utils_read_and_write_a_file():
    f = File()
    write(f, b"raw")
    write_int4(f, 7)
    write_int8(f, 1 << 40)
    write_int4_str(f, b"four")
    write_int8_str(f, b"eight")
    f.seek(0)
    assert read(f, 3) == b"raw"
    assert (read_int4(f), read_int8(f)) == (7, 1 << 40)
    assert (read_int4_str(f), read_int8_str(f)) == (b"four", b"eight")
    with pytest.raises(ShortRead):
        read(f, 1)
    f.seek(0)
    assert not FileStorage.has_format(f)
    f.close()


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("seek"), st.integers(0, 200)),
            st.tuples(st.just("seek_relative"), st.integers(-40, 40)),
            st.tuples(st.just("seek_from_end"), st.integers(-40, 0)),
            st.tuples(st.just("seek_end"), st.none()),
            st.tuples(st.just("write"), st.binary(max_size=50)),
            st.tuples(st.just("read"), st.none() | st.integers(0, 60)),
            st.tuples(st.just("truncate"), st.none() | st.integers(0, 200)),
            st.tuples(st.just("reopen"), st.none()),
            st.tuples(st.just("rename"), st.none()),
        ),
        max_size=30,
    )
)
def test_random_operations_match_a_bytearray(operations):
    with tempfile.TemporaryDirectory() as directory:
        names = [os.path.join(directory, "a"), os.path.join(directory, "b")]
        f = File(names[0])
        model, position = bytearray(), 0
        for op, arg in operations:
            if op == "seek" or op == "seek_relative" or op == "seek_from_end":
                origin = {"seek": 0, "seek_relative": position, "seek_from_end": len(model)}[op]
                if origin + arg < 0:
                    continue
                f.seek(arg, ("seek", "seek_relative", "seek_from_end").index(op))
                position = origin + arg
            elif op == "seek_end":
                f.seek_end()
                position = len(model)
            elif op == "write":
                f.write(arg)
                if arg and position > len(model):  # an empty write extends nothing
                    model.extend(bytes(position - len(model)))
                model[position : position + len(arg)] = arg
                position += len(arg)
            elif op == "read":
                expected = bytes(model[position:] if arg is None else model[position:][:arg])
                assert f.read(arg) == expected
                position += len(expected)
            elif op == "truncate":
                size = position if arg is None else arg
                f.truncate(arg)
                del model[size:]
                model.extend(bytes(size - len(model)))
            elif op == "reopen":
                f.close()
                f = File(f.get_name())
                position = 0
            else:
                f.rename(names[names[0] == f.get_name()])
                position = 0
            assert f.tell() == position and len(f) == len(model)
        with open(f.get_name(), "rb") as plain:
            assert plain.read() == model  # written through to the OS, not buffered
        f.seek(0)
        assert f.read() == model
        f.close()
