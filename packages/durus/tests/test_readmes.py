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
        "python3 -m pip install ./packages/durus-persistent ./packages/durus-filestorage"
        " ./packages/durus-client ./packages/durus-server ./packages/durus-sqlstorage"
        " ./packages/durus-cli ./packages/durus && durus --version",
        "python3 -m pip install tox tox-uv && tox -p auto",
    ]
    # The test command is what CI runs, verbatim.
    assert "\ntox -p auto\n" in (ROOT / ".ci" / "run").read_text()


def test_tox_never_downloads_an_interpreter():
    # Without it, a CPython missing from PATH made uv try a download, which
    # failed with a DNS error naming no interpreter (checked by hand: with it,
    # uv says "No interpreter found for CPython 3.10" and the env fails at once).
    import configparser

    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    settings = [line.replace(" ", "") for line in tox["testenv"]["set_env"].splitlines()]
    assert "UV_PYTHON_DOWNLOADS=never" in settings
    assert tox["tox"]["skip_missing_interpreters"] == "false"


def _expand(spec: str) -> list[str]:
    """A tox env_list entry with {a,b} groups, as the env names it stands for."""
    start = spec.find("{")
    if start < 0:
        return [spec]
    end = spec.index("}", start)
    return [
        name
        for choice in spec[start + 1 : end].split(",")
        for name in _expand(spec[:start] + choice + spec[end + 1 :])
    ]


def test_tox_runs_every_test_on_both_paths_on_every_cpython():
    """Issue 14: every distribution's tests on the pure path and with the C
    accelerator, on every CPython of the matrix; the alone envs stay alone."""
    import configparser

    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    envs = {name for line in tox["tox"]["env_list"].split() for name in _expand(line)}
    distributions = ["persistent", "filestorage", "client", "server", "cli", "sqlstorage"]
    for python in ("py310", "py311", "py312", "py313"):
        for dist in distributions:
            assert f"{python}-{dist}-pure" in envs  # alone, pure path
        assert f"{python}-all" in envs  # everything together, accelerated
    settings = [line.replace(" ", "") for line in tox["testenv"]["set_env"].splitlines()]
    assert "pure:DURUS_PURE_PYTHON=1" in settings
    assert "!pure:DURUS_REQUIRE_ACCELERATOR=1" in settings
    assert "all:TESTS=packages" in settings


#: The fresh-venv installs build every distribution from scratch (minutes): they
#: run once per CI run, in the tox env ``readme``, which sets this variable.
fresh_venv = pytest.mark.skipif(
    os.environ.get("DURUS_FRESH_VENV_TESTS") != "1",
    reason="run by the tox env readme (DURUS_FRESH_VENV_TESTS=1)",
)


def run_in_a_fresh_venv(command: str, tmp_path: pathlib.Path) -> subprocess.CompletedProcess:
    """``command`` (a README line) from the root of the clone, with ``python3`` and the
    commands it installs taken from a new virtual environment, as a new user would."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.update(HOME=str(tmp_path), TMPDIR=str(tmp_path))  # databases go there
    return subprocess.run(
        command, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env
    )


@fresh_venv
def test_root_readme_embedded_install_works_in_a_fresh_venv(tmp_path):
    result = run_in_a_fresh_venv(shell_blocks(ROOT / "README.md")[0].strip(), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("1 visit(s) recorded")


@fresh_venv
def test_root_readme_durus_command_install_works_in_a_fresh_venv(tmp_path):
    # `pip install ./packages/durus` alone once failed: its siblings are on no index.
    result = run_in_a_fresh_venv(shell_blocks(ROOT / "README.md")[1].strip(), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    names = ["durus-cli", "durus-server", "durus-client", "durus-filestorage",
             "durus-sqlstorage", "durus-persistent"]
    # `durus --version` prints last, after pip's own lines: one "name version" per distribution.
    versions = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines()[-6:])
    assert sorted(versions) == sorted(names), result.stdout
    assert all(version[0].isdigit() for version in versions.values()), versions
