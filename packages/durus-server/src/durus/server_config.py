"""Fixed tuning of the storage server, and what it learns about its storage.

The options a user sets are keyword arguments of ``StorageServer``; these are
the figures nobody should need to set, kept in one place so they can be
found and reasoned about, plus the probes run once at start.
"""

from __future__ import annotations

import logging

from durus.storage import Storage

SERVER_VERSION = "0.1.0"

#: Every part of the server logs here; the name is documented and 4.3's.
logger = logging.getLogger("durus.storage_server")

ROOT_OID = b"\x00" * 8

#: Bytes read from a socket at once.
RECV_SIZE = 256 * 1024
#: Output queued for one client beyond which it gets no more work.
OUTPUT_HIGH_WATER = 4 * 1024 * 1024
#: Messages of one client handled per round before the others get their turn.
MESSAGES_PER_ROUND = 64


def is_readonly(storage: Storage) -> bool:
    """Whether ``storage`` refuses writes (then commits, oids and packs are refused)."""
    readonly = getattr(storage, "readonly", None)
    if readonly is None:
        readonly = getattr(getattr(storage, "shelf", None), "readonly", False)
    return bool(readonly)


def supports_group_commit(storage: Storage) -> bool:
    """Whether ``storage`` can write commits now and make them durable together later."""
    if not callable(getattr(storage, "flush_to_disk", None)):
        return False
    import inspect  # only needed once, at start

    try:
        parameters = inspect.signature(storage.end).parameters
    except (TypeError, ValueError):
        return False
    return "sync_to_disk" in parameters
