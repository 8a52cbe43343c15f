"""A plain Python class of the same shape as the persistent items.

Why: the warm-read target is stated against plain objects measured in the same
process, so the baseline must have the same attributes and a ``__dict__``.
"""

from __future__ import annotations


class Plain:
    """An int, a short str and a float, with no persistence machinery."""

    def __init__(self, n: int, s: str, f: float) -> None:
        self.n = n
        self.s = s
        self.f = f


def make_fields(i: int) -> tuple[int, str, float]:
    """The field values of item number ``i``, shared by every system."""
    return i, f"item-{i}", i * 0.5
