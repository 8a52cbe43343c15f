"""ClientStorage against real sockets: a scripted protocol-1 peer, or raw bytes."""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading

import pytest

from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.error import (
    ConflictError,
    DurusError,
    DurusKeyError,
    ProtocolError,
    ReadConflictError,
    WriteConflictError,
)
from durus.wire_protocol import DurusConnectionError, UnixAbstractAddress


def oid(n: int) -> bytes:
    return n.to_bytes(8, "big")


def free_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_connect_refused_is_a_clear_oserror():
    port = free_port()
    with pytest.raises(DurusConnectionError) as info:
        ClientStorage(port=port, timeout=5)
    assert isinstance(info.value, OSError) and isinstance(info.value, DurusError)
    assert info.value.errno == errno.ECONNREFUSED
    assert f"127.0.0.1:{port}" in str(info.value)


def test_missing_unix_socket_is_refused(tmp_path):
    with pytest.raises(DurusConnectionError, match="nothing is listening"):
        ClientStorage(address=str(tmp_path / "nothing"), timeout=5)


def test_a_silent_server_times_out_instead_of_hanging(raw_listener, recv_exact):
    done = threading.Event()

    def silent(conn):
        recv_exact(conn, 5)  # the V request, never answered
        done.wait(30)

    raw_listener.serve_in_thread(silent)
    try:
        with pytest.raises(DurusConnectionError) as info:
            ClientStorage(port=raw_listener.port, timeout=0.3)
        assert info.value.errno == errno.ETIMEDOUT
        assert str(raw_listener.port) in str(info.value)
    finally:
        done.set()


def test_a_server_dying_mid_session_raises_and_closes(mini_server):
    mini_server.close_after = b"S"
    storage = ClientStorage(address=mini_server.address, timeout=5)
    assert storage.server_info is None  # a protocol-1 peer: no extensions
    assert storage.sync() == []
    with pytest.raises(DurusConnectionError, match="lost the Durus server"):
        storage.load(oid(0))
    # Every later call fails at once, without touching the network.
    with pytest.raises(DurusConnectionError, match="closed"):
        storage.sync()
    storage.close()
    storage.close()


def test_a_stalled_reply_times_out(mini_server):
    mini_server.stall_after = b"M"
    storage = ClientStorage(address=mini_server.address, timeout=5)
    storage.timeout = 0.3
    storage.s.settimeout(0.3)
    storage.oid_pool_size = 40  # the peer answers 40 oids... then stalls on the next M
    storage.new_oid()
    for _ in range(39):
        storage.new_oid()
    with pytest.raises(DurusConnectionError, match="timed out"):
        storage.new_oid()


def test_protocol_version_mismatch(raw_listener, recv_exact):
    def old(conn):
        recv_exact(conn, 5)
        conn.sendall(b"\x00\x00\x00\x02")

    raw_listener.serve_in_thread(old)
    with pytest.raises(ProtocolError, match="Protocol version mismatch"):
        ClientStorage(port=raw_listener.port, timeout=5)


def test_session_bytes_are_durus_4_3s(raw_listener, recv_exact, record_for):
    """The exact bytes of a short session against a Durus 4.3-like peer."""
    seen = []
    root = record_for(oid(0))

    def script(conn):
        seen.append(recv_exact(conn, 5))
        conn.sendall(b"\x00\x00\x00\x01")
        seen.append(recv_exact(conn, 9))  # the hello: L of oid 2**64-1
        conn.sendall(b"K")
        seen.append(recv_exact(conn, 2))
        conn.sendall(b"".join(oid(i) for i in range(32)))
        seen.append(recv_exact(conn, 1))  # C
        conn.sendall(b"\x00\x00\x00\x00")
        length = struct.unpack(">I", recv_exact(conn, 4))[0]
        seen.append(recv_exact(conn, length))
        conn.sendall(b"O")
        seen.append(recv_exact(conn, 1))

    thread = raw_listener.serve_in_thread(script)
    storage = ClientStorage(port=raw_listener.port, timeout=5)
    assert storage.new_oid() == oid(0)
    assert storage.new_oid() == oid(1)  # the pool is used in the server's order
    storage.begin()
    storage.store(oid(0), root)
    storage.end(lambda oids: None)
    storage.close()
    thread.join(10)
    assert seen == [
        b"V\x00\x00\x00\x01",
        b"L" + b"\xff" * 8,
        b"M\x20",
        b"C",
        struct.pack(">I", 8 + len(root)) + oid(0) + root,
        b".",
    ]


def test_loads_and_read_conflicts(mini_server, record_for):
    mini_server.records[oid(1)] = record_for(oid(1))
    mini_server.invalid_loads.add(oid(2))
    storage = ClientStorage(address=mini_server.address, timeout=5)
    assert storage.load(oid(1)) == record_for(oid(1))
    with pytest.raises(ReadConflictError) as info:
        storage.load(oid(2))
    assert info.value.oids == [oid(2)]
    with pytest.raises(DurusKeyError):
        storage.load(oid(3))
    assert storage.load(oid(1)) == record_for(oid(1))  # still in step
    storage.close()


