"""The printed report: a table of medians with spread and ratios, then the targets.

Why plain text: it is read in a terminal and in CI logs; the chart is the
picture, the JSON the record.
"""

from __future__ import annotations

from typing import Any

from .results import CONVENTION, NOT_MEASURED

SYSTEMS = ("ours", "pure", "durus43", "zodb", "relstorage")
RATIO_COLUMNS = (
    ("ours_vs_durus43", "ours/d43"),
    ("ours_vs_zodb", "ours/zodb"),
    ("pure_vs_durus43", "pure/d43"),
    ("pure_vs_zodb", "pure/zodb"),
    ("durus43_vs_zodb", "d43/zodb"),
    ("ours_vs_relstorage", "ours/rs"),
)
_PREFIXES = ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "u"))


def number(value: float, unit: str) -> str:
    """A figure as printed: ratios ("x") with three significant digits, the rest with ``si``."""
    return f"{value:.3g}" if unit == "x" else si(value)


def si(value: float) -> str:
    """Three significant digits with an SI prefix: 25998 -> 26.0k, 0.00009 -> 90.0u."""
    if value == 0:
        return "0"
    factor, prefix = next(((f, p) for f, p in _PREFIXES if abs(value) >= f), (1e-9, "n"))
    scaled = value / factor
    digits = 2 if abs(scaled) < 10 else 1 if abs(scaled) < 100 else 0
    return f"{scaled:.{digits}f}{prefix}"


class _Notes:
    """Footnotes for "unavailable" and "error" cells, numbered once per reason."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def mark(self, text: str) -> str:
        if text not in self.reasons:
            self.reasons.append(text)
        return f"[{self.reasons.index(text) + 1}]"


def _cell(result: dict[str, Any] | None, unit: str, system: str, notes: _Notes) -> str:
    if result is None or result["status"] == NOT_MEASURED:
        return ""
    if result["status"] == "ok":
        median, low, high = result["median"], result["min"], result["max"]
        if low == high:
            return number(median, unit)
        return f"{number(median, unit)} [{number(low, unit)}-{number(high, unit)}]"
    label = "n/a" if result["status"] == "unavailable" else "ERROR"
    return label + notes.mark(f"{system}: {result['reason']}")


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _table(doc: dict[str, Any], notes: _Notes) -> list[str]:
    systems = [s for s in SYSTEMS if s in doc["settings"]["systems"]]
    columns = [(k, c) for k, c in RATIO_COLUMNS if set(k.split("_vs_")) <= set(systems)]
    header = ["figure", "unit", "better", *systems, *(c for _, c in columns)]
    rows: list[list[str] | str] = []
    for entry in doc["workloads"]:
        rows.append(f"{entry['name']}: {entry['title']}")
        for figure in entry["figures"]:
            rows.append(
                [
                    "  " + figure["label"],
                    figure["unit"],
                    figure["better"],
                    *(_cell(figure["results"].get(s), figure["unit"], s, notes) for s in systems),
                    *(_ratio(figure["ratios"].get(key)) for key, _ in columns),
                ]
            )
        if entry["durability"]:
            said = "; ".join(f"{s}: {text}" for s, text in entry["durability"].items())
            rows.append(f"  (durability - {said})")
    cells = [r for r in rows if isinstance(r, list)]
    widths = [max(len(str(r[i])) for r in [header, *cells]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        if isinstance(row, str):
            lines.append(row)
        else:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return lines


def _header(doc: dict[str, Any]) -> list[str]:
    machine, settings = doc["machine"], doc["settings"]
    lines = [
        f"Durus benchmarks, {doc['started']}: scale {settings['scale']:g}, "
        f"{settings['repeat']} repetition(s); each cell is median [min-max]",
        f"machine: {machine['cpu']}, {machine['cores']} cores "
        f"({machine['usable_cores']} usable), {machine['memory_gib']} GiB, {machine['os']}, "
        f"load average {machine['load_average']} at start and "
        f"{machine.get('load_average_end')} at end, work files on {machine['work_fs']}",
        f"python: {settings['python']} for every system ({settings['python_path']}); "
        "Durus 4.3 builds only on Python <= 3.12",
    ]
    for system, info in doc["systems"].items():
        packages = ", ".join(f"{k} {v}" for k, v in info.get("packages", {}).items())
        lines.append(f"  {system}: {packages or 'nothing installed'}")
        lines.extend(f"    note: {note}" for note in info.get("notes", []))
    lines.append(
        "fsync: ZODB's FileStorage fsyncs every commit (it cannot be turned off); "
        "Durus 4.3 never fsyncs; ours runs as each workload says (FileStorage(fsync=...))."
    )
    postgres = doc.get("postgres")
    if postgres:
        if postgres["status"] == "ok":
            lines.append(
                f"postgresql: {postgres.get('version')} ({postgres.get('bin')}), one cluster "
                "for the run, a fresh database per sql_* repetition; ours and RelStorage "
                "(history-free) on the same server; commits durable as its settings say "
                "(see each workload's durability line)"
            )
        else:
            lines.append(f"postgresql: {postgres['status']}: {postgres['reason']}")
    lines.append("ratios: " + CONVENTION)
    return lines


def _targets(doc: dict[str, Any]) -> list[str]:
    lines = ["targets for ours (informational; a run never fails on them):"]
    measured = [t for t in doc["targets"] if t["value"] is not None]
    for t in measured:
        lines.append(f"  {t['status']:<8} {t['target']}: {t['value']:.3g} (wanted {t['wanted']})")
    if len(measured) < len(doc["targets"]):
        lines.append(
            f"  {len(doc['targets']) - len(measured)} of {len(doc['targets'])} targets not "
            "measured in this run (ours or a peer unavailable, or the workload not run)"
        )
    return lines


def render(doc: dict[str, Any]) -> str:
    notes = _Notes()
    lines = [*_header(doc), "", *_table(doc, notes)]
    if notes.reasons:
        lines.append("")
        lines.extend(f"[{i}] {reason}" for i, reason in enumerate(notes.reasons, 1))
    lines += ["", *_targets(doc)]
    if doc["errors"]:
        lines += ["", f"{len(doc['errors'])} error(s): the run FAILED"]
        lines.extend(
            f"  {e['workload']} / {e['system']} / rep {e['rep']}: {e['reason']} (log: {e['log']})"
            for e in doc["errors"]
        )
    return "\n".join(lines)
