"""One adapter per API family: the Durus API (ours and Durus 4.3) and ZODB
(with a subclass for RelStorage, ZODB on PostgreSQL).

Why so few: our distributions re-implement Durus 4.3's public API under the
same import paths, so the very same adapter code drives both; any difference
in the figures then comes from the implementations, not from the harness.
"""

from __future__ import annotations

from .base import Adapter

DURUS_SYSTEMS = ("ours", "pure", "durus43")
ZODB_SYSTEMS = ("zodb",)
RELSTORAGE_SYSTEMS = ("relstorage",)


def get_adapter(system: str) -> Adapter:
    """The adapter for ``system``; its modules are imported lazily by ``require``."""
    if system in DURUS_SYSTEMS:
        from .durus_api import DurusAdapter

        return DurusAdapter(system)
    if system in ZODB_SYSTEMS:
        from .zodb_api import ZodbAdapter

        return ZodbAdapter(system)
    if system in RELSTORAGE_SYSTEMS:
        from .zodb_api import RelStorageAdapter

        return RelStorageAdapter(system)
    raise ValueError(f"unknown system {system!r}")
