"""The shared protocol module: framing, addresses, policies."""

from __future__ import annotations

import errno
import os
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from durus import serialize
from durus.error import DurusError, ProtocolError
from durus.wire_protocol import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    PROTOCOL,
    STATUS_INVALID,
    STATUS_KEYERROR,
    STATUS_OKAY,
    DurusConnectionError,
    HostPortAddress,
    InheritedSocket,
    SocketAddress,
    UnixAbstractAddress,
    UnixDomainSocketAddress,
    auth_proof,
    check_record,
    decode_oid_list,
    decode_transaction,
    encode_oid_list,
    encode_transaction,
    is_local_peer,
    recv_exact,
    wait_for_server,
)

oids = st.integers(min_value=0, max_value=2**64 - 1).map(lambda n: n.to_bytes(8, "big"))


def record(oid: bytes, data: bytes = b"x", refs: bytes = b"") -> bytes:
    return oid + struct.pack(">I", len(data)) + data + refs


def test_constants_match_durus_4_3():
    assert PROTOCOL == b"\x00\x00\x00\x01"
    assert (STATUS_OKAY, STATUS_KEYERROR, STATUS_INVALID) == (b"O", b"K", b"I")
    assert (DEFAULT_HOST, DEFAULT_PORT) == ("127.0.0.1", 2972)


@given(st.lists(oids, max_size=50))
def test_oid_list_round_trip(values):
    encoded = encode_oid_list(values)
    assert struct.unpack(">I", encoded[:4])[0] == len(values)
    assert decode_oid_list(encoded[4:]) == values


def test_oid_list_rejects_partial_oid():
    with pytest.raises(ProtocolError):
        decode_oid_list(b"\x00" * 9)


@given(st.dictionaries(oids, st.binary(max_size=40), max_size=20))
def test_transaction_round_trip(states):
    records = {oid: record(oid, data) for oid, data in states.items()}
    tdata = encode_transaction(records)
    assert decode_transaction(tdata) == list(records.items())


def test_transaction_framing_matches_spec():
    oid = (5).to_bytes(8, "big")
    rec = record(oid, b"ab")
    assert encode_transaction({oid: rec}) == struct.pack(">I", 8 + len(rec)) + oid + rec


@pytest.mark.parametrize(
    "tdata",
    [
        b"\x00\x00",  # truncated length
        struct.pack(">I", 4) + b"abcd",  # entry shorter than an oid
        struct.pack(">I", 100) + b"\x00" * 20,  # overrun
        struct.pack(">I", 8) + b"\x00" * 8,  # empty record
    ],
)
def test_decode_transaction_rejects_bad_framing(tdata):
    with pytest.raises(ProtocolError):
        decode_transaction(tdata)


def test_decode_transaction_rejects_duplicates_and_bad_records():
    oid = (1).to_bytes(8, "big")
    good = record(oid)
    with pytest.raises(ProtocolError, match="twice"):
        decode_transaction(encode_transaction([(oid, good), (oid, good)]))
    other = (2).to_bytes(8, "big")
    with pytest.raises(ProtocolError, match="oid"):
        decode_transaction(encode_transaction([(oid, record(other))]))
    with pytest.raises(ProtocolError, match="data length runs past its end"):
        decode_transaction(encode_transaction([(oid, oid + struct.pack(">I", 50) + b"x")]))
    with pytest.raises(ProtocolError, match="not a whole number of oids"):
        decode_transaction(encode_transaction([(oid, record(oid, refs=b"\x01" * 3))]))
    assert decode_transaction(encode_transaction([(oid, record(oid, refs=b"\x01" * 8))])) == [
        (oid, record(oid, refs=b"\x01" * 8))
    ]
    # One rule for what a record is, wherever records are checked (issue 15).
    assert check_record is serialize.check_record


def test_auth_proofs_depend_on_everything():
    a = auth_proof(b"secret", b"client", b"1" * 32, b"2" * 32)
    assert a == auth_proof(b"secret", b"client", b"1" * 32, b"2" * 32)
    assert a != auth_proof(b"secret", b"server", b"1" * 32, b"2" * 32)
    assert a != auth_proof(b"other", b"client", b"1" * 32, b"2" * 32)
    assert a != auth_proof(b"secret", b"client", b"2" * 32, b"1" * 32)


def test_connection_error_is_both_kinds():
    exc = DurusConnectionError(errno.ECONNRESET, "lost the Durus server at x:1: gone")
    assert isinstance(exc, OSError) and isinstance(exc, DurusError)
    assert exc.errno == errno.ECONNRESET
    assert "x:1" in str(exc)


