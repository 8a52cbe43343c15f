"""The C accelerator and the pure-Python path behave the same, byte for byte.

Both paths run the same generated operation sequences in their own process
(``path_worker.py``); the observable state after every step and the stored
records at the end must be equal.  Skipped where the accelerator is not built.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

WORKER = Path(__file__).resolve().parent / "path_worker.py"


class Worker:
    def __init__(self, pure: bool) -> None:
        env = dict(os.environ)
        env.pop("DURUS_PURE_PYTHON", None)
        if pure:
            env["DURUS_PURE_PYTHON"] = "1"
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.accelerated = self._read()["accelerated"]

    def _read(self) -> dict:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, "the worker died"
        return json.loads(line)

    def run(self, program: list) -> dict:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(program) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def workers():
    accelerated, pure = Worker(pure=False), Worker(pure=True)
    try:
        if not accelerated.accelerated:
            pytest.skip("the C accelerator is not built here (or DURUS_PURE_PYTHON is set)")
        assert not pure.accelerated
        yield accelerated, pure
    finally:
        accelerated.close()
        pure.close()


KEYS = st.integers(0, 5)
VALUES = st.one_of(st.integers(-3, 300), st.text(max_size=3), st.none())
OPERATION = st.tuples(
    st.sampled_from(
        ["new", "get", "getother", "set", "del", "link", "commit", "commit", "abort",
         "ghost", "note_access", "note_change", "shrink"]
    ),
    st.integers(0, 1),
    KEYS,
    VALUES,
).map(lambda op: [op[0], op[1], op[2], op[3] if op[0] not in ("link", "shrink") else op[2]])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=st.lists(OPERATION, max_size=40))
def test_both_paths_agree(workers, program):
    accelerated, pure = workers
    assert accelerated.run(program) == pure.run(program)


def test_a_long_fixed_program_agrees(workers):
    """Many objects, both connections, conflicts, shrinks: one fixed mix."""
    program = []
    for round_ in range(6):
        for key in range(6):
            program.append(["new", round_ % 2, key, key * round_])
        program += [["commit", 0, 0, 0], ["commit", 1, 0, 0]]
        for key in range(6):
            program += [["get", 1, key, 0], ["set", 0, key, round_], ["link", 1, key, 5 - key]]
        program += [["shrink", 0, 0, round_], ["commit", 0, 0, 0], ["commit", 1, 0, 0]]
        program += [["abort", 1, 0, 0], ["getother", 1, 2, 0], ["ghost", 0, 3, 0]]
    accelerated, pure = workers
    assert accelerated.run(program) == pure.run(program)
