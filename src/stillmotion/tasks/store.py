"""task id -> job id, durably, in the job store itself (its key-value `meta` table).

A task is only a second, unguessable name for a job that a tasks-extension client holds, so every
status and result is read from the job. Keeping the mapping in the job store means it lives
wherever the jobs live: the SQLite file under the home, or the PostgreSQL database that HTTP
replicas share (a task created on one replica resolves on every other).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

KEY_PREFIX = "task:"


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
    """Over any job store with `meta_get` / `meta_set` (SqliteStore, PgStore)."""

    def __init__(self, jobs: Any) -> None:
        self.jobs = jobs

    def create(self, job_id: str, ttl_ms: int) -> TaskRow:
        """Committed before returning: a tasks/get for the id resolves as soon as we answer."""
        row = TaskRow(new_task_id(), job_id, time.time(), ttl_ms)
        value = json.dumps({"job_id": row.job_id, "created_at": row.created_at, "ttl_ms": row.ttl_ms})
        self.jobs.meta_set(KEY_PREFIX + row.task_id, value)
        return row

    def get(self, task_id: str) -> TaskRow | None:
        if not task_id.startswith("task_") or len(task_id) > 200:
            return None
        raw = self.jobs.meta_get(KEY_PREFIX + task_id)
        if raw is None:
            return None
        data = json.loads(raw)
        return TaskRow(task_id, str(data["job_id"]), float(data["created_at"]), int(data["ttl_ms"]))

    def forget(self, task_id: str) -> None:
        """Delete the mapping (the job is untouched); done when a lookup finds the task expired."""
        self.jobs.meta_set(KEY_PREFIX + task_id, None)
