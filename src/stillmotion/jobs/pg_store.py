"""The job store on PostgreSQL: the same rows and rules as the SQLite store, shared by replicas.

Selected by `STILLMOTION_DATABASE_URL=postgresql://...` (needs `pip install 'stillmotion[postgres]'`).

- Schema created and migrated at start-up under a transaction-scoped advisory lock, so several
  replicas starting at once apply each migration exactly once.
- Every write is one autocommitted statement (or one short transaction), so a replica killed at
  any moment leaves nothing half-written.
- The idempotency key has a unique index: the same key sent to two replicas at the same moment
  makes one job; the loser reads the winner's row.
- A trigger NOTIFYs `stillmotion_jobs` with the job id on every insert/update, delivered at
  commit; `listen()` turns that into a callback, so resource subscribers on any replica hear
  about jobs that another replica drives.
- Times that decide between replicas (leases) come from the database clock, not the replica's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .store import JobRow

log = logging.getLogger(__name__)

CHANNEL = "stillmotion_jobs"
MIGRATION_LOCK = 0x5354_4D4F  # "STMO": pg_advisory_xact_lock key for schema changes

# Each entry runs once, in order, inside the migration transaction; never edit a released one.
MIGRATIONS: list[str] = [
    # 1: the jobs table (the SQLite store's columns; JSON as jsonb, times as epoch seconds)
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
        provider_done_at DOUBLE PRECISION
    );
    CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
    CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at);
    CREATE TABLE IF NOT EXISTS stillmotion_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE OR REPLACE FUNCTION stillmotion_jobs_notify() RETURNS trigger AS $$
    BEGIN
        PERFORM pg_notify('stillmotion_jobs', NEW.id);
        RETURN NULL;
    END $$ LANGUAGE plpgsql;
    DROP TRIGGER IF EXISTS jobs_notify ON jobs;
    CREATE TRIGGER jobs_notify AFTER INSERT OR UPDATE ON jobs
        FOR EACH ROW EXECUTE FUNCTION stillmotion_jobs_notify();
    """,
]

_JSON_COLS = {"request", "operation", "warnings", "error", "result"}
_TERMINAL_SQL = "('succeeded','failed','cancelled')"


class IdempotencyKeyTaken(Exception):
    """Another job (perhaps created by another replica a moment ago) already holds this key."""


def _require_psycopg() -> Any:
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SystemExit(
            "STILLMOTION_DATABASE_URL names a PostgreSQL database, but psycopg is not installed: "
            "pip install 'stillmotion[postgres]'"
        ) from exc
    return psycopg, psycopg_pool


