"""The benchmark's persistent class for ZODB (same shape as ``model_durus.Item``)."""

from __future__ import annotations

from persistent import Persistent


class Item(Persistent):
    """A small object: an int, a short str and a float."""

    def __init__(self, n: int, s: str, f: float) -> None:
        self.n = n
        self.s = s
        self.f = f
