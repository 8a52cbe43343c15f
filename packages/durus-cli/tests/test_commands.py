"""The durus command's modes and flags, its helpers, and every error a person can cause."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import uuid

import pytest
from durus_cli_testing import (
    COMMAND_TIMEOUT,
    DATA,
    copy_fixture,
    free_port,
    one_error_line,
    sample_records,
    wait_for,
    wait_until_listening,
    write_dfs20,
)

MODES = ["-s", "-c", "-p", "info", "verify", "census", "convert", "pack"]
needs_unix = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")
needs_abstract = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                    reason="abstract sockets are Linux only")


# -- usage and help -------------------------------------------------------------------


def test_usage(durus):
    for args in ([], ["-h"], ["--help"]):
        result = durus.run(*args)
        assert result.returncode == 0
        assert result.stdout.startswith("usage: durus MODE [options]")
        assert all(mode in result.stdout for mode in MODES)
        assert result.stderr == ""


def test_every_mode_has_help(durus):
    for mode in MODES:
        result = durus.run(mode, "--help")
        assert result.returncode == 0, mode
        assert result.stdout.startswith(f"usage: durus {mode}"), result.stdout
    server_help = durus.run("-s", "--help").stdout
    for flag in ("--file", "--storage-class", "--host", "--port", "--address", "--owner",
                 "--group", "--umask", "--gcbytes", "--logfile", "--logginglevel",
                 "--readonly", "--repair", "--stop"):
        assert flag in server_help, flag
    client_help = durus.run("-c", "--help").stdout
    for flag in ("--file", "--host", "--port", "--address", "--cache_size", "--startup",
                 "--readonly", "--repair", "--storage-class"):
        assert flag in client_help, flag
    assert "--address" in durus.run("-p", "--help").stdout


def test_version(durus):
    result = durus.run("--version")
    assert result.returncode == 0
    assert result.stdout.splitlines()[0].startswith("durus-cli ")


def test_plain_script_path(durus):
    result = durus.run("-h", script=True)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: durus MODE")
    result = durus.run("info", "--json", str(DATA / "durus43-packed.durus"), script=True)
    assert result.returncode == 0, result.stderr
    assert '"objects": 108' in result.stdout


# -- errors: one line, non-zero, no traceback -----------------------------------------


def test_bad_flags(durus):
    assert one_error_line(durus.run("--bogus")) == (
        "durus: error: unknown mode '--bogus' (see durus -h)")
    line = one_error_line(durus.run("-s", "--bogus"))
    assert line == "durus -s: error: unrecognized arguments: --bogus (see durus -s --help)"
    line = one_error_line(durus.run("-c", "--port", "many"))
    assert line == ("durus -c: error: argument --port: invalid integer value: 'many' "
                    "(see durus -c --help)")
    line = one_error_line(durus.run("-s", "--port", "70000"))
    assert "not a TCP port" in line
    assert durus.run("-s", "--bogus").returncode == 2
    assert one_error_line(durus.run("-s", "--umask", "077")) == (
        "durus: error: --owner, --group and --umask apply to a socket file (--address)")
    line = one_error_line(durus.run("info"))
    assert line.startswith("durus info: error: the following arguments are required: FILE")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty.durus is an empty file, not a Durus database (remove it to start a "
              "new one)"),
        (b"hello, world\n" * 3, "empty.durus is not a Durus database (unknown storage type)"),
        (None, "is a legacy DFS20 (FileStorage2) database; this version reads only SHELF-1 "
               "files: convert it first with `durus convert empty.durus NEW_FILE`"),
    ],
)
def test_wrong_formats(durus, content, message):
    path = durus.cwd / "empty.durus"
    if content is None:
        write_dfs20(path, sample_records())
    else:
        path.write_bytes(content)
    for args in (["-c", "--file", "empty.durus"], ["-p", "--file", "empty.durus"],
                 ["-s", "--file", "empty.durus", "--port", str(free_port())]):
        line = one_error_line(durus.run(*args))
        assert message in line, (args, line)


def test_sqlite_files_open_with_sqlite_storage(durus):
    """SQLite files (by their first bytes) and sqlite:/// URLs open with SqliteStorage."""
    path = copy_fixture("durus43-sqlite.durus", durus.cwd)
    for target in (str(path), f"sqlite:///{path.name}"):
        result = durus.run("-c", "--file", target, "--readonly",
                           input="print(root['alice'].owner, len(root['tree']))\n")
        assert result.returncode == 0, result.stderr
        assert "alice 300" in result.stdout
    result = durus.run("pack", str(path))
    assert result.returncode == 0, result.stderr
    result = durus.run("verify", "--load", str(path))
    assert result.returncode == 0, result.stdout


