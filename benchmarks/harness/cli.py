"""The command line: build the venvs, run every workload interleaved, report.

Exit status: 0 when every workload ran or was unavailable (a system lacking a
module or an option), 1 when anything else went wrong (so a CI smoke run
catches rot), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import catalogue, envs, machine, report, results, targets
from .outcome import ERROR, OK, UNAVAILABLE, Outcome
from .postgres import Postgres
from .runner import Runner, log_tail

SYSTEMS = ("ours", "pure", "durus43", "zodb", "relstorage")
SMOKE_SCALE = 0.01


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="Benchmark ours against Durus 4.3 and ZODB (issue 6), "
        "and against RelStorage on PostgreSQL.",
    )
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply every size (default 1: the sizes of issue 6)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=5,
        help="repetitions per workload and system; figures are medians (default 5)",
    )
    p.add_argument("--only", help="comma-separated workload names or prefixes (see --list)")
    p.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help="comma-separated subset of " + ",".join(SYSTEMS),
    )
    p.add_argument(
        "--python",
        help="version (3.12) or path of the interpreter for every venv "
        "(default: CPython 3.12, else 3.11)",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help=f"CI check: scale {SMOKE_SCALE}, 1 repetition (everything unless --only/--systems)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        help="seconds allowed to one driver process (default 1800)",
    )
    p.add_argument("--results-dir", type=Path, default=envs.BENCH_DIR / "results")
    p.add_argument(
        "--keep-work",
        action="store_true",
        help="keep the database files and logs under benchmarks/.work/",
    )
    p.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    return p


def _settings(args: argparse.Namespace) -> argparse.Namespace:
    if args.smoke:
        # Every workload and system unless --only / --systems narrow it.
        args.scale, args.repeat = SMOKE_SCALE, 1
        args.timeout = min(args.timeout, 300.0)
    chosen = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SYSTEMS))
    if unknown or not chosen:
        raise ValueError(f"unknown systems {unknown}; choose from {', '.join(SYSTEMS)}")
    args.system_list = [s for s in SYSTEMS if s in chosen]
    if args.repeat < 1 or args.scale <= 0:
        raise ValueError("--repeat must be >= 1 and --scale > 0")
    return args


def _measured_systems(args: argparse.Namespace, workloads: list[catalogue.Workload]) -> None:
    """Leave out a system that no chosen workload compares (RelStorage without sql_*)."""
    args.system_list = [
        s for s in args.system_list if any(catalogue.measured(w, s) for w in workloads)
    ]


def _postgres(args: argparse.Namespace, workloads: list[catalogue.Workload]) -> Postgres | None:
    """The run's PostgreSQL cluster, when a sql_* workload will use it."""
    wanted = any(w.sql for w in workloads) and set(catalogue.SQL_SYSTEMS) & set(args.system_list)
    if not wanted:
        return None
    postgres = Postgres()
    print("postgresql: ", end="", flush=True)
    postgres.start()
    if postgres.status == OK:
        print(f"started ({postgres.info.get('version')}, {postgres.info.get('bin')})")
    else:
        print(f"{postgres.status}: {postgres.reason} (the sql_* workloads are {postgres.status})")
    return postgres


def _list(workloads: list[catalogue.Workload]) -> None:
    for w in workloads:
        print(f"{w.name}: {w.title}")
        for f in w.figures:
            print(f"    {f.key} ({f.unit}, {f.better} is better): {f.label}")


def _build_envs(args: argparse.Namespace, interpreter: envs.Interpreter) -> dict[str, envs.Env]:
    built: dict[str, envs.Env] = {}
    needs_tools = not args.no_chart or bool({"ours", "pure"} & set(args.system_list))
    order = (["tools"] if needs_tools else []) + args.system_list
    for name in order:
        print(f"venv {name}: ", end="", flush=True)
        start = time.perf_counter()
        if name == "tools":
            env = envs.tools_env(interpreter)
        elif name == "ours":
            env = envs.ours_env(interpreter, built["tools"])
        elif name == "pure":
            # Ours on the pure-Python path: the same venv, DURUS_PURE_PYTHON=1.
            env = built.get("ours") or envs.ours_env(interpreter, built["tools"])
        else:
            env = envs.peer_env(name, interpreter)
        state = "reused" if env.reused else f"built in {time.perf_counter() - start:.0f} s"
        print(f"{state} ({env.path})")
        for note in env.notes:
            print(f"  note: {note}")
        built[name] = env
    return built


def _progress(workload: catalogue.Workload, outcome: Outcome) -> str:
    if outcome.status != OK:
        return f"{outcome.status}: {outcome.reason}"
    parts = [
        f"{f.label} {report.number(outcome.figures[f.key], f.unit)} {f.unit}"
        for f in workload.figures
    ]
    return ", ".join(parts) + f" ({outcome.seconds:.1f} s)"


