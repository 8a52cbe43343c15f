"""Run the planned tests of one Durus 4.3 unit-test module, one result per test.

Why: tools/run_durus43_tests.py runs each test module in a child process of
its own (this script), so a test that hangs, crashes or leaves a server behind
cannot take the other modules with it.  Every test gets private ports, a
private unix-socket path, a private cwd and temp dir, so parallel runs of the
suite (``tox -p auto``) cannot collide; the tests' logic is not changed.

Usage: python tools/durus43_child.py LIB_DIR PLAN_JSON RESULTS_JSONL TIMEOUT [SKIP_ID ...]
LIB_DIR holds durus/test/ (Durus 4.3's test/ folder), merged into the ``durus``
namespace package.  Each result is a JSON line: {"event": "start"|"end"|"name", ...}.
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib
import io
import json
import os
import pathlib
import socket
import sys
import tempfile
import time
import traceback
import types
from typing import Any

_results: Any = None


def emit(**event: Any) -> None:
    _results.write(json.dumps(event) + "\n")
    _results.flush()


def free_port() -> int:
    """A TCP port nobody listens on now (the kernel's choice, so runs do not collide)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def install_sancho() -> types.ModuleType:
    """Register tools/sancho_utest.py as ``sancho.utest``."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import sancho_utest

    package = types.ModuleType("sancho")
    package.__path__ = []
    package.utest = sancho_utest  # type: ignore[attr-defined]
    sys.modules["sancho"] = package
    sys.modules["sancho.utest"] = sancho_utest
    return sancho_utest


def install_placeholders(names: dict[str, str]) -> None:
    """Define each absent ``module.Name`` the test modules import (listed, with its
    reason, in tools/durus43_test_exceptions.toml) as a class that raises when used,
    so the rest of the importing module still runs; report which ones were absent."""
    for qualified, reason in names.items():
        module_name, _, name = qualified.rpartition(".")
        module = importlib.import_module(module_name)
        present = hasattr(module, name)
        emit(event="name", name=qualified, present=present)
        if present:
            continue

        def refuse(self: Any, *args: Any, _what: str = qualified, _why: str = reason,
                   **kwargs: Any) -> None:
            raise NotImplementedError(f"{_what} is not provided by our durus: {_why}")

        setattr(module, name, type(name, (), {"__init__": refuse}))


def privatise_module(module: types.ModuleType) -> None:
    """Servers the tests build on Durus's fixed default port get a free port instead."""
    server_class = getattr(module, "StorageServer", None)
    if not isinstance(server_class, type):
        return
    from durus.storage_server import DEFAULT_PORT

    class PrivatePortStorageServer(server_class):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if kwargs.get("port", DEFAULT_PORT) == DEFAULT_PORT and len(args) < 3:
                kwargs["port"] = free_port()
            super().__init__(*args, **kwargs)

    PrivatePortStorageServer.__name__ = server_class.__name__
    module.StorageServer = PrivatePortStorageServer  # type: ignore[attr-defined]


def privatise_test(test: Any, folder: pathlib.Path) -> None:
    """Give the test's class a private ``address`` (ClientTest uses port 9123 and
    /tmp/test.durus_server), and make ``folder`` its cwd and temp dir."""
    cls = type(test)
    address = getattr(cls, "address", None)
    if isinstance(address, tuple):
        cls.address = (address[0], free_port())
    folder.mkdir(parents=True)
    if isinstance(address, str):
        path = str(folder / "durus.sock")
        if len(path) > 100:  # a unix socket path has at most 107 bytes
            path = os.path.join(tempfile.mkdtemp(prefix="d43-", dir="/tmp"), "s")
        cls.address = path
    os.chdir(folder)
    tempfile.tempdir = str(folder)


def call_pre(test: Any) -> None:
    test._pre()
    # TestConnectionClientStorage._pre pins self.port = 9123 after starting its
    # server on self.address: the port it talks to follows the private address.
    if isinstance(getattr(type(test), "address", None), tuple) and hasattr(test, "port"):
        test.port = test.address[1]


def run_one(test: Any, test_id: str, method: str, folder: pathlib.Path, timeout: float) -> None:
    emit(event="start", id=test_id)
    privatise_test(test, folder)
    output = io.StringIO()
    outcome, detail = "pass", ""
    began = time.monotonic()
    faulthandler.dump_traceback_later(timeout, exit=True)
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            try:
                call_pre(test)
            except Exception:
                outcome, detail = "error", "in _pre:\n" + traceback.format_exc()
            else:
                try:
                    getattr(test, method)()
                except Exception:
                    outcome, detail = "fail", traceback.format_exc()
                finally:
                    try:
                        test._post()
                    except Exception:
                        if outcome == "pass":
                            outcome, detail = "error", "in _post:\n" + traceback.format_exc()
    finally:
        faulthandler.cancel_dump_traceback_later()
    emit(event="end", id=test_id, outcome=outcome, detail=detail,
         output=output.getvalue()[-4000:], seconds=round(time.monotonic() - began, 2))


def argument(module: types.ModuleType, source: str) -> Any:
    """An argument of the ``__main__`` block's call (``set``, ``PersistentSet``)."""
    return eval(source, vars(module))


def main(argv: list[str]) -> int:
    global _results
    lib_dir, plan_path, results_path, timeout = argv[:4]
    skip = set(argv[4:])
    plan = json.loads(pathlib.Path(plan_path).read_text())
    _results = open(results_path, "a", encoding="utf-8")  # noqa: SIM115
    sys.path.insert(0, lib_dir)
    sancho = install_sancho()
    scratch = pathlib.Path(tempfile.mkdtemp(prefix=plan["module"] + "-"))
    counter = iter(range(1_000_000))
    try:
        install_placeholders(plan.get("placeholders", {}))
        module = importlib.import_module("durus.test." + plan["module"])
        privatise_module(module)
    except Exception:
        detail = "importing the module:\n" + traceback.format_exc()
        ids = [plan["import_id"]] if plan.get("import_id") else []
        for instance in plan["instances"]:
            ids += instance["ids"].values()
        for test_id in ids:
            if test_id not in skip:
                emit(event="end", id=test_id, outcome="error", detail=detail, output="")
        return 0
    if plan.get("import_id"):
        emit(event="end", id=plan["import_id"], outcome="pass", detail="", output="")
    for instance in plan["instances"]:
        def runner(test: Any, instance: dict[str, Any] = instance) -> None:
            for method, test_id in instance["ids"].items():
                if test_id not in skip:
                    folder = scratch / str(next(counter))
                    run_one(test, test_id, method, folder, float(timeout))

        sancho.RUNNER = runner
        try:
            cls = getattr(module, instance["class"])
            cls(*[argument(module, source) for source in instance["args"]])
        except Exception:  # the instance could not be made: its tests are not run
            detail = "instantiating the test class:\n" + traceback.format_exc()
            for test_id in instance["ids"].values():
                emit(event="end", id=test_id, outcome="error", detail=detail, output="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
