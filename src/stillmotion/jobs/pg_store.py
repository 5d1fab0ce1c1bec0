"""The job store on PostgreSQL: the same rows and rules as the SQLite store, shared by replicas.

Selected by `STILLMOTION_DATABASE_URL=postgresql://...` (needs `pip install 'stillmotion[postgres]'`).

- Schema created and migrated at start-up under a transaction-scoped advisory lock, so several
  replicas starting at once apply each migration exactly once.
- Every write is one autocommitted statement (or one short transaction), so a replica killed at
  any moment leaves nothing half-written.
- The idempotency key has a unique index: the same key sent to two replicas at the same moment
  makes one job; the loser reads the winner's row.
- Changes made by other replicas reach this one's waiters and resource subscribers the same way
  as on SQLite: the runner polls `changed_since` (indexed on updated_at).
- Times (created/updated, leases) come from the database clock, never a replica's, so replicas
  with skewed clocks still agree on whose lease has lapsed.
- Claims lock the job row with `FOR UPDATE SKIP LOCKED`: a replica never waits on a row another
  replica is claiming or writing; it moves on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .job_store import UPSERT_META, JobStore
from .rows import LOCAL_USER, SCHEMA_VERSION
from .sql import Dialect, Mode, StoreClosed, pyformat

log = logging.getLogger(__name__)

MIGRATION_LOCK = 0x5354_4D4F  # "STMO": pg_advisory_xact_lock key for schema changes
BUDGET_LOCK = 0x5354_4D42  # "STMB": pg_advisory_xact_lock around a budget's sum, compare and insert
CAP_LOCK = 0x5354_4D43  # "STMC": pg_advisory_xact_lock(CAP_LOCK, hashtext(cap name)) around a cap check
CONNECT_TIMEOUT_S = 5
"""A connection attempt to an unreachable server gives up after this long."""
CONNECTION_OPTIONS: dict[str, Any] = {
    "connect_timeout": CONNECT_TIMEOUT_S,
    # a database host that vanished without closing the connection (a lost node, a partition) is
    # noticed by TCP keepalives within ~15 s instead of a statement waiting for hours
    "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
    "tcp_user_timeout": 15_000,
}
WAIT_S = 5.0
"""A store call waits this long for a connection before failing (the caller retries or answers
`unavailable`). Short on purpose: once the pool's reconnect attempts gave up, only a new request
starts the next attempt, so this bounds how long after the database is back a replica notices."""
RECONNECT_S = 4.0
"""The pool's reconnect attempts (1 s, 2 s, ... apart) start over after this long, so a database back
after a long outage is found within a few seconds, not after a backoff grown to minutes."""
NOW = "extract(epoch from clock_timestamp())::double precision"

# Index i holds the step from schema i+1 to i+2 (schema 1 = the first SQLite release, which
# never existed on PostgreSQL, so a new database goes straight to SCHEMA_VERSION). Each runs once,
# in order, in the migration transaction; never edit a released one.
MIGRATIONS: list[str] = [
    # -> 2: jobs with ownership and resume bookmarks
    """
    CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        tool TEXT NOT NULL,
        model TEXT NOT NULL,
        route TEXT NOT NULL,
        status TEXT NOT NULL,
        stage TEXT NOT NULL,
        progress DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        request JSONB NOT NULL,
        args_hash TEXT NOT NULL,
        idempotency_key TEXT UNIQUE,
        operation JSONB,
        provider_task_id TEXT,
        warnings JSONB NOT NULL DEFAULT '[]',
        error JSONB,
        result JSONB,
        attempts INTEGER NOT NULL DEFAULT 0,
        provider_done_at DOUBLE PRECISION,
        owner TEXT,
        lease_expires_at DOUBLE PRECISION,
        status_detail TEXT,
        submitted_at DOUBLE PRECISION,
        video_url TEXT,
        video_url_expires_at DOUBLE PRECISION
    );
    CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
    CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at);
    CREATE INDEX IF NOT EXISTS jobs_updated ON jobs(updated_at);
    CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner) WHERE owner IS NOT NULL;
    """,
    # -> 3: cost (issue #15): the estimate, the provider's reported cost, and `billed`, set when a
    # job ends after reaching the provider (the SQLite store's trigger, as a row trigger)
    """
    ALTER TABLE jobs ADD COLUMN IF NOT EXISTS estimated_usd DOUBLE PRECISION;
    ALTER TABLE jobs ADD COLUMN IF NOT EXISTS cost JSONB;
    ALTER TABLE jobs ADD COLUMN IF NOT EXISTS actual_usd DOUBLE PRECISION;
    ALTER TABLE jobs ADD COLUMN IF NOT EXISTS actual_cost JSONB;
    ALTER TABLE jobs ADD COLUMN IF NOT EXISTS billed INTEGER NOT NULL DEFAULT 0;
    CREATE OR REPLACE FUNCTION stillmotion_jobs_billed() RETURNS trigger AS $fn$
    BEGIN
      IF NEW.status IN ('succeeded','failed','cancelled') AND OLD.status NOT IN ('succeeded','failed','cancelled')
         AND OLD.stage IN ('submitting','polling','downloading') AND NEW.route <> 'local' THEN
        NEW.billed := 1;
      END IF;
      RETURN NEW;
    END
    $fn$ LANGUAGE plpgsql;
    DROP TRIGGER IF EXISTS jobs_billed ON jobs;
    CREATE TRIGGER jobs_billed BEFORE UPDATE OF status ON jobs
      FOR EACH ROW EXECUTE FUNCTION stillmotion_jobs_billed();
    """,
    # -> 4: users (issue #23): who asked for each job (earlier jobs: the local user), and
    # idempotency keys per user (stored as <user>\x1f<key>, so the unique index is per user)
    f"""
    ALTER TABLE jobs ADD COLUMN IF NOT EXISTS user_id TEXT NOT NULL DEFAULT '{LOCAL_USER}';
    UPDATE jobs SET idempotency_key = user_id || chr(31) || idempotency_key
      WHERE idempotency_key IS NOT NULL AND strpos(idempotency_key, chr(31)) = 0;
    CREATE INDEX IF NOT EXISTS jobs_user_created ON jobs(user_id, created_at);
    """,
    # -> 5: the disk cap (issue #26) deletes a finished job's files and keeps its row
    """
    ALTER TABLE jobs ADD COLUMN IF NOT EXISTS files_deleted INTEGER NOT NULL DEFAULT 0;
    """,
]
assert len(MIGRATIONS) + 1 == SCHEMA_VERSION, "a new schema version needs a PostgreSQL migration"


def _require_psycopg() -> tuple[Any, Any]:
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SystemExit(
            "STILLMOTION_DATABASE_URL names a PostgreSQL database, but psycopg is not installed: "
            "pip install 'stillmotion[postgres]'"
        ) from exc
    return psycopg, psycopg_pool


def _jsonb(value: Any) -> Any:
    from psycopg.types.json import Jsonb

    return Jsonb(value)


POSTGRES = Dialect(
    name="PostgreSQL",
    clock=NOW,
    clock_text=f"CAST({NOW} AS TEXT)",
    json_param=_jsonb,
    json_value=lambda v: v,  # (psycopg decodes JSONB)
    # a replica never waits on a row another replica is claiming or writing; it moves on
    row_lock=" FOR UPDATE SKIP LOCKED",
    # one transaction under an advisory lock: every replica's sum, compare and insert in turn
    budget_lock=f"SELECT pg_advisory_xact_lock({BUDGET_LOCK})",
    # one cap checker at a time per cap, across every replica
    cap_lock=f"SELECT pg_advisory_xact_lock({CAP_LOCK}, hashtext(:cap))",
    returning_sees_triggers=True,  # (the billed trigger runs BEFORE UPDATE)
    day="to_char(to_timestamp(created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
)


class _Conn:
    """`sql.Conn` over one pooled psycopg connection: `:name` parameters become `%(name)s`."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def run(self, sql: str, params: Any) -> list[dict[str, Any]]:
        cur = self.conn.execute(pyformat(sql), params)
        return list(cur.fetchall()) if cur.description is not None else []

    def count(self, sql: str, params: Any) -> int:
        return int(self.conn.execute(pyformat(sql), params).rowcount)


