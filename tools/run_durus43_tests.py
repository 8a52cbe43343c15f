"""Run the unit tests of Durus 4.3's sdist against the installed Durus (ours).

Why: Durus 4.3's own tests are a direct statement of its public behaviour.
This runner fetches the sdist at test time (tools/fetch_durus43_sdist.py,
sha256-checked, cached in CACHE_DIR), extracts its test/ folder as
``durus.test`` into a temp dir, and runs every test the modules' ``__main__``
blocks would run, each alone and reported by a stable id such as
``utest_btree.CoverageTest.update``, one child process per module
(tools/durus43_child.py).  The run fails on any failing test outside
tools/durus43_test_exceptions.toml, and on any entry there whose test passes
or no longer exists (a stale exception), like a strict xfail.

Usage: python tools/run_durus43_tests.py CACHE_DIR [-k SUBSTRING ...] [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from typing import Any

TOOLS = pathlib.Path(__file__).resolve().parent
EXCEPTIONS_FILE = TOOLS / "durus43_test_exceptions.toml"
sys.path.insert(0, str(TOOLS))

from fetch_durus43_sdist import FetchError, fetch  # noqa: E402


def load_exceptions(path: pathlib.Path = EXCEPTIONS_FILE) -> tuple[dict[str, str], dict[str, str]]:
    """The deliberate exceptions, test id -> reason (``[exceptions]`` and
    ``[deliberate_fixes]``), and the names we deliberately do not provide that
    test modules import, ``module.Name`` -> reason."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    document = tomllib.loads(path.read_text(encoding="utf-8"))
    tables = (document.get("exceptions", {}), document.get("absent_names", {}),
              document.get("deliberate_fixes", {}))
    for table in tables:
        for key, reason in table.items():
            if not isinstance(reason, str) or not reason.strip():
                raise SystemExit(f"{path}: the entry {key!r} needs a reason")
    return {**tables[0], **tables[2]}, dict(tables[1])


def extract_tests(sdist: pathlib.Path, lib_dir: pathlib.Path) -> pathlib.Path:
    """Unpack the sdist's test/*.py as lib_dir/durus/test/ (merges into namespace ``durus``)."""
    target = lib_dir / "durus" / "test"
    target.mkdir(parents=True)
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            parts = pathlib.PurePosixPath(member.name).parts
            if len(parts) == 3 and parts[1] == "test" and parts[2].endswith(".py"):
                source = archive.extractfile(member)
                assert source is not None
                (target / parts[2]).write_bytes(source.read())
    return target


def _methods(classes: dict[str, ast.ClassDef], name: str) -> list[str]:
    """A class's test methods (public functions), inherited ones first."""
    node = classes[name]
    found: list[str] = []
    for base in node.bases:
        if isinstance(base, ast.Name) and base.id in classes:
            found += _methods(classes, base.id)
    for item in node.body:
        if isinstance(item, ast.FunctionDef) and not item.name.startswith("_"):
            found.append(item.name)
    return list(dict.fromkeys(found))


def _main_block_calls(tree: ast.Module) -> list[ast.Call]:
    for node in tree.body:
        if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                and isinstance(node.test.left, ast.Name)
                and node.test.left.id == "__name__"):
            return [n for n in ast.walk(node) if isinstance(n, ast.Call)]
    return []


def plan_module(path: pathlib.Path) -> dict[str, Any]:
    """The tests of one module: the test classes its ``__main__`` block instantiates."""
    module = path.stem
    tree = ast.parse(path.read_text(encoding="utf-8"))
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    instances: dict[str, dict[str, Any]] = {}
    for call in _main_block_calls(tree):
        if not (isinstance(call.func, ast.Name) and call.func.id in classes):
            continue
        args = [ast.unparse(arg) for arg in call.args]
        label = call.func.id + (f"[{'-'.join(args)}]" if args else "")
        ids = {m: f"{module}.{label}.{m}" for m in _methods(classes, call.func.id)}
        instances.setdefault(label, {"class": call.func.id, "args": args, "ids": ids})
    plan: dict[str, Any] = {"module": module, "instances": list(instances.values())}
    if not instances:  # a helper module (stress.py): importing it is its test
        plan["import_id"] = f"{module}.<import>"
    return plan


def plan_ids(plan: dict[str, Any]) -> list[str]:
    ids = [plan["import_id"]] if plan.get("import_id") else []
    for instance in plan["instances"]:
        ids += instance["ids"].values()
    return ids