def test_no_server_listening(durus):
    port = str(free_port())
    assert one_error_line(durus.run("-c", "--port", port)) == (
        f"durus: error: no Durus server is listening on 127.0.0.1:{port} (start one with "
        "`durus -s`, or open a file directly with --file)")
    assert "no Durus server is listening" in one_error_line(durus.run("-p", "--port", port))
    assert one_error_line(durus.run("-s", "--stop", "--port", port)) == (
        f"durus: error: no Durus server is listening on 127.0.0.1:{port}")


def test_port_taken(durus):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        line = one_error_line(durus.run("-s", "--port", port))
    assert line == (
        f"durus: error: cannot listen on 127.0.0.1:{port}: the address is already in use "
        "(another Durus server? `durus -s --stop` with the same address options stops it)")
    assert list(durus.cwd.iterdir()) == []


def test_missing_and_unwritable_files(durus):
    assert one_error_line(durus.run("-c", "--file", "nope.durus", "--readonly")) == (
        "durus: error: nope.durus: no such file (--readonly cannot create one)")
    assert one_error_line(durus.run("verify", "nope.durus")) == (
        "durus: error: nope.durus: no such file")
    assert "is a directory" in one_error_line(durus.run("info", str(durus.cwd)))
    line = one_error_line(durus.run("-s", "--logfile", str(durus.cwd / "no" / "log")))
    assert line.startswith("durus: error: cannot open the log file")


def test_startup_file_missing(durus):
    path = copy_fixture("durus43-packed.durus", durus.cwd)
    line = one_error_line(durus.run("-c", "--file", str(path), "--startup", "absent.py"))
    assert line == "durus: error: startup file absent.py does not exist"


# -- a server and its clients ---------------------------------------------------------


def test_file_served_by_a_running_server(durus):
    path = copy_fixture("durus43-unpacked.durus", durus.cwd)
    port = free_port()
    server = durus.start_server("--file", str(path), "--port", str(port),
                                address=("127.0.0.1", port))
    locked = "is in use by another process (a running Durus server?)"
    assert locked in one_error_line(durus.run("-c", "--file", str(path)))
    line = one_error_line(durus.run("pack", str(path)))
    assert line.endswith(f"{locked}: ask that server to pack it instead (durus -p with its "
                         "--port or --address)")
    assert locked in one_error_line(
        durus.run("-s", "--file", str(path), "--port", str(free_port())))
    # Read-only tools work on it meanwhile.
    verify = durus.run("verify", "--load", str(path))
    assert verify.returncode == 0, verify.stdout
    assert durus.run("census", str(path)).returncode == 0
    console = durus.run("-c", "--file", str(path), "--readonly",
                        input="print(sorted(root)[:3])\n")
    assert console.returncode == 0, console.stderr
    assert "['accounts', 'big_int', 'bytes']" in console.stdout
    # Pack through the server.
    before = path.stat().st_size
    result = durus.run("-p", "--port", str(port))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"asked the server at 127.0.0.1:{port} to pack; it packs in "
                             "the background\n")
    wait_for(lambda: path.stat().st_size < before, "the server packed the file")
    stopped = durus.run("-s", "--stop", "--port", str(port))
    assert stopped.returncode == 0
    assert server.wait(timeout=60) == 0
    assert durus.run("verify", "--load", str(path)).returncode == 0


