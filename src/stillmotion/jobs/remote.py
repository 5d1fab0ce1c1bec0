"""A remote job's stages before its download: the create request, its recovery, the polls.

    new         -> submit   (create request, in a create slot, with at least half a lease left)
    submitting  -> recover  (a create whose answer was lost, or sent by a process that died)
    polling     -> poll     (every poll_interval_ms until done or poll_timeout_ms; when many jobs
                             poll one provider task list, one list request answers them: batch.py)

Each handler returns the next stage; `downloading` is jobs/delivery.py's. Every retry goes through
the runner's `RetryPolicy`, which writes what it is waiting for into the job's `status_detail`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Awaitable
from pathlib import Path

import anyio
import anyio.to_thread

from ..errors import AmbiguousSubmission, Interrupted, JobTimeout, StillmotionError
from ..providers.base import StartResult, Status
from .batch import StatusBatcher
from .caps import LeaseShort, cap_for
from .delivery import Delivery
from .owned import Job, OwnedWrites
from .retry import RetryPolicy

log = logging.getLogger(__name__)

CREATE_DEFER_S = 0.01
"""How long a new remote job waits before building its create request (see submit)."""
CREATE_CONCURRENCY = 8
"""Create requests in flight at once, across all jobs (500 submitted at once: 2.6x less peak RSS)."""
ANSWER_FILE = ".create-answer.json"
"""In a job's output folder while its create's answer is not yet in the store (see started)."""


class RemoteStages:
    def __init__(self, *, retry: RetryPolicy, writes: OwnedWrites, delivery: Delivery) -> None:
        self.retry = retry
        self.writes = writes
        self.delivery = delivery
        self.settings = delivery.settings
        # A create request holds its images in memory three times over (bytes, base64, JSON) until it
        # is answered; hundreds submitted at once would hold them all and crowd out everything else.
        self.create_slots = anyio.CapacityLimiter(CREATE_CONCURRENCY)
        self.batcher = StatusBatcher()

    def provider_name(self, model: str) -> str:
        from ..catalog import MODELS

        return MODELS[model].provider

    async def submit(self, job: Job) -> str:
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
            async with self.create_slots:
                t0 = time.monotonic()
                # (a retry's status_detail stays until the create is answered)
                if cap is None:
                    await self.writes.set(job, stage="submitting", status_detail=job.row.status_detail, lease_s=self.writes.lease_s)
                else:  # raises CapReached (a ConcurrencyLimited: the job waits queued, no attempt limit)
                    await self.writes.set_capped(
                        job, cap, stage="submitting", status_detail=job.row.status_detail, lease_s=self.writes.lease_s
                    )
                if time.monotonic() - t0 > self.writes.lease_s / 2 or job.stop.is_set():
                    # paused or starved while marking: the lease may be gone; never send on a short lease
                    await self.writes.set(job, stage="new", status_detail=job.row.status_detail)
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
                    await self.writes.set(job, stage="new", status_detail=job.row.status_detail)
                    raise

        try:
            started = await self.retry.run(attempt, on_wait=self.writes.waiting(job, stage="new", status="queued"))
        except AmbiguousSubmission:
            job.lost_answer = True
            return "submitting"
        return await self.started(job, started)

    async def started(self, job: Job, started: StartResult) -> str:
        """Record the create's answer. The provider's task exists from now on, so its answer must
        never be lost to a store fault: it is kept on disk first (the job's output folder, which
        every process of the store shares), the write is tried until it lands or the job changes
        hands, and whoever resumes the job at `submitting` reads the kept answer (`_recover`)."""
        kept = started.completed is None and await self.keep_answer(job.id, started)
        warnings = list(dict.fromkeys([*job.row.warnings, *started.warnings]))
        await self.writes.set(
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
            await anyio.to_thread.run_sync(self.answer_file(job.id).unlink, True)
        if started.completed is not None:
            return await self.delivery.on_status(job, started.completed)
        return "polling"

    async def recover(self, job: Job) -> str:
        """submitting -> ask the provider for the task whose create answer was lost (never resubmit
        where it cannot be looked up: Wan and xAI end `interrupted`)."""
        assert job.provider is not None and job.ctx is not None
        provider, ctx = job.provider, job.ctx
        kept = await anyio.to_thread.run_sync(self.kept_answer, job.id)
        if kept is not None:  # answered, but the store could not record it in time: no need to ask
            log.info("job %s (user %s): resuming from the create answer kept on disk", job.id, job.row.user_id)
            return await self.started(job, kept)
        started = await self.retry.run(lambda: provider.recover(ctx), on_wait=self.writes.waiting(job))
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
        return await self.started(job, started)

    def answer_file(self, job_id: str) -> Path:
        return self.settings.output_dir / job_id / ANSWER_FILE

    async def keep_answer(self, job_id: str, started: StartResult) -> bool:
        """The create's answer, durably on disk before the store is asked to record it (False when
        the disk refused: then only the store write keeps it)."""
        data = json.dumps({"operation": started.operation, "provider_task_id": started.provider_task_id,
                           "warnings": started.warnings}).encode()

        def write() -> None:
            path = self.answer_file(job_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{ANSWER_FILE}.{self.delivery.owner_id.file_tag}.tmp")
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

    def kept_answer(self, job_id: str) -> StartResult | None:
        try:
            data = json.loads(self.answer_file(job_id).read_bytes())
            return StartResult(operation=dict(data["operation"]), provider_task_id=data.get("provider_task_id"),
                               warnings=list(data.get("warnings") or []))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    async def poll(self, job: Job) -> str:
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
        on_wait = self.writes.waiting(job)

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
                        await self.writes.set(job, status="running", progress=st.progress)
                    elif job.row.status_detail:
                        await self.writes.set(job)  # the retry is over: clear its detail
                    continue
                return await self.delivery.on_status(job, st)
