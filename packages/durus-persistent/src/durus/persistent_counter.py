"""Counter: a persistent integer that many processes change without conflicts.

Concurrent ``change()`` calls from different transactions merge (each
commit's delta is added to what is committed), like BTrees' ``Length`` in
ZODB.  Use it for counts and totals that are bumped from everywhere.

Its records name ``durus.persistent_counter.Counter``, a class Durus 4.3
does not have: a Durus 4.3 client cannot load a Counter.
"""

from __future__ import annotations

from typing import Any

from durus.persistent import Persistent

__all__ = ["Counter"]


class Counter(Persistent):
    """An integer ``value``; ``change(delta)`` merges with concurrent changes."""

    value: int

    def __init__(self, value: int = 0) -> None:
        self.value = int(value)

    def change(self, delta: int) -> None:
        """Add ``delta`` (negative to subtract)."""
        self.value += int(delta)

    def __call__(self) -> int:
        return self.value

    def __int__(self) -> int:
        return self.value

    def __index__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"<Counter {self._p_format_oid()} value={self.value}>"

    def _p_resolve_conflict(
        self, old_state: dict[str, Any], saved_state: dict[str, Any], new_state: dict[str, Any]
    ) -> dict[str, Any]:
        """This transaction's delta added to the committed value."""
        merged = dict(saved_state)
        merged["value"] = saved_state["value"] + new_state["value"] - old_state["value"]
        return merged
