"""Packing: started by ``P`` or by ``gcbytes``, run in slices between loop rounds.

Slices of ``pack_slice`` seconds keep serving while a pack runs; commits go on
and survive it.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from durus.server_base import ServerBase
from durus.server_config import logger
from durus.server_session import ClientSession
from durus.storage import ROOT_OID
from durus.wire_protocol import STATUS_OKAY


def now_iso() -> str:
    """The time now, as the pack counters record it (UTC, to the second)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Packing(ServerBase):
    """Start, step and finish a pack of the storage."""

    def _on_pack(self, client: ClientSession) -> None:
        if not client.local and not self.allow_remote_pack:
            self._refuse(client, "pack is only accepted from this machine")
            return
        if self._readonly:
            self._refuse(client, "the storage is read-only")
            return
        if self.packer is not None:
            logger.info("Pack already in progress", extra={"event": "pack_busy"})
            self._reply(client, STATUS_OKAY)
            return
        problem = self._start_pack(client)
        if problem is not None:
            self._refuse(client, problem)
            return
        self._reply(client, STATUS_OKAY)

    def _start_pack(self, client: ClientSession | None) -> str | None:
        """Start packing; a reason if it cannot start."""
        try:
            self.storage.load(ROOT_OID)
        except KeyError:
            return "the database has no root object: nothing to pack"
        except Exception as exc:
            return f"cannot pack: {exc}"
        who = client.name if client is not None else f"gcbytes={self.gcbytes}"
        self.stats["last_pack_start"] = now_iso()
        logger.info("Pack started (%s)", who, extra={"event": "pack_start", "by": who})
        try:
            packer = self.storage.get_packer()
            if packer is None:
                self.storage.pack()
                self._pack_done()
            else:
                self.packer = packer
                self.stats["pack_running"] = True
        except Exception as exc:
            logger.exception("pack failed")
            self.stats["last_pack_error"] = str(exc)
            self.packer = None
            self.stats["pack_running"] = False
            return f"pack failed: {exc}"
        return None

    def _pack_steps(self) -> None:
        packer = self.packer
        assert packer is not None
        deadline = time.monotonic() + self.pack_slice
        try:
            while True:  # at least one step per round, then until the slice is spent
                step = next(packer)
                if isinstance(step, str):
                    logger.debug("pack: %s", step, extra={"event": "pack_step"})
                if time.monotonic() >= deadline:
                    break
        except StopIteration:
            self.packer = None
            self._pack_done()
        except Exception as exc:
            logger.exception("pack failed")
            self.stats["last_pack_error"] = str(exc)
            self.stats["pack_running"] = False
            self.packer = None
            close = getattr(packer, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    pass
            self.bytes_since_pack = 0

    def _pack_done(self) -> None:
        self.bytes_since_pack = 0
        self.stats["packs"] += 1
        self.stats["pack_running"] = False
        self.stats["last_pack_end"] = now_iso()
        self._sync_storage()
        logger.info("Pack completed", extra={"event": "pack_end"})
