"""What one run of a workload on one system came to: its status and figures.

A module of its own so that the runner and the PostgreSQL cluster it starts
(``postgres.py``), which both report outcomes, do not import each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OK, UNAVAILABLE, ERROR = "ok", "unavailable", "error"


@dataclass
class Outcome:
    status: str
    figures: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    seconds: float = 0.0
    log: str = ""
