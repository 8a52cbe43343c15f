"""Benchmarks of ours against Durus 4.3 and ZODB: ``python benchmarks/run.py --help``.

Runs on any Python >= 3.10 with the standard library alone; see README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.dont_write_bytecode = True  # leave no __pycache__ in the tree
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.cli import main  # noqa: E402 -- after the two settings above

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
