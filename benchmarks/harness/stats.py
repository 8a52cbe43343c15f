"""Medians, spread and the ratio convention.

Convention: a ratio always reads "how many times better ours is", so a ratio
above 1 is good news whatever the figure.  For a figure where higher is better
(a rate) it is ours / peer; where lower is better (a time, a size) it is
peer / ours.
"""

from __future__ import annotations

import statistics
from typing import Any

from .catalogue import HIGHER


def summarize(samples: list[float]) -> dict[str, Any]:
    """Median, min, max and quartiles (the quartiles need two samples or more)."""
    ordered = sorted(samples)
    summary: dict[str, Any] = {
        "samples": samples,
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
    }
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
        summary["q1"], summary["q3"] = q1, q3
    else:
        summary["q1"] = summary["q3"] = ordered[0]
    return summary


def ratio(better: str, ours: float | None, peer: float | None) -> float | None:
    """How many times better ``ours`` is than ``peer`` (> 1: ours is better)."""
    if ours is None or peer is None or ours <= 0 or peer <= 0:
        return None
    return ours / peer if better == HIGHER else peer / ours