class PgStore:
    """Thread-safe (a connection pool); every write commits before it returns."""

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        psycopg, psycopg_pool = _require_psycopg()
        from psycopg.rows import dict_row

        self.url = url
        self._psycopg = psycopg
        self._closed = False
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "row_factory": dict_row},
            open=False,
            name="stillmotion",
        )
        self._pool.open(wait=True, timeout=30)
        self.migrate()
        self._listeners: list[_Listener] = []

    # -- schema --------------------------------------------------------------------------

    def migrate(self) -> None:
        """Create or upgrade the schema; replicas starting together serialize on an advisory lock."""
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS stillmotion_schema (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM stillmotion_schema").fetchone()
            version = int(row["version"]) if row else 0
            if row is None:
                conn.execute("INSERT INTO stillmotion_schema (version) VALUES (0)")
            for number, sql in enumerate(MIGRATIONS[version:], start=version + 1):
                log.info("job store: applying PostgreSQL migration %d", number)
                conn.execute(sql)
                conn.execute("UPDATE stillmotion_schema SET version=%s", (number,))

    def schema_version(self) -> int:
        row = self._one("SELECT version FROM stillmotion_schema")
        return int(row["version"]) if row else 0

    def ping(self) -> None:
        """Raises when the database cannot be reached (the /readyz probe)."""
        self._one("SELECT 1 AS ok")

    def close(self) -> None:
        self._closed = True
        for listener in self._listeners:
            listener.stop()
        self._pool.close()

    # -- meta (the shared-volume marker) -------------------------------------------------

    def meta_get(self, key: str) -> str | None:
        row = self._one("SELECT value FROM stillmotion_meta WHERE key=%s", (key,))
        return None if row is None else str(row["value"])

    def meta_set_default(self, key: str, value: str) -> str:
        """Store `value` under `key` unless a value is there; returns the value that holds."""
        self._exec(
            "INSERT INTO stillmotion_meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING", (key, value)
        )
        held = self.meta_get(key)
        assert held is not None
        return held

    # -- helpers -------------------------------------------------------------------------

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        with self._pool.connection() as conn:
            row: dict[str, Any] | None = conn.execute(sql, params).fetchone()
            return row

    def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._pool.connection() as conn:
            rows: list[dict[str, Any]] = conn.execute(sql, params).fetchall()
            return rows

    def _exec(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        with self._pool.connection() as conn:
            return int(conn.execute(sql, params).rowcount)

    def _value(self, col: str, value: Any) -> Any:
        if col in _JSON_COLS and value is not None:
            from psycopg.types.json import Jsonb

            return Jsonb(value)
        return value

    @staticmethod
    def _row(d: dict[str, Any]) -> JobRow:
        fields = {k: d[k] for k in JobRow.__dataclass_fields__ if k in d}
        return JobRow(**fields)

    # -- reads ---------------------------------------------------------------------------

    def get(self, job_id: str) -> JobRow | None:
        r = self._one("SELECT * FROM jobs WHERE id=%s", (job_id,))
        return self._row(r) if r else None

    def by_idempotency_key(self, key: str) -> JobRow | None:
        r = self._one("SELECT * FROM jobs WHERE idempotency_key=%s", (key,))
        return self._row(r) if r else None

    def recent(self, *, status: str | None = None, limit: int = 20) -> list[JobRow]:
        if status:
            rows = self._all("SELECT * FROM jobs WHERE status=%s ORDER BY created_at DESC LIMIT %s", (status, limit))
        else:
            rows = self._all("SELECT * FROM jobs ORDER BY created_at DESC LIMIT %s", (limit,))
        return [self._row(r) for r in rows]

    def unfinished(self) -> list[JobRow]:
        rows = self._all(
            "SELECT * FROM jobs WHERE status IN ('queued','running','downloading') ORDER BY created_at"
        )
        return [self._row(r) for r in rows]

    # -- writes --------------------------------------------------------------------------

    def create(
        self,
        *,
        job_id: str,
        tool: str,
        model: str,
        route: str,
        request: dict[str, Any],
        args_hash: str,
        idempotency_key: str | None,
        warnings: list[str],
    ) -> JobRow:
        now = time.time()
        r = self._one(
            "INSERT INTO jobs (id, tool, model, route, status, stage, progress, created_at, updated_at, request,"
            " args_hash, idempotency_key, warnings) VALUES (%s,%s,%s,%s,'queued','new',NULL,%s,%s,%s,%s,%s,%s)"
            " ON CONFLICT (idempotency_key) DO NOTHING RETURNING *",
            (
                job_id, tool, model, route, now, now, self._value("request", request), args_hash, idempotency_key,
                self._value("warnings", warnings),
            ),
        )
        if r is None:
            raise IdempotencyKeyTaken(idempotency_key)
        return self._row(r)

    def _set_clause(self, fields: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
        fields["updated_at"] = time.time()
        for col in fields:
            if col not in JobRow.__dataclass_fields__:
                raise ValueError(f"no column {col!r}")
        cols = ", ".join(f"{k}=%s" for k in fields)
        return cols, tuple(self._value(k, v) for k, v in fields.items())

    def update(self, job_id: str, **fields: Any) -> JobRow:
        """Unconditional update (tests and repairs); the runner uses update_unless_terminal."""
        cols, vals = self._set_clause(fields)
        r = self._one(f"UPDATE jobs SET {cols} WHERE id=%s RETURNING *", (*vals, job_id))
        assert r is not None
        return self._row(r)

    def update_unless_terminal(self, job_id: str, **fields: Any) -> JobRow | None:
        """Atomically apply `fields` only if the job has not ended (a cancel wins over a late result)."""
        cols, vals = self._set_clause(fields)
        r = self._one(
            f"UPDATE jobs SET {cols} WHERE id=%s AND status NOT IN {_TERMINAL_SQL} RETURNING *", (*vals, job_id)
        )
        return self._row(r) if r else None

    def set_progress(self, job_id: str, progress: float | None) -> None:
        if self._closed:  # a render thread abandoned at shutdown; the job restarts next time
            return
        self._exec(
            f"UPDATE jobs SET progress=%s, updated_at=%s WHERE id=%s AND status NOT IN {_TERMINAL_SQL}",
            (progress, time.time(), job_id),
        )

    # -- change notifications across replicas -------------------------------------------

    def listen(self, callback: Callable[[str], None]) -> None:
        """Call `callback(job_id)` (on a background thread) whenever any process changes a job."""
        listener = _Listener(self.url, callback, self._psycopg)
        listener.start()
        self._listeners.append(listener)


class _Listener:
    """One dedicated connection LISTENing on the jobs channel; reconnects if the database restarts."""

    def __init__(self, url: str, callback: Callable[[str], None], psycopg: Any) -> None:
        self.url = url
        self.callback = callback
        self.psycopg = psycopg
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stillmotion-pg-listen", daemon=True)
        self._conn: Any = None
        self.ready = threading.Event()

    def start(self) -> None:
        self._thread.start()
        self.ready.wait(10)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self.psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.ready.set()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self.callback(note.payload)
            except Exception:
                if self._stop.is_set():
                    return
                log.warning("job change listener lost its database connection; reconnecting", exc_info=True)
                self._stop.wait(1.0)
