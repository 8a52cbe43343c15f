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


def create_root_if_missing(storage: Storage) -> bool:
    """Write the root object of an empty, writable storage; True if it did.

    Done before the first client connects, so that no client ever finds a
    database without a root: Durus 4.3's clients race to create it, and the
    loser of the race fails.  Through a ``Connection``, so the root record is
    the one every client would have written (a ``PersistentDict`` at oid 0).
    """
    if is_readonly(storage):
        return False
    try:
        storage.load(ROOT_OID)
    except KeyError:
        pass
    else:
        return False
    from durus.connection import Connection
    from durus.error import DurusError

    try:
        Connection(storage)
    except DurusError as error:  # a direct writer of a shared SQL database won the race
        logger.info("root not created: %s", error)
        return False
    logger.info("Created the root object of the new database")
    return True


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
