"""The application without MCP: submit, check, cancel and list jobs. Tools are thin wrappers.

Holds the store, the shared httpx client and the runner for the life of the server.
"""

from __future__ import annotations

import functools
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import httpx

from . import __version__
from .errors import InvalidInput, Unavailable
from .http.users import Principal, current
from .jobs import gc
from .jobs.async_store import AsyncJobStore, StoreUnavailable, unavailable
from .jobs.backends import open_for_settings
from .jobs.gc import Deletion, delete_job
from .jobs.ownership import OwnerId, new_owner_id
from .jobs.runner import JobRunner
from .jobs.spend import BudgetRule
from .jobs.store import (
    DuplicateIdempotencyKey,
    JobRow,
    JobStore,
    args_fingerprint,
    new_job_id,
    validate_job_id,
)
from .media.images import admission_limiter
from .media.publish import Samples, publish_video
from .ops import metrics
from .ops.memory import bound_malloc
from .plan.arguments import RequestArgs
from .plan.dryrun import preview_create_request
from .plan.intake import Intake
from .plan.requests import (
    GenerationRequest,
)
from .plan.validation import (
    Plan,
    plan_request,
)
from .pricing import Cost
from .providers.base import JobContext
from .providers.blob import BlobClient, BlobJanitor, delete_quietly, host_inputs
from .providers.local import render_job
from .providers.registry import make_provider
from .scrub import install_log_scrubber
from .settings import Settings

log = logging.getLogger(__name__)

ProgressFn = Callable[[JobRow], Awaitable[None]]
WAIT_RECHECK_S = 10.0
"""A waiting check_job re-reads its job at least this often even without a change event (a safety
net only: every change wakes it; before, it re-read every second, 500 reads/s with 500 waiters)."""
RESOURCE_FILES = {"video.mp4", "poster.png", "last-frame.png"}


def user_agent(owner: OwnerId | str) -> str:
    """Every provider request says which process sent it (the fakes attribute requests by it)."""
    return f"stillmotion/{__version__} (instance {owner})"


def _drop_join_inputs(
    db: AsyncJobStore, settings: Settings, on_change: Callable[[str], Coroutine[Any, Any, None]] | None
) -> Callable[[str], Coroutine[Any, Any, None]]:
    """The runner's change callback, plus: a join_clips job that ended (succeeded, failed or
    cancelled, queued or running) has its clip copies deleted (a job's result never reads them)."""

    async def changed(job_id: str) -> None:
        if on_change is not None:
            await on_change(job_id)
        folder = settings.inputs_dir / job_id
        if not (folder / "clip_0.mp4").exists():  # one stat: only a join's folder has clips
            return
        row = await db.get(job_id)
        if row is not None and row.terminal and row.tool == "join_clips":
            await anyio.to_thread.run_sync(functools.partial(shutil.rmtree, folder, ignore_errors=True))
            log.info("job %s ended: its clip copies were deleted", job_id)

    return changed


def _same_or_error(existing: JobRow, fingerprint: str) -> JobRow:
    """An idempotency key's job answers a replay only with the same arguments."""
    if existing.args_hash != fingerprint:
        raise InvalidInput(
            "idempotency_key",
            f"was already used for job {existing.id} with different arguments; the same key must come with "
            "the same arguments (use a new key for a new request).",
            f"the arguments of job {existing.id}, or a new key",
        )
    return existing


@dataclass
class NewJob:
    """What a tool's preparation hands `Service.create_job`: the request to store, its price, its warnings."""

    request: GenerationRequest
    cost: dict[str, Any]
    warnings: list[str]


Prepare = Callable[[str, Path], Awaitable[NewJob]]
"""`(job_id, input folder) -> NewJob`: keeps the job's inputs in the folder (see `Service.create_job`)."""

ACTIVE: list[Service] = []
"""Services running in this process (a SIGTERM hands their jobs over, see cli._serve)."""


