"""Reading the records of a scanned database: what info, verify, census, convert and recover share.

The pickles are read with ``pickletools`` (nothing is imported or executed).
``Walk`` visits the objects reachable from the root; ``damage_lines`` says
what is wrong with a file's structure, once per damage.
"""

from __future__ import annotations

import heapq
import io
import pickletools
import zlib
from collections.abc import Iterator

from durus.cli_scan import ScanResult
from durus.storage import ROOT_OID

__all__ = ["Walk", "check_state_pickle", "damage_lines", "record_parts", "split_data"]



def split_data(data: bytes) -> tuple[str, bytes, bool]:
    """``(class name, state pickle, compressed)`` of a record's data field.

    Reads the pickles with ``pickletools`` (nothing is imported or executed);
    ``ValueError`` if they are not well-formed.
    """
    class_name = "?"
    stream = io.BytesIO(data)
    try:
        for opcode, arg, _position in pickletools.genops(stream):
            if class_name == "?" and opcode.name in ("GLOBAL", "INST") and arg:
                class_name = str(arg).replace(" ", ".")
            if opcode.name == "STOP":
                break
        else:
            raise ValueError("the class pickle has no end")
    except ValueError:
        raise
    except Exception as error:
        raise ValueError(f"the class pickle is malformed: {error}") from None
    rest = data[stream.tell():]
    compressed = False
    if rest[:1] == b"\x78":
        try:
            rest = zlib.decompress(rest)
            compressed = True
        except zlib.error:
            pass
    return class_name, rest, compressed


def check_state_pickle(state: bytes) -> None:
    """``ValueError`` unless ``state`` is exactly one well-formed pickle."""
    stream = io.BytesIO(state)
    try:
        for opcode, _arg, _position in pickletools.genops(stream):
            if opcode.name == "STOP":
                break
        else:
            raise ValueError("the state pickle has no end")
    except ValueError as error:
        raise ValueError(f"the state pickle is malformed: {error}") from None
    except Exception as error:
        raise ValueError(f"the state pickle is malformed: {error}") from None
    if stream.tell() != len(state):
        raise ValueError(f"{len(state) - stream.tell()} stray bytes follow the state pickle")


def record_parts(record: bytes) -> tuple[bytes, list[bytes]]:
    """``(data, refs)`` of a record already checked by the scanner."""
    data_end = 12 + int.from_bytes(record[8:12], "big")
    trailer = record[data_end:]
    return record[12:data_end], [trailer[i:i + 8] for i in range(0, len(trailer), 8)]


class Walk:
    """Every object reachable from the root, in ascending oid order per frontier."""

    def __init__(self, scan: ScanResult) -> None:
        self.scan = scan
        self.reachable = 0
        self.live_bytes = 0
        self.dangling: list[tuple[bytes, bytes]] = []  # (missing oid, referrer)
        self.unreadable: list[tuple[bytes, str]] = []

    def __iter__(self) -> Iterator[tuple[bytes, bytes, bytes, list[bytes]]]:
        """``(oid, record, data, refs)`` of each readable reachable object."""
        scan = self.scan
        if ROOT_OID not in scan.index:
            return
        todo = [ROOT_OID]
        seen = {ROOT_OID}
        while todo:
            oid = heapq.heappop(todo)
            try:
                record = scan.read_record(oid)
            except (ValueError, OSError) as error:
                self.unreadable.append((oid, str(error)))
                continue
            self.reachable += 1
            self.live_bytes += scan.framing + len(record)
            data, refs = record_parts(record)
            for ref in refs:
                if ref in seen:
                    continue
                seen.add(ref)
                if ref in scan.index:
                    heapq.heappush(todo, ref)
                else:
                    self.dangling.append((ref, oid))
            yield oid, record, data, refs


def damage_lines(scan: ScanResult, details: int = 5) -> list[str]:
    """One line per structural problem of ``scan``.

    For a damaged SHELF-1 file the first one also lists (indented, at most
    ``details``) the bytes in which no item could be read: the same damage,
    seen from what it cost.
    """
    lines = [str(finding).removeprefix("error: ") for finding in scan.errors]
    if lines and scan.unreadable:
        regions = [f"\n    unreadable: {region.end - region.start} bytes at {region.start}: "
                   f"{region.reason}" for region in scan.unreadable]
        if len(regions) > details:
            regions[details:] = [f"\n    ... and {len(regions) - details} more unreadable "
                                 "stretches"]
        lines[0] += "".join(regions)
    return lines
