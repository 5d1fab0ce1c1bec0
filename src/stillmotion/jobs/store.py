"""The job store on SQLite (one file under STILLMOTION_HOME), and where the store's names are imported from.

Every operation is `JobStore`'s (jobs/job_store.py, SQL shared with PostgreSQL through
jobs/sql.py); this module supplies the connection (WAL mode, one connection per store object
serialised by a lock, a busy timeout for another process's write lock), the clock (this
process's), the schema and its migrations, and the SQLite dialect. Writes run in `BEGIN
IMMEDIATE` transactions: the write lock is held from the first statement, so a read, compare and
write is one step across processes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .job_store import UPSERT_META, JobStore
from .rows import (
    HEAD_COLS,
    JOB_ID_RE,
    JSON_COLS,
    KEY_SEP,
    LOCAL_USER,
    ROW_COLS,
    SCHEMA_VERSION,
    TERMINAL,
    UNFINISHED,
    WRITABLE,
    DuplicateIdempotencyKey,
    JobHead,
    JobRow,
    Stage,
    Status,
    args_fingerprint,
    check_columns,
    new_job_id,
    scoped_key,
    validate_job_id,
)
from .sql import NOT_TERMINAL, SQLITE, Mode, StoreClosed

__all__ = [
    "BUSY_TIMEOUT_S", "HEAD_COLS", "JOB_ID_RE", "JSON_COLS", "KEY_SEP", "LOCAL_USER", "ROW_COLS", "SCHEMA_VERSION",
    "TERMINAL", "UNFINISHED", "WRITABLE", "DuplicateIdempotencyKey", "JobHead", "JobRow", "JobStore", "SqliteStore",
    "Stage", "Status", "args_fingerprint", "check_columns", "new_job_id", "scoped_key", "validate_job_id",
]

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
BILLED_TRIGGER = """
CREATE TRIGGER IF NOT EXISTS jobs_billed AFTER UPDATE OF status ON jobs
WHEN NEW.status IN ('succeeded','failed','cancelled')
 AND OLD.status NOT IN ('succeeded','failed','cancelled')
 AND OLD.stage IN ('submitting','polling','downloading')
 AND NEW.route != 'local'
BEGIN
  UPDATE jobs SET billed = 1 WHERE id = NEW.id;
END
"""
"""`billed` (see jobs/spend.py): set when a job ends after reaching the provider."""

BUSY_TIMEOUT_S = 30.0
"""How long one SQLite statement waits for another process's write lock before failing (the runner
then retries the write with backoff while the job's lease allows; STILLMOTION_STORE_BUSY_TIMEOUT_MS)."""


class _Conn:
    """`sql.Conn` over the store's one sqlite3 connection (sqlite3 takes `:name` parameters as they are)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def run(self, sql: str, params: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute(sql, params).fetchall()]

    def count(self, sql: str, params: Any) -> int:
        return int(self.db.execute(sql, params).rowcount)


class SqliteStore(JobStore):
    """One connection per store object, serialised by a lock; WAL lets other processes read while
    one writes. Conditional writes are single UPDATE statements in `BEGIN IMMEDIATE` transactions."""

    dialect = SQLITE

    def __init__(self, path: Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=busy_timeout_s)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        self._conn = _Conn(self._db)
        self._closed = False
        self._migrate()

    def _migrate(self) -> None:
        self._db.executescript(SQLITE_SCHEMA)  # (executescript commits on its own: outside the transaction)
        with self._session("write"):
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
                self._db.execute(UPSERT_META, {"key": "schema_version", "value": str(SCHEMA_VERSION)})

    def _move_bookmarks(self) -> None:
        """Schema 1 kept `_submitted_at` inside operation and `pending_video` inside result."""
        rows = self._db.execute(f"SELECT id, operation, result FROM jobs WHERE {NOT_TERMINAL}").fetchall()
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

    @contextmanager
    def _session(self, mode: Mode, *, if_open: bool = False) -> Iterator[_Conn]:
        with self._lock:
            if if_open and self._closed:
                raise StoreClosed
            if mode == "read":
                yield self._conn
                return
            self._db.execute("BEGIN IMMEDIATE")  # the write lock from the first statement on
            try:
                yield self._conn
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def now(self) -> float:
        return time.time()
