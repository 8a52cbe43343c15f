"""Virtual environments of the four systems and of the harness's tools.

Why rebuilt from scratch when stale: a venv is cheap to make on a warm pip cache
and a partly upgraded one is a source of incomparable runs.  Each venv carries a
stamp of what it was built from (interpreter, requirements, our source tree)
and is reused while the stamp still matches.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
ROOT = BENCH_DIR.parent
PACKAGES = ROOT / "packages"
ENVS_DIR = BENCH_DIR / ".envs"
REQUIREMENTS = BENCH_DIR / "requirements"
OURS_EXTRA = REQUIREMENTS / "ours-extra.txt"  # third-party dependencies of our wheels
STAMP = "bench-stamp.json"
DEFAULT_PYTHONS = ("3.12", "3.11")
SKIPPED_PARTS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis"}
SKIPPED_PARTS |= {"build", "dist", ".tox", ".venv"}


class EnvError(Exception):
    """A venv could not be built; the message says which and where the log is."""


@dataclass
class Interpreter:
    path: str
    version: str


@dataclass
class Env:
    """One built venv; ``notes`` are printed with the results (e.g. dists that failed)."""

    name: str
    path: Path
    notes: list[str] = field(default_factory=list)
    reused: bool = False

    @property
    def python(self) -> str:
        return str(self.path / "bin" / "python")


def _version_of(python: str) -> str | None:
    try:
        out = subprocess.run(
            [python, "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _version_key(path: str) -> tuple[int, ...]:
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", path)
    return tuple(int(x) for x in match.groups()) if match else (0,)


def _candidates(minor: str) -> list[str]:
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = glob.glob(os.path.join(pyenv_root, "versions", f"{minor}.*", "bin", "python"))
    found = [p for p in found if re.search(rf"/{re.escape(minor)}\.\d+/bin/", p)]
    found.sort(key=_version_key, reverse=True)
    on_path = shutil.which(f"python{minor}")
    return [*found, *([on_path] if on_path else [])]


def find_python(requested: str | None) -> Interpreter:
    """The interpreter for every system venv: ``requested`` (a version or a path),
    else the newest pyenv (or PATH) CPython 3.12, else 3.11.

    Durus 4.3 compiles only up to 3.12, so the default never picks 3.13.
    """
    if requested and os.sep in requested:
        version = _version_of(requested)
        if version is None:
            raise EnvError(f"cannot run the interpreter {requested}")
        return Interpreter(requested, version)
    for minor in [requested] if requested else list(DEFAULT_PYTHONS):
        for path in _candidates(minor):
            version = _version_of(path)
            if version and version.startswith(minor + "."):
                return Interpreter(path, version)
    wanted = requested or " or ".join(DEFAULT_PYTHONS)
    raise EnvError(f"no CPython {wanted} found (pyenv or PATH); pass --python")


def _tree_digest(top: Path) -> str:
    """A digest of every source file under ``top``: a changed file means a rebuild."""
    digest = hashlib.sha256()
    for path in sorted(top.rglob("*")):
        if not path.is_file() or SKIPPED_PARTS & set(path.parts) or path.suffix == ".pyc":
            continue
        if any(part.endswith(".egg-info") for part in path.parts):
            continue
        digest.update(str(path.relative_to(top)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _run_logged(cmd: list[str], log: Path, what: str) -> None:
    with log.open("a", encoding="utf-8") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise EnvError(f"{what} failed (exit {proc.returncode}); see {log}")


def _fresh_or_reused(name: str, interpreter: Interpreter, inputs: str) -> tuple[Path, bool]:
    """The venv's path and whether its stamp still matches (then nothing is done)."""
    path = ENVS_DIR / f"{name}-py{interpreter.version}"
    stamp = {"python": interpreter.path, "version": interpreter.version, "inputs": inputs}
    stamp_file = path / STAMP
    if stamp_file.exists():
        try:
            if json.loads(stamp_file.read_text(encoding="utf-8")) == stamp:
                return path, True
        except ValueError:
            pass
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path, False


def _write_stamp(path: Path, interpreter: Interpreter, inputs: str) -> None:
    stamp = {"python": interpreter.path, "version": interpreter.version, "inputs": inputs}
    (path / STAMP).write_text(json.dumps(stamp, indent=1), encoding="utf-8")


