"""The job store: one interface (`JobStore`), one implementation per engine.

`SqliteStore` keeps one SQLite file under STILLMOTION_HOME (WAL mode, one row per job); a
PostgreSQL store implements the same interface for teams. `tests/store_contract.py` is the
behaviour every implementation must show.

Public `status` is what agents see (queued, running, downloading, succeeded, failed, cancelled);
`stage` is the runner's bookmark for resuming after a crash or a takeover:

    new -> submitting -> polling -> downloading -> done
             (create request in flight: whoever resumes asks the provider to recover it)

Ownership: every unfinished job has at most one `owner` (a process instance id, see
`jobs/ownership.py`) and a `lease_expires_at` on the store's clock. A process claims a job with
one conditional update, renews its leases on a heartbeat, releases them when it stops, and every
write it makes while driving a job is conditional on still owning it. Anyone may cancel.

Resume bookmarks live in their own columns (`submitted_at`, `video_url`, `video_url_expires_at`,
`provider_done_at`), never inside the provider's opaque `operation` or the published `result`.

Users (issue #23): every job has a `user_id`, the user who asked for it (`local`: a stdio server's
own user, and every job made before users existed). Reads that answer a person take `user`: a job
of another user reads as no job at all (None = every user's: admins and the runner). Idempotency
keys are per user: the key column holds `<user>\x1f<key>` (`scoped_key`), so its unique index is
one per user.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from ..errors import InvalidInput
from .caps import RUNNING_SQL, RunningCap
from .spend import (
    BILLED_TRIGGER,
    COST_COLUMNS,
    BudgetRule,
    Period,
    budget_status,
    period_start,
    reserve_or_refuse,
    spend_breakdown,
    users_breakdown,
)

Status = Literal["queued", "running", "downloading", "succeeded", "failed", "cancelled"]
Stage = Literal["new", "submitting", "polling", "downloading", "done"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
UNFINISHED: tuple[str, ...] = ("queued", "running", "downloading")
JOB_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{7,63}$")
SCHEMA_VERSION = 5
"""1: the first release (no ownership, bookmarks inside operation/result); 2: ownership + bookmarks. 3: cost columns (estimate, actual, billed; issue #15). 4: user_id, idempotency keys per user (issue #23). 5: `files_deleted` (the disk cap; issue #26)."""
LOCAL_USER = "local"
"""The user of a stdio server, of an HTTP server with one shared token (or none), and of every job
made before users existed."""
KEY_SEP = "\x1f"
"""Between the user and the key in the idempotency_key column (user ids never contain it)."""


def scoped_key(user: str, key: str) -> str:
    """The stored form of `user`'s idempotency key: one namespace per user."""
    if KEY_SEP in user:
        raise ValueError("a user id cannot contain the unit separator")
    return f"{user}{KEY_SEP}{key}"


def new_job_id() -> str:
    return "job_" + secrets.token_hex(8)


def validate_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
        raise InvalidInput("job_id", f"{str(job_id)[:80]!r} is not a job id.", "^[a-z0-9][a-z0-9_-]{7,63}$")
    return job_id


def args_fingerprint(args: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(args, sort_keys=True, default=str).encode()).hexdigest()


class DuplicateIdempotencyKey(Exception):
    """`create` lost a race: another job already holds this idempotency key."""


@dataclass
class JobRow:
    id: str
    tool: str
    model: str
    route: str
    status: Status
    stage: Stage
    progress: float | None
    created_at: float
    updated_at: float
    request: dict[str, Any]
    args_hash: str
    idempotency_key: str | None
    operation: dict[str, Any] | None
    provider_task_id: str | None
    warnings: list[str]
    error: dict[str, Any] | None
    result: dict[str, Any] | None
    provider_done_at: float | None
    owner: str | None = None
    """The process instance driving this job (None: nobody; any process may claim it)."""
    lease_expires_at: float | None = None
    """Store clock; past it, another process may take the job over."""
    status_detail: str | None = None
    """What the job is doing right now, for agents (e.g. 'retrying: ..., attempt 2 of 5, next in 4 s')."""
    submitted_at: float | None = None
    """When the provider accepted the create (the poll timeout counts from here)."""
    video_url: str | None = None
    """The provider's result URL, kept while downloading (a takeover resumes the download)."""
    video_url_expires_at: float | None = None
    estimated_usd: float | None = None
    """The estimate made at submission (None: no price known); see jobs/spend.py."""
    cost: dict[str, Any] | None = None
    """{basis, estimate} of that estimate."""
    actual_usd: float | None = None
    actual_cost: dict[str, Any] | None = None
    """What the provider's answer said it cost: {usd, units, source}."""
    billed: int = 0
    """1 once the job ended after reaching the provider (set by a trigger; see jobs/spend.py)."""
    user_id: str = LOCAL_USER
    """Who asked for the job (issue #23); never a token."""
    files_deleted: int = 0
    """1 once the disk cap (STILLMOTION_MAX_OUTPUT_GB) deleted the finished job's files; the row stays."""

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class JobHead:
    """The few columns the runner's periodic scans need (no JSON to decode): who holds the job,
    until when, its public status and when it last changed."""

    id: str
    status: str
    owner: str | None
    lease_expires_at: float | None
    updated_at: float

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def of(cls, row: JobRow) -> JobHead:
        return cls(row.id, row.status, row.owner, row.lease_expires_at, row.updated_at)


HEAD_COLS = "id, status, owner, lease_expires_at, updated_at"

JSON_COLS = frozenset({"request", "operation", "warnings", "error", "result", *COST_COLUMNS})
ROW_COLS = tuple(f.name for f in fields(JobRow))
WRITABLE = frozenset(ROW_COLS) - {"id", "created_at", "updated_at"}


class JobStore(ABC):
    """The durable job table plus a small key/value table (`meta`).

    Rules every implementation keeps:
    - Every write is durable when it returns (a kill -9 loses nothing acknowledged).
    - Times (`created_at`, `updated_at`, `lease_expires_at`) are seconds since the epoch on the
      store's clock (`now()`); leases are given as a length and turned into an expiry by the store.
    - Writes that change a job's visible state bump `updated_at` (what `changed_since` reports);
      lease renewals and releases do not.
    - "Unfinished" means status queued, running or downloading; terminal rows never change again
      except through `update` (repairs and tests).
    - Safe to call from several threads of one process.
    """

    # -- lifecycle ------------------------------------------------------------------------

    @abstractmethod
    def close(self) -> None:
        """Release the connection. Calls after close may be ignored (set_progress) or raise."""

    @abstractmethod
    def now(self) -> float:
        """The store's clock (the one leases are measured on)."""

    # -- reads ----------------------------------------------------------------------------

    @abstractmethod
    def get(self, job_id: str, *, user: str | None = None) -> JobRow | None:
        """The job; with `user`, only if it is that user's (another user's job reads as None)."""

    @abstractmethod
    def by_idempotency_key(self, key: str, *, user: str = LOCAL_USER) -> JobRow | None:
        """`user`'s job created with this key (keys are per user)."""

    @abstractmethod
    def recent(self, *, status: str | None = None, limit: int = 20, user: str | None = None) -> list[JobRow]:
        """Newest first (created_at), optionally only one status; with `user`, only that user's."""

    @abstractmethod
    def unfinished(self) -> list[JobRow]:
        """Every unfinished job, oldest first, whoever owns it."""

    @abstractmethod
    def claimable(self, stale_owners: Collection[str] = ()) -> list[JobRow]:
        """Unfinished jobs another process may claim now, oldest first: no owner, a lease past its
        expiry, or an owner listed in `stale_owners` (owners the caller knows are gone)."""

    @abstractmethod
    def changed_since(self, since: float, *, limit: int = 1000) -> list[JobRow]:
        """Jobs whose `updated_at` is greater than `since`, oldest change first (for cross-process
        notifications: poll with the largest `updated_at` seen, minus a small margin)."""

    def unfinished_heads(self) -> list[JobHead]:
        """`unfinished()`, heads only (the claim scan reads every unfinished job every few seconds).
        An engine may override this with a narrower read; the answer must be the same."""
        return [JobHead.of(r) for r in self.unfinished()]

    def heads_changed_since(self, since: float, *, limit: int = 1000) -> list[JobHead]:
        """`changed_since()`, heads only (the store watch polls it twice a second)."""
        return [JobHead.of(r) for r in self.changed_since(since, limit=limit)]

    # -- writes ---------------------------------------------------------------------------

    @abstractmethod
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

    @abstractmethod
    def set_actual_cost(self, job_id: str, owner: str, usd: float | None, detail: Mapping[str, Any]) -> bool:
        """Owned write of what the provider's answer said the job cost; False when not owned."""

    @abstractmethod
    def spend(
        self, budget: BudgetRule | None, period: Period, since: float = 0.0, *, user: str | None = None,
        user_budget: BudgetRule | None = None,
    ) -> dict[str, Any]:
        """{budget: standing in its period (committed, reserved, left), rows: spend by UTC day,
        model and route since `since`}; see jobs/spend.py for what counts. Without `user`, also
        `users`: each user's spend in the period (and what is left of `user_budget`'s amount).
        With `user`: only that user's rows, `budget` is `user_budget`'s standing (or that user's
        spend in `period`), and `server_budget` the whole server's standing."""

    @abstractmethod
    def claim(self, job_id: str, owner: str, lease_s: float, stale_owners: Collection[str] = ()) -> JobRow | None:
        """Take the job in one conditional update inside a write transaction: succeeds when the
        job is unfinished and has no owner, a lapsed lease, an owner in `stale_owners`, or is
        already `owner`'s. Sets owner and a fresh lease; does not bump `updated_at`. Returns the
        claimed row, or None when someone else holds it (or it ended)."""

    @abstractmethod
    def renew(self, owner: str, lease_s: float) -> set[str]:
        """Extend the lease of every unfinished job `owner` holds; returns their ids (a job being
        driven that is missing from the answer was lost and must stop at once)."""

    @abstractmethod
    def release(self, owner: str, job_ids: Collection[str] | None = None) -> int:
        """Give up `owner`'s unfinished jobs (all, or only `job_ids`): owner and lease cleared, so
        the next scan of any process takes them. Returns how many were released."""

    @abstractmethod
    def update_owned(
        self, job_id: str, owner: str, values: Mapping[str, Any], *, lease_s: float | None = None
    ) -> JobRow | None:
        """Apply `values` (bumping `updated_at`; with `lease_s`, renewing the lease too) only while
        the job is unfinished AND owned by `owner`, in one conditional update. Returns the new
        row, or None when the job ended or changed hands (the caller must stop driving it)."""

    @abstractmethod
    def update_owned_capped(
        self, job_id: str, owner: str, values: Mapping[str, Any], *, cap: RunningCap, lease_s: float | None = None
    ) -> JobRow | None:
        """`update_owned`, only while fewer than `cap.limit` OTHER jobs of the cap's group are
        running at the provider (see jobs/caps.py); the count and the write are one transaction,
        serialised across processes. Raises CapReached when the group is full."""

    @abstractmethod
    def set_progress(self, job_id: str, owner: str, progress: float | None) -> bool:
        """Owned-and-unfinished progress write (render threads call it); False = stop. After close: False."""

    @abstractmethod
    def cancel(self, job_id: str, error: dict[str, Any]) -> JobRow | None:
        """Any process: end an unfinished job as cancelled (stage done, `error`), whoever owns it.
        Returns the row, or None when it had already ended."""

    @abstractmethod
    def update(self, job_id: str, **values: Any) -> JobRow:
        """Unconditional update (tests and repairs only; the runner never uses it)."""

    # -- deleting (delete_job, retention, the disk cap; see jobs/gc.py) ----------------------

    @abstractmethod
    def delete_finished(self, job_id: str) -> JobRow | None:
        """Remove a finished job's row in one conditional statement; returns the row as it was, or
        None when there is no such job or it is unfinished (nothing is removed then)."""

    @abstractmethod
    def finished_created_before(self, cutoff: float, *, limit: int = 1000) -> list[JobRow]:
        """Finished jobs created before `cutoff` (store clock), oldest first (retention)."""

    @abstractmethod
    def finished_with_files(self, created_before: float, *, limit: int = 1000) -> list[JobRow]:
        """Finished jobs created before `created_before` whose files were not deleted yet, oldest
        first (the disk cap frees their space in that order)."""

    @abstractmethod
    def mark_files_deleted(self, job_id: str) -> bool:
        """Set `files_deleted` on a finished job (bumping `updated_at`); False when the job is
        missing or unfinished."""

    @abstractmethod
    def job_counts(self) -> list[tuple[str, str, str, int]]:
        """(status, model, route, jobs) for every combination present (the metrics gauge)."""

    @abstractmethod
    def meta_claim_interval(self, key: str, interval_s: float) -> bool:
        """True for exactly one caller per `interval_s` across every process on the store: sets
        `key` to now (store clock) when it is absent or older than `interval_s`, atomically."""

    # -- meta (small shared key/value: signing secrets, the worker's id, schema version) ---

    @abstractmethod
    def meta_get(self, key: str) -> str | None: ...

    @abstractmethod
    def meta_set(self, key: str, value: str | None) -> None:
        """Set (or with None, delete) a key."""

    @abstractmethod
    def meta_setdefault(self, key: str, value: str) -> str:
        """Insert the key if absent (atomic across processes); returns the stored value."""


def check_columns(values: Mapping[str, Any]) -> None:
    bad = set(values) - WRITABLE
    if bad:
        raise ValueError(f"not writable job columns: {sorted(bad)}")


# --------------------------------------------------------------------------------------------
# SQLite
# --------------------------------------------------------------------------------------------

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    tool TEXT NOT NULL,
    model TEXT NOT NULL,
    route TEXT NOT NULL,
    status TEXT NOT NULL,
    stage TEXT NOT NULL,
    progress REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    request TEXT NOT NULL,
    args_hash TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    operation TEXT,
    provider_task_id TEXT,
    warnings TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    result TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    provider_done_at REAL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at);
