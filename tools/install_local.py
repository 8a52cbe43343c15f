"""Install one distribution of this monorepo with only its declared dependencies.

Why: the tox "alone" environments must prove that each distribution imports only
what it declares.  Every distribution is built into a private wheelhouse and pip
installs the requested one from there with ``--no-index``, so sibling
dependencies come from this tree (never from an index) and a sibling that is not
declared is simply not installed.

Usage: python tools/install_local.py WHEELHOUSE DIST [DIST ...]
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ROOT / "packages"


def build_wheelhouse(wheelhouse: pathlib.Path) -> None:
    wheelhouse.mkdir(parents=True, exist_ok=True)
    for old in wheelhouse.glob("*.whl"):
        old.unlink()
    sources = sorted(str(p) for p in PACKAGES.iterdir() if (p / "pyproject.toml").exists())
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
         "--no-build-isolation", "--wheel-dir", str(wheelhouse), *sources],
        check=True,
    )


def install(wheelhouse: pathlib.Path, dists: list[str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--force-reinstall",
         "--no-index", "--find-links", str(wheelhouse), *dists],
        check=True,
    )


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
