"""A job as this process drives it, and the writes it makes while it owns it.

Every write made while driving a job is conditional on still owning it (`OwnedWrites.set` raises
`Lost` otherwise, which ends that job's task quietly). A store fault (locked, connection lost, disk
full) never fails a job: an owned write is retried with backoff for as long as the job's lease
lasts (counted from the last write that renewed it), then the job is released for takeover (by
any process, this one included, once the store answers again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio

from ..errors import StillmotionError
from ..ops import metrics
from ..providers.base import JobContext, Provider, VideoResult
from .async_store import AsyncJobStore, StoreUnavailable
from .caps import RunningCap
from .rows import JobRow

log = logging.getLogger(__name__)
T = TypeVar("T")

STORE_RETRY_FIRST_S = 0.05
"""The first wait before an owned write that hit a store fault is tried again (then doubling)."""
STORE_RETRY_MAX_S = 2.0
"""The longest wait between two tries of an owned write (never more than a quarter of the lease)."""


class Lost(Exception):
    """This process no longer owns the job (cancelled, finished or taken over elsewhere): stop, write nothing."""


@dataclass
class Job:
    """One job as this process drives it."""

    row: JobRow
    scope: anyio.CancelScope
    ctx: JobContext | None = None
    provider: Provider | None = None
    video: VideoResult | None = None
    """The result this process learned (may carry inline base64 that no column holds)."""
    lost_answer: bool = False
    """This process sent a create and lost its answer (vs. found `submitting` after a takeover)."""
    stop: threading.Event = field(default_factory=threading.Event)
    """Set when the job must stop (lost, cancelled, shutdown); render threads check it."""
    leased_at: float = field(default_factory=time.monotonic)
    """Monotonic time at which the last write that renewed this job's lease was sent (the lease
    lasts at least lease_s from then on the store's clock): store faults are waited out until then."""

    @property
    def id(self) -> str:
        return self.row.id


def count_finished(row: JobRow, billed: bool) -> None:
    """Metrics of a job that just ended here: its status, and what it committed (jobs/spend.py's
    rule: a job that reached the provider commits its reported cost, else its estimate)."""
    committed = None
    if billed:
        committed = row.actual_usd if row.actual_usd is not None else row.estimated_usd
    metrics.job_finished(row.model, row.route, row.status, committed)
    log.info("job %s ended: %s", row.id, row.status,
             extra={"job_id": row.id, "provider": metrics.provider_label(row.model, row.route)})


class OwnedWrites:
    """The writes of the jobs `owner` drives, on `db`; `written(job, row)` runs after each one lands
    (the runner marks the change seen and wakes the job's waiters)."""

    def __init__(self, db: AsyncJobStore, owner: str, lease_s: float, written: Callable[[Job, JobRow], None]) -> None:
        self.db = db
        self.owner = owner
        self.lease_s = lease_s
        self.written = written

    async def write(self, job: Job, write: Callable[[], Awaitable[T]], *, until_lost: bool = False) -> T:
        """A store write made while driving `job`, waited out through store faults (locked, connection
        lost, disk full) with backoff while the job's lease lasts. Raises StoreUnavailable when the
        lease ran out first (the caller releases the job for takeover). `until_lost`: a write of what
        only this process knows (a create's answer) is tried until it lands or the job is found to
        have changed hands (the write answers None)."""
        delay = STORE_RETRY_FIRST_S
        longest = max(STORE_RETRY_FIRST_S, min(STORE_RETRY_MAX_S, self.lease_s / 4))
        tries = 0
        while True:
            try:
                return await write()
            except StoreUnavailable as fault:
                tries += 1
                left = job.leased_at + self.lease_s - time.monotonic()
                if job.stop.is_set() or (left <= delay and not until_lost):
                    raise
                if tries == 1 and not until_lost:
                    log.warning("job %s (user %s): %s; retrying the write for up to %.1f s (its lease)", job.id,
                                job.row.user_id, fault.why, left)
                await anyio.sleep(delay)
                delay = min(longest, delay * 2)

    def _wrote(self, job: Job, row: JobRow | None, sent: float, lease_s: float | None) -> JobRow:
        if row is None:
            raise Lost(job.id)
        if lease_s is not None:
            job.leased_at = max(job.leased_at, sent)
        reached_provider = job.row.stage in ("submitting", "polling", "downloading") and row.route != "local"
        job.row = row
        self.written(job, row)
        if row.terminal:
            count_finished(row, bool(row.billed) or reached_provider)
        return row

    async def set(self, job: Job, *, lease_s: float | None = None, until_lost: bool = False, **values: Any) -> JobRow:
        """An owned write; clears status_detail unless given. Raises Lost when we no longer own the job."""
        values.setdefault("status_detail", None)
        sent = time.monotonic()
        row = await self.write(
            job, lambda: self.db.update_owned(job.id, self.owner, values, lease_s=lease_s), until_lost=until_lost
        )
        return self._wrote(job, row, sent, lease_s)

    async def set_capped(self, job: Job, cap: RunningCap, *, lease_s: float | None = None, **values: Any) -> JobRow:
        """`set` within a concurrency cap shared by every process on the store (jobs/caps.py)."""
        values.setdefault("status_detail", None)
        sent = time.monotonic()
        row = await self.write(
            job, lambda: self.db.update_owned_capped(job.id, self.owner, values, cap=cap, lease_s=lease_s)
        )
        return self._wrote(job, row, sent, lease_s)

    async def set_cost(self, job: Job, usd: float | None, detail: Mapping[str, Any]) -> None:
        """What the provider's answer said the job cost."""
        await self.write(job, lambda: self.db.set_actual_cost(job.id, self.owner, usd, detail))

    async def fail(self, job: Job, err: StillmotionError) -> None:
        """End the job as failed. Never raises: a store that cannot take the write leaves the job to
        be released and taken over (it is driven again, never lost)."""
        log.info("job %s (user %s) failed: %s (%s)", job.id, job.row.user_id, err.kind, err.message)
        try:
            await self.set(job, status="failed", stage="done", error=err.to_dict())
        except Lost:
            pass
        except StoreUnavailable as fault:
            await self.give_up(job, fault)
        except Exception:
            log.exception("job %s (user %s): could not record its failure", job.id, job.row.user_id)

    async def give_up(self, job: Job, fault: StoreUnavailable) -> None:
        """The store failed for as long as the job's lease allowed: stop driving it and release it
        (best effort: if the store still cannot be written, the lease lapses on its own), so whichever
        process reaches the store first, this one included, takes it over where it stopped."""
        log.warning("job %s (user %s): %s for as long as its lease allowed; released for takeover", job.id,
                    job.row.user_id, fault.why)
        job.stop.set()
        with anyio.move_on_after(self.lease_s):
            try:
                await self.db.release(self.owner, [job.id])
            except Exception as exc:
                log.info("job %s (user %s): release failed too (%s); its lease lapses instead", job.id, job.row.user_id,
                         type(exc).__name__)

    def waiting(self, job: Job, **extra: Any) -> Callable[[StillmotionError, str], Awaitable[None]]:
        """A retry's `on_wait`: what the job waits for goes into its status_detail (with `extra`)."""

        async def on_wait(err: StillmotionError, detail: str) -> None:
            log.info("job %s (user %s): %s", job.id, job.row.user_id, detail)
            await self.set(job, status_detail=detail, **extra)

        return on_wait
