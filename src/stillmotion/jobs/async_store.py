"""The job store's asynchronous face: what everything on the event loop uses (issue #21).

Every store call from the loop goes to a small thread pool that belongs to the store: a busy
SQLite file (another process holding its write lock) or a PostgreSQL server that is down or
restarting makes those threads wait, never the loop, so `list_models`, `/healthz`, `tools/list`
and resource listings answer at once whatever the store is doing. The synchronous `JobStore`
stays the one implementation (and what the CLI, render threads and tests use).

A store method is exposed here with one line: `name = exposed(JobStore.name)` (the engine's
override is what runs; its signature and return type carry over for mypy).

Faults that waiting can cure (a locked database, a lost or refused connection, an administrator
shutdown, a full disk) come out as `StoreUnavailable`, whose message says what is wrong and to
retry (tools answer it as an error of kind `unavailable`); anything else (a bug, a constraint)
comes out as it was raised. It is deliberately not a StillmotionError: the provider retry policy
must never mistake it for a provider's answer, and the runner never ends a job with it.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import functools
import logging
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Concatenate, ParamSpec, TypeVar

from .job_store import JobStore
from .rows import JobRow

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

STORE_THREADS = 4
"""Threads that wait on the store for the event loop (the SQLite store serialises its calls on one
connection anyway; PostgreSQL's pool holds 8 connections, shared with render threads)."""


class StoreUnavailable(Exception):
    """The job store (or the disk under it) cannot be used right now; waiting may cure it."""

    def __init__(self, why: str) -> None:
        self.why = why
        """What is wrong, e.g. 'the job store (SQLite) is locked by another process'."""
        self.message = f"{why}; retry in a few seconds."
        super().__init__(self.message)


def store_fault(exc: BaseException) -> str | None:
    """What is wrong, in words, when `exc` is a store fault that waiting may cure; else None."""
    if isinstance(exc, StoreUnavailable):
        return exc.why
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc)
        if "locked" in text or "busy" in text:
            return "the job store (SQLite) is locked by another process"
        if "full" in text:
            return "the disk holding the job store is full"
        return f"the job store (SQLite) cannot be written: {text}"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full"
    psycopg = sys.modules.get("psycopg")  # loaded only when a PostgreSQL store is in use
    if psycopg is not None and isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"the job store (PostgreSQL) is unreachable: {type(exc).__name__}{': ' + first if first else ''}"
    return None


def unavailable(exc: BaseException) -> StoreUnavailable | None:
    """`exc` as a StoreUnavailable (for a tool error or a retry), or None when it is no store fault."""
    why = store_fault(exc)
    if why is None:
        return None
    if isinstance(exc, StoreUnavailable):
        return exc
    return StoreUnavailable(why)


def exposed(method: Callable[Concatenate[JobStore, P], R]) -> Callable[Concatenate[AsyncJobStore, P], Awaitable[R]]:
    """`JobStore.<method>` run on the store's threads (the engine's own override)."""
    name = method.__name__

    async def call(self: AsyncJobStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        fn: Callable[P, R] = getattr(self.sync, name)
        return await self.run(fn, *args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = method.__doc__
    return call


class AsyncJobStore:
    """The asynchronous face of one `JobStore` (`sync`): the same methods, awaited."""

    def __init__(self, store: JobStore, *, threads: int = STORE_THREADS) -> None:
        self.sync = store
        self._threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="stillmotion-store")
        self._pending: dict[int, float] = {}
        self._fault: str | None = None
        self._answered_at = 0.0

    async def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """`fn(*args, **kwargs)` on the store's threads; store faults raise StoreUnavailable.
        Cancelling the awaiting task does not interrupt a call already running (it finishes)."""
        ctx = contextvars.copy_context()
        future = self._threads.submit(ctx.run, functools.partial(fn, *args, **kwargs))
        self._pending[id(future)] = time.monotonic()
        try:
            result = await asyncio.wrap_future(future)
        except Exception as exc:
            fault = unavailable(exc)
            if fault is None:
                raise
            self._fault = fault.message
            raise fault from exc
        finally:
            self._pending.pop(id(future), None)
        self._fault = None
        self._answered_at = time.monotonic()
        return result

    def trouble(self, stall_s: float) -> str | None:
        """Why the store looks unusable now (the last call failed, or a call has waited longer than
        `stall_s`), else None. Costs nothing: /readyz answers from it without waiting on the store."""
        if self._pending and time.monotonic() - min(self._pending.values()) > stall_s:
            return "the job store does not answer"
        return self._fault

    @property
    def quiet_s(self) -> float:
        """Seconds since the store last answered a call."""
        return time.monotonic() - self._answered_at

    async def aclose(self) -> None:
        """Close the store (off the loop) and stop the threads."""
        try:
            await self.run(self.sync.close)
        finally:
            self._threads.shutdown(wait=False)

    def close_now(self) -> None:
        """Close from a thread that may block (after the loop stopped using the store): calls not
        started yet are dropped (their tasks are gone), one running finishes first (the store's lock)."""
        self._threads.shutdown(wait=False, cancel_futures=True)
        self.sync.close()

    now = exposed(JobStore.now)
    get = exposed(JobStore.get)
    by_idempotency_key = exposed(JobStore.by_idempotency_key)
    recent = exposed(JobStore.recent)
    unfinished = exposed(JobStore.unfinished)
    claimable = exposed(JobStore.claimable)
    changed_since = exposed(JobStore.changed_since)
    unfinished_heads = exposed(JobStore.unfinished_heads)
    heads_changed_since = exposed(JobStore.heads_changed_since)
    create = exposed(JobStore.create)
    set_actual_cost = exposed(JobStore.set_actual_cost)
    spend = exposed(JobStore.spend)
    claim = exposed(JobStore.claim)
    renew = exposed(JobStore.renew)
    release = exposed(JobStore.release)
    update_owned = exposed(JobStore.update_owned)
    update_owned_capped = exposed(JobStore.update_owned_capped)
    set_progress = exposed(JobStore.set_progress)
    cancel = exposed(JobStore.cancel)

    async def update(self, job_id: str, **values: Any) -> JobRow:
        """(Tests and repairs only; `**values` keeps it from the one-line form.)"""
        return await self.run(functools.partial(self.sync.update, job_id, **values))

    delete_finished = exposed(JobStore.delete_finished)
    finished_created_before = exposed(JobStore.finished_created_before)
    finished_with_files = exposed(JobStore.finished_with_files)
    mark_files_deleted = exposed(JobStore.mark_files_deleted)
    job_counts = exposed(JobStore.job_counts)
    meta_claim_interval = exposed(JobStore.meta_claim_interval)
    meta_get = exposed(JobStore.meta_get)
    meta_set = exposed(JobStore.meta_set)
    meta_setdefault = exposed(JobStore.meta_setdefault)


__all__ = ["STORE_THREADS", "AsyncJobStore", "StoreUnavailable", "exposed", "store_fault", "unavailable"]
