"""A real server process: sessions, addresses, stats, stop, pack, read-only."""

from __future__ import annotations

import json
import os
import socket

import pytest

from durus.client_storage import ClientStorage, RequestRefusedError
from durus.error import ReadConflictError
from durus.persistent_dict import PersistentDict
from durus.persistent_list import PersistentList
from durus.storage_server import (
    DEFAULT_GCBYTES,
    DEFAULT_HOST,
    DEFAULT_PORT,
    STATUS_INVALID,
    STATUS_KEYERROR,
    STATUS_OKAY,
    TIMEOUT,
    ClientError,
    HostPortAddress,
    InheritedSocket,
    SocketAddress,
    StorageServer,
    UnixAbstractAddress,
    UnixDomainSocketAddress,
    stop_allowed,
    wait_for_server,
)
from durus.wire_protocol import DurusConnectionError


def test_durus_4_3_names_are_importable():
    assert (STATUS_OKAY, STATUS_KEYERROR, STATUS_INVALID) == (b"O", b"K", b"I")
    assert (TIMEOUT, DEFAULT_HOST, DEFAULT_PORT, DEFAULT_GCBYTES) == (10, "127.0.0.1", 2972, 0)
    assert issubclass(ClientError, Exception)
    assert StorageServer.protocol == b"\x00\x00\x00\x01"
    assert callable(wait_for_server)
    for cls in (HostPortAddress, UnixAbstractAddress, UnixDomainSocketAddress, InheritedSocket):
        assert issubclass(cls, SocketAddress)


def test_server_binds_loopback_by_default():
    from durus.storage import MemoryStorage

    server = StorageServer(MemoryStorage())
    assert str(server.address) == "127.0.0.1:2972"
    assert server.clients == [] and server.packer is None and server.bytes_since_pack == 0


def test_limits_are_one_object_and_the_old_keywords_still_work():
    from durus.server_config import ServerLimits
    from durus.storage import MemoryStorage

    default = StorageServer(MemoryStorage())
    assert default.limits == ServerLimits()
    assert (default.max_clients, default.prefetch_records) == (1024, 256)
    limits = ServerLimits(max_clients=8, pack_slice=1)
    server = StorageServer(MemoryStorage(), limits=limits, max_clients=3, max_commit_bytes=2**40)
    # A keyword overrides the object; sizes are clamped as before.
    assert server.limits == ServerLimits(max_clients=3, pack_slice=1.0, max_commit_bytes=2**40)
    assert (server.max_clients, server.pack_slice, server.max_commit_bytes) == (3, 1.0, 2**32 - 1)
    assert isinstance(server.pack_slice, float) and isinstance(server.max_clients, int)
    with pytest.raises(TypeError, match="max_client"):
        StorageServer(MemoryStorage(), max_client=3)
    with pytest.raises(TypeError, match="max_clients must be a number"):
        ServerLimits(max_clients="3")


@pytest.mark.parametrize(
    ("family", "peer", "allow", "expected"),
    [
        (socket.AF_INET, ("127.0.0.1", 4000), False, True),
        (socket.AF_INET6, ("::1", 4000, 0, 0), False, True),
        (socket.AF_UNIX, "", False, True),
        (socket.AF_INET, ("10.1.2.3", 4000), False, False),
        (socket.AF_INET6, ("2001:db8::5", 4000, 0, 0), False, False),
        (socket.AF_INET, ("10.1.2.3", 4000), True, True),
    ],
)
def test_stop_policy(family, peer, allow, expected):
    assert stop_allowed(family, peer, allow) is expected


def test_commit_and_read_back_over_tcp(start_server):
    server = start_server()
    connection = server.connection()
    root = connection.get_root()
    root["list"] = PersistentList(range(10))
    root["dict"] = PersistentDict(a=1)
    connection.commit()
    info = connection.storage.server_info
    assert info["server"] == "durus-server" and "X" in info["features"]
    other = server.connection()
    assert list(other.get_root()["list"]) == list(range(10))
    assert other.get_root()["dict"]["a"] == 1
    stats = other.storage.get_server_stats()
    assert stats["commits"] == 2 and stats["clients"] == 2  # the root's and ours
    connection.storage.close()
    other.storage.close()


def test_unix_socket_options_and_removal(start_server, tmp_path):
    path = str(tmp_path / "durus.sock")
    server = start_server(storage="memory", address=path, umask=0o077)
    assert os.stat(path).st_mode & 0o777 == 0o700
    connection = server.connection()
    connection.get_root()["x"] = 1
    connection.commit()
    connection.storage.close()
    assert server.terminate() == 0
    assert not os.path.exists(path)


def test_abstract_socket(start_server):
    name = f"@durus-server-test-{os.getpid()}"
    server = start_server(storage="memory", address=name)
    connection = server.connection()
    connection.get_root()["x"] = 1
    connection.commit()
    assert server.connection().get_root()["x"] == 1