@dataclass
class Service:
    settings: Settings
    store: JobStore
    """The synchronous face (threads only); everything on the event loop uses `db`."""
    client: httpx.AsyncClient
    runner: JobRunner
    db: AsyncJobStore
    """The asynchronous face of `store` (jobs/async_store.py): what everything on the loop uses."""
    janitor: BlobJanitor | None = None

    @classmethod
    def create(
        cls,
        settings: Settings,
        client: httpx.AsyncClient,
        on_change: Callable[[str], Coroutine[Any, Any, None]] | None = None,
        owner: OwnerId | None = None,
    ) -> Service:
        install_log_scrubber()
        bound_malloc()
        settings.home.mkdir(parents=True, exist_ok=True)
        settings.output_dir.mkdir(parents=True, exist_ok=True)
        store = open_for_settings(settings)
        owner = owner or new_owner_id()
        client.headers["User-Agent"] = user_agent(owner)

        def local(ctx: JobContext, out: Path, progress: Callable[[float], None]) -> tuple[list[str], Samples]:
            return render_job(ctx, out, progress, hold_file=settings.test_hold_file)

        db = AsyncJobStore(store)
        janitor = BlobJanitor(db, settings, client)
        runner = JobRunner(
            store=store,
            settings=settings,
            client=client,
            provider_factory=lambda provider, route: make_provider(client, settings, provider, route),
            local_render=local,
            publish=publish_video,
            on_change=janitor.wrap(_drop_join_inputs(db, settings, on_change)),
            owner=owner,
            db=db,
        )
        return cls(settings, store, client, runner, db, janitor)

    async def start(self, tg: anyio.abc.TaskGroup) -> None:
        if self.janitor is not None:
            self.janitor.start(tg)
        await self.runner.start(tg)
        if gc.enabled(self.settings):  # retention and the disk cap: now, then about hourly
            tg.start_soon(gc.run_periodically, self.db, self.settings, self.client, name="gc")
        ACTIVE.append(self)

    def stop(self) -> None:
        """Every job task stops (call before cancelling the task group that runs them)."""
        self.runner.stop()

    def close(self) -> int:
        """After every job task stopped: release this process's jobs, close the store, and (a stdio
        server with STILLMOTION_BACKGROUND=1) make sure a background worker finishes them. Returns
        how many unfinished jobs were released."""
        ACTIVE[:] = [s for s in ACTIVE if s is not self]
        try:
            released = self.runner.release()
        finally:
            self.db.close_now()
        if released and self.settings.transport == "stdio" and self.settings.background:
            from .jobs.worker_lock import ensure_worker

            try:
                ensure_worker(self.settings)
            except OSError:
                log.exception("could not start the background worker; the jobs resume with the next server")
        return released

    async def aclose(self) -> int:
        """`close()` off the event loop (releasing jobs and closing the store may wait on the store)."""
        return await anyio.to_thread.run_sync(self.close)

    # -- submit --------------------------------------------------------------------------

    def estimate(self, plan: Plan, tool: str) -> Cost:
        """The cost of a planned request before anything is sent (extend_video: its continuation's)."""
        tool = "animate_image" if tool == "extend_video" else tool
        return self.settings.prices.estimate(
            model=plan.spec.id, route=plan.route, tool=tool, duration=plan.duration, options=plan.options
        )

    def budget_rule(self) -> BudgetRule | None:
        s = self.settings
        return BudgetRule(s.budget_usd, s.budget_period) if s.budget_usd is not None else None

    def user_budget_rule(self, user: str | None = None) -> BudgetRule | None:
        """STILLMOTION_USER_BUDGET_USD for `user` (default: the asker)."""
        s = self.settings
        if s.user_budget_usd is None:
            return None
        return BudgetRule(s.user_budget_usd, s.budget_period, user if user is not None else current().user)

    async def over_budget(self, estimated_usd: float) -> bool:
        """Whether a job of this estimate would pass what is left of the server's or the asker's budget."""
        for rule in (self.budget_rule(), self.user_budget_rule()):
            if rule is None:
                continue
            if rule.user is None:
                left = (await self.db.spend(rule, rule.period))["budget"]["left_usd"]
            else:
                left = (await self.db.spend(None, rule.period, user=rule.user, user_budget=rule))["budget"]["left_usd"]
            if left is not None and estimated_usd > left:
                return True
        return False

    @property
    def asker(self) -> Principal:
        """Who the request being handled is for (users.py)."""
        return current()

    async def find(self, job_id: str) -> JobRow | None:
        """THE place a job id (or a `stillmotion://jobs/<id>/...` input) is resolved for the asker:
        another user's job reads as no job, exactly like an unknown id (admins: every job)."""
        return await self.db.get(job_id, user=self.asker.scope)

    async def by_key(self, idempotency_key: str) -> JobRow | None:
        """The asker's own job made with this idempotency key (keys are per user)."""
        return await self.db.by_idempotency_key(idempotency_key, user=self.asker.user)

    def plan(self, args: RequestArgs) -> Plan:
        """Every rule that needs no I/O checked, the route chosen (validation.plan_request): pure."""
        return plan_request(args, self.settings)

    @property
    def intake(self) -> Intake:
        """Where a request's inputs are fetched, checked and kept (plan/intake.py)."""
        return Intake(self.settings, self.client, self.resource_path)

    async def dry_run(self, args: RequestArgs, plan: Plan | None = None) -> tuple[Plan, Cost, dict[str, Any]]:
        """Every check, the route, the estimate and the create request that would be sent, without
        creating a job, writing an input, uploading anything or contacting a provider."""
        plan = plan or self.plan(args)
        intake = self.intake
        async with intake.prefetched(args, plan.spec.id) as fetched, admission_limiter():
            request, held = await intake.held_request(args, plan, fetched)
            preview = preview_create_request(self.client, self.settings, request, held)
        return plan, self.estimate(plan, args.tool), preview

    async def submit(
        self, args: RequestArgs, *, idempotency_key: str | None, plan: Plan | None = None, job_id: str | None = None
    ) -> JobRow:
        """A generation request through `create_job`: planned (unless `plan` is given), its inputs
        fetched, checked and kept, hosted where the route needs URLs, priced.
        Raises InvalidInput/MissingCredentials/BudgetExceeded."""
        # JSON + SHA-256 of arguments that may hold megabytes of base64: on a worker thread
        fingerprint = await anyio.to_thread.run_sync(lambda: args_fingerprint(args.fingerprint()))

        async def prepare(job_id: str, folder: Path) -> NewJob:
            planned, intake = plan or self.plan(args), self.intake
            async with intake.prefetched(args, planned.spec.id) as fetched, admission_limiter():
                request = await intake.kept_request(args, planned, fetched, folder)
            # routes that need public URLs get Vercel Blob ones (refused here, before any spending, without a token)
            await host_inputs(
                request, self.client, self.settings, ledger=self.janitor.ledger if self.janitor else None,
                job_id=job_id, owner=self.runner.owner,
            )
            return NewJob(request, self.estimate(planned, args.tool).to_dict(), planned.warnings)

        return await self.create_job(fingerprint, idempotency_key, prepare, job_id=job_id)

    async def create_job(
        self, fingerprint: str, idempotency_key: str | None, prepare: Prepare, *, job_id: str | None = None
    ) -> JobRow:
        """THE way a job is made, for every tool that makes one. The asker's own job with this key
        when there is one (the same `fingerprint`, else InvalidInput). Otherwise `prepare(job_id,
        folder)` keeps the inputs in the job's input folder and returns the request; the job is
        stored, its estimate reserved against the budgets in the same transaction (not for `local`
        routes), and started. Whatever refuses or fails before the store has the job (a rule, a
        cancellation, a lost race for the key, the budget, a store or disk fault) leaves no input
        file or upload behind; a fault answers `unavailable` ("the job was not accepted")."""
        if idempotency_key is not None:
            existing = await self.by_key(idempotency_key)
            if existing is not None:
                return _same_or_error(existing, fingerprint)
        job_id = job_id or new_job_id()  # given: the caller already keeps an input in inputs/<job_id> (extend_video)
        folder = self.settings.inputs_dir / job_id
        request: GenerationRequest | None = None
        asked = False
        try:
            job = await prepare(job_id, folder)
            request, local = job.request, job.request.route == "local"
            sent, asked = time.monotonic(), True
            row = await self.db.create(
                job_id=job_id,
                tool=request.tool,
                model=request.model,
                route=request.route,
                request=request.model_dump(mode="json"),
                args_hash=fingerprint,
                idempotency_key=idempotency_key,
                warnings=job.warnings,
                owner=self.runner.owner,
                lease_s=self.runner.lease_s,
                cost=job.cost,
                budget=None if local else self.budget_rule(),
                user=self.asker.user,
                user_budget=None if local else self.user_budget_rule(),
            )
        except DuplicateIdempotencyKey:
            # the same key won a race with us: answer with that job
            await self._discard(folder, request)
            assert idempotency_key is not None
            existing = await self.by_key(idempotency_key)
            assert existing is not None
            return _same_or_error(existing, fingerprint)
        except BaseException as exc:
            # A cancellation while the store answers keeps the inputs: the row may have been committed.
            if not asked or isinstance(exc, Exception):
                with anyio.CancelScope(shield=True):
                    await self._discard(folder, request)
            # a store or disk fault: nothing recorded, so nothing accepted, and the caller retries (a
            # create that did commit before its answer was lost is a queued job the runner finds)
            fault = unavailable(exc) if isinstance(exc, Exception) else None
            if fault is not None:
                raise Unavailable(f"the job was not accepted: {fault.message}") from exc
            raise
        log.info("job %s created for user %s: %s on %s via %s", job_id, row.user_id, request.tool, request.model,
                 request.route, extra={"job_id": job_id, "provider": metrics.provider_label(request.model, request.route),
                                       "user": row.user_id})  # fmt: skip
        self.runner.launch_new(row, leased_at=sent)
        return row

    async def _discard(self, folder: Path, request: GenerationRequest | None) -> None:
        """A job that was not created: its input files and uploaded blobs go."""
        await anyio.to_thread.run_sync(functools.partial(shutil.rmtree, folder, ignore_errors=True))
        if request is None:
            return
        if self.janitor is not None:
            await self.janitor.forget(request)
        elif request.blobs:
            await delete_quietly(BlobClient(self.client, self.settings), request.blobs)

    # -- read / wait / cancel ------------------------------------------------------------

    async def get(self, job_id: str) -> JobRow:
        validate_job_id(job_id)
        row = await self.find(job_id)
        if row is None:
            raise InvalidInput("job_id", f"no job {job_id} on this server.", "an id returned by a generation tool or list_jobs")
        return row

    async def wait(self, job_id: str, wait_seconds: float, on_update: ProgressFn | None = None) -> JobRow:
        """Wait up to `wait_seconds` for the job to end, calling `on_update` whenever it changes."""
        validate_job_id(job_id)
        deadline = time.monotonic() + max(0.0, wait_seconds)
        last_seen: tuple[Any, ...] = ()
        while True:
            # The event first, then the read: a change after the read sets this event, so the wait
            # below cannot miss it. Changes wake the waiter (no timed re-reads): the job's own
            # writes and cancels at once, other processes' through the store watch.
            changed = self.runner.change_event(job_id)
            row = await self.get(job_id)
            key = (row.status, row.progress)
            if on_update is not None and key != last_seen:
                await on_update(row)
            last_seen = key
            remaining = deadline - time.monotonic()
            if row.terminal or remaining <= 0:
                return row
            with anyio.move_on_after(min(remaining, WAIT_RECHECK_S)):
                await changed.wait()

    async def cancel(self, job_id: str) -> tuple[JobRow, bool]:
        row = await self.get(job_id)
        if row.terminal:
            return row, False
        log.info("job %s (user %s) cancelled by user %s", job_id, row.user_id, self.asker.user)
        await self.runner.cancel(job_id)
        return await self.get(job_id), True

    async def delete(self, job_id: str) -> Deletion:
        """A finished job's files, input copies, Blob uploads and row (InvalidInput when unfinished)."""
        try:
            gone = await delete_job(self.db, self.settings, self.client, job_id, user=self.asker.scope)
        except StoreUnavailable as fault:
            raise Unavailable(fault.message) from fault
        self.runner.forget(job_id)
        return gone

    async def list(self, status: str | None, limit: int) -> list[JobRow]:
        return await self.db.recent(status=status, limit=limit, user=self.asker.scope)

    async def resource_path(self, job_id: str, name: str) -> Path | None:
        """Path of a finished job's file; None when the job or file does not exist."""
        if name not in RESOURCE_FILES:
            return None
        try:
            validate_job_id(job_id)
        except InvalidInput:
            return None
        row = await self.find(job_id)
        if row is None or row.status != "succeeded":
            return None
        path = self.settings.output_dir / job_id / name
        return path if await anyio.to_thread.run_sync(path.is_file) else None
