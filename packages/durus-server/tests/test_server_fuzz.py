"""Hostile input: random and truncated byte streams, malformed commits.

Afterwards the server must still serve everyone, the database file must be
byte for byte unchanged, and no request may have hit an internal error.
"""

from __future__ import annotations

import random
import socket

import pytest

from durus.persistent_dict import PersistentDict
from durus.persistent_list import PersistentList

RANDOM_STREAMS = 4000
TRUNCATED_STREAMS = 2000
COMMANDS = b"VNMLBSCTXFA."  # every command except P and Q (they may pack or stop)


def int4(n: int) -> bytes:
    return n.to_bytes(4, "big")


def oid(n: int) -> bytes:
    return n.to_bytes(8, "big")


def record(o: bytes, data: bytes = b"junk", refs: bytes = b"") -> bytes:
    return o + int4(len(data)) + data + refs


def entry(o: bytes, rec: bytes) -> bytes:
    return int4(8 + len(rec)) + o + rec


def no_pq(data: bytes) -> bytes:
    return data.replace(b"P", b"p").replace(b"Q", b"q")


def valid_messages(rng: random.Random, known: list[bytes]) -> list[bytes]:
    # Commits are well formed but name an oid nobody allocated: refused.
    some = rng.choice(known)
    stranger = oid(10**6 + rng.randrange(1000))
    tdata = entry(stranger, record(stranger))
    return [
        b"V\x00\x00\x00\x01",
        b"L" + b"\xff" * 8,
        b"M" + bytes([rng.randrange(256)]),
        b"N",
        b"L" + some,
        b"F" + some,
        b"B" + int4(3) + some + oid(10**6) + some,
        b"S",
        b"T",
        b"C" + int4(0),
        b"C" + int4(len(tdata)) + tdata,
        b"X" + int4(len(tdata)) + tdata,
        b"A" + bytes(32),
    ]


def send_and_close(address, data: bytes) -> None:
    with socket.socket() as sock:
        sock.settimeout(30)
        sock.connect(address)
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):  # read until the server closes
                pass
        except OSError:
            pass


@pytest.fixture
def fuzz_server(start_server):
    server = start_server(accept_stop=False, allow_remote_pack=False, max_reserved_oids=2000,
                          max_bulk_oids=100, max_commit_bytes=1 << 20, message_timeout=5,
                          log_level="WARNING")
    connection = server.connection()
    root = connection.get_root()
    root["list"] = PersistentList(range(100))
    root["dicts"] = PersistentList([PersistentDict(n=i) for i in range(20)])
    connection.commit()
    known = [root._p_oid, root["list"]._p_oid] + [d._p_oid for d in root["dicts"]]
    connection.storage.close()
    return server, known


def check_intact(server, file_digest, before):
    reader = server.connection()
    root = reader.get_root()
    assert list(root["list"]) == list(range(100))
    assert [d["n"] for d in root["dicts"]] == list(range(20))
    assert file_digest(server.file) == before
    log = server.log_text()
    assert "internal error" not in log and "Traceback" not in log
    root["after"] = True
    reader.commit()  # and it still commits
    reader.storage.close()


def test_random_and_truncated_streams(fuzz_server, file_digest):
    server, known = fuzz_server
    before = file_digest(server.file)
    rng = random.Random(4_3)
    for _ in range(RANDOM_STREAMS):
        size = rng.choice((1, 2, 5, 9, 13, 40, 200))
        data = bytes([rng.choice(COMMANDS)]) + rng.randbytes(size)
        send_and_close(server.address, no_pq(data))
    for _ in range(TRUNCATED_STREAMS):
        messages = valid_messages(rng, known)
        stream = b"".join(rng.choice(messages) for _ in range(rng.randrange(1, 4)))
        cut = rng.randrange(1, len(stream) + 1)
        send_and_close(server.address, no_pq(stream[:cut]))
    check_intact(server, file_digest, before)


def test_malformed_commits_are_refused(fuzz_server, file_digest, raw_session, recv_exact):
    server, known = fuzz_server
    before = file_digest(server.file)
    address = server.address
    some = known[3]
    holder = raw_session(address)
    holder.sendall(b"M\x01")
    reserved = recv_exact(holder, 8)
    bad_commits = [
        entry(oid(10**9), record(oid(10**9))),  # never allocated
        entry(reserved, record(reserved)),  # reserved by another client
        entry(some, record(known[4])),  # the record names another oid
        entry(some, record(some))[:-3],  # entry overruns
        int4(4) + b"abcd",  # entry too short for an oid
        entry(some, some + int4(500) + b"x"),  # data length overruns the record
        entry(some, record(some, refs=b"\x00" * 5)),  # refs not a multiple of 8
        entry(some, record(some)) * 2,  # the same oid twice
    ]
    for tdata in bad_commits:
        # A client that said hello gets a refusal (E) and stays connected.
        sock = raw_session(address, hello=True)
        sock.sendall(b"X" + int4(len(tdata)) + tdata)
        status = sock.recv(1)
        if status == b"E":
            recv_exact(sock, int.from_bytes(recv_exact(sock, 4), "big"))
            sock.sendall(b"S")
            recv_exact(sock, 4)
        else:
            assert status == b""  # or a disconnect (an oid reserved by another client)
        sock.close()
        # A protocol-1 client is disconnected.
        sock = raw_session(address)
        sock.sendall(b"C")
        count = int.from_bytes(recv_exact(sock, 4), "big")
        recv_exact(sock, 8 * count)
        sock.sendall(int4(len(tdata)) + tdata)
        assert sock.recv(10) in (b"", b"I")
        sock.close()
    for request in (
        b"B" + int4(101) + oid(0) * 101,  # over max_bulk_oids
        b"X" + int4(2 << 20),  # over max_commit_bytes
        b"M\xff" * 9,  # over max_reserved_oids
        b"V\x00\x00\x00\x02",  # another protocol
    ):
        sock = raw_session(address)
        sock.sendall(request)
        while sock.recv(65536):
            pass
        sock.close()
    holder.close()
    assert server.alive()
    check_intact(server, file_digest, before)
    log = server.log_text()
    assert "reserved by another client" in log and "never allocated" in log
