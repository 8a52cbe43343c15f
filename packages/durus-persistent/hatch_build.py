"""Hatch build hook: compile the optional C accelerator ``durus._persistent_accel``.

Why a hand-rolled compile: hatchling builds no C, and durus-persistent takes
no build dependency beyond it.  The compiler command comes from ``sysconfig``
(the flags CPython itself was built with); ``CC`` overrides the compiler.
When compiling fails (no compiler, no headers), the build goes on without the
accelerator and says so in one warning: the pure-Python code is complete.
A wheel that carries the accelerator is tagged for this interpreter and
platform; one without it stays ``py3-none-any``.  Editable installs compile
next to the source.  ``DURUS_BUILD_PURE=1`` skips the compile on purpose.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sysconfig
import tempfile
import warnings
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

# The C files linked into the one extension module (_persistent_accel.h is
# their shared header).
SOURCES = (
    Path("src/durus/_persistent_accel.c"),
    Path("src/durus/_accel_recent.c"),
    Path("src/durus/_accel_btree.c"),
)
MODULE = "_persistent_accel"


def compile_command(sources: list[Path], target: Path) -> list[str]:
    """The compile-and-link command for ``sources`` into the shared object ``target``."""
    config = sysconfig.get_config_vars()
    compiler = os.environ.get("CC") or config.get("CC") or "cc"
    ldshared = shlex.split(config.get("LDSHARED") or f"{compiler} -shared")
    # LDSHARED names the compiler it was configured with: honour CC.
    ldshared[0:1] = shlex.split(compiler)
    cflags = shlex.split(config.get("CFLAGS") or "-O2")
    ccshared = shlex.split(config.get("CCSHARED") or "-fPIC")
    include = sysconfig.get_paths()["include"]
    return [*ldshared, *ccshared, *cflags, f"-I{include}", *map(str, sources), "-o", str(target)]


def build_extension(root: Path, target: Path) -> str | None:
    """Compile into ``target``; the reason it failed, or None."""
    if os.environ.get("DURUS_BUILD_PURE", "") not in ("", "0"):
        return "DURUS_BUILD_PURE is set"
    command = compile_command([root / source for source in SOURCES], target)
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as error:
        return f"cannot run the compiler ({error})"
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip().splitlines()
        return f"{shlex.join(command[:1])} failed: {' / '.join(output[-3:]) or result.returncode}"
    return None


class AcceleratorBuildHook(BuildHookInterface):  # type: ignore[type-arg,unused-ignore]
    """Adds the compiled accelerator to wheels (and editable installs) when it builds."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        root = Path(self.root)
        filename = MODULE + (sysconfig.get_config_var("EXT_SUFFIX") or ".so")
        editable = version == "editable"
        if editable:
            target = root / "src" / "durus" / filename
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="durus-accel-")
            target = Path(self._tmp.name) / filename
        failure = build_extension(root, target)
        if failure is not None:
            warnings.warn(
                "durus-persistent: building without the C accelerator, pure Python "
                f"only ({failure})",
                stacklevel=1,
            )
            if editable and target.exists():
                target.unlink()  # a stale accelerator must not shadow the source
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if not editable:
            build_data["force_include"][str(target)] = f"durus/{filename}"

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            tmp.cleanup()
