"""Drives every job to an end, in the background, and picks up where a crash left off.

One task per unfinished job. For a remote job: mark `submitting`, create, store the operation,
poll every `poll_interval_ms` until done or `poll_timeout_ms`, download, probe, publish. Local
jobs render on a worker thread (at most `local_concurrency` at once). Retries live here:
429 and 5xx are retried with exponential backoff and jitter, honouring Retry-After; a
concurrency limit keeps the job queued; a quota answer ends it at once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import httpx

from ..errors import (
    AmbiguousSubmission,
    Cancelled,
    ConcurrencyLimited,
    Expired,
    Interrupted,
    JobTimeout,
    ProviderError,
    RateLimited,
    StillmotionError,
)
from ..media.net import UrlGuard, download_to_file
from ..media.publish import Samples
from ..pricing import actual_usd
from ..providers.base import JobContext, Provider, StartResult, Status, VideoResult
from ..requests import GenerationRequest
from ..settings import Settings
from .store import JobRow, JobStore

log = logging.getLogger(__name__)

CREATE_DEFER_S = 0.01
"""How long a new remote job waits before building its create request (see _submit)."""
CREATE_CONCURRENCY = 8
"""Create requests in flight at once, across all jobs (500 submitted at once: 2.6x less peak RSS)."""

ProviderFactory = Callable[[str, str], Provider]
"""(catalog provider, route) -> Provider."""
LocalRender = Callable[[JobContext, Path, Callable[[float], None]], tuple[list[str], Samples]]
"""Renders into the path, reporting progress 0-1; returns extra warnings and the poster samples."""
Publisher = Callable[[Path, Path, Samples | None], dict[str, Any]]
"""(video path, job dir, samples) -> result dict (video facts, poster, last frame); ValueError if undecodable."""


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
    ) -> None:
        self.store = store
        self.settings = settings
        self.client = client
        self.provider_factory = provider_factory
        self.local_render = local_render
        self.publish = publish
        self.on_change = on_change
        self.guard = UrlGuard(settings.allow_private_network, frozenset(settings.trusted_origins()))
        self._tg: anyio.abc.TaskGroup | None = None
        self._scopes: dict[str, anyio.CancelScope] = {}
        self._events: dict[str, anyio.Event] = {}
        self._local_limiter = anyio.CapacityLimiter(settings.local_concurrency)
        # Publishing (decode check, poster, last frame) is CPU work: more at once than there are
        # cores only adds contention and memory. A FIFO queue also finishes the earliest jobs first.
        self._publish_limiter = anyio.CapacityLimiter(max(1, os.cpu_count() or 1))
        # A create request holds its images in memory three times over (bytes, base64, JSON) until it
        # is answered; hundreds submitted at once would hold them all and crowd out everything else.
        self._create_slots = anyio.CapacityLimiter(CREATE_CONCURRENCY)
        self._progress_mark: dict[str, float] = {}
        self._stopping = False
        self._changed: set[str] = set()
        self._changes_ready = anyio.Event()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, tg: anyio.abc.TaskGroup) -> None:
        self._tg = tg
        if self.on_change is not None:
            tg.start_soon(self._send_notifications, name="resource notifications")
        for row in self.store.unfinished():
            log.info("resuming job %s (%s, stage %s)", row.id, row.status, row.stage)
            self.launch(row.id)

    def stop(self) -> None:
        """Shutdown: render threads stop at their next frame (their jobs resume on the next start)."""
        self._stopping = True

    def launch(self, job_id: str) -> None:
        assert self._tg is not None, "runner not started"
        self._tg.start_soon(self._drive, job_id, name=f"job {job_id}")

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
                await self.on_change(job_id)

    async def wait_change(self, job_id: str, timeout: float) -> None:
        ev = self._events.setdefault(job_id, anyio.Event())
        with anyio.move_on_after(max(0.0, timeout)):
            await ev.wait()

    def _set(self, job_id: str, **fields: Any) -> JobRow | None:
        row = self.store.update_unless_terminal(job_id, **fields)
        self._notify(job_id)
        return row

    def _fail(self, job_id: str, err: StillmotionError) -> None:
        log.info("job %s failed: %s (%s)", job_id, err.kind, err.message)
        self._set(job_id, status="failed", stage="done", error=err.to_dict())

    # -- cancel --------------------------------------------------------------------------

    def cancel(self, job_id: str) -> JobRow | None:
        """End a job now. Returns the row, or None if it had already ended."""
        row = self.store.get(job_id)
        remote = row is not None and row.route != "local"
        message = (
            "cancelled by request; stillmotion stopped polling. The provider has no cancel for running tasks, "
            "so it may still finish and bill this one."
            if remote
            else "cancelled by request."
        )
        ended = self.store.update_unless_terminal(job_id, status="cancelled", stage="done", error=Cancelled(message).to_dict())
        scope = self._scopes.get(job_id)
        if scope is not None:
            scope.cancel()
        self._notify(job_id)
        return ended

    # -- driving -------------------------------------------------------------------------

    async def _drive(self, job_id: str) -> None:
        with anyio.CancelScope() as scope:
            self._scopes[job_id] = scope
            try:
                row = self.store.get(job_id)
                if row is None or row.terminal:
                    return
                ctx = JobContext(job_id, GenerationRequest.model_validate(row.request))
                if row.route == "local":
                    await self._run_local(row, ctx)
                else:
                    await self._run_remote(row, ctx)
            except StillmotionError as err:
                self._fail(job_id, err)
            except Exception as exc:  # a bug must still end the job, with a message
                log.exception("job %s crashed", job_id)
                self._fail(job_id, ProviderError(f"internal error: {type(exc).__name__}: {exc}"))
            finally:
                self._scopes.pop(job_id, None)

    # -- local ---------------------------------------------------------------------------

    async def _run_local(self, row: JobRow, ctx: JobContext) -> None:
        job_dir = self.job_dir(row.id)
        async with self._local_limiter:
            if self._terminal(row.id):
                return
            self._set(row.id, status="running", stage="polling", progress=0.0)
            tmp = job_dir / ".render.mp4.part"
            loop = asyncio.get_running_loop()

            def progress(p: float) -> None:
                # Runs on the render thread. It must never block on the event loop: at shutdown the
                # loop is gone, and a thread waiting for it would keep the process alive forever.
                if self._stopping:
                    raise Cancelled("the server is stopping; the render restarts with the server")
                last = self._progress_mark.get(row.id, -1.0)
                if p - last >= 0.05 or p >= 1.0:
                    self._progress_mark[row.id] = p
                    self.store.set_progress(row.id, round(p, 4))
                    with contextlib.suppress(RuntimeError):  # loop already closed
                        loop.call_soon_threadsafe(self._notify, row.id)
                if self._terminal(row.id):
                    raise Cancelled("cancelled")

            try:
                extra, samples = await anyio.to_thread.run_sync(
                    self.local_render, ctx, tmp, progress, abandon_on_cancel=True
                )
            except Cancelled:
                tmp.unlink(missing_ok=True)
                return
            if extra:
                current = self.store.get(row.id)
                if current is not None:
                    self.store.update_unless_terminal(row.id, warnings=list(dict.fromkeys([*current.warnings, *extra])))
        await self._finish_file(row.id, tmp, provider_url=None, expires=None, samples=samples)

    def _terminal(self, job_id: str) -> bool:
        row = self.store.get(job_id)
        return row is None or row.terminal

    # -- remote --------------------------------------------------------------------------

    async def _backoff(self, attempt: int, retry_after: float | None) -> None:
        base = self.settings.retry_base_ms / 1000
        delay = retry_after if retry_after is not None else min(60.0, base * (2**attempt)) * (0.5 + random.random() / 2)
        await anyio.sleep(delay)

    async def _run_remote(self, row: JobRow, ctx: JobContext) -> None:
        provider = self.provider_factory(self._provider_name(row.model), row.route)
        req = ctx.request
        op = row.operation
        if row.stage in ("new", "submitting"):
            started = await self._submit(row, ctx, provider)
            if started is None:
                return
            op = started.operation
            if started.completed is not None:
                await self._handle_status(row.id, started.completed, provider, ctx, op)
                return
        assert op is not None
        row = self.store.get(row.id) or row
        if row.stage == "downloading" and row.result and row.result.get("pending_video"):
            pv = row.result["pending_video"]
            await self._download(row.id, VideoResult(url=pv.get("url"), url_expires_at=pv.get("expires")), provider, ctx, op)
            return
        deadline_base = row.updated_at if row.stage == "polling" else time.time()
        submitted_at = (row.operation or {}).get("_submitted_at", deadline_base)
        failures = 0
        interval = req.poll_interval_ms / 1000
        # Polls start every `interval` (start to start), so a slow answer does not push every later
        # poll back: under load the poll that sees the task done comes at most one interval late.
        next_poll = time.monotonic() + interval
        while True:
            if time.time() - submitted_at > req.poll_timeout_ms / 1000:
                raise JobTimeout(
                    f"the provider did not finish within poll_timeout_ms={req.poll_timeout_ms}; "
                    "the task may still complete on the provider's side."
                )
            await anyio.sleep(max(0.0, next_poll - time.monotonic()))
            # never two polls closer than one interval, also after an answer later than that
            next_poll = max(next_poll, time.monotonic()) + interval
            if self._terminal(row.id):
                return
            try:
                st = await provider.status(ctx, op)
            except RateLimited as err:
                failures += 1
                if failures > self.settings.max_retries * 4:
                    raise
                await self._backoff(failures, err.retry_after)
                next_poll = time.monotonic() + interval  # as before: a full interval after the backoff
                continue
            except StillmotionError as err:
                if err.retryable and failures < self.settings.max_retries:
                    failures += 1
                    await self._backoff(failures, err.retry_after)
                    next_poll = time.monotonic() + interval
                    continue
                raise
            failures = 0
            if st.state == "pending":
                if st.progress is not None:
                    self._set(row.id, status="running", progress=st.progress)
                continue
            await self._handle_status(row.id, st, provider, ctx, op)
            return

    def _provider_name(self, model: str) -> str:
        from ..catalog import MODELS

        return MODELS[model].provider

    async def _submit(self, row: JobRow, ctx: JobContext, provider: Provider) -> StartResult | None:
        attempt = 0
        started: StartResult | None = None
        if row.stage == "submitting":
            # a crash (or a lost answer) between the create request and storing its answer
            started = await self._recover(row.id, ctx, provider)
            if started is None:
                raise Interrupted(
                    "the server stopped while this job's create request was in flight; the provider may have "
                    "started (and may bill) the task, but it cannot be looked up, so it was not resubmitted."
                )
        else:
            # Building a create request (reading the images, base64, JSON: ~15 ms of CPU on the event
            # loop for a 5 MB PNG) at once would delay the answer of the tool call that submitted this
            # job; a few ms later that answer is out (measured: 2x lower p50, 3x lower p99).
            await anyio.sleep(CREATE_DEFER_S)
        while started is None:
            if self._terminal(row.id):
                return None
            self._set(row.id, stage="submitting")
            try:
                async with self._create_slots:
                    started = await provider.start(ctx)
            except ConcurrencyLimited as err:
                self._set(row.id, stage="new", status="queued")
                log.info("job %s waits for a provider slot: %s", row.id, err.message)
                attempt += 1
                await self._backoff(min(attempt, 5), err.retry_after or None)
                continue
            except AmbiguousSubmission:
                started = await self._recover(row.id, ctx, provider)
                if started is None:
                    raise Interrupted(
                        "the create request got no answer; the provider may have started (and may bill) the task, "
                        "but it cannot be looked up, so it was not resubmitted."
                    ) from None
                break
            except StillmotionError as err:
                self._set(row.id, stage="new")
                if err.retryable and attempt < self.settings.max_retries:
                    attempt += 1
                    await self._backoff(attempt, err.retry_after)
                    continue
                raise
        op = dict(started.operation)
        op["_submitted_at"] = time.time()
        started.operation = op
        warnings = list(dict.fromkeys([*(self.store.get(row.id) or row).warnings, *started.warnings]))
        self._set(
            row.id,
            stage="polling",
            status="running",
            operation=op,
            provider_task_id=started.provider_task_id,
            warnings=warnings,
            progress=None,
        )
        return started

    async def _recover(self, job_id: str, ctx: JobContext, provider: Provider) -> StartResult | None:
        """provider.recover, retried like any other call when the provider answers 429/5xx."""
        attempt = 0
        while True:
            try:
                return await provider.recover(ctx)
            except StillmotionError as err:
                if err.retryable and attempt < self.settings.max_retries and not self._terminal(job_id):
                    attempt += 1
                    await self._backoff(attempt, err.retry_after)
                    continue
                raise

    async def _handle_status(
        self, job_id: str, st: Status, provider: Provider, ctx: JobContext, op: dict[str, Any]
    ) -> None:
        if st.actual is not None:
            self.store.set_actual_cost(job_id, actual_usd(st.actual, self.settings.prices), st.actual.to_dict())
        if st.state == "failed":
            raise st.error or ProviderError("the provider reported a failure without a reason")
        assert st.video is not None
        self.store.update_unless_terminal(job_id, provider_done_at=time.time())
        await self._download(job_id, st.video, provider, ctx, op)

    async def _download(
        self, job_id: str, video: VideoResult, provider: Provider, ctx: JobContext, op: dict[str, Any]
    ) -> None:
        job_dir = self.job_dir(job_id)
        tmp = job_dir / ".download.mp4.part"
        pending = {"pending_video": {"url": video.url, "expires": video.url_expires_at}} if video.url else None
        self._set(job_id, status="downloading", stage="downloading", result=pending)
        if video.data_b64 is not None:
            await anyio.to_thread.run_sync(_write_b64, video.data_b64, tmp)
            await self._finish_file(job_id, tmp, provider_url=None, expires=None)
            return
        assert video.url is not None
        attempt = 0
        refreshed = False
        while True:
            try:
                await download_to_file(self.client, self.guard, video.url, tmp, max_bytes=self.settings.max_download_bytes)
                break
            except Expired:
                if refreshed:
                    raise
                refreshed = True
                st = await provider.status(ctx, op)
                if st.state != "completed" or st.video is None or not st.video.url:
                    raise
                video = st.video
            except StillmotionError as err:
                if err.retryable and attempt < self.settings.max_retries:
                    attempt += 1
                    await self._backoff(attempt, None)
                    continue
                raise
        await self._finish_file(job_id, tmp, provider_url=video.url, expires=video.url_expires_at)

    async def _finish_file(
        self, job_id: str, tmp: Path, *, provider_url: str | None, expires: float | None, samples: Samples | None = None
    ) -> None:
        if self._terminal(job_id):
            tmp.unlink(missing_ok=True)
            return
        job_dir = self.job_dir(job_id)
        final = job_dir / "video.mp4"
        try:
            result = await anyio.to_thread.run_sync(
                self._publish_file, tmp, final, job_dir, samples, limiter=self._publish_limiter
            )
        except ValueError as exc:
            raise ProviderError(f"the result is not a decodable MP4: {exc}", retryable=False) from exc
        result["video"]["provider_url"] = provider_url
        result["video"]["provider_url_expires_at"] = expires
        self._set(job_id, status="succeeded", stage="done", progress=1.0, result=result)

    def _publish_file(self, tmp: Path, final: Path, job_dir: Path, samples: Samples | None) -> dict[str, Any]:
        info = self.publish(tmp, job_dir, samples)  # checks before the rename: a broken file never gets the final name
        os.replace(tmp, final)
        info["video"]["path"] = str(final)
        return info

    def job_dir(self, job_id: str) -> Path:
        d = self.settings.output_dir / job_id
        d.mkdir(parents=True, exist_ok=True)
        return d


def _write_b64(data: str, dest: Path) -> None:
    with open(dest, "wb") as fh:
        step = 4 * 1024 * 1024
        for i in range(0, len(data), step):
            fh.write(base64.b64decode(data[i : i + step]))
        fh.flush()
        os.fsync(fh.fileno())
