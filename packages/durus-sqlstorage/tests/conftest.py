"""Fixtures of the durus-sqlstorage tests: one real PostgreSQL server per session.

The server helpers are this distribution's ``durus.pg_cluster`` (standard library
only: the CLI's and the meta-distribution's tests and ``benchmarks/`` use it too).
Without PostgreSQL binaries the PostgreSQL tests skip, unless ``DURUS_REQUIRE_POSTGRES=1``
(CI sets it) turns that into a failure: CI must never pass by skipping them.
"""

from __future__ import annotations

import pathlib
import re
import sys
import uuid
from collections.abc import Iterator

import pytest

from durus.pg_cluster import PostgresCluster, PostgresError, cluster_for_tests

# This folder's helper modules (fixture_classes, ...) are imported by the tests.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One PostgreSQL server for the whole session, in a temporary folder removed at the end."""
    cluster = cluster_for_tests(pytest.skip, lambda reason: pytest.fail(reason, pytrace=False))
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def pg_database(postgres_cluster: PostgresCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """The name of a fresh, empty database for this test (dropped afterwards).

    A test that crashed the session's server with ``kill()`` gets it restarted here.
    """
    if not postgres_cluster.running:
        postgres_cluster.restart()
    slug = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:40]
    name = f"t_{slug}_{uuid.uuid4().hex[:8]}"
    postgres_cluster.create_database(name)
    yield name
    if postgres_cluster.running:
        try:
            postgres_cluster.drop_database(name)
        except PostgresError:
            pass  # the cluster and every database in it go at the end of the session anyway


@pytest.fixture
def pg_dsn(postgres_cluster: PostgresCluster, pg_database: str) -> str:
    """A libpq DSN ("host=127.0.0.1 port=... user=durus dbname=...") of a fresh database."""
    return postgres_cluster.dsn(pg_database)


@pytest.fixture
def pg_url(postgres_cluster: PostgresCluster, pg_database: str) -> str:
    """The postgresql:// URL of the same fresh database as ``pg_dsn``."""
    return postgres_cluster.url(pg_database)


# -- both storages, one database per test -----------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def opener(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[object]:
    """A factory of storages on one fresh database, SQLite or PostgreSQL.

    ``opener.other()`` is a factory on a second fresh database of the same kind.
    """
    from storage_openers import Opener

    made: list[Opener] = []

    def make() -> Opener:
        if request.param == "sqlite":
            from durus.sqlite_storage import SqliteStorage

            path = tmp_path / f"test{len(made)}.sqlite"
            result = Opener("sqlite", f"sqlite:///{path}",
                            lambda **kw: SqliteStorage(path, **kw), make)
        else:
            pytest.importorskip("psycopg", reason="PostgresStorage needs psycopg 3")
            from durus.pg_storage import PostgresStorage

            cluster = request.getfixturevalue("postgres_cluster")
            name = f"t_{uuid.uuid4().hex[:12]}"
            cluster.create_database(name)
            dsn = cluster.dsn(name)
            result = Opener("postgresql", cluster.url(name),
                            lambda **kw: PostgresStorage(dsn, **kw), make)
        made.append(result)
        return result

    if request.param == "postgresql":
        request.getfixturevalue("pg_database")  # restarts a server a test crashed
    yield make()
    for each in made:
        each.close_all()
