"""Durus's classic quick demo, typed into real terminals (pseudo-terminals via pexpect).

One terminal runs ``durus -s``, two others ``durus -c``; what a person sees
on each screen is checked, messages included.
"""

from __future__ import annotations

import os
import re
import sys

import pytest

pexpect = pytest.importorskip("pexpect", reason="the terminal tests need pexpect")

from durus_cli_testing import COMMAND_TIMEOUT, free_port  # noqa: E402

PROMPT = ">>> "


class Terminal:
    """One terminal window running a ``durus`` command."""

    def __init__(self, durus, *args: str) -> None:
        self.child = pexpect.spawn(
            sys.executable, ["-m", "durus", *args], cwd=str(durus.cwd), env=durus.env,
            encoding="utf-8", timeout=COMMAND_TIMEOUT, dimensions=(40, 200),
        )

    def expect(self, text: str) -> str:
        """Wait for ``text``; return what the screen showed before it."""
        self.child.expect_exact(text)
        return self.child.before

    def type(self, line: str) -> str:
        """Type ``line`` at the prompt; return its output (echo removed)."""
        self.child.sendline(line)
        self.child.expect_exact(line)  # the echo
        return self.expect(PROMPT).replace("\r\n", "\n").strip("\n")

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)


@pytest.fixture
def terminals(durus):
    opened: list[Terminal] = []

    def open_terminal(*args: str) -> Terminal:
        terminal = Terminal(durus, *args)
        opened.append(terminal)
        return terminal

    yield open_terminal
    for terminal in opened:
        terminal.close()


def open_client(terminals, *args: str) -> Terminal:
    client = terminals("-c", *args)
    client.expect(PROMPT)
    return client


def test_quick_demo(durus, terminals):
    port = str(free_port())
    address = f"127.0.0.1:{port}"
    server = terminals("-s", "--port", port)
    server.expect(f"Ready on {address}")
    assert re.search(r"Storage file=\S+ address=" + re.escape(address), server.child.before)

    first = terminals("-c", "--port", port)
    banner = first.expect(PROMPT)
    assert banner.replace("\r\n", "\n").strip() == (
        f"Durus console on {address}\n"
        "  root        the root object, a PersistentDict\n"
        "  connection  commit(), abort(), pack(); get(oid) fetches any object\n"
        "  pp          pretty-prints; sys, os, int8_to_str, str_to_int8 are imported\n"
        "Changes are saved by connection.commit(); Control-D leaves."
    )
    second = open_client(terminals, "--port", port)

    assert first.type("root") == "<PersistentDict 0>"
    assert first.type("root.items()") in ("[]", "dict_items([])")
    first.type("root['answer'] = 42")
    assert second.type("root.get('answer')") == ""  # not committed yet: prints None
    assert first.type("connection.commit()") == ""
    # The other client sees the change after its next abort() (or commit()).
    assert second.type("root.get('answer')") == ""
    second.type("connection.abort()")
    assert second.type("root['answer']") == "42"
    # abort() reverts changes that were not committed.
    second.type("root['answer'] = 'changed'")
    assert second.type("root['answer']") == "'changed'"
    second.type("connection.abort()")
    assert second.type("root['answer']") == "42"
    # A commit from the second client reaches the first after its commit().
    second.type("root['more'] = [1, 2]")
    second.type("connection.commit()")
    first.type("connection.commit()")
    assert first.type("pp(sorted(root.items()))") == "[('answer', 42), ('more', [1, 2])]"
    assert first.type("get(int8_to_str(0)) is root") == "True"
    assert first.type("int8_to_str(7)") == "b'\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x07'"

    # Control-C in the server's terminal stops it; the clients then lose it.
    server.child.sendintr()
    server.expect("Stopping (signal SIGINT)")
    server.child.expect(pexpect.EOF)
    server.child.close()
    assert server.child.exitstatus == 0
    first.child.sendeof()
    first.child.expect(pexpect.EOF)
    second.child.sendeof()
    second.child.expect(pexpect.EOF)