def test_protocol_1_client_and_extended_client_interleave(start_server):
    server = start_server(storage="memory")
    old = server.connection(extensions=False)
    assert old.storage.server_info is None
    new = server.connection()
    old.get_root()["n"] = 1
    old.commit()
    new.abort()
    new.get_root()["n"] += 1
    new.commit()
    old.abort()
    assert old.get_root()["n"] == 2
    assert server.connection(extensions=False).get_root()["n"] == 2


def test_q_from_loopback_stops_the_server(start_server, file_digest):
    server = start_server()
    connection = server.connection()
    connection.get_root()["kept"] = True
    connection.commit()
    connection.storage.s.sendall(b"Q")
    assert server.proc.wait(30) == 0
    assert "Quit requested" in server.log_text()
    from durus.file_storage import FileStorage

    storage = FileStorage(server.file)  # closed cleanly: the lock is free
    storage.close()


def test_sigterm_is_a_clean_shutdown(start_server):
    server = start_server()
    connection = server.connection()
    connection.get_root()["x"] = 1
    connection.commit()
    assert server.terminate() == 0
    assert "Stopping (signal SIGTERM)" in server.log_text()
    with pytest.raises(DurusConnectionError):
        connection.get_root()["x"] = 2
        connection.commit()


def test_stats_command_and_unknown_command(start_server, raw_session, recv_exact):
    server = start_server(storage="memory")
    sock = raw_session(server.address)
    sock.sendall(b"T")
    body = recv_exact(sock, int.from_bytes(recv_exact(sock, 4), "big"))
    stats = json.loads(body)
    assert stats["clients"] == 1 and "commits" in stats
    sock.sendall(b"Z")
    assert sock.recv(10) == b""  # unknown command: disconnected
    sock.close()
    assert "No such command code" in server.log_text()


def test_dot_is_a_silent_goodbye(start_server, raw_session):
    server = start_server(storage="memory")
    sock = raw_session(server.address)
    sock.sendall(b".")
    assert sock.recv(10) == b""
    sock.close()
    assert server.connection().get_root() is not None
    assert "dropping" not in server.log_text()


def test_pack_on_an_empty_database_is_refused(start_server, raw_session, recv_exact):
    server = start_server()  # a new database: rootless, as in Durus 4.3
    sock = raw_session(server.address, hello=True)
    sock.sendall(b"P")
    assert recv_exact(sock, 1) == b"E"
    message = recv_exact(sock, int.from_bytes(recv_exact(sock, 4), "big"))
    assert b"no root" in message
    old = raw_session(server.address)
    old.sendall(b"P")
    assert old.recv(10) == b""  # a protocol-1 client is disconnected instead
    old.close()
    sock.close()
    assert server.alive()
    assert server.connection().get_root() is not None


def test_pack_removes_garbage_and_keeps_serving(start_server):
    server = start_server()
    connection = server.connection()
    root = connection.get_root()
    root["garbage"] = PersistentList([PersistentDict() for _ in range(20)])
    connection.commit()
    garbage_oid = root["garbage"]._p_oid
    del root["garbage"]
    connection.commit()
    connection.pack()
    stats = connection.storage.get_server_stats()
    assert stats["packs"] >= 1 or stats["pack_running"]
    for _ in range(200):
        if connection.storage.get_server_stats()["packs"] >= 1:
            break
        connection.abort()
    assert connection.storage.get_server_stats()["packs"] >= 1
    connection.abort()
    # As in Durus 4.3: the connection that made the garbage keeps its ghost,
    # whose load is a conflict; a fresh connection finds nothing.
    ghost = connection.get(garbage_oid)
    assert ghost is not None and ghost._p_is_ghost()
    with pytest.raises(ReadConflictError):
        len(ghost)
    assert server.connection().get(garbage_oid) is None
    root["after"] = 1
    connection.commit()


def test_read_only_storage_refuses_commits(start_server, tmp_path, file_digest):
    path = str(tmp_path / "ro.durus")
    writer = start_server(file=path)
    connection = writer.connection()
    connection.get_root()["x"] = 1
    connection.commit()
    connection.storage.close()
    writer.terminate()
    before = file_digest(path)
    server = start_server(file=path, readonly=True)
    reader = server.connection()
    assert reader.get_root()["x"] == 1
    reader.get_root()["x"] = 2
    with pytest.raises(RequestRefusedError, match="read-only"):
        reader.commit()
    reader.abort()
    old = server.connection(extensions=False)
    old.get_root()["x"] = 3
    with pytest.raises(DurusConnectionError):
        old.commit()
    assert server.connection().get_root()["x"] == 1
    assert file_digest(path) == before


def test_max_clients(start_server):
    server = start_server(storage="memory", max_clients=2)
    a = server.client()
    b = server.client()
    with pytest.raises((DurusConnectionError, OSError)):
        ClientStorage(address=server.address, timeout=10)
    a.close()
    b.close()


