"""Many status polls answered by one list request.

A provider with a task list (Kling: `GET /v1/videos/image2video?pageNum=&pageSize=`, newest
first) can answer the status of hundreds of tasks in one request. When at least `min_batch` jobs
of this process poll tasks of one list (same account, same endpoint), a poll that comes due
waits a short gathering window (a quarter of its poll interval, at most `window_cap_s`) for the
others coming due, then one list request answers all of them: a page sized to the jobs polling,
and further pages (at most MAX_PAGES) only while some task is still missing and the pages have
not gone past the oldest task asked about. A task the pages do not show is polled on its own;
a list that shows fewer than half of the tasks asked about is not used for OFF_S.

Each job keeps its own schedule (a poll every interval, start to start), so a task's end is seen
at most one interval plus the window after it happens. An error of the list request reaches
every poll of the batch, which retries through the runner's one retry policy as a single poll's
error would. Nothing here sleeps except the gathering window, and a cancelled poll never leaves
the others waiting: whatever it was gathering falls back to single polls.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from ..errors import StillmotionError
from ..providers.base import JobContext, Provider, Status

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


def _list_key(provider: Provider) -> str | None:
    return provider.list_key() if provider.list_page_max > 0 else None


class _Pending:
    __slots__ = ("done", "error", "status")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.status: Status | None = None
        self.error: StillmotionError | None = None


@dataclass
class _Group:
    polling: int = 0
    gathering: bool = False
    batch: dict[str, list[_Pending]] = field(default_factory=dict)
    oldest: float = math.inf
    off_until: float = 0.0
    """Monotonic time until which this list is not used (it showed too few of the tasks asked about)."""


@dataclass
class BatchStats:
    list_requests: int = 0
    batched_polls: int = 0
    single_polls: int = 0


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
        pending = _Pending()
        group.batch.setdefault(task_id, []).append(pending)
        group.oldest = min(group.oldest, submitted_at)
        if not group.gathering:
            await self._lead(provider, group, min(self.window_cap_s, interval / 4))
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        if pending.status is None:  # not on the pages read (or the batch was abandoned)
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
        size = min(provider.list_page_max, max(MIN_PAGE, 2 * group.polling))
        asked = len(batch)
        try:
            for page in range(1, MAX_PAGES + 1):
                rows = await provider.status_page(page, size)
                self.stats.list_requests += 1
                for row in rows:
                    for p in batch.pop(row.task_id, ()):
                        p.status = row.status
                        p.done.set()
                if not batch or len(rows) < size:
                    break
                created = [r.created_at for r in rows if r.created_at is not None]
                if created and min(created) < oldest - CLOCK_MARGIN_S:
                    break  # past the oldest task asked about: the rest are not on any later page
            if len(batch) * 2 > asked:
                group.off_until = time.monotonic() + OFF_S
                log.warning(
                    "the task list showed %d of %d tasks asked about; polling them singly for %.0f s",
                    asked - len(batch), asked, OFF_S,
                )
        except StillmotionError as exc:
            for waiting in batch.values():
                for p in waiting:
                    p.error = copy.copy(exc)  # each poll raises (and retries) its own copy
                    p.done.set()
            batch.clear()
        except Exception:  # a list answer we cannot read must not fail the jobs: poll them singly
            log.warning("task list request failed; polling singly", exc_info=True)


__all__ = ["MIN_BATCH", "BatchStats", "StatusBatcher"]
