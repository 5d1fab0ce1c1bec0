"""Drives the jobs this process owns to an end, and takes over jobs whose owner is gone.

Ownership (see store.py): a job created by a tool call here is ours at once; a start-up scan and
a periodic scan claim unfinished jobs with no owner, a lapsed lease or an owner known to be gone;
a heartbeat renews our leases and stops any job we lost. Every write made while driving a job is
conditional on still owning it (`_set` raises `Lost` otherwise, which ends that job's task
quietly).

A remote job is a stage table, each handler returning the next stage:

    new         -> submit   (create request, in a create slot, with at least half a lease left)
    submitting  -> recover  (a create whose answer was lost, or sent by a process that died)
    polling     -> poll     (every poll_interval_ms until done or poll_timeout_ms; when many jobs
                             poll one provider task list, one list request answers them: batch.py)
    downloading -> download (stream to a temp file unique to this attempt, check, rename)

Local jobs render on a worker thread (at most `local_concurrency` at once); a taken-over render
starts again from scratch. Every retry (create, poll, recover, download) goes through one
`RetryPolicy`, which writes what it is waiting for into the job's `status_detail`.

Changes made by other processes (a cancel, progress of a job another process drives) are seen
by polling the store every WATCH_S: waiters wake and resource subscribers are notified.

The store is reached through its asynchronous face (`jobs/async_store.py`): nothing here waits on
it on the event loop. A store fault (locked, connection lost, disk full) never fails a job: an
owned write is retried with backoff for as long as the job's lease lasts (counted from the last
write that renewed it), then the job is released for takeover (by any process, this one
included, once the store answers again). No exception leaves a job task (issue #21).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.abc
import anyio.to_thread
import av
import httpx

from ..errors import (
    AmbiguousSubmission,
    Cancelled,
    Expired,
    Interrupted,
    JobTimeout,
    ProviderError,
    StillmotionError,
)
from ..media.net import UrlGuard, download_to_file, remove_file, write_base64_file
from ..media.publish import Samples
from ..ops import logs, metrics
from ..plan.requests import GenerationRequest
from ..pricing import actual_usd
from ..providers.base import JobContext, Provider, StartResult, Status, VideoResult
from ..settings import Settings
from .async_store import AsyncJobStore, StoreUnavailable, unavailable
from .batch import StatusBatcher
from .caps import LeaseShort, RunningCap, cap_for
from .ownership import OwnerId, new_owner_id, owner_is_gone, register_live, unregister_live
from .retry import RetryPolicy
from .store import JobRow, JobStore

log = logging.getLogger(__name__)
T = TypeVar("T")

CREATE_DEFER_S = 0.01
"""How long a new remote job waits before building its create request (see _submit)."""
CREATE_CONCURRENCY = 8
"""Create requests in flight at once, across all jobs (500 submitted at once: 2.6x less peak RSS)."""
WATCH_S = 0.5
"""How often the store is read for changes other processes made (cancel, progress, results)."""
WATCH_MARGIN_S = 2.0
"""Changes are re-read this far back: a write committed late with an earlier timestamp is not missed."""

ProviderFactory = Callable[[str, str], Provider]
"""(catalog provider, route) -> Provider."""
LocalRender = Callable[[JobContext, Path, Callable[[float], None]], tuple[list[str], Samples]]
"""Renders into the path, reporting progress 0-1; returns extra warnings and the poster samples."""
Publisher = Callable[[Path, Path, Samples | None], dict[str, Any]]
"""(video path, job dir, samples) -> result dict (video facts, poster, last frame); ValueError if undecodable."""


BLOCKING_THREADS = 8
"""anyio's default worker threads (short blocking calls); CPU work has limiters of its own."""
ANSWER_FILE = ".create-answer.json"
"""In a job's output folder while its create's answer is not yet in the store (see _started)."""
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


def _count_finished(row: JobRow, billed: bool) -> None:
    """Metrics of a job that just ended here: its status, and what it committed (jobs/spend.py's
    rule: a job that reached the provider commits its reported cost, else its estimate)."""
    committed = None
    if billed:
        committed = row.actual_usd if row.actual_usd is not None else row.estimated_usd
    metrics.job_finished(row.model, row.route, row.status, committed)
    log.info("job %s ended: %s", row.id, row.status,
             extra={"job_id": row.id, "provider": metrics.provider_label(row.model, row.route)})


