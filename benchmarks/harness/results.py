"""The results document: what the JSON file holds and what the report reads.

Why one document for both: the printed table, the chart and a later comparison
of two runs all read the same numbers, so they cannot disagree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .catalogue import Workload
from .outcome import ERROR, OK, UNAVAILABLE, Outcome
from .stats import ratio, summarize

SCHEMA = 1
PEERS = ("durus43", "zodb", "relstorage")
#: The status of a system a workload does not compare (RelStorage outside sql_*).
NOT_MEASURED = "not measured"
CONVENTION = (
    "A ratio says how many times better the first system is than the second: "
    "first/second for figures where higher is better (rates), second/first where "
    "lower is better (times, sizes). Above 1 always means the first system is better."
)
RATIO_PAIRS = (
    ("ours", "durus43"),
    ("ours", "zodb"),
    ("pure", "durus43"),
    ("pure", "zodb"),
    ("durus43", "zodb"),
    ("ours", "relstorage"),
)


def _system_result(outcomes: list[Outcome], key: str) -> dict[str, Any]:
    if not outcomes:
        return {"status": NOT_MEASURED}
    errors = [o for o in outcomes if o.status == ERROR]
    if errors:
        return {"status": ERROR, "reason": errors[0].reason}
    missing = [o for o in outcomes if o.status == UNAVAILABLE]
    if missing:
        return {"status": UNAVAILABLE, "reason": missing[0].reason}
    return {"status": OK, **summarize([o.figures[key] for o in outcomes])}


def _durability(outcomes: dict[str, list[Outcome]]) -> dict[str, str]:
    found = {}
    for system, runs in outcomes.items():
        for outcome in runs:
            if outcome.status == OK and "durability" in outcome.extra:
                found[system] = outcome.extra["durability"]
                break
    return found


def workload_entry(workload: Workload, outcomes: dict[str, list[Outcome]]) -> dict[str, Any]:
    """One workload's figures, per system, with medians, spread and ratios."""
    figures = []
    for figure in workload.figures:
        results = {s: _system_result(runs, figure.key) for s, runs in outcomes.items()}
        medians = {s: r.get("median") for s, r in results.items()}
        ratios = {
            f"{a}_vs_{b}": ratio(figure.better, medians.get(a), medians.get(b))
            for a, b in RATIO_PAIRS
        }
        figures.append(
            {
                "key": figure.key,
                "label": figure.label,
                "unit": figure.unit,
                "better": figure.better,
                "results": results,
                "ratios": ratios,
            }
        )
    return {
        "name": workload.name,
        "title": workload.title,
        "params": workload.params,
        "fixtures": {label: ref.describe() for label, ref in workload.fixtures.items()},
        "durability": _durability(outcomes) if workload.durability_matters else {},
        "extra": {s: [o.extra for o in runs if o.status == OK] for s, runs in outcomes.items()},
        "figures": figures,
    }


def write(document: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n", encoding="utf-8")
