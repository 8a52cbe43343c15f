"""A description of the machine and the tree, stored with every run.

Why: figures from two runs are only comparable on the same kind of machine and
on a quiet one, so the CPU, the load at start and the filesystem (fsync cost)
are recorded next to them.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _filesystem(path: Path) -> str:
    """The filesystem type holding ``path`` (longest mount point that contains it)."""
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return kind
    target = str(path.resolve())
    for line in mounts:
        parts = line.split()
        inside = len(parts) >= 3 and (target + "/").startswith(parts[1].rstrip("/") + "/")
        if inside and len(parts[1]) >= len(best):
            best, kind = parts[1], parts[2]
    return kind


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def load_average() -> float | None:
    """The 1-minute load average: above the core count, figures are noisy."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def describe(workdir: Path, root: Path) -> dict[str, Any]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    changes = _git(root, "status", "--porcelain", "--", "packages")
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "load_average": load_average(),
        "work_fs": _filesystem(workdir),
        "harness_python": platform.python_version(),
        "git_commit": _git(root, "rev-parse", "HEAD"),
        "packages_changed_since_commit": bool(changes) if changes is not None else None,
    }
