"""Create a side virtual environment holding the real Durus 4.3.

Why: interoperability tests run a real Durus 4.3 (files, server, client) in
its own interpreter, never mixed with our distributions.  Durus 4.3 compiles a
small C extension and runs on CPython 3.10-3.12 only.

Usage: python tools/make_durus43_venv.py TARGET_DIR [PYTHON]
Prints the path of the venv's python.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[-2], file=sys.stderr)
        return 2
    target = pathlib.Path(argv[0])
    base_python = argv[1] if len(argv) > 1 else sys.executable
    python = target / "bin" / "python"
    if not python.exists():
        subprocess.run([base_python, "-m", "venv", str(target)], check=True)
    probe = subprocess.run(
        [str(python), "-c", "import durus, durus.connection; print(durus.__version__)"],
        capture_output=True, text=True,
    )
    if probe.returncode != 0 or probe.stdout.strip() != "4.3":
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "durus==4.3"], check=True
        )
    print(python)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
