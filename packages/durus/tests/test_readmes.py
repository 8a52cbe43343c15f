"""Every Python example in the READMEs, and the example scripts, run as shown.

Runs in the environment where every distribution is installed, each example
in a fresh interpreter inside a temporary directory, so the docs cannot rot.
"""

from __future__ import annotations

import os
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
    if code.startswith("# needs PostgreSQL"):
        pytest.skip("run against a real server by durus-sqlstorage's test_readme.py")
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


def shell_blocks(readme: pathlib.Path) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", readme.read_text(), re.MULTILINE | re.DOTALL)


def test_root_readme_shell_commands_are_the_ones_tested():
    commands = [line for block in shell_blocks(ROOT / "README.md") for line in block.splitlines()]
    assert commands == [
        "python3 -m pip install ./packages/durus-persistent ./packages/durus-filestorage"
        " && python3 examples/embedded.py",
        "python3 -m pip install tox tox-uv && tox -p auto",
    ]
    # The test command is what CI runs, verbatim.
    assert "\ntox -p auto\n" in (ROOT / ".ci" / "run").read_text()


def test_root_readme_embedded_install_works_in_a_fresh_venv(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    command = shell_blocks(ROOT / "README.md")[0].strip().replace("python3", python)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HOME=str(tmp_path), TMPDIR=str(tmp_path))  # the example's database goes there
    result = subprocess.run(
        command, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("1 visit(s) recorded")
