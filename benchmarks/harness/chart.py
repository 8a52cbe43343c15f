"""Draw the ratios of a results file as a PNG (run by the tools venv's python).

Why a separate script: matplotlib is installed only in the tools venv, never in
a system's venv (where it could change what is measured) nor required by the
harness itself.  Usage: python chart.py RESULTS.json OUT.png
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

SERIES = (
    ("ours_vs_durus43", "ours vs Durus 4.3", "#1f77b4"),
    ("ours_vs_zodb", "ours vs ZODB", "#ff7f0e"),
    ("durus43_vs_zodb", "Durus 4.3 vs ZODB", "#b0b0b0"),
    ("ours_vs_relstorage", "ours vs RelStorage", "#2ca02c"),
)


def _rows(doc: dict) -> list[tuple[str, dict]]:
    rows = []
    for entry in doc["workloads"]:
        for figure in entry["figures"]:
            if any(figure["ratios"].get(key) for key, _, _ in SERIES):
                rows.append((f"{entry['name']}: {figure['label']}", figure["ratios"]))
    return rows


def draw(doc: dict, out: str) -> None:
    rows = _rows(doc)
    height = max(3.0, 0.42 * len(rows) + 1.6)
    fig, ax = plt.subplots(figsize=(11, height))
    settings = doc["settings"]
    ax.set_title(
        f"Durus benchmarks {doc['started']} (Python {settings['python']}, "
        f"scale {settings['scale']:g}, median of {settings['repeat']})\n"
        "ratio > 1: the first system is better (log scale)",
        fontsize=10,
    )
    if not rows:
        ax.text(
            0.5,
            0.5,
            "no ratios: fewer than two systems have figures",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        ax.set_axis_off()
    else:
        bar = 0.8 / len(SERIES)
        for i, (key, label, colour) in enumerate(SERIES):
            ys = [n + (i - (len(SERIES) - 1) / 2) * bar for n in range(len(rows))]
            values = [ratios.get(key) or 0 for _, ratios in rows]
            kept = [(y, v) for y, v in zip(ys, values, strict=True) if v > 0]
            if kept:
                # Bars grow from 1 (parity): right when better, left when worse.
                ax.barh(
                    [y for y, _ in kept],
                    [v - 1 for _, v in kept],
                    height=bar,
                    color=colour,
                    label=label,
                    left=1,
                )
        ax.set_xscale("log")
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([name for name, _ in rows], fontsize=8)
        ax.invert_yaxis()
        ax.grid(axis="x", which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        draw(json.load(f), argv[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
