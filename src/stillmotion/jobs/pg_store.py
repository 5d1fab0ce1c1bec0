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
from collections.abc import Collection, Mapping
from typing import Any

from .caps import RUNNING_SQL, RunningCap
from .spend import (
    COMMITTED_SQL,
    RESERVED_SQL,
    USERS_SQL,
    BudgetRule,
    Period,
    PeriodSpend,
    breakdown_row,
    period_start,
    refuse_unless_fits,
    status_of,
    user_row,
)
from .store import (
    JSON_COLS,
    LOCAL_USER,
    ROW_COLS,
    SCHEMA_VERSION,
    DuplicateIdempotencyKey,
    JobRow,
    JobStore,
    check_columns,
    scoped_key,
)

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
NOT_TERMINAL = "status NOT IN ('succeeded','failed','cancelled')"

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


class PgStore(JobStore):
    """A connection pool (thread-safe); every statement autocommits, so each write is durable
    when it returns."""

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
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema_version', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                    (str(SCHEMA_VERSION),),
                )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool.close()

    def now(self) -> float:
        row = self._one(f"SELECT {NOW} AS now")
        assert row is not None
        return float(row["now"])

    # -- helpers --------------------------------------------------------------------------

    def _one(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> dict[str, Any] | None:
        with self._pool.connection() as conn:
            row: dict[str, Any] | None = conn.execute(sql, params).fetchone()
            return row

    def _all(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        with self._pool.connection() as conn:
            rows: list[dict[str, Any]] = conn.execute(sql, params).fetchall()
            return rows

    @staticmethod
    def _row(d: dict[str, Any]) -> JobRow:
        return JobRow(**{k: d[k] for k in ROW_COLS})

    def _rows(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[JobRow]:
        return [self._row(r) for r in self._all(sql, params)]

    @staticmethod
    def _encode(values: Mapping[str, Any]) -> tuple[list[str], list[Any]]:
        from psycopg.types.json import Jsonb

        check_columns(values)
        cols = [f"{k}=%s" for k in values]
        vals = [Jsonb(v) if k in JSON_COLS and v is not None else v for k, v in values.items()]
        return cols, vals

    # -- reads ----------------------------------------------------------------------------

    def get(self, job_id: str, *, user: str | None = None) -> JobRow | None:
        if user is not None:
            rows = self._rows("SELECT * FROM jobs WHERE id=%s AND user_id=%s", (job_id, user))
        else:
            rows = self._rows("SELECT * FROM jobs WHERE id=%s", (job_id,))
        return rows[0] if rows else None

    def by_idempotency_key(self, key: str, *, user: str = LOCAL_USER) -> JobRow | None:
        rows = self._rows("SELECT * FROM jobs WHERE idempotency_key=%s", (scoped_key(user, key),))
        return rows[0] if rows else None

    def recent(self, *, status: str | None = None, limit: int = 20, user: str | None = None) -> list[JobRow]:
        conds = [*(["status=%s"] if status else []), *(["user_id=%s"] if user is not None else [])]
        where = f" WHERE {' AND '.join(conds)}" if conds else ""
        params = (*([status] if status else []), *([user] if user is not None else []), limit)
        return self._rows(f"SELECT * FROM jobs{where} ORDER BY created_at DESC LIMIT %s", params)

    def unfinished(self) -> list[JobRow]:
        return self._rows(f"SELECT * FROM jobs WHERE {NOT_TERMINAL} ORDER BY created_at")

    def claimable(self, stale_owners: Collection[str] = ()) -> list[JobRow]:
        return self._rows(
            f"SELECT * FROM jobs WHERE {NOT_TERMINAL} AND (owner IS NULL OR lease_expires_at IS NULL"
            f" OR lease_expires_at < {NOW} OR owner = ANY(%s)) ORDER BY created_at",
            (list(stale_owners),),
        )

    def changed_since(self, since: float, *, limit: int = 1000) -> list[JobRow]:
        return self._rows("SELECT * FROM jobs WHERE updated_at > %s ORDER BY updated_at LIMIT %s", (since, limit))

    # -- writes ---------------------------------------------------------------------------

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
        owner: str | None = None,
        lease_s: float | None = None,
        cost: Mapping[str, Any] | None = None,
        budget: BudgetRule | None = None,
        user: str = LOCAL_USER,
        user_budget: BudgetRule | None = None,
    ) -> JobRow:
        from psycopg.types.json import Jsonb

        lease = lease_s if owner is not None and lease_s is not None else None
        cost = cost or {}
        estimated = cost.get("estimated_usd")
        # ON CONFLICT on the unique key: two replicas inserting the same key at the same moment
        # never both succeed; the loser gets no row back (and no error to parse).
        insert = (
            "INSERT INTO jobs (id, tool, model, route, status, stage, progress, created_at, updated_at, request,"
            " args_hash, idempotency_key, warnings, owner, lease_expires_at, estimated_usd, cost, user_id)"
            f" SELECT %(id)s, %(tool)s, %(model)s, %(route)s, 'queued', 'new', NULL, t.now, t.now, %(request)s,"
            " %(args_hash)s, %(key)s, %(warnings)s, %(owner)s, t.now + %(lease)s, %(estimated)s, %(cost)s, %(user)s"
            f" FROM (SELECT {NOW} AS now) t"
            " ON CONFLICT (idempotency_key) DO NOTHING RETURNING *"
        )
        values = {
            "id": job_id, "tool": tool, "model": model, "route": route, "request": Jsonb(request),
            "args_hash": args_hash, "key": scoped_key(user, idempotency_key) if idempotency_key is not None else None,
            "warnings": Jsonb(warnings), "owner": owner, "lease": lease, "estimated": estimated, "user": user,
            "cost": Jsonb({"basis": cost.get("basis", ""), "estimate": cost.get("estimate", True)}),
        }
        rules = [rule for rule in (budget, user_budget) if rule is not None]
        if not rules:
            r = self._one(insert, values)
        else:
            # one transaction under an advisory lock: every replica's sum, compare and insert in turn
            with self._pool.connection() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (BUDGET_LOCK,))
                now_row = conn.execute(f"SELECT {NOW} AS now").fetchone()
                now = float(now_row["now"])
                for rule in rules:
                    refuse_unless_fits(self._period_spend(conn, rule.period, now, rule.user), rule, estimated,
                                       str(cost.get("basis", "")), now)
                r = conn.execute(insert, values).fetchone()
        if r is None:
            raise DuplicateIdempotencyKey(idempotency_key)
        return self._row(r)

    # -- cost -------------------------------------------------------------------------------

    @staticmethod
    def _period_spend(conn: Any, period: Period, now: float, user: str | None = None) -> PeriodSpend:
        mine = " AND user_id = %s" if user is not None else ""
        row = conn.execute(
            f"SELECT COALESCE(SUM({COMMITTED_SQL}), 0) AS c, COALESCE(SUM({RESERVED_SQL}), 0) AS r"
            f" FROM jobs WHERE created_at >= %s{mine}",
            (period_start(period, now), *((user,) if user is not None else ())),
        ).fetchone()
        return PeriodSpend(float(row["c"]), float(row["r"]))

    def set_actual_cost(self, job_id: str, owner: str, usd: float | None, detail: Mapping[str, Any]) -> bool:
        from psycopg.types.json import Jsonb

        if self._closed:
            return False
        with self._pool.connection() as conn:
            cur = conn.execute(
                "UPDATE jobs SET actual_usd=%s, actual_cost=%s WHERE id=%s AND owner=%s",
                (usd, Jsonb(dict(detail)), job_id, owner),
            )
            return bool(cur.rowcount)

    def spend(
        self, budget: BudgetRule | None, period: Period, since: float = 0.0, *, user: str | None = None,
        user_budget: BudgetRule | None = None,
    ) -> dict[str, Any]:
        mine = " AND user_id = %s" if user is not None else ""
        with self._pool.connection() as conn:
            now = float(conn.execute(f"SELECT {NOW} AS now").fetchone()["now"])
            spent = self._period_spend(conn, budget.period if budget else period, now)
            rows = conn.execute(
                f"""
                SELECT to_char(to_timestamp(created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, model, route,
                       COUNT(*) AS jobs,
                       SUM(CASE WHEN billed = 1 THEN 1 ELSE 0 END) AS billed_jobs,
                       COALESCE(SUM({COMMITTED_SQL}), 0) AS committed,
                       SUM(CASE WHEN billed = 1 THEN actual_usd END) AS actual,
                       COALESCE(SUM(CASE WHEN billed = 1 OR status NOT IN ('succeeded','failed','cancelled')
                                         THEN estimated_usd ELSE 0 END), 0) AS estimated,
                       COALESCE(SUM({RESERVED_SQL}), 0) AS reserved,
                       SUM(CASE WHEN estimated_usd IS NULL AND route <> 'local' THEN 1 ELSE 0 END) AS unknown
                FROM jobs WHERE created_at >= %s{mine}
                GROUP BY 1, model, route ORDER BY 1 DESC, model, route
                """,
                (since, *((user,) if user is not None else ())),
            ).fetchall()
            if user is not None:
                mine_spent = self._period_spend(conn, user_budget.period if user_budget else period, now, user)
            else:
                start = period_start(budget.period if budget else period, now)
                users = conn.execute(USERS_SQL.format(mark="%s"), (start,)).fetchall()
        breakdown = [breakdown_row(tuple(r.values())) for r in rows]
        if user is not None:
            return {"budget": status_of(mine_spent, user_budget, period, now),
                    "server_budget": status_of(spent, budget, period, now), "rows": breakdown}
        return {
            "budget": status_of(spent, budget, period, now),
            "rows": breakdown,
            "users": [user_row(tuple(r.values()), user_budget) for r in users],
        }

    def claim(self, job_id: str, owner: str, lease_s: float, stale_owners: Collection[str] = ()) -> JobRow | None:
        if self._closed:
            return None
        stale = [s for s in stale_owners if s != owner]
        r = self._one(
            f"UPDATE jobs SET owner=%(owner)s, lease_expires_at={NOW} + %(lease)s WHERE id = ("
            f" SELECT id FROM jobs WHERE id=%(id)s AND {NOT_TERMINAL} AND (owner IS NULL OR owner=%(owner)s"
            f" OR lease_expires_at IS NULL OR lease_expires_at < {NOW} OR owner = ANY(%(stale)s))"
            " FOR UPDATE SKIP LOCKED) RETURNING *",
            {"owner": owner, "lease": lease_s, "id": job_id, "stale": stale},
        )
        return self._row(r) if r else None

    def renew(self, owner: str, lease_s: float) -> set[str]:
        if self._closed:
            return set()
        rows = self._all(
            f"UPDATE jobs SET lease_expires_at={NOW} + %s WHERE owner=%s AND {NOT_TERMINAL} RETURNING id",
            (lease_s, owner),
        )
        return {str(r["id"]) for r in rows}

    def release(self, owner: str, job_ids: Collection[str] | None = None) -> int:
        if self._closed or (job_ids is not None and not job_ids):
            return 0
        sql = f"UPDATE jobs SET owner=NULL, lease_expires_at=NULL WHERE owner=%s AND {NOT_TERMINAL}"
        params: tuple[Any, ...] = (owner,)
        if job_ids is not None:
            sql += " AND id = ANY(%s)"
            params = (owner, list(job_ids))
        with self._pool.connection() as conn:
            return int(conn.execute(sql, params).rowcount)

    def update_owned(
        self, job_id: str, owner: str, values: Mapping[str, Any], *, lease_s: float | None = None
    ) -> JobRow | None:
        if self._closed:
            return None
        cols, vals = self._encode(values)
        cols.append(f"updated_at={NOW}")
        if lease_s is not None:
            cols.append(f"lease_expires_at={NOW} + %s")
            vals.append(lease_s)
        r = self._one(
            f"UPDATE jobs SET {', '.join(cols)} WHERE id=%s AND owner=%s AND {NOT_TERMINAL} RETURNING *",
            (*vals, job_id, owner),
        )
        return self._row(r) if r else None

    def update_owned_capped(
        self, job_id: str, owner: str, values: Mapping[str, Any], *, cap: RunningCap, lease_s: float | None = None
    ) -> JobRow | None:
        if self._closed:
            return None
        cols, vals = self._encode(values)
        cols.append(f"updated_at={NOW}")
        if lease_s is not None:
            cols.append(f"lease_expires_at={NOW} + %s")
            vals.append(lease_s)
        model_cond = " AND model = ANY(%s)" if cap.models is not None else ""
        params: tuple[Any, ...] = (job_id, cap.route) + ((list(cap.models),) if cap.models is not None else ())
        with self._pool.connection() as conn, conn.transaction():
            # one cap checker at a time per cap, across every replica; READ COMMITTED gives the
            # count below a fresh snapshot taken after the lock, so it sees every committed start
            conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (CAP_LOCK, cap.name))
            counted = conn.execute(
                f"SELECT COUNT(*) AS n FROM jobs WHERE id<>%s AND route=%s AND {RUNNING_SQL}{model_cond}", params
            ).fetchone()
            running = int(counted["n"]) if counted else 0
            if running >= cap.limit:
                raise cap.reached(running)
            r = conn.execute(
                f"UPDATE jobs SET {', '.join(cols)} WHERE id=%s AND owner=%s AND {NOT_TERMINAL} RETURNING *",
                (*vals, job_id, owner),
            ).fetchone()
        return self._row(r) if r else None

    def set_progress(self, job_id: str, owner: str, progress: float | None) -> bool:
        if self._closed:  # a render thread abandoned at shutdown; the job restarts elsewhere
            return False
        with self._pool.connection() as conn:
            cur = conn.execute(
                f"UPDATE jobs SET progress=%s, status_detail=NULL, updated_at={NOW}"
                f" WHERE id=%s AND owner=%s AND {NOT_TERMINAL}",
                (progress, job_id, owner),
            )
            return bool(cur.rowcount > 0)

    def cancel(self, job_id: str, error: dict[str, Any]) -> JobRow | None:
        from psycopg.types.json import Jsonb

        r = self._one(
            "UPDATE jobs SET status='cancelled', stage='done', error=%s, status_detail=NULL, lease_expires_at=NULL,"
            f" updated_at={NOW} WHERE id=%s AND {NOT_TERMINAL} RETURNING *",
            (Jsonb(error), job_id),
        )
        return self._row(r) if r else None

    def update(self, job_id: str, **values: Any) -> JobRow:
        cols, vals = self._encode(values)
        cols.append(f"updated_at={NOW}")
        r = self._one(f"UPDATE jobs SET {', '.join(cols)} WHERE id=%s RETURNING *", (*vals, job_id))
        assert r is not None
        return self._row(r)

    # -- deleting -------------------------------------------------------------------------

    def delete_finished(self, job_id: str) -> JobRow | None:
        r = self._one(f"DELETE FROM jobs WHERE id=%s AND NOT ({NOT_TERMINAL}) RETURNING *", (job_id,))
        return self._row(r) if r else None

    def finished_created_before(self, cutoff: float, *, limit: int = 1000) -> list[JobRow]:
        return self._rows(
            f"SELECT * FROM jobs WHERE NOT ({NOT_TERMINAL}) AND created_at < %s ORDER BY created_at LIMIT %s",
            (cutoff, limit),
        )

    def finished_with_files(self, created_before: float, *, limit: int = 1000) -> list[JobRow]:
        return self._rows(
            f"SELECT * FROM jobs WHERE NOT ({NOT_TERMINAL}) AND files_deleted=0 AND created_at < %s"
            " ORDER BY created_at LIMIT %s",
            (created_before, limit),
        )

    def mark_files_deleted(self, job_id: str) -> bool:
        with self._pool.connection() as conn:
            cur = conn.execute(
                f"UPDATE jobs SET files_deleted=1, updated_at={NOW} WHERE id=%s AND NOT ({NOT_TERMINAL})", (job_id,)
            )
            return bool(cur.rowcount)

    def job_counts(self) -> list[tuple[str, str, str, int]]:
        rows = self._all("SELECT status, model, route, COUNT(*) AS n FROM jobs GROUP BY status, model, route")
        return [(str(r["status"]), str(r["model"]), str(r["route"]), int(r["n"])) for r in rows]

    def meta_claim_interval(self, key: str, interval_s: float) -> bool:
        # one statement: the upsert's WHERE sees the committed row (or waits on a concurrent writer)
        r = self._one(
            f"INSERT INTO meta(key, value) VALUES (%(k)s, ({NOW})::text) ON CONFLICT (key) DO UPDATE"
            f" SET value=excluded.value WHERE meta.value::double precision <= {NOW} - %(i)s RETURNING key",
            {"k": key, "i": interval_s},
        )
        return r is not None

    # -- meta -----------------------------------------------------------------------------

    def meta_get(self, key: str) -> str | None:
        r = self._one("SELECT value FROM meta WHERE key=%s", (key,))
        return None if r is None else str(r["value"])

    def meta_set(self, key: str, value: str | None) -> None:
        with self._pool.connection() as conn:
            if value is None:
                conn.execute("DELETE FROM meta WHERE key=%s", (key,))
            else:
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                    (key, value),
                )

    def meta_setdefault(self, key: str, value: str) -> str:
        r = self._one(
            "WITH ins AS (INSERT INTO meta(key, value) VALUES (%(k)s, %(v)s) ON CONFLICT (key) DO NOTHING"
            " RETURNING value) SELECT value FROM ins UNION ALL SELECT value FROM meta WHERE key=%(k)s LIMIT 1",
            {"k": key, "v": value},
        )
        if r is None:  # the row was inserted by a concurrent transaction we could not see yet
            held = self.meta_get(key)
            assert held is not None
            return held
        return str(r["value"])