def _run_all(
    args: argparse.Namespace, runner: Runner, workloads: list[catalogue.Workload]
) -> tuple[dict[str, dict[str, list[Outcome]]], list[dict[str, Any]]]:
    """Every workload, repetition-major and system-minor: ours, durus43, zodb, ours, ..."""
    outcomes: dict[str, dict[str, list[Outcome]]] = {}
    errors: list[dict[str, Any]] = []
    for workload in workloads:
        print(f"\n== {workload.name}: {workload.title}", flush=True)
        per_system: dict[str, list[Outcome]] = {s: [] for s in args.system_list}
        outcomes[workload.name] = per_system
        for rep in range(args.repeat):
            for system in args.system_list:
                if not catalogue.measured(workload, system):
                    continue  # no outcome: an empty cell, not "unavailable"
                previous = per_system[system]
                if previous and previous[-1].status == UNAVAILABLE:
                    previous.append(previous[-1])  # it will not appear between repetitions
                    continue
                reason = catalogue.unavailable_reason(workload, system)
                if reason:
                    outcome = Outcome(UNAVAILABLE, reason=reason)
                else:
                    outcome = runner.run(workload, system, rep + 1)
                previous.append(outcome)
                print(
                    f"  rep {rep + 1}/{args.repeat} {system:<8} {_progress(workload, outcome)}",
                    flush=True,
                )
                if outcome.status == ERROR:
                    errors.append(
                        {
                            "workload": workload.name,
                            "system": system,
                            "rep": rep + 1,
                            "reason": outcome.reason,
                            "log": outcome.log,
                        }
                    )
                    for line in log_tail(Path(outcome.log)) if outcome.log else []:
                        print(f"      | {line}")
    return outcomes, errors


def _systems_info(runner: Runner, built: dict[str, envs.Env], systems: list[str]) -> dict:
    info = {}
    for system in systems:
        outcome = runner.info(system)
        entry = {"env": str(built[system].path), "notes": built[system].notes}
        if outcome.status == OK:
            entry.update(
                python=outcome.extra.get("python"), packages=outcome.extra.get("packages", {})
            )
        else:
            entry["notes"] = [*entry["notes"], f"info failed: {outcome.reason}"]
        info[system] = entry
    return info


def _chart(built: dict[str, envs.Env], json_path: Path) -> Path | None:
    png = json_path.with_suffix(".png")
    script = Path(__file__).with_name("chart.py")
    proc = subprocess.run(
        [built["tools"].python, str(script), str(json_path), str(png)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return None
    return png


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        args = _settings(args)
        workloads = catalogue.select(catalogue.build(args.scale), args.only)
    except ValueError as exc:
        parser.error(str(exc))
    if args.list:
        _list(workloads)
        return 0
    _measured_systems(args, workloads)
    started = datetime.datetime.now()
    stamp = started.strftime("%Y%m%d-%H%M%S")
    try:
        interpreter = envs.find_python(args.python)
        print(f"python {interpreter.version} ({interpreter.path}) for every system")
        built = _build_envs(args, interpreter)
    except envs.EnvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    workdir = envs.BENCH_DIR / ".work" / stamp
    workdir.mkdir(parents=True, exist_ok=True)
    postgres = _postgres(args, workloads)
    try:
        return _measure(args, workloads, built, interpreter, workdir, postgres, started, argv)
    finally:
        if postgres is not None:
            postgres.stop()


def _measure(
    args: argparse.Namespace,
    workloads: list[catalogue.Workload],
    built: dict[str, envs.Env],
    interpreter: envs.Interpreter,
    workdir: Path,
    postgres: Postgres | None,
    started: datetime.datetime,
    argv: list[str],
) -> int:
    stamp = workdir.name
    runner = Runner(built, workdir, args.timeout, args.keep_work, postgres)
    doc: dict[str, Any] = {
        "schema": results.SCHEMA,
        "started": started.isoformat(timespec="seconds"),
        "command": ["benchmarks/run.py", *argv],
        "settings": {
            "scale": args.scale,
            "repeat": args.repeat,
            "smoke": args.smoke,
            "systems": args.system_list,
            "workloads": [w.name for w in workloads],
            "python": interpreter.version,
            "python_path": interpreter.path,
        },
        "machine": machine.describe(workdir, envs.ROOT),
        "convention": results.CONVENTION,
        "postgres": postgres.describe() if postgres else None,
    }
    doc["systems"] = _systems_info(runner, built, args.system_list)
    outcomes, errors = _run_all(args, runner, workloads)
    doc["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    doc["machine"]["load_average_end"] = machine.load_average()
    doc["workloads"] = [results.workload_entry(w, outcomes[w.name]) for w in workloads]
    doc["fixtures"] = {
        f"{system}/{ref.describe()}": outcome.extra if outcome.status == OK else outcome.reason
        for (system, ref), (_, outcome) in runner.fixtures.items()
    }
    doc["targets"] = targets.evaluate(doc)
    doc["errors"] = errors
    json_path = args.results_dir / f"{stamp}.json"
    results.write(doc, json_path)
    print("\n" + report.render(doc) + "\n")
    print(f"results: {json_path}")
    if not args.no_chart:
        png = _chart(built, json_path)
        if png is None:
            print("error: the chart could not be drawn", file=sys.stderr)
            errors.append({"workload": "chart"})
        else:
            print(f"chart:   {png}")
    if errors or args.keep_work:
        print(f"work files and logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if errors else 0
