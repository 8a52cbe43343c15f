"""The benchmark's persistent class for the Durus API (ours and Durus 4.3).

It lives in its own module because its dotted name is written into every record:
later processes must be able to import it to load the fixture files.
"""

from __future__ import annotations

from durus.persistent import Persistent


class Item(Persistent):
    """A small object: an int, a short str and a float."""

    def __init__(self, n: int, s: str, f: float) -> None:
        self.n = n
        self.s = s
        self.f = f
