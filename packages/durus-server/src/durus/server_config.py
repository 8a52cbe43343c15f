"""Fixed tuning of the storage server, and what it learns about its storage.

The limits a user may set are one ``ServerLimits`` (or the same names as
keywords of ``StorageServer``); the constants are the figures nobody should
need to set, kept in one place so they can be found and reasoned about; and
the probes run once at start.
"""

from __future__ import annotations

import dataclasses
import logging

from durus.storage import ROOT_OID, Storage
from durus.wire_protocol import TIMEOUT

SERVER_VERSION = "0.1.0"

#: Every part of the server logs here; the name is documented and 4.3's.
logger = logging.getLogger("durus.storage_server")


#: Bytes read from a socket at once.
RECV_SIZE = 256 * 1024
#: Output queued for one client beyond which it gets no more work.
OUTPUT_HIGH_WATER = 4 * 1024 * 1024
#: Messages of one client handled per round before the others get their turn.
MESSAGES_PER_ROUND = 64


@dataclasses.dataclass(frozen=True)
class ServerLimits:
    """What one server allows its clients and itself: ``StorageServer(limits=...)``.

    The same names are also keywords of ``StorageServer`` (and its attributes),
    which override the ``limits`` given.  Sizes in bytes, times in seconds.
    """

    #: Connections served at once; more are refused.
    max_clients: int = 1024
    #: Bytes of one commit's data (at most 2**32 - 1, the protocol's field).
    max_commit_bytes: int = 256 * 1024 * 1024
    #: Oids in one bulk load.
    max_bulk_oids: int = 100_000
    #: Oids one client may hold reserved (handed out, not yet committed).
    max_reserved_oids: int = 1_000_000
    #: Invalidations queued for one client before it must resynchronize.
    max_invalidations: int = 100_000
    #: How long the rest of a started message may take to arrive.
    message_timeout: float = TIMEOUT
    #: How long a commit may hold the commit lock.
    commit_lock_timeout: float = 2.0
    #: How long the lock waits for an idle committer before it passes on.
    commit_lock_idle: float = 0.25
    #: Records sent ahead of a load (0: no read-ahead).
    prefetch_records: int = 256
    #: Bytes sent ahead of a load.
    prefetch_bytes: int = 512 * 1024
    #: Seconds of packing between two rounds of serving clients.
    pack_slice: float = 0.02
    #: Bytes of replaced records kept for open snapshots (``W`` clients).
    max_snapshot_history: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            kind = float if field.type in (float, "float") else int
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{field.name} must be a number, not {value!r}")
            object.__setattr__(self, field.name, kind(value))
        object.__setattr__(self, "max_commit_bytes", min(self.max_commit_bytes, 0xFFFFFFFF))
        object.__setattr__(self, "prefetch_records", max(0, self.prefetch_records))


LIMIT_NAMES = frozenset(field.name for field in dataclasses.fields(ServerLimits))


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