class PgStore(JobStore):
    """A connection pool (thread-safe); every statement autocommits, so each write is durable
    when it returns."""

    dialect = POSTGRES

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        psycopg, psycopg_pool = _require_psycopg()
        from psycopg.rows import dict_row

        self.url = url
        self._psycopg = psycopg
        self._closed = False
        # Connections heal (issue #21): each is checked before use (a server restart leaves every
        # pooled connection dead; the check replaces it instead of failing a write), a connection
        # attempt gives up after a few seconds, and reconnecting never backs off beyond a few
        # seconds (a failed attempt gives up after RECONNECT_S; the next request starts afresh),
        # so a replica serves again within seconds of the database coming back.
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "row_factory": dict_row, **CONNECTION_OPTIONS},
            open=False,
            name="stillmotion",
            check=psycopg_pool.ConnectionPool.check_connection,
            timeout=WAIT_S,
            reconnect_timeout=RECONNECT_S,
            max_idle=300.0,
        )
        self._pool.open(wait=True, timeout=30)
        try:
            self._migrate()
        except BaseException:
            self._pool.close()
            raise

    # -- schema ---------------------------------------------------------------------------

    def _migrate(self) -> None:
        """Create or upgrade the schema; replicas starting together queue on an advisory lock,
        and each finds the work done by the first."""
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row["value"]) if row else 1
            for number in range(version + 1, SCHEMA_VERSION + 1):
                log.info("job store: migrating PostgreSQL schema to version %d", number)
                conn.execute(MIGRATIONS[number - 2])
            if version < SCHEMA_VERSION:
                conn.execute(pyformat(UPSERT_META), {"key": "schema_version", "value": str(SCHEMA_VERSION)})

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool.close()

    @contextmanager
    def _session(self, mode: Mode, *, if_open: bool = False) -> Iterator[_Conn]:
        if if_open and self._closed:
            raise StoreClosed
        with self._pool.connection() as conn:
            if mode != "atomic":  # one autocommitted statement at a time
                yield _Conn(conn)
                return
            with conn.transaction():
                yield _Conn(conn)

    def now(self) -> float:
        with self._session("read") as c:
            return float(c.run(f"SELECT {NOW} AS now", {})[0]["now"])
