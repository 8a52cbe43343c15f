"""Writing a new SHELF-1 file: its initial transaction, then its offset map.

Used to create a database (``Shelf``, ``write_new_shelf``) and by pack to
write the packed copy.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator

from durus.shelf_format import (
    FIRST_ITEM,
    INT8,
    PREFIX,
    gen_map_bytes,
    map_dimensions,
    pwrite_all,
)

__all__ = ["MAX_MAP_OID", "ShelfWriter"]

#: The largest oid an offset map may be built for (its size is proportional).
MAX_MAP_OID = (1 << 34) - 1


class ShelfWriter:
    """Writes a new shelf into an empty file: items first, then the offset map.

    Used by pack (the items are the reachable records) and to create a
    database from records (``durus convert``).  Memory: one ``array('Q')`` of
    positions indexed by oid, plus a write buffer.
    """

    def __init__(self, fd: int, buffer_size: int = 1 << 20) -> None:
        self.fd = fd
        self.buffer = bytearray(PREFIX + INT8.pack(0))
        self.buffer_size = buffer_size
        self.flushed = 0
        self.position = FIRST_ITEM
        self.positions = array("Q")
        self.max_oid: int | None = None
        self.count = 0
        self.map_start = 0
        self.map_end = 0

    def add(self, name: bytes, record: bytes) -> None:
        """Append the item of oid ``name`` (a later one for the same oid wins)."""
        self.add_numbered(int.from_bytes(name, "big"), name, record)

    def add_numbered(self, n: int, name: bytes, record: bytes) -> None:
        """``add()`` when the caller knows the oid number ``n`` of ``name``."""
        positions = self.positions
        if n >= len(positions):
            if n > MAX_MAP_OID:
                raise ValueError(
                    f"oid {n} is too large for an offset map (the SHELF format stores one "
                    "slot per oid up to the largest)"
                )
            grow = max(n + 1, len(positions) + (len(positions) >> 1), 1024)
            positions.frombytes(bytes(8 * (grow - len(positions))))
        positions[n] = self.position
        if self.max_oid is None or n > self.max_oid:
            self.max_oid = n
        buffer = self.buffer
        buffer += INT8.pack(8 + len(record))
        buffer += name
        buffer += record
        self.position += 16 + len(record)
        self.count += 1
        if len(buffer) >= self.buffer_size:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            pwrite_all(self.fd, bytes(self.buffer), self.flushed)
            self.flushed += len(self.buffer)
            self.buffer.clear()

    def gen_finish(self) -> Iterator[int]:
        """Write the initial transaction's length and the stitched map, in steps."""
        self.flush()
        self.map_start = start = self.position
        pwrite_all(self.fd, INT8.pack(start - FIRST_ITEM), len(PREFIX))
        width, count = map_dimensions(start, self.max_oid)
        offset = start
        for piece in gen_map_bytes(start, self.positions, count, width):
            pwrite_all(self.fd, piece, offset)
            offset += len(piece)
            yield offset
        self.map_end = offset
        self.positions = array("Q")

    def finish(self) -> None:
        for _step in self.gen_finish():
            pass