"""

ADDED_COLUMNS = (
    ("owner", "TEXT"),
    ("lease_expires_at", "REAL"),
    ("status_detail", "TEXT"),
    ("submitted_at", "REAL"),
    ("video_url", "TEXT"),
    ("video_url_expires_at", "REAL"),
    ("estimated_usd", "REAL"),
    ("cost", "TEXT"),
    ("actual_usd", "REAL"),
    ("actual_cost", "TEXT"),
    ("billed", "INTEGER NOT NULL DEFAULT 0"),
    ("user_id", f"TEXT NOT NULL DEFAULT '{LOCAL_USER}'"),
    ("files_deleted", "INTEGER NOT NULL DEFAULT 0"),
)
"""Columns of schema 2 and later, added in place to older databases."""
SCOPE_OLD_KEYS = (
    "UPDATE jobs SET idempotency_key = user_id || char(31) || idempotency_key"
    " WHERE idempotency_key IS NOT NULL AND instr(idempotency_key, char(31)) = 0"
)
"""Schema 4: keys stored before users existed become the local user's (idempotent)."""

_NOT_TERMINAL = "status NOT IN ('succeeded','failed','cancelled')"
BUSY_TIMEOUT_S = 30.0
"""How long one SQLite statement waits for another process's write lock before failing (the runner
then retries the write with backoff while the job's lease allows; STILLMOTION_STORE_BUSY_TIMEOUT_MS)."""


