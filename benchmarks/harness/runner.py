"""Run driver processes: fixtures once per system, workloads once per repetition.

Why each in a fresh process with its own session (process group): a workload
must not inherit another's cache or imports, and a hung server or client can
then be killed with everything it started, without touching anything else.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .catalogue import FixtureRef, Workload
from .envs import BENCH_DIR, Env
from .outcome import ERROR, OK, UNAVAILABLE, Outcome

if TYPE_CHECKING:
    from .postgres import Postgres

EXIT_UNAVAILABLE = 3  # bench_driver.protocol.EXIT_UNAVAILABLE
DEPENDS = {"db_packed": "db"}  # a packed fixture is a packed copy of this one


def log_tail(path: Path, lines: int = 20) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [x for x in text.splitlines() if x.strip()][-lines:]


class Runner:
    """Starts ``python -m bench_driver`` in a system's venv and reads its result."""

    def __init__(
        self,
        envs: dict[str, Env],
        workdir: Path,
        timeout: float,
        keep: bool,
        postgres: Postgres | None = None,
    ) -> None:
        self.envs = envs
        self.workdir = workdir
        self.timeout = timeout
        self.keep = keep
        self.postgres = postgres  # the run's PostgreSQL cluster, for the sql_* workloads
        self.fixtures: dict[tuple[str, FixtureRef], tuple[str | None, Outcome]] = {}

    def _driver(self, system: str, args: list[str], name: str, cwd: Path) -> Outcome:
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        out = logs / f"{name}.json"
        log = logs / f"{name}.log"
        cmd = [self.envs[system].python, "-m", "bench_driver", *args]
        cmd += ["--system", system, "--out", str(out)]
        env = dict(os.environ, PYTHONPATH=str(BENCH_DIR), PYTHONDONTWRITEBYTECODE="1")
        # "pure" is ours on the pure-Python path; "ours" always runs accelerated.
        env.pop("DURUS_PURE_PYTHON", None)
        if system == "pure":
            env["DURUS_PURE_PYTHON"] = "1"
        load = round(os.getloadavg()[0], 2)  # kept with the result: a busy machine is noisy
        start = time.perf_counter()
        with log.open("wb") as f:
            proc = subprocess.Popen(
                cmd,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                code = proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                code = None
            except KeyboardInterrupt:
                # The child has its own session: Ctrl-C does not reach it.
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
        seconds = time.perf_counter() - start
        if code is None:
            return Outcome(ERROR, reason=f"timed out after {self.timeout:g} s", log=str(log))
        if code in (0, EXIT_UNAVAILABLE) and out.exists():
            result = json.loads(out.read_text(encoding="utf-8"))
            if code == EXIT_UNAVAILABLE:
                return Outcome(UNAVAILABLE, reason=result["reason"], seconds=seconds)
            figures = result.get("figures", {})
            extra = {k: v for k, v in result.items() if k not in ("figures", "status")}
            extra.update(extra.pop("extra", {}), load_average=load)
            return Outcome(OK, figures, extra, seconds=seconds, log=str(log))
        tail = log_tail(log)
        reason = tail[-1] if tail else f"exit status {code}"
        return Outcome(ERROR, reason=reason[:300], seconds=seconds, log=str(log))

    def info(self, system: str) -> Outcome:
        return self._driver(system, ["info"], f"{system}-info", self.workdir)

    def fixture(self, system: str, ref: FixtureRef) -> tuple[str | None, Outcome]:
        """The path of fixture ``ref`` for ``system``, building it (and its source) once."""
        key = (system, ref)
        if key in self.fixtures:
            return self.fixtures[key]
        params = ref.as_dict()
        if ref.kind in DEPENDS:
            source, outcome = self.fixture(system, FixtureRef(DEPENDS[ref.kind], ref.params))
            if source is None:
                self.fixtures[key] = (None, outcome)
                return self.fixtures[key]
            params["source"] = source
        directory = self.workdir / system / "fixtures"
        directory.mkdir(parents=True, exist_ok=True)
        slug = ref.kind + "-" + "-".join(f"{k}{v}" for k, v in ref.params)
        path = directory / f"{slug}.db"
        outcome = self._driver(
            system,
            ["prepare", ref.kind, "--path", str(path), "--params", json.dumps(params)],
            f"{system}-fixture-{slug}",
            directory,
        )
        self.fixtures[key] = (str(path) if outcome.status == OK else None, outcome)
        return self.fixtures[key]

    def run(self, workload: Workload, system: str, rep: int) -> Outcome:
        """Repetition ``rep`` (from 1) of ``workload`` on ``system`` in a fresh scratch dir."""
        if workload.sql:
            return self._run_sql(workload, system, rep)
        params = dict(workload.params, fixtures={})
        for label, ref in workload.fixtures.items():
            path, outcome = self.fixture(system, ref)
            if path is None:
                return _fixture_failed(ref, outcome)
            params["fixtures"][label] = path
        scratch = self.workdir / system / f"{workload.name}-{rep}"
        scratch.mkdir(parents=True, exist_ok=True)
        return self._run_driver(workload, system, rep, params, scratch)

    def _run_sql(self, workload: Workload, system: str, rep: int) -> Outcome:
        """The same in a fresh PostgreSQL database, its fixtures built into it first
        (untimed, by another process: the workload's process starts cold)."""
        postgres = self.postgres
        if postgres is None or postgres.status != OK:
            reason = postgres.reason if postgres else "no PostgreSQL cluster was started"
            return Outcome(postgres.status if postgres else UNAVAILABLE, reason=reason)
        scratch = self.workdir / system / f"{workload.name}-{rep}"
        scratch.mkdir(parents=True, exist_ok=True)
        try:
            dsn = postgres.create_database(f"{system}_{workload.name}_{rep}")
        except Exception as exc:
            return Outcome(ERROR, reason=f"cannot create a database: {exc!r}"[:300])
        params = dict(workload.params, fixtures={}, dsn=dsn)
        for label, ref in workload.fixtures.items():
            slug = ref.kind + "-" + "-".join(f"{k}{v}" for k, v in ref.params)
            path = scratch / slug  # the fixture's side files (oids); the data is in dsn
            fixture_params = dict(ref.as_dict(), dsn=dsn)
            outcome = self._driver(
                system,
                ["prepare", ref.kind, "--path", str(path), "--params", json.dumps(fixture_params)],
                f"{system}-{workload.name}-{rep}-fixture-{slug}",
                scratch,
            )
            self.fixtures[(system, ref)] = (dsn if outcome.status == OK else None, outcome)
            if outcome.status != OK:
                return _fixture_failed(ref, outcome)
            params["fixtures"][label] = str(path)
        return self._run_driver(workload, system, rep, params, scratch)

    def _run_driver(
        self, workload: Workload, system: str, rep: int, params: dict[str, Any], scratch: Path
    ) -> Outcome:
        args = ["run", workload.driver, "--params", json.dumps(params), "--scratch", str(scratch)]
        outcome = self._driver(system, args, f"{system}-{workload.name}-{rep}", scratch)
        if not self.keep and outcome.status != ERROR:
            shutil.rmtree(scratch, ignore_errors=True)
        if outcome.status == OK:
            missing = [f.key for f in workload.figures if f.key not in outcome.figures]
            if missing:
                return Outcome(ERROR, reason=f"driver gave no figure {', '.join(missing)}")
            wanted = {f.key for f in workload.figures}
            for key in list(outcome.figures):
                if key not in wanted:
                    outcome.extra[key] = outcome.figures.pop(key)
        return outcome


def _fixture_failed(ref: FixtureRef, outcome: Outcome) -> Outcome:
    # An unavailable fixture means the system lacks what the workload needs
    # too: say that plainly; a failed one is named.
    if outcome.status == UNAVAILABLE:
        return Outcome(UNAVAILABLE, reason=outcome.reason)
    reason = f"fixture {ref.describe()} failed: {outcome.reason}"
    return Outcome(ERROR, reason=reason, log=outcome.log)
