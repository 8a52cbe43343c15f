"""open time: how long opening the storage alone takes, per file, each in a fresh process.

Why a child per file: a second open in the same process would find the code
imported and the allocator warm; the harness promises a fresh process each time.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

from ..adapters.base import Adapter
from ..protocol import ok
from ..servers import child_outcome, driver_command

FILES = ("small", "small_packed", "large", "large_packed")


def _open_in_child(system: str, path: str, scratch: str, label: str) -> float:
    out_path = os.path.join(scratch, f"open-{label}.json")
    log_path = os.path.join(scratch, f"open-{label}.log")
    with open(log_path, "wb") as log:
        proc = subprocess.run(
            driver_command("open", "--system", system, "--path", path, "--out", out_path),
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    return child_outcome(proc, out_path, "the open child", log_path)["seconds"]


def run(adapter: Adapter, params: dict[str, Any], scratch: str) -> dict[str, Any]:
    adapter.require("file")
    seconds = {
        label: _open_in_child(adapter.system, params["fixtures"][label], scratch, label)
        for label in FILES
    }
    figures = {f"{label}_s": value for label, value in seconds.items()}
    figures["growth"] = seconds["large"] / seconds["small"]
    figures["growth_packed"] = seconds["large_packed"] / seconds["small_packed"]
    return ok(figures)
