"""The exceptions Durus raises, importable from one place.

Applications catch ``ConflictError`` around ``commit()`` and answer with
``abort()``; ``DurusKeyError`` stays a ``KeyError`` so code written for Durus
4.3 (``except KeyError``) keeps working.
"""

from __future__ import annotations

from collections.abc import Iterable


def _format_oid(oid: object) -> str:
    if isinstance(oid, (bytes, bytearray)) and len(oid) == 8:
        return str(int.from_bytes(oid, "big"))
    return repr(oid)


class DurusError(Exception):
    """Base class of every Durus error."""


class DurusKeyError(KeyError, DurusError):
    """No record exists for an oid (``str()`` gives the oid as a number)."""

    def __init__(self, oid: object = None, *args: object) -> None:
        super().__init__(oid, *args)
        self.oid = oid

    def __str__(self) -> str:
        # Durus 4.3 read a missing attribute here and raised AttributeError.
        return f"no object with oid {_format_oid(self.oid)}"


class ConflictError(DurusError):
    """Another transaction changed objects this one used: call ``abort()``."""

    def __init__(self, oids: Iterable[bytes] | None = None) -> None:
        self.oids = list(oids) if oids is not None else None
        super().__init__(self.oids)

    def __str__(self) -> str:
        if not self.oids:
            return "conflicting oids not available"
        first = _format_oid(self.oids[0])
        if len(self.oids) == 1:
            return f"oids=[{first}]"
        return f"oids=[{first} ...]"


class WriteConflictError(ConflictError):
    """A commit would overwrite changes committed by someone else meanwhile."""


class ReadConflictError(ConflictError):
    """A load found an object changed since this transaction began reading."""


class SnapshotExpiredError(ConflictError):
    """The snapshot this transaction reads can no longer be served.

    Raised by loads of ``Connection(..., mvcc=True)`` when the server's
    history window no longer reaches back to the snapshot, or a pack removed
    a record the snapshot needs.  It is a ``ConflictError``: ``abort()`` and
    retry, and the transaction reads a new snapshot.  ``reason`` says which.
    """

    def __init__(self, reason: str = "", oids: Iterable[bytes] | None = None) -> None:
        super().__init__(oids)
        self.reason = reason

    def __str__(self) -> str:
        base = super().__str__() if self.oids else ""
        return f"snapshot expired: {self.reason}" + (f" ({base})" if base else "")


class SnapshotsUnsupportedError(DurusError):
    """The storage cannot give a transaction one consistent snapshot to read.

    ``Connection(storage, mvcc=True)`` raises it at once, naming the reason
    (a Durus 4.3 server, a storage class without snapshots).
    """


class ProtocolError(DurusError):
    """The other end of a storage connection did not follow the protocol."""
