"""The durus command against a real Durus 4.3 (DURUS43_PYTHON, set by the tox interop envs)."""

from __future__ import annotations

import os
import subprocess
import textwrap

import pytest
from durus_cli_testing import COMMAND_TIMEOUT, DATA, free_port, wait_until_listening

pytestmark = pytest.mark.interop


@pytest.fixture
def durus43():
    """``durus43(code_or_args, cwd)``: run Python code (or a command line) under Durus 4.3."""
    python = os.environ.get("DURUS43_PYTHON")
    if not python:
        pytest.skip("DURUS43_PYTHON is not set (the tox interop envs set it)")
    if not os.path.exists(python):
        pytest.fail(f"DURUS43_PYTHON={python!r} does not exist")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PYTHONPATH"] = str(DATA)  # fixture_classes only, none of our distributions

    def run(code: str | list[str], cwd, background: bool = False):
        argv = [python, *code] if isinstance(code, list) else [python, "-c",
                                                               textwrap.dedent(code)]
        if background:
            return subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                                timeout=COMMAND_TIMEOUT)
        assert result.returncode == 0, result.stderr
        return result.stdout

    return run


def test_convert_a_dfs20_file_written_by_durus43(durus, durus43):
    durus43(
        """
        from durus.connection import Connection
        from durus.file_storage2 import FileStorage2
        from durus.persistent_list import PersistentList
        from fixture_classes import Account
        connection = Connection(FileStorage2("legacy.durus"))
        root = connection.get_root()
        root["alice"] = Account("alice", 100)
        root["junk"] = PersistentList([1])
        connection.commit()
        del root["junk"]
        connection.commit()
        connection.pack()                      # an index with entries ...
        root["list"] = PersistentList(range(5))
        connection.commit()                    # ... and a transaction after it
        """,
        durus.cwd,
    )
    assert (durus.cwd / "legacy.durus").read_bytes().startswith(b"DFS20")
    checked = durus.run("verify", "--load", "legacy.durus")
    assert checked.returncode == 0, checked.stdout
    assert "legacy.durus: DFS20" in checked.stdout
    assert "3 reachable objects checked and loaded" in checked.stdout
    result = durus.run("convert", "legacy.durus", "new.durus")
    assert result.returncode == 0, result.stderr
    assert durus.run("verify", "--load", "new.durus").returncode == 0
    # Durus 4.3 reads the converted file and allocates new oids in it.
    out = durus43(
        """
        from durus.connection import Connection
        from durus.file_storage import FileStorage
        from durus.persistent_list import PersistentList
        connection = Connection(FileStorage("new.durus"))
        root = connection.get_root()
        print(root["alice"].owner, root["alice"].balance, list(root["list"]))
        root["more"] = PersistentList([9])
        connection.commit()
        print(sorted(root))
        """,
        durus.cwd,
    )
    assert out.splitlines() == ["alice 100 [0, 1, 2, 3, 4]", "['alice', 'list', 'more']"]
    assert durus.run("verify", "--load", "new.durus").returncode == 0


def test_our_console_and_stop_with_a_durus43_server(durus, durus43):
    port = free_port()
    server = durus43(["-m", "durus", "-s", "--port", str(port), "--file", "db.durus"],
                     durus.cwd, background=True)
    try:
        wait_until_listening(("127.0.0.1", port), server)
        result = durus.run("-c", "--port", str(port),
                           input="root['from'] = 'us'\nconnection.commit()\n")
        assert result.returncode == 0, result.stderr
        out = durus43(
            f"""
            from durus.client_storage import ClientStorage
            from durus.connection import Connection
            print(Connection(ClientStorage(port={port})).get_root()["from"])
            """,
            durus.cwd,
        )
        assert out == "us\n"
        assert durus.run("-p", "--port", str(port)).returncode == 0
        stopped = durus.run("-s", "--stop", "--port", str(port))
        assert stopped.returncode == 0, stopped.stderr
        server.communicate(timeout=COMMAND_TIMEOUT)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert durus.run("verify", "db.durus").returncode == 0
