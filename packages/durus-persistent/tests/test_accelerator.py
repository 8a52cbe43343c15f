"""The optional C accelerator: the flag, the switch, and builds with and without it.

The wheel builds run hatchling's PEP 517 hook in a child process and check
the wheel itself (tag, files) and that its code runs from a bare interpreter
(``-S``: no site-packages, so nothing else of ours is importable).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import durus.persistent

PACKAGE = Path(__file__).resolve().parent.parent
WARNING = "building without the C accelerator"
HAS_HATCHLING = importlib.util.find_spec("hatchling") is not None
SMOKE = """
import sys
sys.path.insert(0, sys.argv[1])
from durus.connection import Connection
from durus.persistent import Persistent, accelerated
from durus.storage import MemoryStorage

class Item(Persistent):
    pass

connection = Connection(MemoryStorage())
item = Item()
item.value = 42
connection.get_root()["item"] = item
connection.commit()
other = Connection(connection.get_storage())
assert other.get_root()["item"].value == 42
print("accelerated" if accelerated else "pure")
"""


def _python(code: str, *args: str, env: dict[str, str] | None = None) -> str:
    run = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True
    )
    return run.stdout.strip()


def _environment(**changes: str | None) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in changes.items():
        env.pop(name, None)
        if value is not None:
            env[name] = value
    return env


def test_the_flag_tells_which_path_runs():
    module = sys.modules["durus.persistent"]
    assert durus.persistent.accelerated is (module._accel is not None)
    if durus.persistent.accelerated:
        from durus import _persistent_accel  # type: ignore[attr-defined]

        assert durus.persistent.PersistentBase is _persistent_accel.PersistentBase
        assert durus.persistent.ConnectionBase is _persistent_accel.ConnectionBase


def test_the_accelerator_is_there_where_required():
    """The -all, interop and durus43suite envs require the accelerator: no silent fallback."""
    if os.environ.get("DURUS_REQUIRE_ACCELERATOR", "") in ("", "0"):
        pytest.skip("DURUS_REQUIRE_ACCELERATOR is not set")
    assert durus.persistent.accelerated, "durus._persistent_accel was not built"


def test_durus_pure_python_forces_the_pure_path():
    code = "import durus.persistent as p; print(p.accelerated, p.PersistentBase.__module__)"
    pure = _python(code, env=_environment(DURUS_PURE_PYTHON="1"))
    assert pure == "False durus.persistent"
    default = _python(code, env=_environment(DURUS_PURE_PYTHON=None))
    built = importlib.util.find_spec("durus._persistent_accel") is not None
    assert default == f"{built} durus.persistent"


def _build_wheel(tmp_path: Path, **env: str | None) -> tuple[Path, str]:
    out = tmp_path / "wheel"
    out.mkdir()
    code = "import sys; from hatchling.build import build_wheel; print(build_wheel(sys.argv[1]))"
    run = subprocess.run(
        [sys.executable, "-W", "always", "-c", code, str(out)],
        cwd=PACKAGE,
        capture_output=True,
        text=True,
        env=_environment(**env),
        check=True,
    )
    return out / run.stdout.strip().splitlines()[-1], run.stderr


def _unpack(wheel: Path, tmp_path: Path) -> Path:
    target = tmp_path / "unpacked"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


@pytest.mark.skipif(not HAS_HATCHLING, reason="needs hatchling")
def test_a_failed_compile_gives_a_working_pure_wheel_and_one_warning(tmp_path):
    wheel, stderr = _build_wheel(tmp_path, CC="/nonexistent/cc", DURUS_BUILD_PURE=None)
    assert stderr.count(WARNING) == 1, stderr
    assert wheel.name.endswith("-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "durus/persistent.py" in names
    assert not [name for name in names if "_persistent_accel" in name]
    unpacked = _unpack(wheel, tmp_path)
    command = [sys.executable, "-S", "-c", SMOKE, str(unpacked)]
    assert subprocess.run(command, capture_output=True, text=True, check=True).stdout == "pure\n"


@pytest.mark.skipif(not HAS_HATCHLING, reason="needs hatchling")
@pytest.mark.skipif(not sysconfig.get_config_var("CC"), reason="no C compiler configured")
def test_a_wheel_built_with_a_compiler_carries_the_accelerator(tmp_path):
    wheel, stderr = _build_wheel(tmp_path, DURUS_BUILD_PURE=None, CC=None)
    if WARNING in stderr:
        pytest.skip(f"this machine cannot compile the accelerator: {stderr.strip()}")
    assert "-none-any" not in wheel.name and "py3-none" not in wheel.name
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert f"durus/_persistent_accel{suffix}" in names
    assert not [name for name in names if name.endswith(".c")]
    unpacked = _unpack(wheel, tmp_path)
    command = [sys.executable, "-S", "-c", SMOKE, str(unpacked)]
    default = _environment(DURUS_PURE_PYTHON=None)
    run = subprocess.run(command, capture_output=True, text=True, check=True, env=default)
    assert run.stdout == "accelerated\n"
    pure = subprocess.run(
        command, capture_output=True, text=True, check=True, env=_environment(DURUS_PURE_PYTHON="1")
    )
    assert pure.stdout == "pure\n"
