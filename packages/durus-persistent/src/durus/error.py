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


class ProtocolError(DurusError):
    """The other end of a storage connection did not follow the protocol."""
