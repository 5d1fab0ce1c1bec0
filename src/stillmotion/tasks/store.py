"""task id -> job id, durably: one small table in the job database (SQLite, WAL).

Kept apart from the job store on purpose: a task is only a second, unguessable name for a job
that a tasks-extension client holds, so every status and result is read from the job itself.
Each call opens a short-lived connection (tasks/* are polled every few seconds at most), so
there is nothing to close at shutdown and any thread may use it.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    ttl_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_job ON tasks(job_id);
"""


def new_task_id() -> str:
    """256 random bits: the id is the bearer of the task, so it must not be guessable."""
    return "task_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class TaskRow:
    task_id: str
    job_id: str
    created_at: float
    ttl_ms: int

    def expired(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) > self.created_at + self.ttl_ms / 1000


class TaskStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        with closing(self._connect()) as db:
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30)
        db.execute("PRAGMA busy_timeout=30000")
        return db

    def create(self, job_id: str, ttl_ms: int) -> TaskRow:
        """Insert and commit before returning: a tasks/get for the id resolves as soon as we answer."""
        row = TaskRow(new_task_id(), job_id, time.time(), ttl_ms)
        with closing(self._connect()) as db:
            db.execute(
                "INSERT INTO tasks (task_id, job_id, created_at, ttl_ms) VALUES (?,?,?,?)",
                (row.task_id, row.job_id, row.created_at, row.ttl_ms),
            )
        return row

    def get(self, task_id: str) -> TaskRow | None:
        with closing(self._connect()) as db:
            r = db.execute("SELECT task_id, job_id, created_at, ttl_ms FROM tasks WHERE task_id=?", (task_id,)).fetchone()
        return TaskRow(r[0], r[1], float(r[2]), int(r[3])) if r else None

    def purge_expired(self, now: float | None = None) -> int:
        now = now if now is not None else time.time()
        with closing(self._connect()) as db:
            return db.execute("DELETE FROM tasks WHERE created_at + ttl_ms / 1000.0 < ?", (now,)).rowcount
