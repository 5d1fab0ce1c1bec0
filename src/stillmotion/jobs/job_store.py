"""The job store: its contract and its one implementation, over SQL shared by both engines.

`JobStore` holds every operation once, written against `jobs/sql.py` (a `Dialect` for what
differs, a `Conn` to run statements on). An engine supplies only its connection handling
(`_session`), its clock (`now`), `close`, its migrations and its dialect: `SqliteStore`
(jobs/store.py) keeps one SQLite file under STILLMOTION_HOME; `PgStore` (jobs/pg_store.py) a
PostgreSQL database shared by replicas. `tests/store_contract.py` is the behaviour both show.

Ownership: every unfinished job has at most one `owner` (a process instance id, see
`jobs/ownership.py`) and a `lease_expires_at` on the store's clock. A process claims a job with
one conditional update, renews its leases on a heartbeat, releases them when it stops, and every
write it makes while driving a job is conditional on still owning it. Anyone may cancel.

Reads that answer a person take `user`: a job of another user reads as no job at all (None =
every user's: admins and the runner).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from contextlib import AbstractContextManager
from typing import Any, ClassVar

from .caps import RUNNING_SQL, RunningCap
from .rows import (
    HEAD_COLS,
    JSON_COLS,
    LOCAL_USER,
    ROW_COLS,
    DuplicateIdempotencyKey,
    JobHead,
    JobRow,
    check_columns,
    scoped_key,
)
from .spend import BudgetRule, Period, breakdown_row, period_start, refuse_unless_fits, status_of, user_row
from .sql import (
    FINISHED,
    NOT_TERMINAL,
    Conn,
    Dialect,
    Mode,
    StoreClosed,
    breakdown,
    changed_row,
    in_list,
    period_spend,
    set_clause,
    users_spend,
)


class JobStore(ABC):
    """The durable job table plus a small key/value table (`meta`).

    Rules every engine keeps:
    - Every write is durable when it returns (a kill -9 loses nothing acknowledged).
    - Times (`created_at`, `updated_at`, `lease_expires_at`) are seconds since the epoch on the
      store's clock (`now()`); leases are given as a length and turned into an expiry by the store.
    - Writes that change a job's visible state bump `updated_at` (what `changed_since` reports);
      lease renewals and releases do not.
    - "Unfinished" means status queued, running or downloading; terminal rows never change again
      except through `update` (repairs and tests).
    - Safe to call from several threads of one process.
    """

    dialect: ClassVar[Dialect]

    # -- what an engine supplies ----------------------------------------------------------

    @abstractmethod
    def close(self) -> None:
        """Release the connection. Calls after close may be ignored (set_progress) or raise."""

    @abstractmethod
    def now(self) -> float:
        """The store's clock (the one leases are measured on)."""

    @abstractmethod
    def _session(self, mode: Mode, *, if_open: bool = False) -> AbstractContextManager[Conn]:
        """A connection for one operation (see `sql.Mode`); with `if_open`, raises
        StoreClosed (before touching the connection) when the store was closed."""

    # -- helpers --------------------------------------------------------------------------

    def _params(self, **params: Any) -> dict[str, Any]:
        """`params`, plus the clock when the dialect binds it from this process."""
        if self.dialect.process_clock:
            now = self.now()
            params.update(now=now, now_text=repr(now))
        return params

    def _clock(self, conn: Conn, params: Mapping[str, Any]) -> float:
        """The store's clock inside a session (the bound one, or the server's)."""
        if "now" in params:
            return float(params["now"])
        return float(conn.run(f"SELECT {self.dialect.clock} AS now", {})[0]["now"])

    def _row(self, d: Mapping[str, Any]) -> JobRow:
        values = {k: d[k] for k in ROW_COLS}  # (the schema's `attempts` column is unused)
        for col in JSON_COLS:
            if values[col] is not None:
                values[col] = self.dialect.json_value(values[col])
        return JobRow(**values)

    def _select(self, where: str, tail: str = "", **params: Any) -> list[JobRow]:
        with self._session("read") as c:
            rows = c.run(f"SELECT * FROM jobs WHERE {where} {tail}", self._params(**params))
        return [self._row(r) for r in rows]

    def _heads(self, where: str, tail: str, **params: Any) -> list[JobHead]:
        with self._session("read") as c:
            rows = c.run(f"SELECT {HEAD_COLS} FROM jobs WHERE {where} {tail}", self._params(**params))
        return [JobHead(**r) for r in rows]

    def _write_row(self, sql: str, params: dict[str, Any], job_id: str, *, if_open: bool = False) -> JobRow | None:
        """One job's write (`sql`, without RETURNING); the row after it, or None when nothing changed."""
        with self._session("write", if_open=if_open) as c:
            r = changed_row(c, self.dialect, sql, params, job_id)
        return self._row(r) if r is not None else None

    def _set(self, values: Mapping[str, Any], lease_s: float | None) -> tuple[str, dict[str, Any]]:
        """The SET list of an owned write: `values`, `updated_at`, and the lease when renewed."""
        check_columns(values)
        cols, params = set_clause(self.dialect, values, JSON_COLS)
        cols.append(f"updated_at={self.dialect.clock}")
        if lease_s is not None:
            cols.append(f"lease_expires_at={self.dialect.clock} + :lease")
        return ", ".join(cols), self._params(**params, lease=lease_s)

    # -- reads ----------------------------------------------------------------------------

    def get(self, job_id: str, *, user: str | None = None) -> JobRow | None:
        """The job; with `user`, only if it is that user's (another user's job reads as None)."""
        mine = " AND user_id=:user" if user is not None else ""
        rows = self._select(f"id=:id{mine}", id=job_id, user=user)
        return rows[0] if rows else None

    def by_idempotency_key(self, key: str, *, user: str = LOCAL_USER) -> JobRow | None:
        """`user`'s job created with this key (keys are per user)."""
        rows = self._select("idempotency_key=:key", key=scoped_key(user, key))
        return rows[0] if rows else None

    def recent(self, *, status: str | None = None, limit: int = 20, user: str | None = None) -> list[JobRow]:
        """Newest first (created_at), optionally only one status; with `user`, only that user's."""
        conds = [*(["status=:status"] if status else []), *(["user_id=:user"] if user is not None else [])]
        return self._select(" AND ".join(conds) or "TRUE", "ORDER BY created_at DESC LIMIT :limit",
                            status=status, user=user, limit=limit)

    def unfinished(self) -> list[JobRow]:
        """Every unfinished job, oldest first, whoever owns it."""
        return self._select(NOT_TERMINAL, "ORDER BY created_at")

    def claimable(self, stale_owners: Collection[str] = ()) -> list[JobRow]:
        """Unfinished jobs another process may claim now, oldest first: no owner, a lease past its
        expiry, or an owner listed in `stale_owners` (owners the caller knows are gone)."""
        marks, stale = in_list("stale", list(stale_owners))
        cond = f"owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at < {self.dialect.clock}"
        cond += f" OR owner IN ({marks})" if stale else ""
        return self._select(f"{NOT_TERMINAL} AND ({cond})", "ORDER BY created_at", **stale)

    def changed_since(self, since: float, *, limit: int = 1000) -> list[JobRow]:
        """Jobs whose `updated_at` is greater than `since`, oldest change first (for cross-process
        notifications: poll with the largest `updated_at` seen, minus a small margin)."""
        return self._select("updated_at > :since", "ORDER BY updated_at LIMIT :limit", since=since, limit=limit)

    def unfinished_heads(self) -> list[JobHead]:
        """`unfinished()`, heads only (the claim scan reads every unfinished job every few seconds)."""
        return self._heads(NOT_TERMINAL, "ORDER BY created_at")

    def heads_changed_since(self, since: float, *, limit: int = 1000) -> list[JobHead]:
        """`changed_since()`, heads only (the store watch polls it twice a second)."""
        return self._heads("updated_at > :since", "ORDER BY updated_at LIMIT :limit", since=since, limit=limit)

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
        """Insert a queued job at stage `new` for `user`, owned by `owner` (leased for `lease_s`) when
        given. Raises DuplicateIdempotencyKey when `user` already used the key.

        `cost` is the estimate ({estimated_usd, basis, estimate}). With `budget`, the period's spend
        is summed, compared and the job inserted in ONE write transaction, so concurrent
        submissions (threads, processes, replicas) can never go over together; raises
        BudgetExceeded (nothing inserted) when the estimate does not fit or is unknown.
        `user_budget` (a rule with `user` set) is held the same way, in the same transaction,
        over that user's jobs."""
        cost = cost or {}
        estimated = cost.get("estimated_usd")
        js = self.dialect.json_param
        params = self._params(
            id=job_id, tool=tool, model=model, route=route, request=js(request), args_hash=args_hash,
            key=scoped_key(user, idempotency_key) if idempotency_key is not None else None,
            warnings=js(warnings), owner=owner, lease=lease_s if owner is not None else None,
            estimated=estimated, user=user, cost=js({"basis": cost.get("basis", ""), "estimate": cost.get("estimate", True)}),
        )
        # ON CONFLICT on the unique key: two processes inserting the same key at the same moment
        # never both succeed; the loser gets no row back (and no error to parse).
        insert = (
            "INSERT INTO jobs (id, tool, model, route, status, stage, progress, created_at, updated_at, request,"
            " args_hash, idempotency_key, warnings, owner, lease_expires_at, estimated_usd, cost, user_id)"
            " SELECT :id, :tool, :model, :route, 'queued', 'new', NULL, t.now, t.now, :request,"
            " :args_hash, :key, :warnings, :owner, t.now + :lease, :estimated, :cost, :user"
            f" FROM (SELECT {self.dialect.clock} AS now) t WHERE TRUE"
            " ON CONFLICT (idempotency_key) DO NOTHING RETURNING *"
        )
        rules = [rule for rule in (budget, user_budget) if rule is not None]
        with self._session("atomic" if rules else "write") as c:
            if rules:  # sum, compare and insert as one, in turn with every other process
                if self.dialect.budget_lock:
                    c.run(self.dialect.budget_lock, {})
                now = self._clock(c, params)
                for rule in rules:
                    spent = period_spend(c, period_start(rule.period, now), rule.user)
                    refuse_unless_fits(spent, rule, estimated, str(cost.get("basis", "")), now)
            rows = c.run(insert, params)
        if not rows:
            raise DuplicateIdempotencyKey(idempotency_key)
        return self._row(rows[0])

    def set_actual_cost(self, job_id: str, owner: str, usd: float | None, detail: Mapping[str, Any]) -> bool:
        """Owned write of what the provider's answer said the job cost; False when not owned."""
        try:
            with self._session("write", if_open=True) as c:
                return c.count("UPDATE jobs SET actual_usd=:usd, actual_cost=:detail WHERE id=:id AND owner=:owner",
                               {"usd": usd, "detail": self.dialect.json_param(dict(detail)), "id": job_id, "owner": owner}) > 0
        except StoreClosed:
            return False

    def spend(
        self, budget: BudgetRule | None, period: Period, since: float = 0.0, *, user: str | None = None,
        user_budget: BudgetRule | None = None,
    ) -> dict[str, Any]:
        """{budget: standing in its period (committed, reserved, left), rows: spend by UTC day,
        model and route since `since`}; see jobs/spend.py for what counts. Without `user`, also
        `users`: each user's spend in the period (and what is left of `user_budget`'s amount).
        With `user`: only that user's rows, `budget` is `user_budget`'s standing (or that user's
        spend in `period`), and `server_budget` the whole server's standing."""
        with self._session("read") as c:
            now = self._clock(c, self._params())
            server = period_spend(c, period_start(budget.period if budget else period, now))
            rows = [breakdown_row(r) for r in breakdown(c, self.dialect, since, user)]
            if user is None:
                users = users_spend(c, period_start(budget.period if budget else period, now))
                return {"budget": status_of(server, budget, period, now), "rows": rows,
                        "users": [user_row(r, user_budget) for r in users]}
            mine = period_spend(c, period_start(user_budget.period if user_budget else period, now), user)
        return {"budget": status_of(mine, user_budget, period, now),
                "server_budget": status_of(server, budget, period, now), "rows": rows}

    def claim(self, job_id: str, owner: str, lease_s: float, stale_owners: Collection[str] = ()) -> JobRow | None:
        """Take the job in one conditional update inside a write transaction: succeeds when the
        job is unfinished and has no owner, a lapsed lease, an owner in `stale_owners`, or is
        already `owner`'s. Sets owner and a fresh lease; does not bump `updated_at`. Returns the
        claimed row, or None when someone else holds it (or it ended)."""
        marks, stale = in_list("stale", [s for s in stale_owners if s != owner])
        clock = self.dialect.clock
        sql = (
            f"UPDATE jobs SET owner=:owner, lease_expires_at={clock} + :lease WHERE id = ("
            f"SELECT id FROM jobs WHERE id=:id AND {NOT_TERMINAL} AND (owner IS NULL OR owner=:owner"
            f" OR lease_expires_at IS NULL OR lease_expires_at < {clock}"
            + (f" OR owner IN ({marks})" if stale else "")
            + f"){self.dialect.row_lock})"
        )
        try:
            return self._write_row(sql, self._params(owner=owner, lease=lease_s, id=job_id, **stale), job_id, if_open=True)
        except StoreClosed:
            return None

    def renew(self, owner: str, lease_s: float) -> set[str]:
        """Extend the lease of every unfinished job `owner` holds; returns their ids (a job being
        driven that is missing from the answer was lost and must stop at once)."""
        try:
            with self._session("write", if_open=True) as c:
                rows = c.run(
                    f"UPDATE jobs SET lease_expires_at={self.dialect.clock} + :lease"
                    f" WHERE owner=:owner AND {NOT_TERMINAL} RETURNING id",
                    self._params(lease=lease_s, owner=owner),
                )
        except StoreClosed:
            return set()
        return {str(r["id"]) for r in rows}

    def release(self, owner: str, job_ids: Collection[str] | None = None) -> int:
        """Give up `owner`'s unfinished jobs (all, or only `job_ids`): owner and lease cleared, so
        the next scan of any process takes them. Returns how many were released."""
        if job_ids is not None and not job_ids:
            return 0
        marks, ids = in_list("job", list(job_ids or ()))
        only = f" AND id IN ({marks})" if job_ids is not None else ""
        try:
            with self._session("write", if_open=True) as c:
                return c.count(
                    f"UPDATE jobs SET owner=NULL, lease_expires_at=NULL WHERE owner=:owner AND {NOT_TERMINAL}{only}",
                    {"owner": owner, **ids},
                )
        except StoreClosed:
            return 0

    def update_owned(
        self, job_id: str, owner: str, values: Mapping[str, Any], *, lease_s: float | None = None
    ) -> JobRow | None:
        """Apply `values` (bumping `updated_at`; with `lease_s`, renewing the lease too) only while
        the job is unfinished AND owned by `owner`, in one conditional update. Returns the new
        row, or None when the job ended or changed hands (the caller must stop driving it)."""
        cols, params = self._set(values, lease_s)
        sql = f"UPDATE jobs SET {cols} WHERE id=:id AND owner=:owner AND {NOT_TERMINAL}"
        try:
            return self._write_row(sql, {**params, "id": job_id, "owner": owner}, job_id, if_open=True)
        except StoreClosed:
            return None

    def update_owned_capped(
        self, job_id: str, owner: str, values: Mapping[str, Any], *, cap: RunningCap, lease_s: float | None = None
    ) -> JobRow | None:
        """`update_owned`, only while fewer than `cap.limit` OTHER jobs of the cap's group are
        running at the provider (see jobs/caps.py); the count and the write are one transaction,
        serialised across processes. Raises CapReached when the group is full."""
        cols, params = self._set(values, lease_s)
        marks, models = in_list("model", list(cap.models or ()))
        model_cond = f" AND model IN ({marks})" if cap.models is not None else ""
        try:
            with self._session("atomic", if_open=True) as c:
                if self.dialect.cap_lock:  # (READ COMMITTED: the count's snapshot is taken after the lock)
                    c.run(self.dialect.cap_lock, {"cap": cap.name})
                counted = c.run(f"SELECT COUNT(*) AS n FROM jobs WHERE id<>:id AND route=:route AND {RUNNING_SQL}{model_cond}",
                                {"id": job_id, "route": cap.route, **models})
                running = int(counted[0]["n"])
                if running >= cap.limit:
                    raise cap.reached(running)
                sql = f"UPDATE jobs SET {cols} WHERE id=:id AND owner=:owner AND {NOT_TERMINAL}"
                r = changed_row(c, self.dialect, sql, {**params, "id": job_id, "owner": owner}, job_id)
        except StoreClosed:
            return None
        return self._row(r) if r is not None else None

    def set_progress(self, job_id: str, owner: str, progress: float | None) -> bool:
        """Owned-and-unfinished progress write (render threads call it); False = stop. After close: False."""
        try:  # after close: a render thread abandoned at shutdown; the job restarts elsewhere
            with self._session("write", if_open=True) as c:
                return c.count(
                    f"UPDATE jobs SET progress=:progress, status_detail=NULL, updated_at={self.dialect.clock}"
                    f" WHERE id=:id AND owner=:owner AND {NOT_TERMINAL}",
                    self._params(progress=progress, id=job_id, owner=owner),
                ) > 0
        except StoreClosed:
            return False

    def cancel(self, job_id: str, error: dict[str, Any]) -> JobRow | None:
        """Any process: end an unfinished job as cancelled (stage done, `error`), whoever owns it.
        Returns the row, or None when it had already ended."""
        sql = (
            "UPDATE jobs SET status='cancelled', stage='done', error=:error, status_detail=NULL, lease_expires_at=NULL,"
            f" updated_at={self.dialect.clock} WHERE id=:id AND {NOT_TERMINAL}"
        )
        return self._write_row(sql, self._params(error=self.dialect.json_param(error), id=job_id), job_id)

    def update(self, job_id: str, **values: Any) -> JobRow:
        """Unconditional update (tests and repairs only; the runner never uses it)."""
        cols, params = self._set(values, None)
        row = self._write_row(f"UPDATE jobs SET {cols} WHERE id=:id", {**params, "id": job_id}, job_id)
        assert row is not None
        return row

    # -- deleting (delete_job, retention, the disk cap; see jobs/gc.py) ----------------------

    def delete_finished(self, job_id: str) -> JobRow | None:
        """Remove a finished job's row in one conditional statement; returns the row as it was, or
        None when there is no such job or it is unfinished (nothing is removed then)."""
        with self._session("write") as c:
            rows = c.run(f"DELETE FROM jobs WHERE id=:id AND {FINISHED} RETURNING *", {"id": job_id})
        return self._row(rows[0]) if rows else None

    def finished_created_before(self, cutoff: float, *, limit: int = 1000) -> list[JobRow]:
        """Finished jobs created before `cutoff` (store clock), oldest first (retention)."""
        return self._select(f"{FINISHED} AND created_at < :cutoff", "ORDER BY created_at LIMIT :limit",
                            cutoff=cutoff, limit=limit)

    def finished_with_files(self, created_before: float, *, limit: int = 1000) -> list[JobRow]:
        """Finished jobs created before `created_before` whose files were not deleted yet, oldest
        first (the disk cap frees their space in that order)."""
        return self._select(f"{FINISHED} AND files_deleted=0 AND created_at < :cutoff",
                            "ORDER BY created_at LIMIT :limit", cutoff=created_before, limit=limit)

    def mark_files_deleted(self, job_id: str) -> bool:
        """Set `files_deleted` on a finished job (bumping `updated_at`); False when the job is
        missing or unfinished."""
        with self._session("write") as c:
            return c.count(f"UPDATE jobs SET files_deleted=1, updated_at={self.dialect.clock} WHERE id=:id AND {FINISHED}",
                           self._params(id=job_id)) > 0

    def job_counts(self) -> list[tuple[str, str, str, int]]:
        """(status, model, route, jobs) for every combination present (the metrics gauge)."""
        with self._session("read") as c:
            rows = c.run("SELECT status, model, route, COUNT(*) AS n FROM jobs GROUP BY status, model, route", {})
        return [(str(r["status"]), str(r["model"]), str(r["route"]), int(r["n"])) for r in rows]

    def meta_claim_interval(self, key: str, interval_s: float) -> bool:
        """True for exactly one caller per `interval_s` across every process on the store: sets
        `key` to now (store clock) when it is absent or older than `interval_s`, atomically."""
        clock = self.dialect.clock
        # one statement: the upsert's WHERE sees the committed row (or waits on a concurrent writer)
        with self._session("write") as c:
            won = c.run(
                f"INSERT INTO meta(key, value) VALUES (:key, {self.dialect.clock_text}) ON CONFLICT (key) DO UPDATE"
                f" SET value=excluded.value WHERE CAST(meta.value AS DOUBLE PRECISION) <= {clock} - :interval RETURNING key",
                self._params(key=key, interval=interval_s),
            )
        return bool(won)

    # -- meta (small shared key/value: signing secrets, the worker's id, schema version) ---

    def meta_get(self, key: str) -> str | None:
        with self._session("read") as c:
            rows = c.run("SELECT value FROM meta WHERE key=:key", {"key": key})
        return str(rows[0]["value"]) if rows else None

    def meta_set(self, key: str, value: str | None) -> None:
        """Set (or with None, delete) a key."""
        with self._session("write") as c:
            if value is None:
                c.count("DELETE FROM meta WHERE key=:key", {"key": key})
            else:
                c.count(UPSERT_META, {"key": key, "value": value})

    def meta_setdefault(self, key: str, value: str) -> str:
        """Insert the key if absent (atomic across processes); returns the stored value."""
        with self._session("atomic") as c:
            c.count("INSERT INTO meta(key, value) VALUES (:key, :value) ON CONFLICT (key) DO NOTHING",
                    {"key": key, "value": value})
            rows = c.run("SELECT value FROM meta WHERE key=:key", {"key": key})
        return str(rows[0]["value"])


UPSERT_META = "INSERT INTO meta(key, value) VALUES (:key, :value) ON CONFLICT (key) DO UPDATE SET value=excluded.value"
"""Set a meta key (also what the engines' migrations record the schema version with)."""