def test_ipv6_loopback(start_server):
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
            port = probe.getsockname()[1]
    except OSError:
        pytest.skip("no IPv6 loopback here")
    server = start_server(storage="memory", address=("::1", port))
    connection = server.connection()
    connection.get_root()["v6"] = True
    connection.commit()
    connection.storage.s.sendall(b"Q")  # ::1 is loopback: obeyed
    assert server.proc.wait(30) == 0


def test_socket_activation(tmp_path):
    import subprocess
    import sys

    from durus.client_storage import ClientStorage
    from durus.connection import Connection

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    fd = listener.fileno()
    os.set_inheritable(fd, True)
    config = json.dumps({"storage": "memory", "address": ["127.0.0.1", 1]})
    main = os.path.join(os.path.dirname(__file__), "server_main.py")
    log = open(tmp_path / "activated.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-c",
         "import os, sys; os.dup2(int(sys.argv[1]), 3);"
         "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1');"
         "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])",
         str(fd), main, config],
        pass_fds=(fd,), stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        listener.close()  # the server owns it now
        connection = Connection(ClientStorage(port=port, timeout=30))
        connection.get_root()["activated"] = True
        connection.commit()
        connection.storage.close()
        proc.terminate()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        log.close()
    assert f"Ready on 127.0.0.1:{port}" in (tmp_path / "activated.log").read_text()


def test_a_new_database_gets_its_root_before_any_client(start_server):
    # create_root=True (durus -s --create-root): no client ever finds the
    # database rootless, Durus 4.3's clients included.
    server = start_server(create_root=True)
    storage = server.client()
    record = storage.load(b"\0" * 8)  # before any Connection: the server wrote it
    assert record[:8] == b"\0" * 8 and b"PersistentDict" in record
    storage.close()
    connections = [server.connection() for _ in range(4)]
    roots = [connection.get_root() for connection in connections]
    assert all(type(root) is PersistentDict and len(root) == 0 for root in roots)
    roots[0]["x"] = 1
    connections[0].commit()
    connections[1].abort()
    assert roots[1]["x"] == 1
    for connection in connections:
        connection.storage.close()


def test_by_default_a_new_database_stays_rootless_as_in_durus_4_3(start_server, tmp_path):
    from durus.error import DurusKeyError

    server = start_server()
    storage = server.client()
    with pytest.raises(DurusKeyError):
        storage.load(b"\0" * 8)
    assert storage.new_oid() == b"\0" * 8  # Durus 4.3's first oid of a new database
    storage.close()


@pytest.mark.parametrize("create_root", [False, True])
def test_first_clients_opening_a_new_database_at_once_all_succeed(start_server, create_root):
    # The first clients used to race to create the root, and the losers failed
    # ("the database has no root yet and another client is creating it"): now
    # they wait for the root the winner commits (or the server wrote it).
    import subprocess
    import sys

    server = start_server(create_root=create_root)
    program = (
        "import sys\n"
        "from durus.client_storage import ClientStorage\n"
        "from durus.connection import Connection\n"
        "from durus.error import ConflictError\n"
        f"storage = ClientStorage(port={server.port})\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()  # open the database together\n"
        "connection = Connection(storage)\n"
        "while True:  # writers of one root conflict: the usual retry\n"
        "    try:\n"
        "        connection.get_root()[sys.argv[1]] = 1\n"
        "        connection.commit()\n"
        "        break\n"
        "    except ConflictError:\n"
        "        connection.abort()\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", program, f"client{i}"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(6)
    ]
    for proc in procs:
        assert proc.stdout.readline() == "ready\n"
    for proc in procs:
        proc.stdin.close()
    outputs = [proc.stdout.read() for proc in procs]
    for proc in procs:
        proc.wait(120)
    assert [proc.returncode for proc in procs] == [0] * 6, outputs
    check = server.connection()
    assert sorted(check.get_root()) == [f"client{i}" for i in range(6)]
    check.storage.close()


def test_a_socket_put_in_place_of_the_clients_speaks_plain_protocol_1(start_server):
    # Durus 4.3's utest_client_storage replaces ClientStorage.s with an object
    # answering in protocol 1; ours reads it through its recv(), without extensions.
    from durus.connection import Connection
    from durus.error import ProtocolError, WriteConflictError

    server = start_server()
    storage = server.client()
    connection = Connection(storage)
    ours, theirs = socket.socketpair()
    storage.s = ours
    assert storage.s is ours
    theirs.sendall(b"\0\0\0\0" + STATUS_INVALID)  # no invalidations, then a refusal
    connection.get_root()._p_note_change()
    with pytest.raises(WriteConflictError):
        connection.commit()
    assert theirs.recv(1) == b"C"  # protocol 1's commit, not the extension's X
    theirs.sendall(b"\0\0\0\0")  # the abort's sync: no invalidations
    connection.abort()
    theirs.sendall(b"?")
    with pytest.raises(ProtocolError):
        storage.load(b"\0" * 8)
    storage.close()
    theirs.close()
