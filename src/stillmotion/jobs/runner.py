"""Drives the jobs this process owns to an end, and takes over jobs whose owner is gone.

Ownership (see job_store.py): a job created by a tool call here is ours at once; a start-up scan and
a periodic scan claim unfinished jobs with no owner, a lapsed lease or an owner known to be gone;
a heartbeat renews our leases and stops any job we lost. Every write made while driving a job is
conditional on still owning it (jobs/owned.py: `OwnedWrites.set` raises `Lost` otherwise, which
ends that job's task quietly).

A remote job is a stage table, each handler returning the next stage:

    new         -> submit   (jobs/remote.py: the create request, in a create slot)
    submitting  -> recover  (jobs/remote.py: a create whose answer was lost)
    polling     -> poll     (jobs/remote.py: every poll_interval_ms until done or poll_timeout_ms)
    downloading -> download (jobs/delivery.py: stream to a temp file unique to this attempt, check,
                             publish, rename)

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
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import httpx

from ..errors import (
    Cancelled,
    ProviderError,
    StillmotionError,
)
from ..media.net import UrlGuard
from ..media.publish import Samples
from ..ops import logs, metrics
from ..plan.requests import GenerationRequest
from ..providers.base import JobContext, Provider
from ..settings import Settings
from .async_store import AsyncJobStore, StoreUnavailable, unavailable
from .delivery import Delivery, Publisher
from .job_store import JobStore
from .owned import Job, Lost, OwnedWrites, count_finished
from .ownership import OwnerId, new_owner_id, owner_is_gone, register_live, unregister_live
from .remote import CREATE_CONCURRENCY, RemoteStages
from .retry import RetryPolicy
from .rows import JobRow

log = logging.getLogger(__name__)

WATCH_S = 0.5
"""How often the store is read for changes other processes made (cancel, progress, results)."""
WATCH_MARGIN_S = 2.0
"""Changes are re-read this far back: a write committed late with an earlier timestamp is not missed."""

ProviderFactory = Callable[[str, str], Provider]
"""(catalog provider, route) -> Provider."""
LocalRender = Callable[[JobContext, Path, Callable[[float], None]], tuple[list[str], Samples]]
"""Renders into the path, reporting progress 0-1; returns extra warnings and the poster samples."""


BLOCKING_THREADS = 8
"""anyio's default worker threads (short blocking calls); CPU work has limiters of its own."""


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
        self.provider_factory = provider_factory
        self.local_render = local_render
        self.on_change = on_change
        self.owner_id = owner or new_owner_id()
        self.owner = str(self.owner_id)
        self.lease_s = settings.lease_ms / 1000
        self.retry = RetryPolicy(base_s=settings.retry_base_ms / 1000, max_retries=settings.max_retries)
        if sleep is not None:
            self.retry.sleep = sleep
        self.writes = OwnedWrites(self.db, self.owner, self.lease_s, self._written)
        self.delivery = Delivery(
            settings=settings, client=client, retry=self.retry, writes=self.writes, publish=publish, owner_id=self.owner_id,
            guard=UrlGuard(settings.allow_private_network, frozenset(settings.trusted_origins())),
        )
        self.remote = RemoteStages(retry=self.retry, writes=self.writes, delivery=self.delivery)
        self._tg: anyio.abc.TaskGroup | None = None
        self._jobs: dict[str, Job] = {}
        self._events: dict[str, anyio.Event] = {}
        self._local_limiter = anyio.CapacityLimiter(settings.local_concurrency)
        # renders are long: threads of their own, not anyio's default ones (BLOCKING_THREADS)
        self._render_threads = anyio.CapacityLimiter(settings.local_concurrency)
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

    def _written(self, job: Job, row: JobRow) -> None:
        """An owned write landed: the change is ours (the watch skips it) and its waiters wake."""
        self._seen[job.id] = row.updated_at
        self._notify(job.id)

    def change_event(self, job_id: str) -> anyio.Event:
        """Set at the job's next change (own write, cancel, render progress, or another process's
        write seen by the store watch). Take it BEFORE reading the row: a change after the read
        then cannot be missed."""
        ev = self._events.get(job_id)
        if ev is None:
            ev = self._events[job_id] = anyio.Event()
        return ev

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
            count_finished(ended, bool(ended.billed))
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
                self.delivery.clean_leftovers(row.id)
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
                job.provider = self.provider_factory(self.remote.provider_name(row.model), row.route)
                stage: str = row.stage
                handlers = {
                    "new": self.remote.submit,
                    "submitting": self.remote.recover,
                    "polling": self.remote.poll,
                    "downloading": self.delivery.download,
                }
                while stage != "done":
                    stage = await handlers[stage](job)
        except Lost:
            log.debug("job %s (user %s): no longer ours", job.id, job.row.user_id)
        except StoreUnavailable as fault:
            await self.writes.give_up(job, fault)
        except StillmotionError as err:
            if not job.stop.is_set():
                await self.writes.fail(job, err)
        except Exception as exc:
            raw = unavailable(exc)
            if raw is not None:  # a store fault raised on a thread (render progress), or a full disk
                await self.writes.give_up(job, raw)
            else:  # a bug must still end the job, with a message
                log.exception("job %s (user %s) crashed", job.id, job.row.user_id)
                if not job.stop.is_set():
                    await self.writes.fail(job, ProviderError(f"internal error: {type(exc).__name__}: {exc}"))

    # -- local ---------------------------------------------------------------------------

    async def _run_local(self, job: Job) -> None:
        assert job.ctx is not None
        limiter = self._local_limiter
        if limiter.available_tokens < 1:  # say what the job waits for (cleared when it starts)
            ahead = limiter.borrowed_tokens + limiter.statistics().tasks_waiting
            total = int(limiter.total_tokens)
            await self.writes.set(job, status_detail=f"queued: waiting for a local render slot ({ahead} local job(s) ahead; "
                                               f"{total} at a time, STILLMOTION_LOCAL_CONCURRENCY={total})")
        async with limiter:
            await self.writes.set(job, status="running", stage="polling", progress=0.0, lease_s=self.lease_s)
            tmp = self.delivery.tmp(job.id, "render")
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
                await self.writes.set(job, warnings=list(dict.fromkeys([*job.row.warnings, *extra])))
        await self.delivery.finish_file(job, tmp, provider_url=None, expires=None, samples=samples)


__all__ = ["CREATE_CONCURRENCY", "JobRunner", "Lost"]
