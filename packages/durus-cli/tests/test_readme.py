"""Every ``sh`` block of the README runs, in order, in one folder, with the real command."""

from __future__ import annotations

import os
import pathlib
import re
import signal
import stat
import subprocess
import sys

from durus_cli_testing import COMMAND_TIMEOUT, sample_records, write_dfs20

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
SH_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)


def test_readme_commands_run(durus, tmp_path):
    blocks = SH_BLOCK.findall(README.read_text())
    assert len(blocks) >= 8
    # `durus` on PATH runs this interpreter's durus.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "durus"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m durus "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    env = dict(durus.env)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    # The convert examples need legacy files.
    for name in ("legacy.durus", "converted-in-place.durus"):
        write_dfs20(durus.cwd / name, sample_records())
    for block in blocks:
        process = subprocess.Popen(
            ["bash", "-e", "-u", "-o", "pipefail", "-c", block], cwd=durus.cwd, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )
        try:
            out, err = process.communicate(timeout=COMMAND_TIMEOUT)
        finally:
            # A server a failed block left in the background.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert process.returncode == 0, f"{block}\n{out}\n{err}"
        assert "Traceback" not in err, err
    assert (durus.cwd / "converted.durus").read_bytes().startswith(b"SHELF-1\n")
    assert (durus.cwd / "converted-in-place.durus.dfs20").exists()
    assert "Ready on" in (durus.cwd / "server.log").read_text()
