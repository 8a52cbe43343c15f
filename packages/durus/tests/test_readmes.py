"""Every Python example in the READMEs, and the example scripts, run as shown.

Runs in the environment where every distribution is installed, each example
in a fresh interpreter inside a temporary directory, so the docs cannot rot.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
READMES = [ROOT / "README.md", *sorted(ROOT.glob("packages/*/README.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks():
    for readme in READMES:
        for number, match in enumerate(FENCE.finditer(readme.read_text()), 1):
            yield pytest.param(match.group(1), id=f"{readme.relative_to(ROOT)}#{number}")


@pytest.mark.parametrize("code", list(python_blocks()))
def test_readme_python_block_runs(code, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_embedded_example_keeps_its_data(tmp_path):
    database = tmp_path / "example.durus"
    script = ROOT / "examples" / "embedded.py"
    outputs = [
        subprocess.run(
            [sys.executable, str(script), str(database)],
            capture_output=True, text=True, check=True, timeout=120,
        ).stdout
        for _ in range(2)
    ]
    assert outputs == [f"{database}: 1 visit(s) recorded\n", f"{database}: 2 visit(s) recorded\n"]