def _requirements_env(name: str, interpreter: Interpreter, requirements: Path) -> Env:
    inputs = hashlib.sha256(requirements.read_bytes()).hexdigest()
    path, reused = _fresh_or_reused(name, interpreter, inputs)
    env = Env(name, path, reused=reused)
    if reused:
        return env
    log = ENVS_DIR / f"{name}.log"
    log.write_text("", encoding="utf-8")
    _run_logged([interpreter.path, "-m", "venv", str(path)], log, f"creating the {name} venv")
    what = f"installing {requirements.name} into the {name} venv"
    if name == "durus43":
        what += " (Durus 4.3 builds only on Python <= 3.12: else use --systems ours,zodb)"
    _run_logged([env.python, "-m", "pip", "install", "--quiet", "-r", str(requirements)], log, what)
    _write_stamp(path, interpreter, inputs)
    return env


def tools_env(interpreter: Interpreter) -> Env:
    """matplotlib for the chart and hatchling to build wheels of our distributions."""
    return _requirements_env("tools", interpreter, REQUIREMENTS / "tools.txt")


def peer_env(name: str, interpreter: Interpreter) -> Env:
    """``durus43``, ``zodb`` or ``relstorage``, installed from the index with pinned versions."""
    return _requirements_env(name, interpreter, REQUIREMENTS / f"{name}.txt")


def _distribution_dirs() -> list[Path]:
    return sorted(p for p in PACKAGES.iterdir() if (p / "pyproject.toml").exists())


def _last_error_line(log: Path) -> str:
    lines = [x.strip() for x in log.read_text(encoding="utf-8", errors="replace").splitlines()]
    interesting = [x for x in lines if "rror" in x and "is ignored" not in x]
    return (interesting or lines or ["no output"])[-1][:200]


def ours_env(interpreter: Interpreter, tools: Env) -> Env:
    """Every distribution of packages/, built as wheels and installed non-editable.

    Sibling dependencies (durus-persistent, ...) are not on any index, so the
    wheels go into a private wheelhouse and pip installs from it alone.  A
    distribution that does not build yet is left out and named in the notes:
    the workloads that need its modules then report "unavailable".  Their
    third-party dependencies (psycopg, for durus-sqlstorage's PostgresStorage)
    come first from the index, pinned in ``ours-extra.txt``.
    """
    dists = _distribution_dirs()
    tools_pins = (REQUIREMENTS / "tools.txt").read_bytes()
    extra_pins = OURS_EXTRA.read_bytes()
    digest = _tree_digest(PACKAGES).encode() + tools_pins + extra_pins
    inputs = hashlib.sha256(digest).hexdigest()
    path, reused = _fresh_or_reused("ours", interpreter, inputs)
    env = Env("ours", path, reused=reused)
    notes_file = path / "bench-notes.json"
    if reused:
        env.notes = json.loads(notes_file.read_text(encoding="utf-8"))
        return env
    log = ENVS_DIR / "ours.log"
    log.write_text("", encoding="utf-8")
    wheelhouse = path / "wheelhouse"
    wheelhouse.mkdir(parents=True)
    for dist in dists:
        try:
            _run_logged(
                [
                    tools.python,
                    "-m",
                    "pip",
                    "wheel",
                    "--quiet",
                    "--no-deps",
                    "--no-build-isolation",
                    "--wheel-dir",
                    str(wheelhouse),
                    str(dist),
                ],
                log,
                f"building {dist.name}",
            )
        except EnvError:
            env.notes.append(f"{dist.name} did not build: {_last_error_line(log)}")
    wheels = sorted(str(p) for p in wheelhouse.glob("*.whl"))
    _run_logged([interpreter.path, "-m", "venv", str(path)], log, "creating the ours venv")
    # Third-party dependencies first (psycopg for durus-sqlstorage): then the
    # --no-index install of our wheels finds them already satisfied.
    _run_logged(
        [env.python, "-m", "pip", "install", "--quiet", "-r", str(OURS_EXTRA)],
        log,
        f"installing {OURS_EXTRA.name} into the ours venv",
    )
    if wheels:
        install = [
            env.python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--find-links",
            str(wheelhouse),
        ]
        try:
            _run_logged([*install, *wheels], log, "installing our wheels")
        except EnvError:
            _run_logged([*install, "--no-deps", *wheels], log, "installing our wheels")
            env.notes.append("installed with --no-deps: a sibling dependency did not build")
    else:
        env.notes.append("no distribution of packages/ built")
    notes_file.write_text(json.dumps(env.notes), encoding="utf-8")
    _write_stamp(path, interpreter, inputs)
    return env
