"""The server's counters, read by ``get_stats()`` and the ``T`` command."""

from __future__ import annotations

import time
from typing import Any

from durus.server_base import ServerBase
from durus.server_config import SERVER_VERSION


def new_counters() -> dict[str, Any]:
    """The counters of a server that has done nothing yet."""
    return {
        "connections_total": 0,
        "clients_dropped": 0,
        "loads": 0,
        "load_requests": 0,
        "prefetched": 0,
        "bulk_requests": 0,
        "syncs": 0,
        "commits": 0,
        "commit_objects": 0,
        "commit_bytes": 0,
        "conflicts": 0,
        "reviews": 0,
        "merges": 0,
        "refusals": 0,
        "flushes": 0,
        "group_commits": 0,
        "oids_allocated": 0,
        "bytes_received": 0,
        "bytes_sent": 0,
        "packs": 0,
        "pack_running": False,
        "last_pack_start": None,
        "last_pack_end": None,
        "last_pack_error": None,
        "overflows": 0,
        "snapshot_syncs": 0,
        "snapshot_loads": 0,
        "snapshots_expired": 0,
    }


class StatsReporting(ServerBase):
    """A snapshot of the counters, plus live figures."""

    def get_stats(self) -> dict[str, Any]:
        """The server's counters (also sent to clients by the ``T`` command)."""
        stats = dict(self.stats)
        stats["clients"] = len(self.clients)
        stats["uptime_s"] = round(time.time() - self._started, 3)
        stats["bytes_since_pack"] = self.bytes_since_pack
        stats["pending_commits"] = len(self._pending)
        stats["reserved_oids"] = len(self._reserved)
        stats["snapshot_clients"] = sum(1 for c in self.clients if c.snapshot is not None)
        stats["snapshot_history_bytes"] = self._history.nbytes
        stats["address"] = str(self.address)
        stats["server_version"] = SERVER_VERSION
        return stats