def test_console_commits_through_a_server_and_the_logfile(durus):
    port = free_port()
    log = durus.cwd / "server.log"
    log.write_text("earlier line\n")
    server = durus.start_server("--file", "db.durus", "--port", str(port), "--logfile",
                                str(log), "--snapshot-history", "100000",
                                address=("127.0.0.1", port))
    result = durus.run("-c", "--port", str(port), "--cache_size", "0x10",
                       input="root['n'] = 5\nconnection.commit()\n")
    assert result.returncode == 0, result.stderr
    result = durus.run("-c", "--port", str(port), "--mvcc", input=(
        "print(root['n'], connection.get_cache_count() <= 16, connection.mvcc)\n"
        "print(connection.get_storage().get_server_stats()['snapshot_clients'])\n"
        "print(connection.get_storage().server_info['limits']['max_snapshot_history'])\n"))
    assert "5 True True\n>>> 1\n>>> 100000\n" in result.stdout, result.stderr
    assert durus.run("-s", "--stop", "--port", str(port)).returncode == 0
    out, err = server.communicate(timeout=60)
    assert server.returncode == 0
    assert out == "" and err == ""  # everything went to the log file
    text = log.read_text()
    assert text.startswith("earlier line\n")  # appended
    assert "Storage file=" in text and f"Ready on 127.0.0.1:{port}" in text


def test_integers_read_as_durus43_did():
    from durus.cli_common import cli_int

    assert [cli_int(text) for text in ("077", "0o77", "0x3f", "0X3F", "0b111111", "63",
                                       "0", "-010", "1_000")] == [
        63, 63, 63, 63, 63, 63, 0, -8, 1000]


@needs_unix
def test_unix_socket_with_umask_owner_and_group(durus):
    import grp
    import pwd

    owner = pwd.getpwuid(os.getuid()).pw_name
    group = str(os.getgid())  # a number works as well as a name
    for umask in ("077", "0b111111"):
        path = durus.cwd / f"s{uuid.uuid4().hex[:6]}.sock"
        server = durus.start_server("--address", str(path), "--umask", umask,
                                    "--owner", owner, "--group", group, address=str(path))
        info = os.stat(path)
        assert stat.S_IMODE(info.st_mode) == 0o700, umask
        assert (info.st_uid, info.st_gid) == (os.getuid(), os.getgid())
        assert grp.getgrgid(info.st_gid)
        result = durus.run("-c", "--address", str(path), input="print(root)\n")
        assert "<PersistentDict 0>" in result.stdout, result.stderr
        assert durus.run("-s", "--stop", "--address", str(path)).returncode == 0
        assert server.wait(timeout=60) == 0
        assert not path.exists()


@needs_abstract
def test_abstract_socket(durus):
    name = f"@durus-cli-test-{uuid.uuid4().hex}"
    server = durus.start_server("--address", name, address=name)
    result = durus.run("-c", "--address", name, input="root['x'] = 1\nconnection.commit()\n")
    assert result.returncode == 0, result.stderr
    assert durus.run("-p", "--address", name).returncode == 0
    assert durus.run("-s", "--stop", "--address", name).returncode == 0
    assert server.wait(timeout=60) == 0
    assert "no Durus server is listening on " + name in one_error_line(
        durus.run("-s", "--stop", "--address", name))


def test_sigterm_stops_the_server_and_removes_its_temporary_file(durus):
    port = free_port()
    log = durus.cwd / "log"
    server = durus.start_server("--port", str(port), "--logfile", str(log),
                                address=("127.0.0.1", port))
    temporary = log.read_text().split("Storage file=")[1].split()[0]
    assert os.path.exists(temporary)
    server.terminate()
    assert server.wait(timeout=60) == 0
    assert not os.path.exists(temporary)


# -- durus.__main__ as a library (Durus 4.3's helpers) --------------------------------


def test_importable_helpers(tmp_path):
    import durus.__main__ as durus_main

    for name in ("main", "client_main", "run_durus_main", "pack_storage_main",
                 "interactive_client", "get_storage_class", "get_storage", "import_class",
                 "start_durus", "stop_durus", "configure_readline", "usage"):
        assert callable(getattr(durus_main, name)), name
    from durus.file_storage import FileStorage

    assert durus_main.get_storage_class(str(tmp_path / "new.durus")) is FileStorage
    assert durus_main.get_storage_class(str(DATA / "durus43-packed.durus")) is FileStorage
    assert durus_main.import_class("durus.file_storage.FileStorage") is FileStorage
    from durus.sqlite_storage import SqliteStorage

    assert durus_main.get_storage_class(str(DATA / "durus43-sqlite.durus")) is SqliteStorage
    storage = durus_main.get_storage(str(tmp_path / "x.durus"),
                                     storage_class="durus.file_storage.FileStorage")
    assert isinstance(storage, FileStorage)
    storage.close()
    assert durus_main.stop_durus(("127.0.0.1", free_port())) is False
    assert durus_main.main(["-h"]) == 0


