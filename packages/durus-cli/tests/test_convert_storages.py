"""durus convert between FileStorage (SHELF-1), SQLite and PostgreSQL, every direction.

Real files and real ``durus`` subprocesses; the PostgreSQL tests start a real
server with durus-sqlstorage's ``durus.pg_cluster`` helper (they skip without
psycopg, or without PostgreSQL binaries unless ``DURUS_REQUIRE_POSTGRES=1``).
"""

from __future__ import annotations

import json
import pathlib
import sys
import uuid
from collections.abc import Iterator

import pytest
from durus_cli_testing import DATA, copy_fixture, one_error_line

from durus.cli_scan import scan_file

SQLITE_MAGIC = b"SQLite format 3\0"


def reachable_records(path: pathlib.Path | str) -> dict[bytes, bytes]:
    """Every record reachable from the root of a SHELF-1, DFS20 or SQLite file."""
    from durus.cli_admin import Walk

    with scan_file(str(path)) as scan:
        assert not scan.errors, scan.errors
        walk = Walk(scan)
        records = {oid: record for oid, record, _data, _refs in walk}
        assert not walk.dangling and not walk.unreadable
        return records


def run_ok(durus, *args: str) -> str:
    result = durus.run(*args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def read_alice(durus, target: str, key: str = "same_alice") -> str:
    """``owner balance len(tree)`` read by a console on ``target``."""
    result = durus.run("-c", "--file", target, "--readonly",
                       input=f"print(root[{key!r}].owner, root[{key!r}].balance, "
                             "len(root['tree']))\n")
    assert result.returncode == 0, result.stderr
    return result.stdout


# -- SHELF-1 <-> SQLite ---------------------------------------------------------------


def test_shelf_to_sqlite_and_back_keeps_every_record(durus):
    shelf = copy_fixture("durus43-unpacked.durus", durus.cwd)  # with garbage to leave out
    original = reachable_records(shelf)
    assert len(original) == 108
    before = shelf.read_bytes()

    out = run_ok(durus, "convert", str(shelf), "copy.sqlite")
    assert out == (f"converted {shelf} (SHELF-1) into copy.sqlite (SQLite): 108 objects "
                   "copied, 35 unreachable ones left out\n")
    sqlite_file = durus.cwd / "copy.sqlite"
    assert sqlite_file.read_bytes()[:16] == SQLITE_MAGIC
    assert shelf.read_bytes() == before  # the source is only read
    # One file, nothing left beside it.
    assert sorted(p.name for p in durus.cwd.iterdir()) == ["copy.sqlite",
                                                           "durus43-unpacked.durus"]
    assert reachable_records(sqlite_file) == original

    out = run_ok(durus, "convert", "copy.sqlite", "back.durus")
    assert out == "converted copy.sqlite (SQLite) into back.durus (SHELF-1): 108 objects copied\n"
    back = durus.cwd / "back.durus"
    assert back.read_bytes().startswith(b"SHELF-1\n")
    assert reachable_records(back) == original
    assert not list(durus.cwd.glob("*.converting*"))
    assert not (durus.cwd / "back.durus.converting.index").exists()

    # Both copies are healthy, load with the application's classes, and open as databases.
    for name in ("copy.sqlite", "back.durus"):
        assert run_ok(durus, "verify", "--load", name).rstrip().endswith("OK: no problems found")
        assert "alice 100" in read_alice(durus, name)
    facts = json.loads(run_ok(durus, "info", "--json", "copy.sqlite"))
    assert facts["format"] == "SQLite"
    assert facts["objects"] == facts["stored_oids"] == 108


def test_sqlite_target_by_flag_and_by_url_and_new_oids_after_it(durus):
    shelf = copy_fixture("durus43-packed.durus", durus.cwd)
    original = reachable_records(shelf)
    run_ok(durus, "convert", "--to", "sqlite", str(shelf), "flagged.durus")
    assert (durus.cwd / "flagged.durus").read_bytes()[:16] == SQLITE_MAGIC
    out = run_ok(durus, "convert", str(shelf), "sqlite:///by-url.db")
    assert "into sqlite:///by-url.db (SQLite): 108 objects copied" in out
    assert reachable_records(durus.cwd / "by-url.db") == original
    # --to shelf overrides the .sqlite suffix; a URL source works as well.
    run_ok(durus, "convert", "--to", "shelf", "sqlite:///by-url.db", "plain.sqlite")
    assert (durus.cwd / "plain.sqlite").read_bytes().startswith(b"SHELF-1\n")
    assert reachable_records(durus.cwd / "plain.sqlite") == original
    # The SQLite copy hands out oids past every copied one.
    sys.path.insert(0, str(DATA))
    try:
        from durus.connection import Connection
        from durus.persistent_list import PersistentList
        from durus.sqlite_storage import SqliteStorage

        storage = SqliteStorage(str(durus.cwd / "flagged.durus"))
        connection = Connection(storage)
        connection.get_root()["later"] = PersistentList([1])
        connection.commit()
        new_oid = connection.get_root()["later"]._p_oid
        storage.close()
    finally:
        sys.path.remove(str(DATA))
    assert new_oid not in original
    assert int.from_bytes(new_oid, "big") > max(int.from_bytes(o, "big") for o in original)
    assert run_ok(durus, "verify", "flagged.durus").rstrip().endswith("OK: no problems found")


def test_contradicting_to_flag_and_in_place_limits(durus):
    shelf = copy_fixture("durus43-packed.durus", durus.cwd)
    line = one_error_line(durus.run("convert", "--to", "shelf", str(shelf), "sqlite:///x.db"))
    assert "--to shelf contradicts the target URL sqlite:///x.db" in line
    line = one_error_line(durus.run("convert", "--to", "sqlite", str(shelf)))
    assert "--to sqlite needs a TARGET" in line
    line = one_error_line(durus.run("convert", "sqlite:///x.db"))
    assert "name the TARGET" in line
    assert sorted(p.name for p in durus.cwd.iterdir()) == ["durus43-packed.durus"]


def test_durus43_sqlite_fixture_to_shelf_and_to_our_sqlite(durus):
    old = copy_fixture("durus43-sqlite.durus", durus.cwd)
    before = old.read_bytes()
    original = reachable_records(old)
    out = run_ok(durus, "convert", str(old), "new.durus")
    assert "(SQLite) into new.durus (SHELF-1): 24 objects copied" in out
    assert reachable_records(durus.cwd / "new.durus") == original
    out = run_ok(durus, "convert", str(old), "new.sqlite")
    assert "(SQLite) into new.sqlite (SQLite): 24 objects copied" in out
    assert reachable_records(durus.cwd / "new.sqlite") == original
    assert old.read_bytes() == before  # read, never upgraded
    assert "alice 100 300" in read_alice(durus, "new.sqlite", "alice")


def test_refuses_non_empty_targets_and_changes_nothing(durus):
    shelf = copy_fixture("durus43-packed.durus", durus.cwd)
    (durus.cwd / "taken.durus").write_bytes(b"precious")
    run_ok(durus, "convert", str(shelf), "taken.sqlite")
    taken_sqlite = (durus.cwd / "taken.sqlite").read_bytes()
    for args, name in (
        (["taken.durus"], "taken.durus"),
        (["--to", "sqlite", "taken.durus"], "taken.durus"),
        (["taken.sqlite"], "taken.sqlite"),
        (["sqlite:///taken.sqlite"], "taken.sqlite"),
    ):
        line = one_error_line(durus.run("convert", str(shelf), *args))
        assert f"{name} exists: choose a new file name (convert never overwrites)" in line
    assert (durus.cwd / "taken.durus").read_bytes() == b"precious"
    assert (durus.cwd / "taken.sqlite").read_bytes() == taken_sqlite
    assert sorted(p.name for p in durus.cwd.iterdir()) == [
        "durus43-packed.durus", "taken.durus", "taken.sqlite"]


def test_tools_read_sqlite_storage_files_with_tombstones(durus):
    """info, verify, census and convert skip the rows a pack leaves as tombstones."""
    from durus.connection import Connection
    from durus.persistent_list import PersistentList
    from durus.sqlite_storage import SqliteStorage

    path = durus.cwd / "ours.sqlite"
    storage = SqliteStorage(str(path))
    connection = Connection(storage)
    root = connection.get_root()
    root["keep"] = PersistentList(["kept"])
    root["drop"] = PersistentList(["dropped"])
    connection.commit()
    del root["drop"]
    connection.commit()
    connection.pack()
    storage.close()
    import sqlite3

    db = sqlite3.connect(str(path))
    try:
        assert db.execute("SELECT count(*) FROM objects WHERE data IS NULL").fetchone()[0] == 1
    finally:
        db.close()
    facts = json.loads(run_ok(durus, "info", "--json", "ours.sqlite"))
    assert facts["objects"] == facts["stored_oids"] == 2
    assert facts["problems"] == 0
    out = run_ok(durus, "verify", "--load", "ours.sqlite")
    assert "2 reachable objects checked and loaded" in out
    census = json.loads(run_ok(durus, "census", "--json", "ours.sqlite"))
    assert census["durus.persistent_list.PersistentList"]["objects"] == 1
    out = run_ok(durus, "convert", "ours.sqlite", "ours.durus")
    assert out == "converted ours.sqlite (SQLite) into ours.durus (SHELF-1): 2 objects copied\n"
    assert reachable_records(durus.cwd / "ours.durus") == reachable_records(path)


# -- PostgreSQL -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_cluster() -> Iterator[object]:
    """A real PostgreSQL server for this module (durus-sqlstorage's test helper)."""
    pytest.importorskip("psycopg", reason="postgresql:// storages need psycopg 3")
    from durus.pg_cluster import cluster_for_tests

    cluster = cluster_for_tests(pytest.skip, lambda reason: pytest.fail(reason, pytrace=False))
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def pg_url(postgres_cluster) -> str:
    """The postgresql:// URL of a fresh, empty database."""
    name = f"cli_{uuid.uuid4().hex[:12]}"
    postgres_cluster.create_database(name)
    return str(postgres_cluster.url(name))


def pg_records(url: str) -> dict[bytes, bytes]:
    """Every live record of the database (nothing else is left in it after a convert)."""
    from durus.pg_storage import PostgresStorage

    storage = PostgresStorage(url, readonly=True)
    try:
        return dict(storage.gen_oid_record())
    finally:
        storage.close()


def test_postgres_round_trip_shelf_to_postgres_to_sqlite(durus, pg_url):
    shelf = copy_fixture("durus43-unpacked.durus", durus.cwd)
    original = reachable_records(shelf)
    out = run_ok(durus, "convert", str(shelf), pg_url)
    assert f"(SHELF-1) into {pg_url} (PostgreSQL): 108 objects copied, 35 unreachable" in out
    assert pg_records(pg_url) == original
    assert "alice 100" in read_alice(durus, pg_url)

    out = run_ok(durus, "convert", pg_url, "from-pg.sqlite")
    assert out == (f"converted {pg_url} (PostgreSQL) into from-pg.sqlite (SQLite): "
                   "108 objects copied\n")
    assert reachable_records(durus.cwd / "from-pg.sqlite") == original
    run_ok(durus, "convert", pg_url, "from-pg.durus")
    assert reachable_records(durus.cwd / "from-pg.durus") == original

    # A database that holds objects is refused, and left as it was.
    line = one_error_line(durus.run("convert", str(shelf), pg_url))
    assert "already holds a Durus database" in line
    assert pg_records(pg_url) == original

    # The file tools read the database through its URL too.
    info = json.loads(run_ok(durus, "info", "--json", pg_url))
    assert (info["format"], info["objects"]) == ("PostgreSQL", 108)
    run_ok(durus, "verify", pg_url)
    census = run_ok(durus, "census", pg_url)
    assert "fixture_classes.Account" in census or "Account" in census


def test_postgres_source_must_be_a_durus_database(durus, pg_url):
    line = one_error_line(durus.run("convert", pg_url, "out.durus"))
    assert "holds no Durus database" in line
    assert not (durus.cwd / "out.durus").exists()


def test_postgres_failure_midway_leaves_the_database_empty(tmp_path, pg_url):
    """A copy that fails after rows were committed removes them again."""
    from durus.cli_common import CliError
    from durus.cli_convert import _convert_into_database
    from durus.connection import Connection
    from durus.file_storage import FileStorage
    from durus.persistent_list import PersistentList

    path = tmp_path / "big.durus"
    storage = FileStorage(str(path))
    connection = Connection(storage)
    connection.get_root()["items"] = PersistentList(PersistentList([i]) for i in range(1500))
    connection.commit()
    storage.close()
    with scan_file(str(path)) as scan:
        read = scan.read_record
        calls = [0]

        def failing_read(oid: bytes) -> bytes:
            calls[0] += 1
            if calls[0] > 2 * 1502 - 10:  # the reading pass, then most of the writing one
                raise CliError("the source went away")
            return read(oid)

        scan.read_record = failing_read  # type: ignore[method-assign]
        with pytest.raises(CliError, match="partial copy was removed"):
            _convert_into_database(pg_url, scan, False)
    assert pg_records(pg_url) == {}
