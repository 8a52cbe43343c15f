"""durus.utils: exact reads and writes on files, sockets and socket-like objects."""

from __future__ import annotations

import io

import pytest

from durus.utils import ShortRead, read, write, write_int4_str


class Sender:
    """Socket-like: only send() and recv(), as Durus 4.3's tests fake a socket."""

    def __init__(self, chunk: int = 1 << 30, zero_sends: int = 0) -> None:
        self.received = bytearray()
        self.chunk = chunk
        self.zero_sends = zero_sends
        self.calls = 0

    def send(self, data: bytes) -> int:
        self.calls += 1
        if self.zero_sends:
            self.zero_sends -= 1
            return 0
        taken = bytes(data[: self.chunk])
        self.received += taken
        return len(taken)

    def recv(self, n: int) -> bytes:
        taken, self.received = bytes(self.received[:n]), self.received[n:]
        return taken


def test_write_sends_everything_to_an_object_with_only_send():
    sender = Sender(chunk=3)
    write(sender, b"0123456789")
    assert bytes(sender.received) == b"0123456789"
    assert sender.calls == 4


def test_write_takes_a_str_as_latin1_bytes():
    sender = Sender()
    write(sender, "x" * 2_000_000)
    assert bytes(sender.received) == b"x" * 2_000_000
    stream = io.BytesIO()
    write(stream, "caf\xe9")
    assert stream.getvalue() == b"caf\xe9"


def test_write_survives_a_few_sends_that_take_nothing():
    sender = Sender(zero_sends=10)
    write(sender, b"ok")
    assert bytes(sender.received) == b"ok"


def test_write_gives_up_after_more_than_ten_sends_that_take_nothing():
    sender = Sender(zero_sends=1000)
    with pytest.raises(OSError, match="send"):
        write(sender, b"ok")
    assert sender.calls == 11


def test_length_prefixed_strings_through_send_and_recv():
    sender = Sender(chunk=5)
    write_int4_str(sender, b"hello world")
    assert read(sender, 4) == b"\0\0\0\x0b"
    assert read(sender, 11) == b"hello world"
    with pytest.raises(ShortRead):
        read(sender, 1)


def test_length_prefixed_writes_take_a_str_as_latin1_bytes():
    # Durus 4.3's utest_file_storage check_bad_record_size writes a str this way.
    from durus.utils import read_int4_str, read_int8_str, write_int8_str

    stream = io.BytesIO()
    write_int4_str(stream, "ok\xe9")
    write_int8_str(stream, "caf\xe9")
    stream.seek(0)
    assert read_int4_str(stream) == b"ok\xe9"
    assert read_int8_str(stream) == b"caf\xe9"
