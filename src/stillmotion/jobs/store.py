"""The job store: one SQLite file under STILLMOTION_HOME, WAL mode, one row per job.

Public `status` is what agents see (queued, running, downloading, succeeded, failed, cancelled);
`stage` is the runner's own bookmark for resuming after a crash:

    new -> submitting -> polling -> downloading -> done
             (create request in flight: after a crash the provider is asked to recover it)
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import InvalidInput
from .spend import (
    COST_COLUMNS,
    BudgetRule,
    Period,
    budget_status,
    ensure_cost_schema,
    reserve_or_refuse,
    spend_breakdown,
)

Status = Literal["queued", "running", "downloading", "succeeded", "failed", "cancelled"]
Stage = Literal["new", "submitting", "polling", "downloading", "done"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
JOB_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{7,63}$")

SCHEMA = """
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
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at);
"""


def new_job_id() -> str:
    return "job_" + secrets.token_hex(8)


def validate_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
        raise InvalidInput("job_id", f"{str(job_id)[:80]!r} is not a job id.", "^[a-z0-9][a-z0-9_-]{7,63}$")
    return job_id


def args_fingerprint(args: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(args, sort_keys=True, default=str).encode()).hexdigest()


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
    attempts: int
    provider_done_at: float | None
    estimated_usd: float | None = None
    cost: dict[str, Any] | None = None
    """{basis, estimate} of the estimate made at submission (jobs/spend.py)."""
    actual_usd: float | None = None
    actual_cost: dict[str, Any] | None = None
    """What the provider's answer said: {usd, units, source}."""
    billed: int = 0
    """1 once the job ended after reaching the provider (set by a trigger; see jobs/spend.py)."""

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


_JSON_COLS = {"request", "operation", "warnings", "error", "result", *COST_COLUMNS}


class JobStore:
    """Thread-safe; every write commits before it returns (a kill -9 loses nothing acknowledged)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        ensure_cost_schema(self._db)
        self._closed = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._db.close()

    # -- reads ---------------------------------------------------------------------------

    def _row(self, r: sqlite3.Row) -> JobRow:
        d = dict(r)
        for col in _JSON_COLS:
            if d[col] is not None:
                d[col] = json.loads(d[col])
        return JobRow(**d)

    def get(self, job_id: str) -> JobRow | None:
        with self._lock:
            r = self._db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return self._row(r) if r else None

    def by_idempotency_key(self, key: str) -> JobRow | None:
        with self._lock:
            r = self._db.execute("SELECT * FROM jobs WHERE idempotency_key=?", (key,)).fetchone()
        return self._row(r) if r else None

    def recent(self, *, status: str | None = None, limit: int = 20) -> list[JobRow]:
        q = "SELECT * FROM jobs"
        params: tuple[Any, ...] = ()
        if status:
            q += " WHERE status=?"
            params = (status,)
        q += " ORDER BY created_at DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(q, (*params, limit)).fetchall()
        return [self._row(r) for r in rows]

    def unfinished(self) -> list[JobRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE status IN ('queued','running','downloading') ORDER BY created_at"
            ).fetchall()
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
        cost: dict[str, Any] | None = None,
        budget: BudgetRule | None = None,
    ) -> JobRow:
        """Insert a queued job. With a budget, the period's spend is summed, compared and the job
        inserted in one write transaction (BEGIN IMMEDIATE): concurrent submissions, in this process
        or another on the same file, can never go over together. Raises BudgetExceeded."""
        now = time.time()
        cost = cost or {}
        with self._lock:
            if budget is not None:
                self._db.execute("BEGIN IMMEDIATE")
            try:
                if budget is not None:
                    reserve_or_refuse(self._db, budget, cost.get("estimated_usd"), cost.get("basis", ""), now)
                self._insert(
                    job_id, tool, model, route, now, request, args_hash, idempotency_key, warnings, cost
                )
            except BaseException:
                if budget is not None:
                    self._db.execute("ROLLBACK")
                raise
            if budget is not None:
                self._db.execute("COMMIT")
        row = self.get(job_id)
        assert row is not None
        return row

    def _insert(
        self,
        job_id: str,
        tool: str,
        model: str,
        route: str,
        now: float,
        request: dict[str, Any],
        args_hash: str,
        idempotency_key: str | None,
        warnings: list[str],
        cost: dict[str, Any],
    ) -> None:
        self._db.execute(
            "INSERT INTO jobs (id, tool, model, route, status, stage, progress, created_at, updated_at, request,"
            " args_hash, idempotency_key, warnings, estimated_usd, cost) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                job_id,
                tool,
                model,
                route,
                "queued",
                "new",
                None,
                now,
                now,
                json.dumps(request),
                args_hash,
                idempotency_key,
                json.dumps(warnings),
                cost.get("estimated_usd"),
                json.dumps({"basis": cost.get("basis", ""), "estimate": cost.get("estimate", True)}),
            ),
        )

    def update(self, job_id: str, **fields: Any) -> JobRow:
        """Unconditional update (tests and repairs); the runner uses update_unless_terminal."""
        fields["updated_at"] = time.time()
        cols = [f"{k}=?" for k in fields]
        vals = [json.dumps(v) if k in _JSON_COLS and v is not None else v for k, v in fields.items()]
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {', '.join(cols)} WHERE id=?", (*vals, job_id))
        row = self.get(job_id)
        assert row is not None
        return row

    def update_unless_terminal(self, job_id: str, **fields: Any) -> JobRow | None:
        """Atomically apply `fields` only if the job has not ended (a cancel wins over a late result)."""
        fields["updated_at"] = time.time()
        cols = [f"{k}=?" for k in fields]
        vals = [json.dumps(v) if k in _JSON_COLS and v is not None else v for k, v in fields.items()]
        with self._lock:
            cur = self._db.execute(
                f"UPDATE jobs SET {', '.join(cols)} WHERE id=? AND status NOT IN ('succeeded','failed','cancelled')",
                (*vals, job_id),
            )
            changed = cur.rowcount
        return self.get(job_id) if changed else None

    def set_progress(self, job_id: str, progress: float | None) -> None:
        with self._lock:
            if self._closed:  # a render thread abandoned at shutdown; the job restarts next time
                return
            self._db.execute(
                "UPDATE jobs SET progress=?, updated_at=? WHERE id=? AND status NOT IN ('succeeded','failed','cancelled')",
                (progress, time.time(), job_id),
            )

    # -- cost ----------------------------------------------------------------------------

    def set_actual_cost(self, job_id: str, usd: float | None, detail: dict[str, Any]) -> None:
        """Record what the provider's answer said the job cost (any status: a late answer still counts)."""
        with self._lock:
            if self._closed:
                return
            self._db.execute(
                "UPDATE jobs SET actual_usd=?, actual_cost=? WHERE id=?", (usd, json.dumps(detail), job_id)
            )

    def spend(self, budget: BudgetRule | None, period: Period, since: float = 0.0) -> dict[str, Any]:
        """The budget's standing in its period and spend by UTC day, model and route."""
        with self._lock:
            return {
                "budget": budget_status(self._db, budget, period),
                "rows": spend_breakdown(self._db, since),
            }