def test_stop_durus_stops_a_running_server(durus):
    import durus.__main__ as durus_main

    port = free_port()
    server = durus.start_server("--port", str(port), address=("127.0.0.1", port))
    wait_until_listening(("127.0.0.1", port), server)
    assert durus_main.stop_durus(("127.0.0.1", port)) is True
    assert server.wait(timeout=60) == 0


# -- more of Durus 4.3's flags --------------------------------------------------------


def test_storage_class_flag(durus):
    result = durus.run("-c", "--file", "db.durus", "--storage-class",
                       "durus.file_storage.FileStorage", input="print(type(connection.storage))\n")
    assert result.returncode == 0, result.stderr
    assert "FileStorage" in result.stdout
    assert one_error_line(durus.run("-c", "--file", "db.durus", "--storage-class",
                                    "nosuchmodule.Storage")).startswith(
        "durus: error: cannot import nosuchmodule for nosuchmodule.Storage")
    assert one_error_line(durus.run("-s", "--storage-class", "durus.file_storage.Nope",
                                    "--port", str(free_port()))) == (
        "durus: error: module durus.file_storage has no Nope")


def test_repair_and_readonly_flags(durus):
    path = copy_fixture("durus43-truncated-tail.durus", durus.cwd)
    reader = durus.run("-c", "--file", str(path), "--readonly", input="print(len(root))\n")
    assert reader.returncode == 0, reader.stderr
    repaired = durus.run("-c", "--file", str(path), "--repair", input="print(len(root))\n")
    assert repaired.returncode == 0, repaired.stderr
    assert reader.stdout == repaired.stdout
    verify = durus.run("verify", str(path))
    assert verify.returncode == 0
    assert "incomplete" not in verify.stdout  # the torn tail is gone from the file
    assert one_error_line(durus.run("-c", "--readonly")) == (
        "durus: error: --readonly and --repair apply to --file only")
    assert one_error_line(durus.run("-s", "--readonly")) == (
        "durus: error: --readonly needs --file: a new temporary database is empty")


def test_readonly_server(durus):
    path = copy_fixture("durus43-packed.durus", durus.cwd)
    port = free_port()
    server = durus.start_server("--file", str(path), "--readonly", "--port", str(port),
                                address=("127.0.0.1", port))
    result = durus.run("-c", "--port", str(port), input="print(root['int'])\n")
    assert "42" in result.stdout, result.stderr
    # Another writer may open the file: a read-only server holds no lock.
    assert durus.run("pack", str(path)).returncode == 0
    assert durus.run("-s", "--stop", "--port", str(port)).returncode == 0
    assert server.wait(timeout=60) == 0


def test_logging_level_and_gcbytes(durus):
    port = free_port()
    log = durus.cwd / "log"
    server = durus.start_server("--file", "db.durus", "--port", str(port), "--logfile",
                                str(log), "--logginglevel", "0x1e", "--gcbytes", "1",
                                address=("127.0.0.1", port))
    result = durus.run("-c", "--port", str(port),
                       input="root['a'] = [1]\nconnection.commit()\n"
                             "root['a'] = [2]\nconnection.commit()\n")
    assert result.returncode == 0, result.stderr
    assert durus.run("-s", "--stop", "--port", str(port)).returncode == 0
    assert server.wait(timeout=60) == 0
    quiet = log.read_text()  # level 30: warnings only
    assert "Ready on" not in quiet and "Storage file=" not in quiet
    # Level 20 logs the start; --gcbytes 1 packs after the first committed byte.
    server = durus.start_server("--file", "db.durus", "--port", str(port), "--logfile",
                                str(log), "--gcbytes", "1", address=("127.0.0.1", port))
    durus.run("-c", "--port", str(port), input="root['b'] = 1\nconnection.commit()\n")
    assert durus.run("-s", "--stop", "--port", str(port)).returncode == 0
    assert server.wait(timeout=60) == 0
    text = log.read_text()
    assert f"Ready on 127.0.0.1:{port}" in text
    assert "pack" in text.lower()