class TestAddresses:
    def test_new_dispatches_on_form(self, tmp_path):
        tcp = SocketAddress.new(("127.0.0.1", 1234))
        assert isinstance(tcp, HostPortAddress) and str(tcp) == "127.0.0.1:1234"
        v6 = SocketAddress.new(("::1", 99))
        assert v6.get_address_family() == socket.AF_INET6 and str(v6) == "[::1]:99"
        assert SocketAddress.new(("[::1]", 99)).host == "::1"
        abstract = SocketAddress.new("@durus-test")
        assert isinstance(abstract, UnixAbstractAddress)
        assert abstract.filename == "\0durus-test" and str(abstract) == "@durus-test"
        path = str(tmp_path / "s")
        unix = SocketAddress.new(path, umask=0o077)
        assert isinstance(unix, UnixDomainSocketAddress) and unix.umask == 0o077
        assert SocketAddress.new(unix) is unix
        with pytest.raises(ValueError):
            SocketAddress.new(("host", 1, 2))
        with pytest.raises(ValueError):
            SocketAddress.new(("host", 70000))

    def test_abstract_address_accepts_file_options(self):
        # Durus 4.3's command line crashed here with TypeError.
        address = SocketAddress.new("@x", owner="nobody", group="nogroup", umask=0o22)
        assert isinstance(address, UnixAbstractAddress)

    def test_connected_socket_is_none_when_nothing_listens(self, tmp_path):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        assert HostPortAddress("127.0.0.1", port).get_connected_socket(timeout=5) is None
        assert UnixDomainSocketAddress(str(tmp_path / "none")).get_connected_socket() is None
        assert UnixAbstractAddress(f"@durus-none-{os.getpid()}").get_connected_socket() is None

    def test_unix_socket_listens_with_umask_and_is_removed(self, tmp_path):
        path = str(tmp_path / "durus.sock")
        address = UnixDomainSocketAddress(path, umask=0o077)
        listener = address.get_listening_socket()
        try:
            assert os.stat(path).st_mode & 0o777 == 0o700
            client = address.get_connected_socket(timeout=5)
            assert client is not None
            client.close()
            assert "rwx------" in str(address)
        finally:
            address.close(listener)
        assert not os.path.exists(path)

    def test_stale_unix_socket_is_replaced_but_not_a_regular_file(self, tmp_path):
        path = str(tmp_path / "stale.sock")
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(path)
        stale.close()  # the file stays, nobody listens
        address = UnixDomainSocketAddress(path)
        address.close(address.get_listening_socket())
        regular = tmp_path / "regular"
        regular.write_bytes(b"data")
        with pytest.raises(OSError):
            UnixDomainSocketAddress(str(regular)).get_listening_socket()
        assert regular.read_bytes() == b"data"

    def test_live_unix_socket_is_not_stolen(self, tmp_path):
        path = str(tmp_path / "live.sock")
        first = UnixDomainSocketAddress(path)
        listener = first.get_listening_socket()
        try:
            with pytest.raises(OSError):
                UnixDomainSocketAddress(path).get_listening_socket()
        finally:
            first.close(listener)

    def test_abstract_socket_round_trip(self):
        address = UnixAbstractAddress(f"@durus-test-{os.getpid()}")
        listener = address.get_listening_socket()
        try:
            client = address.get_connected_socket(timeout=5)
            assert client is not None
            conn, _ = listener.accept()
            client.sendall(b"hi")
            assert recv_exact(conn, 2) == b"hi"
            conn.close()
            client.close()
        finally:
            address.close(listener)

    def test_inherited_socket(self):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        try:
            inherited = InheritedSocket(sock)
            assert inherited.get_listening_socket() is sock
            assert str(inherited) == f"127.0.0.1:{sock.getsockname()[1]}"
            assert inherited.is_local()
        finally:
            sock.close()

    def test_wait_for_server(self):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        wait_for_server(port=port, maxtries=2, sleeptime=0.01)
        sock.close()
        with pytest.raises(SystemExit):
            wait_for_server(port=port, maxtries=2, sleeptime=0.01)


@pytest.mark.parametrize(
    ("family", "peer", "local"),
    [
        (socket.AF_INET, ("127.0.0.1", 5), True),
        (socket.AF_INET, ("127.8.9.10", 5), True),
        (socket.AF_INET, ("10.0.0.1", 5), False),
        (socket.AF_INET, ("192.168.1.2", 5), False),
        (socket.AF_INET6, ("::1", 5, 0, 0), True),
        (socket.AF_INET6, ("::ffff:127.0.0.1", 5, 0, 0), True),
        (socket.AF_INET6, ("2001:db8::1", 5, 0, 0), False),
        (socket.AF_UNIX, "", True),
        (socket.AF_INET, None, False),
    ],
)
def test_is_local_peer(family, peer, local):
    assert is_local_peer(family, peer) is local


def test_recv_exact_reports_a_closed_peer():
    a, b = socket.socketpair()
    with a, b:
        b.sendall(b"abc")
        b.close()
        with pytest.raises(EOFError):
            recv_exact(a, 5)
