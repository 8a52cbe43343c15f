"""PostgresStorage: a Durus database in PostgreSQL, shared by processes on many machines.

``Connection(PostgresStorage("dbname=app host=db"))`` needs no Durus server;
``durus -s --file postgresql://...`` serves it to classic clients.  Needs the
extra ``durus-sqlstorage[postgresql]`` (psycopg 3).  Replication, failover and
backups are PostgreSQL's: point a ``readonly=True`` storage at a streaming
replica for read-mostly processes (see the README for the staleness that
means).
"""

from __future__ import annotations

import logging
from typing import Any

try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
except ImportError as _error:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "PostgresStorage needs psycopg 3: pip install 'durus-sqlstorage[postgresql]'"
    ) from _error

from durus.sql_errors import SqlStorageError
from durus.sql_schema import SCHEMA_VERSION, postgres_schema
from durus.sql_storage import SqlStorage

__all__ = ["PostgresStorage"]

logger = logging.getLogger("durus.sql_storage")

#: The advisory lock key that serialises schema creation (any constant will do).
_SCHEMA_LOCK = 0x44757275


class PostgresStorage(SqlStorage):
    """A storage in the PostgreSQL database ``dsn`` (a libpq string or ``postgresql://`` URL).

    ``readonly``: no writes (also the mode for a streaming replica).
    ``connect_timeout``: seconds before a connection attempt fails.
    ``idle_in_transaction_timeout``: a session idle inside a transaction this many
    seconds (a stalled process holding the commit lock) is ended by the server,
    so it cannot stop everyone else's commits.  Other keyword arguments go to
    ``psycopg.connect``.
    """

    placeholder = "%s"

    def __init__(
        self,
        dsn: str = "",
        readonly: bool = False,
        *,
        connect_timeout: int = 10,
        idle_in_transaction_timeout: int = 60,
        **connect_kwargs: Any,
    ) -> None:
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self.idle_in_transaction_timeout = idle_in_transaction_timeout
        self.connect_kwargs = connect_kwargs
        super().__init__(readonly)

    def describe(self) -> str:
        try:
            params = conninfo_to_dict(self.dsn)
        except psycopg.Error:
            return "a PostgreSQL database"
        params.pop("password", None)
        shown = {key: str(value) for key, value in params.items()
                 if key in ("host", "hostaddr", "port", "dbname", "user") and value is not None}
        return "PostgreSQL " + make_conninfo("", **shown)

    def get_size(self) -> int:
        """Bytes of the Durus tables and their indexes."""
        return int(self._execute(
            "SELECT pg_total_relation_size('objects') + pg_total_relation_size('durus_state')"
        ).fetchone()[0])

    # -- dialect -------------------------------------------------------------------

    def _connect(self) -> Any:
        options = f"-c idle_in_transaction_session_timeout={self.idle_in_transaction_timeout}s"
        if self.readonly:
            options += " -c default_transaction_read_only=on"
        return psycopg.connect(
            self.dsn,
            autocommit=True,
            connect_timeout=self.connect_timeout,
            application_name="durus",
            options=options,
            **self.connect_kwargs,
        )

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        return (psycopg.Error,)

    def _is_disconnect(self, error: BaseException) -> bool:
        db = self._db
        if db is None or db.closed or db.broken:
            return True
        return isinstance(error, psycopg.OperationalError) and not isinstance(
            error, psycopg.errors.DiskFull | psycopg.errors.QueryCanceled
        )

    def _in_list(self, count: int) -> str:
        return "= ANY(?)"

    def _in_params(self, numbers: list[int]) -> tuple[Any, ...]:
        return (numbers,)

    def _prepare(self, db: Any) -> None:
        exists = db.execute("SELECT to_regclass('durus_state') IS NOT NULL").fetchone()[0]
        if not exists:
            if self.readonly:
                raise SqlStorageError(f"{self.describe()} holds no Durus database")
            with db.transaction():
                db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                for statement in postgres_schema():
                    db.execute(statement)
                db.execute(
                    "INSERT INTO durus_state VALUES (1, %s, 0, 0, 0) ON CONFLICT DO NOTHING",
                    (SCHEMA_VERSION,),
                )
            logger.info("created the Durus tables in %s", self.describe())
        row = db.execute("SELECT schema_version FROM durus_state").fetchone()
        self._check_version(int(row[0]) if row else 0)

    def _begin_write(self) -> None:
        self._execute("BEGIN")

    def _begin_snapshot(self) -> None:
        # The snapshot is taken by the first statement (the sync query).  A
        # reader idle between transactions holds no lock anyone waits for,
        # so the idle-in-transaction timeout (meant for the commit lock) is
        # off inside it.
        self._execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        self._execute("SET LOCAL idle_in_transaction_session_timeout = 0")

    def _next_tid(self) -> int:
        return int(self._execute(
            "UPDATE durus_state SET tid = tid + 1 RETURNING tid"
        ).fetchone()[0])

    def _reserve_oids(self, count: int) -> list[int]:
        rows = self._execute(
            "SELECT nextval('durus_oid_seq') FROM generate_series(1, ?)", (count,)
        ).fetchall()
        return sorted(int(row[0]) for row in rows)

    def _set_next_oid_at_least(self, number: int) -> None:
        if number > 0:
            self._execute(
                "SELECT setval('durus_oid_seq', greatest(?, (SELECT CASE WHEN is_called"
                " THEN last_value ELSE last_value - 1 END FROM durus_oid_seq)), true)",
                (number - 1,),
            )