def test_console_script_entry_point():
    """pyproject declares ``durus = "durus.__main__:main"``; that target is callable."""
    import pathlib
    import shutil

    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = None
    pyproject = pathlib.Path(__file__).resolve().parent.parent / "pyproject.toml"
    if tomllib is not None and pyproject.exists():
        scripts = tomllib.loads(pyproject.read_text())["project"]["scripts"]
        assert scripts == {"durus": "durus.__main__:main"}
    import durus.__main__

    assert durus.__main__.main(["--version"]) == 0
    installed = shutil.which("durus", path=os.path.dirname(sys.executable))
    if installed is not None:  # installed (tox): the real console script
        result = subprocess.run([installed, "-h"], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0
        assert result.stdout.startswith("usage: durus MODE")


def test_start_durus_as_applications_call_it(durus, tmp_path):
    """Durus 4.3's recipe: ``start_durus`` in a child process, ``stop_durus`` to end it."""
    import durus.__main__ as durus_main

    port = free_port()
    log = tmp_path / "log"
    code = (
        "from durus.__main__ import start_durus\n"
        "from durus.file_storage import FileStorage\n"
        f"start_durus({str(log)!r}, 20, ('127.0.0.1', {port}), FileStorage('app.durus'), 0)\n"
    )
    server = subprocess.Popen([sys.executable, "-c", code], cwd=durus.cwd, env=durus.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    durus.servers.append(server)
    wait_until_listening(("127.0.0.1", port), server)
    result = durus.run("-c", "--port", str(port), input="root['k'] = 1\nconnection.commit()\n")
    assert result.returncode == 0, result.stderr
    assert durus_main.stop_durus(("127.0.0.1", port)) is True
    _out, err = server.communicate(timeout=60)
    assert server.returncode == 0, err
    assert "Storage file=" in log.read_text()
    assert durus.run("verify", "app.durus").returncode == 0


def test_redirect_output_and_storage_class_on_the_server(durus):
    port = free_port()
    log = durus.cwd / "log"
    for redirect in (False, True):
        extra = ["--redirect-output"] if redirect else []
        server = durus.start_server(
            "--file", "db.durus", "--port", str(port), "--logfile", str(log),
            "--storage-class", "noisy_storage.NoisyStorage", *extra,
            address=("127.0.0.1", port))
        assert durus.run("-s", "--stop", "--port", str(port)).returncode == 0
        out, _err = server.communicate(timeout=60)
        assert server.returncode == 0
        if redirect:
            assert out == ""
            assert "NoisyStorage closed" in log.read_text()
        else:
            assert "NoisyStorage closed" in out
            assert "NoisyStorage closed" not in log.read_text()
    assert one_error_line(durus.run("-s", "--redirect-output")) == (
        "durus: error: --redirect-output needs --logfile")


def test_the_client_side_commands_load_no_server_module(durus):
    """Issue 15: ``durus -c --file``, ``-p --file``, ``info`` and ``verify`` are
    client-side: none of them imports the server's modules."""
    path = copy_fixture("durus43-packed.durus", durus.cwd)
    loaded = (
        "import sys; print('server modules:', sorted(m for m in sys.modules"
        " if m.startswith('durus.server_') or m == 'durus.storage_server'))\n"
    )
    result = durus.run("-c", "--file", str(path), "--readonly", input=loaded)
    assert result.returncode == 0, result.stderr
    assert "server modules: []" in result.stdout
    # The other client-side commands, as the dispatcher imports them.
    probe = (
        "import sys, durus.__main__ as main; main._tools();"
        " import durus.cli_client, durus.cli_pack, durus.cli_admin, durus.cli_convert,"
        " durus.cli_recover, durus.cli_connect; "
        + loaded.strip()
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=COMMAND_TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert "server modules: []" in result.stdout