def test_data_survives_a_restart_and_opens_directly(durus, terminals):
    port = str(free_port())
    server = terminals("-s", "--port", port, "--file", "test.durus")
    server.expect(f"Ready on 127.0.0.1:{port}")
    client = open_client(terminals, "--port", port)
    client.type("root['kept'] = 'yes'")
    client.type("connection.commit()")
    client.child.sendeof()
    client.child.expect(pexpect.EOF)

    # While the server runs, the file is its own: a direct open is refused politely...
    busy = terminals("-c", "--file", "test.durus")
    busy.child.expect(pexpect.EOF)
    assert busy.child.before.strip() == (
        "durus: error: test.durus is in use by another process (a running Durus server?): "
        "stop it, connect to the server instead (durus -c --port/--address), or add "
        "--readonly"
    )
    # ...but a read-only look works.
    reader = open_client(terminals, "--file", "test.durus", "--readonly")
    assert reader.type("root['kept']") == "'yes'"
    reader.child.sendeof()
    reader.child.expect(pexpect.EOF)

    # `durus -s --stop` in another terminal stops the server.
    stopper = terminals("-s", "--stop", "--port", port)
    stopper.child.expect(pexpect.EOF)
    assert stopper.child.before.strip() == f"durus: stopped the server at 127.0.0.1:{port}"
    server.child.expect(pexpect.EOF)
    assert "Quit requested by 127.0.0.1" in server.child.before

    # Restart on the same file: the data is there.
    server = terminals("-s", "--port", port, "--file", "test.durus")
    server.expect(f"Ready on 127.0.0.1:{port}")
    client = open_client(terminals, "--port", port)
    assert client.type("root['kept']") == "'yes'"
    client.child.sendeof()
    client.child.expect(pexpect.EOF)
    server.child.sendintr()
    server.child.expect(pexpect.EOF)

    # With the server stopped, the file opens directly.
    direct = terminals("-c", "--file", "test.durus")
    banner = direct.expect(PROMPT)
    assert banner.splitlines()[0] == "Durus console on test.durus"
    assert direct.type("root['kept']") == "'yes'"
    direct.type("root['direct'] = True")
    direct.type("connection.commit()")
    direct.child.sendeof()
    direct.child.expect(pexpect.EOF)
    assert durus.run("census", "test.durus").returncode == 0


def test_history_completion_and_startup_file(durus, terminals):
    startup = durus.cwd / "startup.py"
    startup.write_text(
        "greeting = 'hello from ' + type(root).__name__ + ' ' + str(len(sys.argv))\n")
    durus.env["DURUSSTARTUP"] = str(startup)
    console = open_client(terminals, "--file", "db.durus")
    assert console.type("greeting") == "'hello from PersistentDict 4'"
    # Tab completion knows the console's names.
    console.child.send("connec\t")
    console.child.expect_exact("tion")  # readline completes "connec" to "connection"
    console.child.send(".stor\t")
    console.child.expect_exact("age")  # ... and ".stor" to ".storage"
    console.child.sendline("")
    assert console.expect(PROMPT).strip().endswith("db.durus')")
    console.child.sendline("x = 'remember me'")
    console.expect(PROMPT)
    console.child.sendeof()
    console.child.expect(pexpect.EOF)
    history = (durus.cwd.parent / "home" / ".durushistory").read_text()
    assert "x = 'remember me'" in history
    # The next session has it: Up arrow brings the line back.
    console = open_client(terminals, "--file", "db.durus")
    console.child.send("\x1b[A")
    console.child.expect_exact("x = 'remember me'")
    console.child.sendline("")
    console.expect(PROMPT)
    assert console.type("x") == "'remember me'"


def test_progress_bar_on_a_terminal_only(durus, terminals):
    from durus_cli_testing import DATA

    path = str(DATA / "durus43-unpacked.durus")
    shown = terminals("verify", path)
    shown.child.expect(pexpect.EOF)
    assert "verifying [" in shown.child.before
    assert "OK: no problems found" in shown.child.before
    # Piped: nothing but the report.
    piped = durus.run("verify", path)
    assert piped.stderr == ""
    assert "verifying" not in piped.stdout
    # --no-progress silences a terminal too.
    quiet = terminals("verify", "--no-progress", path)
    quiet.child.expect(pexpect.EOF)
    assert "verifying" not in quiet.child.before
    assert os.path.exists(path)