class JobRunner:
    def __init__(
        self,
        *,
        store: JobStore,
        settings: Settings,
        client: httpx.AsyncClient,
        provider_factory: ProviderFactory,
        local_render: LocalRender,
        publish: Publisher,
        on_change: Callable[[str], Coroutine[Any, Any, None]] | None = None,
        owner: OwnerId | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        db: AsyncJobStore | None = None,
    ) -> None:
        self.store = store
        """The synchronous face: render and publish threads only."""
        self.db = db or AsyncJobStore(store)
        """The asynchronous face: everything on the event loop."""
        self.settings = settings
        self.client = client
        self.provider_factory = provider_factory
        self.local_render = local_render
        self.publish = publish
        self.on_change = on_change
        self.owner_id = owner or new_owner_id()
        self.owner = str(self.owner_id)
        self.lease_s = settings.lease_ms / 1000
        self.retry = RetryPolicy(base_s=settings.retry_base_ms / 1000, max_retries=settings.max_retries)
        if sleep is not None:
            self.retry.sleep = sleep
        self.guard = UrlGuard(settings.allow_private_network, frozenset(settings.trusted_origins()))
        self._tg: anyio.abc.TaskGroup | None = None
        self._jobs: dict[str, Job] = {}
        self._events: dict[str, anyio.Event] = {}
        self._local_limiter = anyio.CapacityLimiter(settings.local_concurrency)
        # renders are long: threads of their own, not anyio's default ones (BLOCKING_THREADS)
        self._render_threads = anyio.CapacityLimiter(settings.local_concurrency)
        # Publishing (decode check, poster, last frame) is CPU work: more at once than there are
        # cores only adds contention and memory. A FIFO queue also finishes the earliest jobs first.
        self._publish_limiter = anyio.CapacityLimiter(max(1, os.cpu_count() or 1))
        # A create request holds its images in memory three times over (bytes, base64, JSON) until it
        # is answered; hundreds submitted at once would hold them all and crowd out everything else.
        self._create_slots = anyio.CapacityLimiter(CREATE_CONCURRENCY)
        self.batcher = StatusBatcher()
        self._progress_mark: dict[str, float] = {}
        self._stopping = False
        self._changed: set[str] = set()
        self._changes_ready = anyio.Event()
        self._seen: dict[str, float] = {}
        self._watch_mark = 0.0
        self.last_activity = time.monotonic()
        """Monotonic time this runner last drove a job (the background worker exits when idle)."""
        register_live(self.owner)

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def scan_s(self) -> float:
        """How often unowned and stale jobs are looked for ("every few seconds")."""
        return max(0.05, min(3.0, self.lease_s / 3))

    @property
    def heartbeat_s(self) -> float:
        return max(0.05, self.lease_s / 3)

    async def start(self, tg: anyio.abc.TaskGroup) -> None:
        self._tg = tg
        # Short blocking calls (file reads, fsync, mkdir) share anyio's default worker threads. Its
        # default of 40 lets a burst of finishing jobs start dozens of threads, and each thread that
        # allocates gets a malloc arena of its own: measured with 500 jobs, the server's peak RSS
        # rose to 340-360 MB (300 MB target); with 8 threads it stays at ~270 MB, no slower.
        anyio.to_thread.current_default_thread_limiter().total_tokens = BLOCKING_THREADS
        try:
            self._watch_mark = await self.db.now()
        except StoreUnavailable as fault:  # the store is down at start-up: the watch looks back from here
            log.warning("job store: %s", fault.why)
            self._watch_mark = time.time() - 60.0
        if self.on_change is not None:
            tg.start_soon(self._send_notifications, name="resource notifications")
        try:
            await self.scan()
        except StoreUnavailable as fault:  # the claim scan tries again every scan_s
            log.warning("claim scan: %s", fault.why)
        tg.start_soon(self._every, self.scan_s, self.scan, name="claim scan")
        tg.start_soon(self._every, self.heartbeat_s, self.heartbeat, name="lease heartbeat")
        tg.start_soon(self._every, WATCH_S, self.watch, name="store watch")

    async def _every(self, interval: float, fn: Callable[[], Awaitable[Any]]) -> None:
        while not self._stopping:
            await anyio.sleep(interval)
            try:
                await fn()
            except StoreUnavailable as fault:  # the store is down: the next round tries again
                log.warning("%s: %s", getattr(fn, "__name__", fn), fault.why)
            except Exception:  # a store hiccup must not end the loop (the next round retries)
                log.warning("%s failed", getattr(fn, "__name__", fn), exc_info=True)

    def stop(self) -> None:
        """Shutdown: every job stops (render threads at their next frame); call release() after."""
        self._stopping = True
        for job in self._jobs.values():
            job.stop.set()

    def release(self) -> int:
        """Give up every job this runner owns (after stop() and once its tasks ended). Blocking: call
        it off the loop. A store that cannot be written leaves the leases to lapse (never raises)."""
        unregister_live(self.owner)
        try:
            n = self.store.release(self.owner)
        except Exception as exc:
            log.warning("could not release this process's jobs (%s); their leases lapse in %.0f s and another "
                        "process takes them", unavailable(exc) or exc, self.lease_s)
            return 0
        if n:
            log.info("released %d unfinished job(s) for another process to finish", n)
        return n

    @property
    def busy(self) -> bool:
        return bool(self._jobs)

    # -- ownership -------------------------------------------------------------------------

    async def scan(self) -> None:
        """Claim every unfinished job that is ours to take: no owner, a lapsed lease, a gone owner."""
        if self._stopping:
            return
        rows = await self.db.unfinished_heads()
        now = await self.db.now()
        others = {r.owner for r in rows if r.owner and r.owner != self.owner}
        stale = {o for o in others if owner_is_gone(o)}
        for row in rows:
            if row.id in self._jobs:
                continue
            mine = row.owner == self.owner
            free = row.owner is None or row.owner in stale or (row.lease_expires_at or 0) < now
            if not (mine or free):
                continue
            sent = time.monotonic()
            claimed = await self.db.claim(row.id, self.owner, self.lease_s, stale)
            if claimed is None or self._stopping or claimed.id in self._jobs:
                continue
            if not mine:
                log.info(
                    "took over job %s (user %s, %s, stage %s) from %s", row.id, claimed.user_id, claimed.status,
                    claimed.stage, row.owner or "nobody",
                )
                if row.owner is not None:
                    metrics.TAKEOVERS.inc()
            self._launch(claimed, leased_at=sent)

    async def heartbeat(self) -> None:
        sent = time.monotonic()
        held = await self.db.renew(self.owner, self.lease_s)
        for job_id, job in list(self._jobs.items()):
            if job_id in held:
                job.leased_at = max(job.leased_at, sent)
            elif not job.stop.is_set() and not job.row.terminal:
                self._lose(job, "its lease went to another process or it ended elsewhere")

    def _lose(self, job: Job, why: str) -> None:
        log.info("stopped driving job %s (user %s): %s", job.id, job.row.user_id, why)
        job.stop.set()
        job.scope.cancel()

    async def watch(self) -> None:
        """Notice changes other processes made: wake waiters, notify subscribers, stop what we lost."""
        rows = await self.db.heads_changed_since(self._watch_mark - WATCH_MARGIN_S)
        for row in rows:
            if self._seen.get(row.id) == row.updated_at:
                continue
            self._seen[row.id] = row.updated_at
            self._notify(row.id)
            job = self._jobs.get(row.id)
            if job is not None and not job.stop.is_set() and (row.terminal or row.owner != self.owner):
                self._lose(job, "cancelled" if row.status == "cancelled" else "it changed hands")
        if rows:
            self._watch_mark = max(self._watch_mark, rows[-1].updated_at)
        if len(self._seen) > 10_000 or (rows and len(self._seen) > 4 * len(rows) + 1000):
            floor = self._watch_mark - 4 * WATCH_MARGIN_S
            self._seen = {k: v for k, v in self._seen.items() if v >= floor}

    def forget(self, job_id: str) -> None:
        """The job's row was deleted: wake its waiters (they find no job) and notify subscribers."""
        self._seen.pop(job_id, None)
        self._notify(job_id)

    def launch_new(self, row: JobRow, *, leased_at: float | None = None) -> None:
        """A job this process just created (and owns); `leased_at`: monotonic time the create was sent."""
        self._launch(row, leased_at=leased_at)

    def _launch(self, row: JobRow, *, leased_at: float | None = None) -> None:
        assert self._tg is not None, "runner not started"
        if row.id in self._jobs:
            return
        job = Job(row=row, scope=anyio.CancelScope())
        if leased_at is not None:
            job.leased_at = leased_at
        self._jobs[row.id] = job
        self.last_activity = time.monotonic()
        self._tg.start_soon(self._drive, job, name=f"job {row.id}")

    # -- change notification -------------------------------------------------------------

    def _notify(self, job_id: str) -> None:
        """Wake waiters on this job and queue its resource notification. Safe from a plain loop
        callback (render threads reach it through call_soon_threadsafe): it starts no task."""
        ev = self._events.pop(job_id, None)
        if ev is not None:
            ev.set()
        if self.on_change is not None and not self._stopping:
            self._changed.add(job_id)
            self._changes_ready.set()

    async def _send_notifications(self) -> None:
        """One task sends every resource notification; bursts for one job coalesce into one."""
        assert self.on_change is not None
        while True:
            await self._changes_ready.wait()
            self._changes_ready = anyio.Event()
            batch, self._changed = self._changed, set()
            for job_id in batch:
                try:
                    await self.on_change(job_id)
                except StoreUnavailable as fault:  # (the store watch notices the change again later)
                    log.warning("change notification for job %s: %s", job_id, fault.why)
                except Exception:  # a notification (or blob cleanup) must never end this task
                    log.warning("change notification for job %s failed", job_id, exc_info=True)

    def change_event(self, job_id: str) -> anyio.Event:
        """Set at the job's next change (own write, cancel, render progress, or another process's
        write seen by the store watch). Take it BEFORE reading the row: a change after the read
        then cannot be missed."""
        ev = self._events.get(job_id)
        if ev is None:
            ev = self._events[job_id] = anyio.Event()
        return ev

    async def _owned_write(self, job: Job, write: Callable[[], Awaitable[T]], *, until_lost: bool = False) -> T:
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
        self._seen[job.id] = row.updated_at
        self._notify(job.id)
        if row.terminal:
            _count_finished(row, bool(row.billed) or reached_provider)
        return row

    async def _set(self, job: Job, *, lease_s: float | None = None, until_lost: bool = False, **values: Any) -> JobRow:
        """An owned write; clears status_detail unless given. Raises Lost when we no longer own the job."""
        values.setdefault("status_detail", None)
        sent = time.monotonic()
        row = await self._owned_write(
            job, lambda: self.db.update_owned(job.id, self.owner, values, lease_s=lease_s), until_lost=until_lost
        )
        return self._wrote(job, row, sent, lease_s)

    async def _set_capped(self, job: Job, cap: RunningCap, *, lease_s: float | None = None, **values: Any) -> JobRow:
        """`_set` within a concurrency cap shared by every process on the store (jobs/caps.py)."""
        values.setdefault("status_detail", None)
        sent = time.monotonic()
        row = await self._owned_write(
            job, lambda: self.db.update_owned_capped(job.id, self.owner, values, cap=cap, lease_s=lease_s)
        )
        return self._wrote(job, row, sent, lease_s)

    async def _fail(self, job: Job, err: StillmotionError) -> None:
        """End the job as failed. Never raises: a store that cannot take the write leaves the job to
        be released and taken over (it is driven again, never lost)."""
        log.info("job %s (user %s) failed: %s (%s)", job.id, job.row.user_id, err.kind, err.message)
        try:
            await self._set(job, status="failed", stage="done", error=err.to_dict())
        except Lost:
            pass
        except StoreUnavailable as fault:
            await self._give_up(job, fault)
        except Exception:
            log.exception("job %s (user %s): could not record its failure", job.id, job.row.user_id)

    async def _give_up(self, job: Job, fault: StoreUnavailable) -> None:
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

    def _waiting(self, job: Job, **extra: Any) -> Callable[[StillmotionError, str], Awaitable[None]]:
        async def on_wait(err: StillmotionError, detail: str) -> None:
            log.info("job %s (user %s): %s", job.id, job.row.user_id, detail)
            await self._set(job, status_detail=detail, **extra)

        return on_wait

    # -- cancel --------------------------------------------------------------------------

    async def cancel(self, job_id: str) -> JobRow | None:
        """End a job now, whichever process drives it. Returns the row, or None if it had already ended."""
        row = await self.db.get(job_id)
        remote = row is not None and row.route != "local"
        message = (
            "cancelled by request; stillmotion stopped polling. The provider has no cancel for running tasks, "
            "so it may still finish and bill this one."
            if remote
            else "cancelled by request."
        )
        ended = await self.db.cancel(job_id, Cancelled(message).to_dict())
        if ended is not None:
            _count_finished(ended, bool(ended.billed))
        job = self._jobs.get(job_id)
        if job is not None:
            self._lose(job, "cancelled")
        if ended is not None:
            self._seen[job_id] = ended.updated_at
        self._notify(job_id)
        return ended

    # -- driving -------------------------------------------------------------------------

    async def _drive(self, job: Job) -> None:
        """The job's task. No exception leaves it: the task group that runs every job survives any one."""
        try:
            await self._drive_stages(job)
        except Exception:  # pragma: no cover - _drive_stages ends every job itself; this is the last guard
            log.exception("job %s (user %s): unexpected error while ending it", job.id, job.row.user_id)
        finally:
            self._jobs.pop(job.id, None)
            self._progress_mark.pop(job.id, None)
            self.last_activity = time.monotonic()

    async def _drive_stages(self, job: Job) -> None:
        try:
            with job.scope:
                row = job.row
                if row.terminal:
                    return
                self._clean_leftovers(row.id)
                # this task's log lines and provider requests carry the job and its provider
                logs.JOB_ID.set(row.id)
                logs.USER.set(row.user_id)
                label = metrics.provider_label(row.model, row.route)
                logs.PROVIDER.set(label)
                metrics.PROVIDER.set(label)
                job.ctx = JobContext(row.id, GenerationRequest.model_validate(row.request))
                if row.route == "local":
                    await self._run_local(job)
                    return
                job.provider = self.provider_factory(self._provider_name(row.model), row.route)
                stage: str = row.stage
                handlers = {
                    "new": self._submit,
                    "submitting": self._recover,
                    "polling": self._poll,
                    "downloading": self._download,
                }
                while stage != "done":
                    stage = await handlers[stage](job)
        except Lost:
            log.debug("job %s (user %s): no longer ours", job.id, job.row.user_id)
        except StoreUnavailable as fault:
            await self._give_up(job, fault)
        except StillmotionError as err:
            if not job.stop.is_set():
                await self._fail(job, err)
        except Exception as exc:
            raw = unavailable(exc)
            if raw is not None:  # a store fault raised on a thread (render progress), or a full disk
                await self._give_up(job, raw)
            else:  # a bug must still end the job, with a message
                log.exception("job %s (user %s) crashed", job.id, job.row.user_id)
                if not job.stop.is_set():
                    await self._fail(job, ProviderError(f"internal error: {type(exc).__name__}: {exc}"))

    def _clean_leftovers(self, job_id: str) -> None:
        """Temporary files of earlier attempts (a process that died or lost the job) are garbage."""
        d = self.settings.output_dir / job_id
        if not d.is_dir():
            return
        tag = self.owner_id.file_tag
        for part in d.glob(".*.part"):
            if tag not in part.name:
                part.unlink(missing_ok=True)

    def _tmp(self, job_id: str, kind: str) -> Path:
        """A temporary file only this attempt writes (the owner's tag in its name)."""
        return self.job_dir(job_id) / f".{kind}.{self.owner_id.file_tag}.mp4.part"

    # -- local ---------------------------------------------------------------------------

    async def _run_local(self, job: Job) -> None:
        assert job.ctx is not None
        limiter = self._local_limiter
        if limiter.available_tokens < 1:  # say what the job waits for (cleared when it starts)
            ahead = limiter.borrowed_tokens + limiter.statistics().tasks_waiting
            total = int(limiter.total_tokens)
            await self._set(job, status_detail=f"queued: waiting for a local render slot ({ahead} local job(s) ahead; "
                                               f"{total} at a time, STILLMOTION_LOCAL_CONCURRENCY={total})")
        async with limiter:
            await self._set(job, status="running", stage="polling", progress=0.0, lease_s=self.lease_s)
            tmp = self._tmp(job.id, "render")
            loop = asyncio.get_running_loop()

            def progress(p: float) -> None:
                # Runs on the render thread. It must never block on the event loop: at shutdown the
                # loop is gone, and a thread waiting for it would keep the process alive forever.
                if job.stop.is_set():
                    raise Cancelled("this process no longer drives the job")
                last = self._progress_mark.get(job.id, -1.0)
                if p - last >= 0.05 or p >= 1.0:
                    self._progress_mark[job.id] = p
                    try:
                        held = self.store.set_progress(job.id, self.owner, round(p, 4))
                    except Exception as exc:
                        if unavailable(exc) is None:
                            raise
                        return  # progress is only shown: the render goes on; the next write is waited out
                    if not held:
                        job.stop.set()
                        raise Cancelled("this process no longer drives the job")
                    with contextlib.suppress(RuntimeError):  # loop already closed
                        loop.call_soon_threadsafe(self._notify, job.id)

            def render(ctx: JobContext) -> tuple[list[str], Samples]:
                # The thread removes its own temp file: an abandoned render (cancel, lost lease,
                # shutdown) is still writing it until its next frame, and the encoder reopens it
                # by name to finish the file.
                try:
                    out = self.local_render(ctx, tmp, progress)
                    if job.stop.is_set():
                        raise Cancelled("this process no longer drives the job")
                    return out
                except BaseException:
                    tmp.unlink(missing_ok=True)
                    raise

            try:
                extra, samples = await anyio.to_thread.run_sync(
                    render, job.ctx, abandon_on_cancel=True, limiter=self._render_threads
                )
            except Cancelled:
                raise Lost(job.id) from None
            if extra:
                await self._set(job, warnings=list(dict.fromkeys([*job.row.warnings, *extra])))
        await self._finish_file(job, tmp, provider_url=None, expires=None, samples=samples)

    # -- remote stages ---------------------------------------------------------------------

    def _provider_name(self, model: str) -> str:
        from ..catalog import MODELS

        return MODELS[model].provider

    async def _submit(self, job: Job) -> str:
        """new -> create request. `submitting` is written inside the create slot, immediately
        before the request goes out, and only with at least half a lease ahead."""
        assert job.provider is not None and job.ctx is not None
        provider, ctx = job.provider, job.ctx
        # Building a create request (reading the images, base64, JSON: ~15 ms of CPU on the event
        # loop for a 5 MB PNG) at once would delay the answer of the tool call that submitted this
        # job; a few ms later that answer is out (measured: 2x lower p50, 3x lower p99).
        await anyio.sleep(CREATE_DEFER_S)

        cap = cap_for(self.settings, job.row.model, job.row.route)

        async def attempt() -> StartResult:
            async with self._create_slots:
                t0 = time.monotonic()
                # (a retry's status_detail stays until the create is answered)
                if cap is None:
                    await self._set(job, stage="submitting", status_detail=job.row.status_detail, lease_s=self.lease_s)
                else:  # raises CapReached (a ConcurrencyLimited: the job waits queued, no attempt limit)
                    await self._set_capped(
                        job, cap, stage="submitting", status_detail=job.row.status_detail, lease_s=self.lease_s
                    )
                if time.monotonic() - t0 > self.lease_s / 2 or job.stop.is_set():
                    # paused or starved while marking: the lease may be gone; never send on a short lease
                    await self._set(job, stage="new", status_detail=job.row.status_detail)
                    # a local slowdown (a slow store, a paused process) is never a job failure:
                    # it waits like a cap, with no attempt limit (#21: an xAI job once ended
                    # failed with no create after five such rounds)
                    raise LeaseShort("the lease ran short before the create request went out (a slow job store)")
                try:
                    return await provider.start(ctx)
                except AmbiguousSubmission:
                    raise
                except StillmotionError:
                    # the provider answered no: nothing was created, so nothing is billed (jobs/spend.py)
                    await self._set(job, stage="new", status_detail=job.row.status_detail)
                    raise

        try:
            started = await self.retry.run(attempt, on_wait=self._waiting(job, stage="new", status="queued"))
        except AmbiguousSubmission:
            job.lost_answer = True
            return "submitting"
        return await self._started(job, started)

    async def _started(self, job: Job, started: StartResult) -> str:
        """Record the create's answer. The provider's task exists from now on, so its answer must
        never be lost to a store fault: it is kept on disk first (the job's output folder, which
        every process of the store shares), the write is tried until it lands or the job changes
        hands, and whoever resumes the job at `submitting` reads the kept answer (`_recover`)."""
        kept = started.completed is None and await self._keep_answer(job.id, started)
        warnings = list(dict.fromkeys([*job.row.warnings, *started.warnings]))
        await self._set(
            job,
            until_lost=True,
            stage="polling",
            status="running",
            operation=started.operation,
            provider_task_id=started.provider_task_id,
            warnings=warnings,
            progress=None,
            submitted_at=time.time(),
        )
        if kept:
            await anyio.to_thread.run_sync(self._answer_file(job.id).unlink, True)
        if started.completed is not None:
            return await self._on_status(job, started.completed)
        return "polling"

    async def _recover(self, job: Job) -> str:
        """submitting -> ask the provider for the task whose create answer was lost (never resubmit
        where it cannot be looked up: Wan and xAI end `interrupted`)."""
        assert job.provider is not None and job.ctx is not None
        provider, ctx = job.provider, job.ctx
        kept = await anyio.to_thread.run_sync(self._kept_answer, job.id)
        if kept is not None:  # answered, but the store could not record it in time: no need to ask
            log.info("job %s (user %s): resuming from the create answer kept on disk", job.id, job.row.user_id)
            return await self._started(job, kept)
        started = await self.retry.run(lambda: provider.recover(ctx), on_wait=self._waiting(job))
        if started is None:
            if job.lost_answer:
                raise Interrupted(
                    "the create request got no answer; the provider may have started (and may bill) the task, "
                    "but it cannot be looked up, so it was not resubmitted."
                )
            raise Interrupted(
                "the process that sent this job's create request stopped before storing the answer; the provider "
                "may have started (and may bill) the task, but it cannot be looked up, so it was not resubmitted."
            )
        return await self._started(job, started)

    def _answer_file(self, job_id: str) -> Path:
        return self.settings.output_dir / job_id / ANSWER_FILE

    async def _keep_answer(self, job_id: str, started: StartResult) -> bool:
        """The create's answer, durably on disk before the store is asked to record it (False when
        the disk refused: then only the store write keeps it)."""
        data = json.dumps({"operation": started.operation, "provider_task_id": started.provider_task_id,
                           "warnings": started.warnings}).encode()

        def write() -> None:
            path = self._answer_file(job_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{ANSWER_FILE}.{self.owner_id.file_tag}.tmp")
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)

        try:
            await anyio.to_thread.run_sync(write)
            return True
        except OSError as exc:
            log.warning("job %s: could not keep the create's answer on disk (%s)", job_id, exc)
            return False

    def _kept_answer(self, job_id: str) -> StartResult | None:
        try:
            data = json.loads(self._answer_file(job_id).read_bytes())
            return StartResult(operation=dict(data["operation"]), provider_task_id=data.get("provider_task_id"),
                               warnings=list(data.get("warnings") or []))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    async def _poll(self, job: Job) -> str:
        """polling -> status every poll_interval_ms (start to start) until the task ends."""
        assert job.provider is not None and job.ctx is not None
        provider, ctx = job.provider, job.ctx
        req = ctx.request
        op = job.row.operation or {}
        submitted_at = job.row.submitted_at or job.row.updated_at
        interval = req.poll_interval_ms / 1000
        # Polls start every `interval` (start to start), so a slow answer does not push every later
        # poll back: under load the poll that sees the task done comes at most one interval late.
        next_poll = time.monotonic() + interval
        on_wait = self._waiting(job)

        def status() -> Awaitable[Status]:
            return self.batcher.status(provider, ctx, op, interval=interval, submitted_at=submitted_at)

        with self.batcher.polling(provider):
            while True:
                if time.time() - submitted_at > req.poll_timeout_ms / 1000:
                    raise JobTimeout(
                        f"the provider did not finish within poll_timeout_ms={req.poll_timeout_ms}; "
                        "the task may still complete on the provider's side."
                    )
                await anyio.sleep(max(0.0, next_poll - time.monotonic()))
                next_poll = max(next_poll, time.monotonic()) + interval
                # a poll costs nothing: throttling and 5xx are waited out until the poll timeout (#21)
                st = await self.retry.run(status, on_wait=on_wait, until=submitted_at + req.poll_timeout_ms / 1000)
                if st.state == "pending":
                    if st.progress is not None and (st.progress != job.row.progress or job.row.status_detail):
                        await self._set(job, status="running", progress=st.progress)
                    elif job.row.status_detail:
                        await self._set(job)  # the retry is over: clear its detail
                    continue
                return await self._on_status(job, st)

    async def _record_cost(self, job: Job, st: Status) -> None:
        if st.actual is not None:
            usd = actual_usd(st.actual, self.settings.prices)
            actual = st.actual.to_dict()
            await self._owned_write(job, lambda: self.db.set_actual_cost(job.id, self.owner, usd, actual))

    async def _on_status(self, job: Job, st: Status) -> str:
        await self._record_cost(job, st)
        if st.state == "failed":
            raise st.error or ProviderError("the provider reported a failure without a reason")
        assert st.video is not None
        job.video = st.video
        await self._set(job, provider_done_at=time.time())
        return "downloading"

    async def _download(self, job: Job) -> str:
        """downloading -> stream the result to this attempt's temp file, check it, publish it."""
        assert job.provider is not None and job.ctx is not None
        provider, ctx = job.provider, job.ctx
        op = job.row.operation or {}
        # the task is paid for: status queries and the download are retried (429, 5xx) for as long
        # as a poll would be, counted from now (#21)
        until = time.time() + ctx.request.poll_timeout_ms / 1000
        video = job.video
        if video is None and job.row.video_url:
            video = VideoResult(url=job.row.video_url, url_expires_at=job.row.video_url_expires_at)
        if video is None:  # taken over between "provider done" and the download: ask again
            st = await self.retry.run(lambda: provider.status(ctx, op), on_wait=self._waiting(job), until=until)
            if st.state != "completed":
                return await self._on_status(job, st)
            await self._record_cost(job, st)
            assert st.video is not None
            video = st.video
        await self._set(job, status="downloading", stage="downloading", video_url=video.url, video_url_expires_at=video.url_expires_at)
        tmp = self._tmp(job.id, "download")
        try:
            if video.data_b64 is not None:
                await anyio.to_thread.run_sync(
                    functools.partial(write_base64_file, video.data_b64, tmp, max_bytes=self.settings.max_download_bytes)
                )
                await self._finish_file(job, tmp, provider_url=None, expires=None)
                return "done"
            refreshed = False
            while True:
                url = video.url
                assert url is not None
                try:
                    fetch = functools.partial(
                        download_to_file, self.client, self.guard, url, tmp, max_bytes=self.settings.max_download_bytes,
                        deadline_s=self.settings.fetch_timeout_s,
                    )
                    await self.retry.run(fetch, on_wait=self._waiting(job), until=until)
                    break
                except Expired:
                    if refreshed:
                        raise
                    refreshed = True
                    st = await self.retry.run(lambda: provider.status(ctx, op), on_wait=self._waiting(job), until=until)
                    if st.state != "completed" or st.video is None or not st.video.url:
                        raise
                    video = st.video
                    await self._set(job, video_url=video.url, video_url_expires_at=video.url_expires_at)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        await self._finish_file(job, tmp, provider_url=video.url, expires=video.url_expires_at)
        return "done"

    # -- publishing ------------------------------------------------------------------------

    async def _finish_file(
        self, job: Job, tmp: Path, *, provider_url: str | None, expires: float | None, samples: Samples | None = None
    ) -> None:
        job_dir = await anyio.to_thread.run_sync(self.job_dir, job.id)
        final = job_dir / "video.mp4"
        if job.ctx is not None and job.ctx.request.tool == "extend_video":
            from ..media.extend import append_continuation

            # the source followed by its continuation (a native extension already is the whole video)
            try:
                tmp = await anyio.to_thread.run_sync(append_continuation, job.ctx.request, tmp, limiter=self._publish_limiter)
            except (ValueError, OSError, av.error.FFmpegError) as exc:
                raise ProviderError(f"the continuation could not be joined to the video: {exc}", retryable=False) from exc
            samples = None
        try:
            try:
                # checks before the rename: a broken file never gets the final name
                result = await anyio.to_thread.run_sync(self.publish, tmp, job_dir, samples, limiter=self._publish_limiter)
            except ValueError as exc:
                raise ProviderError(f"the result is not a decodable MP4: {exc}", retryable=False) from exc
            if job.stop.is_set():
                raise Lost(job.id)
            await self._set(job)  # still ours (a store fault is waited out), so the file may take its name
            await anyio.to_thread.run_sync(os.replace, tmp, final)
        finally:
            await remove_file(tmp)
        result["video"]["path"] = str(final)
        result["video"]["provider_url"] = provider_url
        result["video"]["provider_url_expires_at"] = expires
        await self._set(job, status="succeeded", stage="done", progress=1.0, result=result, video_url=None,
                  video_url_expires_at=None, lease_s=None)

    def job_dir(self, job_id: str) -> Path:
        d = self.settings.output_dir / job_id
        d.mkdir(parents=True, exist_ok=True)
        return d


__all__ = ["CREATE_CONCURRENCY", "JobRunner", "Lost"]