def _kill_group(pid: int) -> None:
    """End whatever the child left behind (servers its tests started), by its group id."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_module(plan: dict[str, Any], lib_dir: pathlib.Path, work: pathlib.Path,
               timeout: float, present_names: set[str]) -> dict[str, dict[str, Any]]:
    """Run one module's tests in child processes; a crash or hang fails that test only.
    Placeholder names found present in our durus are added to ``present_names``."""
    results: dict[str, dict[str, Any]] = {}
    folder = work / plan["module"]
    folder.mkdir()
    plan_path = folder / "plan.json"
    plan_path.write_text(json.dumps(plan))
    env = dict(os.environ, TMPDIR=str(folder), PYTHONDONTWRITEBYTECODE="1")
    for attempt in range(len(plan_ids(plan)) + 1):
        results_path = folder / f"results-{attempt}.jsonl"
        stderr_path = folder / f"stderr-{attempt}.txt"
        command = [sys.executable, str(TOOLS / "durus43_child.py"), str(lib_dir),
                   str(plan_path), str(results_path), str(timeout), *results]
        with open(stderr_path, "wb") as stderr:
            child = subprocess.Popen(command, cwd=folder, env=env, stdin=subprocess.DEVNULL,
                                     stdout=stderr, stderr=stderr, start_new_session=True)
            try:
                child.wait(timeout=timeout * (len(plan_ids(plan)) + 2))
            except subprocess.TimeoutExpired:
                pass
            finally:  # also when this run is interrupted
                _kill_group(child.pid)
                child.wait()
        started = None
        if results_path.exists():
            for line in results_path.read_text(encoding="utf-8").splitlines():
                event = json.loads(line)
                if event["event"] == "name":
                    if event["present"]:
                        present_names.add(event["name"])
                elif event["event"] == "start":
                    started = event["id"]
                elif event["id"] not in results:
                    results[event["id"]] = event
                    started = None
        missing = [i for i in plan_ids(plan) if i not in results]
        if not missing:
            break
        tail = stderr_path.read_text(errors="replace")[-3000:]
        detail = (f"the test did not finish: its process ended with status {child.returncode}"
                  f" (the runner stops a test after {timeout:g} s); its stderr:\n{tail}")
        if started is None:  # it died outside any test: nothing more can run
            for test_id in missing:
                results[test_id] = {"outcome": "error", "detail": detail, "output": ""}
            break
        results[started] = {"outcome": "error", "detail": detail, "output": ""}
    return results


def report(results: dict[str, dict[str, Any]], exceptions: dict[str, str],
           selected: list[str], stale_names: list[str]) -> int:
    """Print one line per test and the details of what fails the run; the exit status."""
    counts = {"PASS": 0, "FAIL": 0, "EXCEPTED": 0, "STALE": 0}
    problems = []
    for test_id in selected:
        passed = results[test_id]["outcome"] == "pass"
        listed = test_id in exceptions
        status = {(True, False): "PASS", (False, False): "FAIL",
                  (False, True): "EXCEPTED", (True, True): "STALE"}[passed, listed]
        counts[status] += 1
        note = f"  ({exceptions[test_id]})" if listed else ""
        if results[test_id].get("seconds", 0) >= 1:
            note = f"  [{results[test_id]['seconds']:.1f} s]" + note
        print(f"{status:8} {test_id}{note}")
        if status == "FAIL":
            problems.append((test_id, results[test_id]))
    for test_id in sorted(set(exceptions) - set(results)):
        counts["STALE"] += 1
        print(f"{'STALE':8} {test_id}  (listed as an exception, but no such test)")
    for name in stale_names:
        counts["STALE"] += 1
        print(f"{'STALE':8} {name}  (listed as an absent name, but our durus has it)")
    for test_id, result in problems:
        print(f"\n---- FAIL {test_id} ----\n{result['detail'].rstrip()}")
        if result.get("output", "").strip():
            print(f"-- its output --\n{result['output'].rstrip()}")
    print(f"\nDurus 4.3 unit tests: {counts['PASS']} passed, {counts['FAIL']} failed, "
          f"{counts['EXCEPTED']} excepted (listed in tools/{EXCEPTIONS_FILE.name}), "
          f"{counts['STALE']} stale entries there (a listed test that passes or does not "
          f"exist, a listed absent name that exists)")
    return 1 if counts["FAIL"] or counts["STALE"] else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("cache_dir", type=pathlib.Path, help="where the sdist is cached")
    parser.add_argument("-k", dest="only", action="append", default=[],
                        help="run only the tests whose id contains this (repeatable)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds a test may take before it fails (default 30)")
    options = parser.parse_args(argv)
    # tox stops an env with SIGTERM: unwind, so children and the temp dir are removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        sdist = fetch(options.cache_dir)
    except FetchError as error:
        print(f"run_durus43_tests: {error}", file=sys.stderr)
        return 1
    exceptions, absent_names = load_exceptions()
    started = time.monotonic()
    work = pathlib.Path(tempfile.mkdtemp(prefix="durus43suite-"))
    results: dict[str, dict[str, Any]] = {}
    selected: list[str] = []
    present_names: set[str] = set()
    try:
        tests = extract_tests(sdist, work / "lib")
        for path in sorted(tests.glob("*.py")):
            if path.stem == "__init__":
                continue
            plan = plan_module(path)
            ids = [i for i in plan_ids(plan) if not options.only
                   or any(word in i for word in options.only)]
            if not ids:
                continue
            for instance in plan["instances"]:
                instance["ids"] = {m: i for m, i in instance["ids"].items() if i in ids}
            if plan.get("import_id") not in ids:
                plan.pop("import_id", None)
            plan["placeholders"] = absent_names
            results.update(run_module(plan, work / "lib", work, options.timeout,
                                      present_names))
            selected += ids
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if options.only:
        exceptions = {i: r for i, r in exceptions.items() if i in results}
    print(f"Durus 4.3 unit tests from {sdist.name} (sha256 checked), against durus at "
          f"{sys.prefix}, {time.monotonic() - started:.0f} s:\n")
    return report(results, exceptions, selected, sorted(present_names))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