class SqliteStore(JobStore):
    """One connection per store object, serialised by a lock; WAL lets other processes read while
    one writes. Conditional writes are single UPDATE statements in `BEGIN IMMEDIATE` transactions."""

    def __init__(self, path: Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=busy_timeout_s)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        self._closed = False
        self._migrate()

    def _migrate(self) -> None:
        self._db.executescript(SQLITE_SCHEMA)  # (executescript commits on its own: outside the transaction)
        with self._lock, self._write():
            have = {r[1] for r in self._db.execute("PRAGMA table_info(jobs)").fetchall()}
            for name, kind in ADDED_COLUMNS:
                if name not in have:
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
            self._db.execute("CREATE INDEX IF NOT EXISTS jobs_updated ON jobs(updated_at)")
            self._db.execute("CREATE INDEX IF NOT EXISTS jobs_user_created ON jobs(user_id, created_at)")
            self._db.execute(BILLED_TRIGGER)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else 1
            if version < 2:
                self._move_bookmarks()
            if version < SCHEMA_VERSION:
                self._db.execute(SCOPE_OLD_KEYS)
            if version < SCHEMA_VERSION:
                self._db.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema_version', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    (str(SCHEMA_VERSION),),
                )

    def _move_bookmarks(self) -> None:
        """Schema 1 kept `_submitted_at` inside operation and `pending_video` inside result."""
        rows = self._db.execute(f"SELECT id, operation, result FROM jobs WHERE {_NOT_TERMINAL}").fetchall()
        for r in rows:
            op = json.loads(r["operation"]) if r["operation"] else None
            res = json.loads(r["result"]) if r["result"] else None
            submitted = op.pop("_submitted_at", None) if isinstance(op, dict) else None
            pending = res.pop("pending_video", None) if isinstance(res, dict) else None
            self._db.execute(
                "UPDATE jobs SET operation=?, result=?, submitted_at=COALESCE(submitted_at, ?),"
                " video_url=COALESCE(video_url, ?), video_url_expires_at=COALESCE(video_url_expires_at, ?) WHERE id=?",
                (
                    json.dumps(op) if op is not None else None,
                    json.dumps(res) if res else None,
                    submitted,
                    (pending or {}).get("url"),
                    (pending or {}).get("expires"),
                    r["id"],
                ),
            )

    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
            self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")

    def _write(self) -> SqliteStore._Tx:
        return SqliteStore._Tx(self._db)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def now(self) -> float:
        return time.time()

    # -- reads ------------------------------------------------------------------------------

    @staticmethod
    def _row(r: sqlite3.Row) -> JobRow:
        d = dict(r)
        for col in JSON_COLS:
            if d[col] is not None:
                d[col] = json.loads(d[col])
        return JobRow(**{k: d[k] for k in ROW_COLS})  # (the schema's `attempts` column is unused)

    def _select(self, where: str, params: tuple[Any, ...] = (), tail: str = "") -> list[JobRow]:
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM jobs WHERE {where} {tail}", params).fetchall()
        return [self._row(r) for r in rows]

    def get(self, job_id: str, *, user: str | None = None) -> JobRow | None:
        if user is not None:
            rows = self._select("id=? AND user_id=?", (job_id, user))
        else:
            rows = self._select("id=?", (job_id,))
        return rows[0] if rows else None

    def by_idempotency_key(self, key: str, *, user: str = LOCAL_USER) -> JobRow | None:
        rows = self._select("idempotency_key=?", (scoped_key(user, key),))
        return rows[0] if rows else None

    def recent(self, *, status: str | None = None, limit: int = 20, user: str | None = None) -> list[JobRow]:
        where = " AND ".join(["1", *(["status=?"] if status else []), *(["user_id=?"] if user is not None else [])])
        params = (*([status] if status else []), *([user] if user is not None else []), limit)
        return self._select(where, params, "ORDER BY created_at DESC LIMIT ?")

    def unfinished(self) -> list[JobRow]:
        return self._select(f"{_NOT_TERMINAL}", (), "ORDER BY created_at")

    def claimable(self, stale_owners: Collection[str] = ()) -> list[JobRow]:
        stale = list(stale_owners)
        marks = ",".join("?" * len(stale))
        cond = "owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at < ?" + (f" OR owner IN ({marks})" if stale else "")
        return self._select(f"{_NOT_TERMINAL} AND ({cond})", (self.now(), *stale), "ORDER BY created_at")

    def changed_since(self, since: float, *, limit: int = 1000) -> list[JobRow]:
        return self._select("updated_at > ?", (since, limit), "ORDER BY updated_at LIMIT ?")

    def _heads(self, where: str, params: tuple[Any, ...], tail: str) -> list[JobHead]:
        with self._lock:
            rows = self._db.execute(f"SELECT {HEAD_COLS} FROM jobs WHERE {where} {tail}", params).fetchall()
        return [JobHead(*r) for r in rows]

    def unfinished_heads(self) -> list[JobHead]:
        return self._heads(_NOT_TERMINAL, (), "ORDER BY created_at")

    def heads_changed_since(self, since: float, *, limit: int = 1000) -> list[JobHead]:
        return self._heads("updated_at > ?", (since, limit), "ORDER BY updated_at LIMIT ?")

    # -- writes -----------------------------------------------------------------------------

    @staticmethod
    def _encode(values: Mapping[str, Any]) -> tuple[list[str], list[Any]]:
        check_columns(values)
        cols = [f"{k}=?" for k in values]
        vals = [json.dumps(v) if k in JSON_COLS and v is not None else v for k, v in values.items()]
        return cols, vals

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
        now = self.now()
        lease = now + lease_s if owner is not None and lease_s is not None else None
        cost = cost or {}
        estimated = cost.get("estimated_usd")
        try:
            with self._lock, self._write() as db:
                for rule in (budget, user_budget):  # BEGIN IMMEDIATE holds the write lock: sum, compare, insert
                    if rule is not None:
                        reserve_or_refuse(db, rule, estimated, str(cost.get("basis", "")), now)
                db.execute(
                    "INSERT INTO jobs (id, tool, model, route, status, stage, progress, created_at, updated_at, request,"
                    " args_hash, idempotency_key, warnings, owner, lease_expires_at, estimated_usd, cost, user_id)"
                    " VALUES (?,?,?,?,'queued','new',NULL,?,?,?,?,?,?,?,?,?,?,?)",
                    (job_id, tool, model, route, now, now, json.dumps(request), args_hash,
                     scoped_key(user, idempotency_key) if idempotency_key is not None else None,
                     json.dumps(warnings), owner, lease, estimated,
                     json.dumps({"basis": cost.get("basis", ""), "estimate": cost.get("estimate", True)}), user),
                )
        except sqlite3.IntegrityError as exc:
            if idempotency_key is not None and "idempotency_key" in str(exc):
                raise DuplicateIdempotencyKey(idempotency_key) from exc
            raise
        row = self.get(job_id)
        assert row is not None
        return row

    def claim(self, job_id: str, owner: str, lease_s: float, stale_owners: Collection[str] = ()) -> JobRow | None:
        stale = [s for s in stale_owners if s != owner]
        marks = ",".join("?" * len(stale))
        now = self.now()
        with self._lock:
            if self._closed:
                return None
            with self._write() as db:
                cur = db.execute(
                    f"UPDATE jobs SET owner=?, lease_expires_at=? WHERE id=? AND {_NOT_TERMINAL} AND ("
                    "owner IS NULL OR owner=? OR lease_expires_at IS NULL OR lease_expires_at < ?"
                    + (f" OR owner IN ({marks})" if stale else "")
                    + ")",
                    (owner, now + lease_s, job_id, owner, now, *stale),
                )
                changed = cur.rowcount
        return self.get(job_id) if changed else None

    def renew(self, owner: str, lease_s: float) -> set[str]:
        with self._lock:
            if self._closed:
                return set()
            with self._write() as db:
                rows = db.execute(
                    f"UPDATE jobs SET lease_expires_at=? WHERE owner=? AND {_NOT_TERMINAL} RETURNING id",
                    (self.now() + lease_s, owner),
                ).fetchall()
        return {r[0] for r in rows}

    def release(self, owner: str, job_ids: Collection[str] | None = None) -> int:
        ids = list(job_ids) if job_ids is not None else None
        extra = f" AND id IN ({','.join('?' * len(ids))})" if ids is not None else ""
        if ids is not None and not ids:
            return 0
        with self._lock:
            if self._closed:
                return 0
            with self._write() as db:
                cur = db.execute(
                    f"UPDATE jobs SET owner=NULL, lease_expires_at=NULL WHERE owner=? AND {_NOT_TERMINAL}{extra}",
                    (owner, *(ids or ())),
                )
                return cur.rowcount

    def update_owned(
        self, job_id: str, owner: str, values: Mapping[str, Any], *, lease_s: float | None = None
    ) -> JobRow | None:
        cols, vals = self._encode(values)
        now = self.now()
        cols.append("updated_at=?")
        vals.append(now)
        if lease_s is not None:
            cols.append("lease_expires_at=?")
            vals.append(now + lease_s)
        with self._lock:
            if self._closed:
                return None
            with self._write() as db:
                # RETURNING: the new row comes back from the write itself (no second read)
                rows = db.execute(
                    f"UPDATE jobs SET {', '.join(cols)} WHERE id=? AND owner=? AND {_NOT_TERMINAL} RETURNING *",
                    (*vals, job_id, owner),
                ).fetchall()
        return self._row(rows[0]) if rows else None

    def update_owned_capped(
        self, job_id: str, owner: str, values: Mapping[str, Any], *, cap: RunningCap, lease_s: float | None = None
    ) -> JobRow | None:
        cols, vals = self._encode(values)
        now = self.now()
        cols.append("updated_at=?")
        vals.append(now)
        if lease_s is not None:
            cols.append("lease_expires_at=?")
            vals.append(now + lease_s)
        models = list(cap.models or ())
        model_cond = f" AND model IN ({','.join('?' * len(models))})" if cap.models is not None else ""
        with self._lock:
            if self._closed:
                return None
            with self._write() as db:  # BEGIN IMMEDIATE: no other process writes between count and update
                running = db.execute(
                    f"SELECT COUNT(*) FROM jobs WHERE id<>? AND route=? AND {RUNNING_SQL}{model_cond}",
                    (job_id, cap.route, *models),
                ).fetchone()[0]
                if running >= cap.limit:
                    raise cap.reached(int(running))
                cur = db.execute(
                    f"UPDATE jobs SET {', '.join(cols)} WHERE id=? AND owner=? AND {_NOT_TERMINAL}",
                    (*vals, job_id, owner),
                )
                changed = cur.rowcount
        return self.get(job_id) if changed else None

    def set_progress(self, job_id: str, owner: str, progress: float | None) -> bool:
        with self._lock:
            if self._closed:  # a render thread abandoned at shutdown; the job restarts elsewhere
                return False
            with self._write() as db:
                cur = db.execute(
                    f"UPDATE jobs SET progress=?, status_detail=NULL, updated_at=? WHERE id=? AND owner=? AND {_NOT_TERMINAL}",
                    (progress, self.now(), job_id, owner),
                )
                return cur.rowcount > 0

    def cancel(self, job_id: str, error: dict[str, Any]) -> JobRow | None:
        with self._lock, self._write() as db:
            cur = db.execute(
                f"UPDATE jobs SET status='cancelled', stage='done', error=?, status_detail=NULL, lease_expires_at=NULL,"
                f" updated_at=? WHERE id=? AND {_NOT_TERMINAL}",
                (json.dumps(error), self.now(), job_id),
            )
            changed = cur.rowcount
        return self.get(job_id) if changed else None

    def update(self, job_id: str, **values: Any) -> JobRow:
        cols, vals = self._encode(values)
        cols.append("updated_at=?")
        vals.append(self.now())
        with self._lock, self._write() as db:
            db.execute(f"UPDATE jobs SET {', '.join(cols)} WHERE id=?", (*vals, job_id))
        row = self.get(job_id)
        assert row is not None
        return row

    # -- cost -------------------------------------------------------------------------------

    def set_actual_cost(self, job_id: str, owner: str, usd: float | None, detail: Mapping[str, Any]) -> bool:
        with self._lock:
            if self._closed:
                return False
            with self._write() as db:
                cur = db.execute(
                    "UPDATE jobs SET actual_usd=?, actual_cost=? WHERE id=? AND owner=?",
                    (usd, json.dumps(dict(detail)), job_id, owner),
                )
                return cur.rowcount > 0

    def spend(
        self, budget: BudgetRule | None, period: Period, since: float = 0.0, *, user: str | None = None,
        user_budget: BudgetRule | None = None,
    ) -> dict[str, Any]:
        with self._lock:
            if user is None:
                start = period_start(budget.period if budget else period)
                return {"budget": budget_status(self._db, budget, period), "rows": spend_breakdown(self._db, since),
                        "users": users_breakdown(self._db, start, user_budget)}
            return {
                "budget": budget_status(self._db, user_budget, period, user=user),
                "server_budget": budget_status(self._db, budget, period),
                "rows": spend_breakdown(self._db, since, user),
            }

    # -- deleting ---------------------------------------------------------------------------

    def delete_finished(self, job_id: str) -> JobRow | None:
        with self._lock, self._write() as db:
            rows = db.execute(f"DELETE FROM jobs WHERE id=? AND NOT ({_NOT_TERMINAL}) RETURNING *", (job_id,)).fetchall()
        return self._row(rows[0]) if rows else None

    def finished_created_before(self, cutoff: float, *, limit: int = 1000) -> list[JobRow]:
        return self._select(f"NOT ({_NOT_TERMINAL}) AND created_at < ?", (cutoff, limit), "ORDER BY created_at LIMIT ?")

    def finished_with_files(self, created_before: float, *, limit: int = 1000) -> list[JobRow]:
        return self._select(
            f"NOT ({_NOT_TERMINAL}) AND files_deleted=0 AND created_at < ?", (created_before, limit),
            "ORDER BY created_at LIMIT ?",
        )

    def mark_files_deleted(self, job_id: str) -> bool:
        with self._lock, self._write() as db:
            cur = db.execute(
                f"UPDATE jobs SET files_deleted=1, updated_at=? WHERE id=? AND NOT ({_NOT_TERMINAL})",
                (self.now(), job_id),
            )
            return cur.rowcount > 0

    def job_counts(self) -> list[tuple[str, str, str, int]]:
        with self._lock:
            rows = self._db.execute("SELECT status, model, route, COUNT(*) FROM jobs GROUP BY status, model, route").fetchall()
        return [(str(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in rows]

    def meta_claim_interval(self, key: str, interval_s: float) -> bool:
        now = self.now()
        with self._lock, self._write() as db:  # BEGIN IMMEDIATE: read, compare and write as one
            r = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
            if r is not None and float(r[0]) > now - interval_s:
                return False
            db.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, repr(now)),
            )
        return True

    # -- meta -------------------------------------------------------------------------------

    def meta_get(self, key: str) -> str | None:
        with self._lock:
            r = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return str(r[0]) if r else None

    def meta_set(self, key: str, value: str | None) -> None:
        with self._lock, self._write() as db:
            if value is None:
                db.execute("DELETE FROM meta WHERE key=?", (key,))
            else:
                db.execute(
                    "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    (key, value),
                )

    def meta_setdefault(self, key: str, value: str) -> str:
        with self._lock, self._write() as db:
            db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING", (key, value))
            r = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return str(r[0])
