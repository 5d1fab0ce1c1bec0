"""Many status polls answered by one list request.

A provider with a task list (Kling: `GET /v1/videos/image2video?pageNum=&pageSize=`, newest
first) can answer the status of hundreds of tasks in one request. When at least `min_batch` jobs
of this process poll tasks of one list (same account, same endpoint), a poll that comes due
waits a short gathering window (a quarter of its poll interval, at most `window_cap_s`) for the
others coming due, then one list request answers all of them: a page sized to the jobs polling,
and further pages (at most MAX_PAGES) only while some task is still missing and the pages have
not gone past the oldest task asked about. A task the pages do not show is polled on its own;
a list that shows fewer than half of the tasks asked about is not used for OFF_S.

The list is only a hint: a row is used only when its task id and external id both match the job,
it is the task's only row on the pages read, it says the task is still running, and it has not
shown the same thing for more than FROZEN_ROUNDS list answers in a row. Everything else (a task
the list says ended, a row of another job, a task shown twice, a frozen row, a list that answers
an error) is answered by a single task query, so a job acts only on what its own task says.

Each job keeps its own schedule (a poll every interval, start to start), so a task's end is seen
at most one interval plus the window after it happens. A list request that fails sends its round
to single polls and keeps the list unused for a while (ERROR_OFF_S, doubling while it keeps
failing, at most OFF_S); it never reaches a job as that job's error. Nothing here sleeps except
the gathering window, and a cancelled poll never leaves the others waiting: whatever it was
gathering falls back to single polls.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from ..providers.base import JobContext, ListedTask, Provider, Status

log = logging.getLogger("stillmotion.jobs")

MIN_BATCH = 8
"""Jobs polling one list at least, before polls are batched (a single GET is cheaper below)."""
WINDOW_CAP_S = 0.25
MAX_PAGES = 4
CLOCK_MARGIN_S = 300.0
"""How far a page's oldest task may be older than the oldest task asked about (clock skew)."""
MIN_PAGE = 30
OFF_S = 600.0
"""A list that showed fewer than half of the tasks asked about is not used for this long: the
provider's list does not serve our tasks (other filters, a slow index), and a list request plus
single polls would cost more than single polls alone."""
ERROR_OFF_S = 5.0
"""After a list request fails, the list is not used for this long (doubling per failure in a row, at most OFF_S)."""
FROZEN_ROUNDS = 3
"""A running task's row that shows the same progress and update time in more list answers in a
row than this is queried singly (the list may be stale)."""


def _list_key(provider: Provider) -> str | None:
    return provider.list_key() if provider.list_page_max > 0 else None


class _Pending:
    __slots__ = ("done", "expected", "status")

    def __init__(self, expected: str | None) -> None:
        self.done = anyio.Event()
        self.expected = expected
        """The external id the task's row must carry (None: the provider's rows carry none)."""
        self.status: Status | None = None
        """The list's answer, when it is usable; None = poll singly."""


@dataclass
class _Group:
    polling: int = 0
    gathering: bool = False
    batch: dict[str, list[_Pending]] = field(default_factory=dict)
    oldest: float = math.inf
    off_until: float = 0.0
    """Monotonic time until which this list is not used (it failed, or showed too few of the tasks asked about)."""
    errors: int = 0
    """List requests that failed in a row."""
    marks: dict[str, tuple[tuple[float | None, float | None], int, float]] = field(default_factory=dict)
    """task id -> (what its row showed last, in how many answers in a row, monotonic time seen)."""


@dataclass
class BatchStats:
    list_requests: int = 0
    batched_polls: int = 0
    single_polls: int = 0
    list_errors: int = 0
    """List requests that failed (their rounds polled singly)."""
    confirmed: int = 0
    """Tasks the list said had ended, asked singly before the job acts."""
    distrusted: int = 0
    """Rows not used: another job's row, a task shown twice, a frozen row."""


