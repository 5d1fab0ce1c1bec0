"""A job's row and the few rules about its columns, shared by the store's interface and engines.

Public `status` is what agents see (queued, running, downloading, succeeded, failed, cancelled);
`stage` is the runner's bookmark for resuming after a crash or a takeover:

    new -> submitting -> polling -> downloading -> done
             (create request in flight: whoever resumes asks the provider to recover it)

Resume bookmarks live in their own columns (`submitted_at`, `video_url`, `video_url_expires_at`,
`provider_done_at`), never inside the provider's opaque `operation` or the published `result`.

Users (issue #23): every job has a `user_id`, the user who asked for it (`local`: a stdio server's
own user, and every job made before users existed). Idempotency keys are per user: the key column
holds `<user>\x1f<key>` (`scoped_key`), so its unique index is one per user.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from ..errors import InvalidInput
from .spend import COST_COLUMNS

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


def check_columns(values: Mapping[str, Any]) -> None:
    bad = set(values) - WRITABLE
    if bad:
        raise ValueError(f"not writable job columns: {sorted(bad)}")

