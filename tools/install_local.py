"""Install distributions of this monorepo with only their declared dependencies.

Why: the tox "alone" environments must prove that each distribution imports
only what it declares.  Every distribution is built into a private wheelhouse
and the requested ones are installed from there with ``--no-index``, so
sibling dependencies come from this tree (never from an index) and a sibling
that is not declared is simply not installed.

Wheels are built in-process with hatchling's PEP 517 hooks (hatchling must be
importable), and installed with pip when the environment has it, else with
``uv pip`` (tox-uv environments have no pip).

Usage: python tools/install_local.py WHEELHOUSE DIST [DIST ...]
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ROOT / "packages"


@contextlib.contextmanager
def _working_directory(path: pathlib.Path):
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def build_wheelhouse(wheelhouse: pathlib.Path) -> None:
    from hatchling.build import build_wheel

    wheelhouse.mkdir(parents=True, exist_ok=True)
    for old in wheelhouse.glob("*.whl"):
        old.unlink()
    for source in sorted(PACKAGES.iterdir()):
        if (source / "pyproject.toml").exists():
            with _working_directory(source):
                build_wheel(str(wheelhouse))


def install(wheelhouse: pathlib.Path, dists: list[str]) -> None:
    options = ["--no-index", "--find-links", str(wheelhouse), "--reinstall", *dists]
    if importlib.util.find_spec("pip") is not None:
        options[options.index("--reinstall")] = "--force-reinstall"
        command = [sys.executable, "-m", "pip", "install", "--quiet", *options]
    else:
        uv = shutil.which("uv")
        if uv is None:
            raise SystemExit("install_local: this environment has neither pip nor uv")
        command = [uv, "pip", "install", "--quiet", "--python", sys.executable, *options]
    subprocess.run(command, check=True)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    wheelhouse = pathlib.Path(argv[0])
    build_wheelhouse(wheelhouse)
    install(wheelhouse, argv[1:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