class StatusBatcher:
    def __init__(self, *, min_batch: int = MIN_BATCH, window_cap_s: float = WINDOW_CAP_S) -> None:
        self.min_batch = min_batch
        self.window_cap_s = window_cap_s
        self.stats = BatchStats()
        self._groups: dict[str, _Group] = {}

    @contextmanager
    def polling(self, provider: Provider) -> Iterator[None]:
        """Held by a job for as long as it polls (it counts towards batching its list)."""
        key = _list_key(provider)
        if key is None:
            yield
            return
        group = self._groups.setdefault(key, _Group())
        group.polling += 1
        try:
            yield
        finally:
            group.polling -= 1
            if group.polling <= 0 and not group.batch and not group.gathering:
                self._groups.pop(key, None)

    async def status(
        self, provider: Provider, ctx: JobContext, operation: dict[str, Any], *, interval: float, submitted_at: float
    ) -> Status:
        key = _list_key(provider)
        task_id = provider.task_id(operation)
        group = self._groups.get(key) if key is not None else None
        if group is None or task_id is None or group.polling < self.min_batch or time.monotonic() < group.off_until:
            self.stats.single_polls += 1
            return await provider.status(ctx, operation)
        pending = _Pending(provider.list_external_id(ctx))
        group.batch.setdefault(task_id, []).append(pending)
        group.oldest = min(group.oldest, submitted_at)
        if not group.gathering:
            await self._lead(provider, group, min(self.window_cap_s, interval / 4))
        await pending.done.wait()
        if pending.status is None:  # not on the pages read, not to be trusted, or the batch was abandoned
            self.stats.single_polls += 1
            return await provider.status(ctx, operation)
        self.stats.batched_polls += 1
        return pending.status

    async def _lead(self, provider: Provider, group: _Group, window: float) -> None:
        """Gather for `window`, then answer the whole batch with one list request (or a few)."""
        group.gathering = True
        gathering = True
        batch: dict[str, list[_Pending]] = {}
        try:
            await anyio.sleep(window)
            batch, group.batch = group.batch, {}
            oldest, group.oldest = group.oldest, math.inf
            group.gathering = gathering = False  # polls coming due from now on gather the next batch
            await self._answer(provider, group, batch, oldest)
        finally:
            if gathering:  # cancelled while gathering: nobody else would send this batch
                batch, group.batch = group.batch, {}
                group.oldest = math.inf
                group.gathering = False
            for waiting in batch.values():  # whatever is still unanswered polls on its own
                for p in waiting:
                    p.done.set()

    async def _answer(self, provider: Provider, group: _Group, batch: dict[str, list[_Pending]], oldest: float) -> None:
        """Read the list and give each poll the row it can trust; the rest (status None) poll singly."""
        size = min(provider.list_page_max, max(MIN_PAGE, 2 * group.polling))
        asked = len(batch)
        seen: dict[str, list[ListedTask]] = {}
        try:
            for page in range(1, MAX_PAGES + 1):
                rows = await provider.status_page(page, size)
                self.stats.list_requests += 1
                for row in rows:
                    if row.task_id in batch:
                        seen.setdefault(row.task_id, []).append(row)
                if len(seen) == asked or len(rows) < size:
                    break
                created = [r.created_at for r in rows if r.created_at is not None]
                if created and min(created) < oldest - CLOCK_MARGIN_S:
                    break  # past the oldest task asked about: the rest are not on any later page
        except Exception as exc:  # any failure of the list: this round polls singly, the list rests a while
            self.stats.list_errors += 1
            group.errors += 1
            pause = min(OFF_S, ERROR_OFF_S * 2.0 ** (group.errors - 1))
            group.off_until = time.monotonic() + pause
            log.warning("task list request failed (%s: %s); polling singly for %.0f s", type(exc).__name__, exc, pause)
            return
        group.errors = 0
        now = time.monotonic()
        for task_id, waiting in batch.items():
            status = self._trusted(group, task_id, seen.get(task_id, ()), waiting[0].expected, now)
            for p in waiting:
                p.status = status
        if len(group.marks) > 4 * asked + 100:
            group.marks = {k: v for k, v in group.marks.items() if v[2] > now - OFF_S}
        if (asked - len(seen)) * 2 > asked:
            group.off_until = time.monotonic() + OFF_S
            log.warning(
                "the task list showed %d of %d tasks asked about; polling them singly for %.0f s",
                len(seen), asked, OFF_S,
            )

    def _trusted(
        self, group: _Group, task_id: str, rows: list[ListedTask] | tuple[()], expected: str | None, now: float
    ) -> Status | None:
        """The listed status a poll may act on, or None: the poll asks its task singly."""
        if not rows:
            return None
        if len(rows) > 1:
            self.stats.distrusted += 1
            log.info("the task list shows task %s %d times; asking it singly", task_id, len(rows))
            group.marks.pop(task_id, None)
            return None
        row = rows[0]
        if expected is not None and row.external_id != expected:
            self.stats.distrusted += 1
            log.warning(
                "the task list shows task %s with external id %r, not %r; asking it singly", task_id, row.external_id, expected
            )
            return None
        if row.status.state != "pending":  # an end is acted on only once the task's own query says it
            self.stats.confirmed += 1
            group.marks.pop(task_id, None)
            return None
        shown = (row.status.progress, row.updated_at)
        mark = group.marks.get(task_id)
        rounds = mark[1] + 1 if mark is not None and mark[0] == shown else 1
        if rounds > FROZEN_ROUNDS:
            self.stats.distrusted += 1
            log.info("the task list showed task %s unchanged %d times; asking it singly", task_id, rounds)
            group.marks[task_id] = (shown, 0, now)
            return None
        group.marks[task_id] = (shown, rounds, now)
        return row.status


__all__ = ["MIN_BATCH", "BatchStats", "StatusBatcher"]
