"""What the driver and the harness agree on: outcomes, exit codes, result files.

Why files rather than stdout: the systems under test print to stdout and stderr
(Durus 4.3 prints a notice when its C extension is missing, ZEO logs), so a
result is written as one JSON document to the path given by ``--out``.
"""

from __future__ import annotations

import json
import os
from typing import Any

#: Exit code of a driver process whose system cannot run the request.
EXIT_UNAVAILABLE = 3


class Unavailable(Exception):
    """The system lacks something the workload needs (a module, a keyword).

    Only this, never an arbitrary error, is reported as "unavailable": anything
    else is a bug in a system or in the harness and must fail the run.
    """


def write_result(path: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically so the reader never sees half a document."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def ok(figures: dict[str, float], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A successful outcome: ``figures`` are medianed, ``extra`` is only kept."""
    return {"status": "ok", "figures": figures, "extra": extra or {}}


def unavailable(reason: str) -> dict[str, Any]:
    return {"status": "unavailable", "reason": reason}