def test_bulk_load_reads_every_reply_before_raising(mini_server, record_for):
    for n in (1, 3, 5):
        mini_server.records[oid(n)] = record_for(oid(n), b"s%d" % n)
    storage = ClientStorage(address=mini_server.address, timeout=5)
    assert list(storage.bulk_load([oid(1), oid(3)])) == [record_for(oid(1), b"s1"),
                                                        record_for(oid(3), b"s3")]
    with pytest.raises(DurusKeyError):
        list(storage.bulk_load([oid(1), oid(2), oid(3), oid(4), oid(5)]))
    # Durus 4.3 left three replies in the socket here and the next call hung.
    assert storage.load(oid(5)) == record_for(oid(5), b"s5")
    storage.close()


def test_commit_conflict_from_the_list_returns_new_oids(mini_server, record_for):
    storage = ClientStorage(address=mini_server.address, timeout=5)
    storage.begin()
    first = storage.new_oid()
    second = storage.new_oid()
    storage.store(first, record_for(first))
    storage.store(second, record_for(second))
    mini_server.invalid = [oid(77)]
    seen = []

    def handle(oids):
        seen.append(oids)
        raise WriteConflictError(oids)

    with pytest.raises(WriteConflictError):
        storage.end(handle)
    assert seen == [[oid(77)]]
    assert mini_server.commits == []  # nothing written, int4 0 was sent
    # The new oids are reused first, in the same order.
    storage.begin()
    assert storage.new_oid() == first
    assert storage.new_oid() == second
    storage.store(first, record_for(first))
    storage.end(lambda oids: None)
    assert mini_server.records[first] == record_for(first)
    assert storage.sync() == []
    storage.close()


def test_server_conflict_status(raw_listener, recv_exact, record_for):
    def script(conn):
        recv_exact(conn, 5)
        conn.sendall(b"\x00\x00\x00\x01")
        recv_exact(conn, 9)
        conn.sendall(b"K")
        recv_exact(conn, 1)
        conn.sendall(b"\x00\x00\x00\x00")
        length = struct.unpack(">I", recv_exact(conn, 4))[0]
        recv_exact(conn, length)
        conn.sendall(b"I")
        recv_exact(conn, 1)
        conn.sendall(b"\x00\x00\x00\x01" + oid(9))

    raw_listener.serve_in_thread(script)
    storage = ClientStorage(port=raw_listener.port, timeout=5)
    storage.begin()
    storage.store(oid(0), record_for(oid(0)))
    with pytest.raises(WriteConflictError) as info:
        storage.end()
    assert info.value.oids is None
    assert storage.sync() == [oid(9)]
    storage.close()


def test_connection_over_a_protocol_1_peer(mini_server):
    connection = Connection(ClientStorage(address=mini_server.address, timeout=5))
    root = connection.get_root()
    root["answer"] = 42
    connection.commit()
    assert oid(0) in mini_server.records
    other = Connection(ClientStorage(address=mini_server.address, timeout=5))
    assert other.get_root()["answer"] == 42
    # Another writer changed the root: the commit conflicts and abort() recovers.
    mini_server.invalid = [oid(0)]
    root["answer"] = 43
    with pytest.raises(ConflictError):
        connection.commit()
    connection.abort()
    other.storage.close()
    connection.storage.close()


def test_unix_and_abstract_addresses(make_mini_server, tmp_path):
    path = str(tmp_path / "mini.sock")
    server = make_mini_server(socket.AF_UNIX, path)
    storage = ClientStorage(address=path, timeout=5)
    # As in Durus 4.3 a socket file is shown with its mode, owner and group.
    assert str(storage).startswith(f"ClientStorage({path} (rwx")
    assert storage.sync() == []
    storage.close()
    name = f"@durus-client-test-{os.getpid()}"
    make_mini_server(socket.AF_UNIX, UnixAbstractAddress(name).filename)
    storage = ClientStorage(address=name, timeout=5)
    assert storage.sync() == []
    storage.close()
    assert server.received[:2] == [b"V", b"L"]


def test_ipv6_address(make_mini_server):
    try:
        server = make_mini_server(socket.AF_INET6, ("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    storage = ClientStorage("::1", server.address[1], timeout=5)
    assert str(storage) == f"ClientStorage([::1]:{server.address[1]})"
    assert storage.sync() == []
    storage.close()


def test_store_checks_its_arguments(mini_server, record_for):
    storage = ClientStorage(address=mini_server.address, timeout=5)
    storage.begin()
    with pytest.raises(ValueError):
        storage.store(b"short", b"")
    storage.store(oid(1), record_for(oid(1)))
    with pytest.raises(ValueError):
        storage.store(oid(1), record_for(oid(1)))
    with pytest.raises(ValueError):
        ClientStorage(address=mini_server.address, oid_pool_size=256)
    storage.close()
