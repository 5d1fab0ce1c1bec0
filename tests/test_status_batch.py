"""Many polls answered by one task-list request: the batcher alone, Kling's list on the wire, and
many Kling jobs end to end against the strict fake."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from stillmotion.errors import ProviderError, RateLimited
from stillmotion.jobs.batch import MIN_BATCH, StatusBatcher
from stillmotion.providers.base import ListedTask, Status
from stillmotion.providers.kling import KlingProvider
from tests.conftest import SettingsFactory, connect, structured, until, wait_done, write_image
from tests.fakes import KlingFake

pytestmark = pytest.mark.anyio
PATH = "/v1/videos/image2video"
KEY = "kling-test-key"
NOW = 1_800_000_000.0


class ListingProvider:
    """A provider with a task list, in memory: counts single polls and pages read."""

    name = "listing"
    list_page_max = 500

    def __init__(self, tasks: int, *, listed: set[str] | None = None, delay: float = 0.0) -> None:
        self.all = [f"t{i}" for i in range(tasks)]
        self.listed = set(self.all) if listed is None else listed
        self.delay = delay
        self.singles: list[str] = []
        self.pages: list[tuple[int, int]] = []
        self.fail_next: Exception | None = None

    def list_key(self) -> str:
        return "listing account"

    @staticmethod
    def task_id(operation: dict[str, Any]) -> str | None:
        return str(operation["task_id"])

    def list_external_id(self, ctx: Any) -> str | None:
        return None

    async def status(self, ctx: Any, operation: dict[str, Any]) -> Status:
        self.singles.append(operation["task_id"])
        return Status("completed" if operation["task_id"] == "t0" else "pending")

    async def status_page(self, page: int, size: int) -> list[ListedTask]:
        self.pages.append((page, size))
        if self.delay:
            await anyio.sleep(self.delay)
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        newest_first = [t for t in reversed(self.all) if t in self.listed]
        rows = newest_first[(page - 1) * size : page * size]
        return [ListedTask(t, NOW, Status("completed" if t == "t0" else "pending")) for t in rows]


class Barrier:
    """Until `n` tasks have arrived (anyio has no barrier)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.all_in = anyio.Event()

    async def arrive(self) -> None:
        self.n -= 1
        if self.n <= 0:
            self.all_in.set()
        with anyio.fail_after(10):
            await self.all_in.wait()


_until = functools.partial(until, timeout=10.0, step=0.005)


def _batched(batcher: StatusBatcher, provider: ListingProvider) -> int:
    """Polls waiting in the batch that is gathering now."""
    group = batcher._groups.get(provider.list_key())
    return sum(len(waiting) for waiting in group.batch.values()) if group is not None else 0


async def _poll_all(batcher: StatusBatcher, provider: Any, ids: list[str], rounds: int, interval: float = 0.2) -> list[Status]:
    got: list[Status] = []
    everyone = Barrier(len(ids))

    async def job(task_id: str) -> None:
        with batcher.polling(provider):
            await everyone.arrive()  # every job is polling before the first poll comes due
            for _ in range(rounds):
                got.append(await batcher.status(provider, None, {"task_id": task_id}, interval=interval, submitted_at=NOW))
                await anyio.sleep(interval)

    async with anyio.create_task_group() as tg:
        for t in ids:
            tg.start_soon(job, t)
    return got


async def test_below_the_threshold_every_poll_is_a_single_request() -> None:
    p = ListingProvider(MIN_BATCH - 1)
    got = await _poll_all(StatusBatcher(), p, p.all, rounds=2)
    assert len(got) == 2 * (MIN_BATCH - 1)
    assert len(p.singles) == len(got) and p.pages == []


async def test_many_polls_share_one_list_request_per_round() -> None:
    p = ListingProvider(40)
    batcher = StatusBatcher()
    got = await _poll_all(batcher, p, p.all, rounds=3)
    assert len(got) == 120
    assert 3 <= len(p.pages) <= 6  # one list a round (a late poll may start its own)
    assert all(size == 80 for _, size in p.pages)  # sized to the jobs polling, twice over
    assert sum(1 for s in got if s.state == "completed") == 3  # t0's answer reached t0, each round
    # the list said t0 had ended: t0 asked its own task each time before acting on it (#21)
    assert p.singles == ["t0"] * 3 and batcher.stats.confirmed == 3
    assert batcher.stats.batched_polls == 117


async def test_a_task_missing_from_the_list_is_polled_on_its_own() -> None:
    p = ListingProvider(20, listed={f"t{i}" for i in range(1, 20)})
    await _poll_all(StatusBatcher(), p, p.all, rounds=2)
    assert p.singles == ["t0", "t0"]
    # the list ended short of the page size: no second page was asked for
    assert all(page == 1 for page, _ in p.pages)


async def test_pages_are_walked_only_while_tasks_are_missing() -> None:
    p = ListingProvider(100)
    batcher = StatusBatcher()
    # only the ten oldest tasks poll, but the provider has 100 newer ones on the account
    p.all = [f"t{i}" for i in range(10)] + [f"other{i}" for i in range(100)]
    p.listed = set(p.all)
    await _poll_all(batcher, p, [f"t{i}" for i in range(10)], rounds=1)
    assert p.singles == ["t0"]  # only to confirm the end the list showed for t0
    assert [page for page, _ in p.pages] == [1, 2, 3, 4, 5, 6][: len(p.pages)]
    assert p.pages[-1][0] >= 4 or len(p.pages) == 4  # pages of 30 until the ten were found, at most MAX_PAGES


async def test_a_list_error_sends_the_round_to_single_polls() -> None:
    """A failing list never reaches a job as its error (#21): its round polls singly, and the list
    rests a while before it is tried again."""
    p = ListingProvider(10)
    p.fail_next = RateLimited("Kling: too many requests (code 1302)", provider_code="1302", retry_after=1.0)
    batcher = StatusBatcher()
    got = await _poll_all(batcher, p, p.all, rounds=2, interval=0.1)
    assert len(got) == 20 and len(p.pages) == 1  # the list failed once and was left alone after
    assert sorted(p.singles) == sorted(p.all * 2)
    assert batcher.stats.list_errors == 1 and batcher.stats.batched_polls == 0


async def test_a_cancelled_gatherer_leaves_nobody_waiting() -> None:
    p = ListingProvider(10)
    batcher = StatusBatcher(window_cap_s=0.5)
    answered: list[str] = []

    everyone = Barrier(len(p.all))

    async def job(task_id: str, scope: anyio.CancelScope | None = None) -> None:
        with batcher.polling(p):
            await everyone.arrive()  # all ten count towards the batch
            if scope is not None:  # t0 leads the batch...
                with scope:
                    await batcher.status(p, None, {"task_id": task_id}, interval=2.0, submitted_at=NOW)
                return
            await _until(lambda: _batched(batcher, p) >= 1)  # ...the others join the batch it gathers
            await batcher.status(p, None, {"task_id": task_id}, interval=2.0, submitted_at=NOW)
            answered.append(task_id)

    leader = anyio.CancelScope()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(job, "t0", leader)
            for t in p.all[1:]:
                tg.start_soon(job, t)
            await _until(lambda: _batched(batcher, p) == len(p.all))  # all joined t0's batch
            leader.cancel()  # t0's job is cancelled (a cancel_job) while its batch gathers
    assert sorted(answered) == sorted(p.all[1:])
    assert sorted(p.singles) == sorted(p.all[1:]) and p.pages == []


async def test_polls_due_during_a_slow_list_gather_the_next_batch() -> None:
    """A list request in flight does not stop the next batch from gathering (nor steal it)."""
    p = ListingProvider(30, delay=0.15)
    batcher = StatusBatcher()
    got: list[Status] = []

    async def job(i: int) -> None:
        with batcher.polling(p):
            await anyio.sleep(0.02 + 0.01 * i)  # coming due one after another, 10 ms apart
            got.append(await batcher.status(p, None, {"task_id": f"t{i}"}, interval=0.2, submitted_at=NOW))

    async with anyio.create_task_group() as tg:
        for i in range(30):
            tg.start_soon(job, i)
    # every poll was answered by a list but t0's, whose end the list showed (confirmed singly)
    assert len(got) == 30 and p.singles == ["t0"] and batcher.stats.batched_polls == 29
    assert 2 <= len(p.pages) <= 8


# -- Kling's task list on the wire ---------------------------------------------------------


def _kling(make_settings: SettingsFactory, handler: Any) -> KlingProvider:
    settings = make_settings(KLINGAI_API_KEY=KEY, KLINGAI_BASE_URL="https://kling.example")
    return KlingProvider(httpx.AsyncClient(transport=httpx.MockTransport(handler)), settings)


async def test_kling_list_request_and_answer_mapping(make_settings: SettingsFactory) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        data = [
            {"task_id": "111", "task_status": "processing", "created_at": 1_800_000_000_123},
            {"task_id": "222", "task_status": "succeed", "created_at": 1_799_999_999_000, "final_unit_deduction": "5",
             "task_result": {"videos": [{"id": "v", "url": "https://cdn.example/222.mp4", "duration": "5"}]}},
            {"task_id": "333", "task_status": "failed", "task_status_msg": "Failure to pass the risk control system"},
            {"not": "a task"},
        ]
        return httpx.Response(200, json={"code": 0, "message": "SUCCEED", "request_id": "r", "data": data})

    kling = _kling(make_settings, handler)
    rows = await kling.status_page(2, 40)
    (req,) = seen
    assert req.method == "GET"
    assert str(req.url) == "https://kling.example/v1/videos/image2video?pageNum=2&pageSize=40"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert [r.task_id for r in rows] == ["111", "222", "333"]
    assert rows[0].status.state == "pending" and rows[0].created_at == pytest.approx(1_800_000_000.123)
    assert rows[1].status.state == "completed" and rows[1].status.video is not None
    assert rows[1].status.video.url == "https://cdn.example/222.mp4" and rows[1].status.actual is not None
    assert rows[2].status.state == "failed" and rows[2].status.error is not None
    assert rows[2].status.error.kind == "content_filtered" and rows[2].created_at is None
    assert kling.list_key() == kling.list_key() and kling.task_id({"task_id": "111"}) == "111"


async def test_kling_list_errors_map_like_single_polls(make_settings: SettingsFactory) -> None:
    answers = [
        httpx.Response(429, json={"code": 1302, "message": "rate limit"}, headers={"Retry-After": "2"}),
        httpx.Response(200, json={"code": 0, "message": "SUCCEED", "data": {"task_id": "1"}}),
    ]
    kling = _kling(make_settings, lambda request: answers.pop(0))
    with pytest.raises(RateLimited) as rate:
        await kling.status_page(1, 30)
    assert rate.value.retry_after == 2.0
    with pytest.raises(ProviderError, match="without a list"):
        await kling.status_page(1, 30)


# -- end to end: many Kling jobs in one server -------------------------------------------


async def submit_kling_jobs(client: Any, img: Path, n: int) -> list[str]:
    """`n` Kling animate_image jobs submitted at once; their ids."""
    ids: list[str] = []

    async def submit(i: int) -> None:
        args = {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": f"clip {i}"}
        ids.append(structured(await client.call_tool("animate_image", args))["job_id"])

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(submit, i)
    return ids


async def test_many_kling_jobs_are_polled_through_the_task_list(make_settings: SettingsFactory, tmp_path: Path) -> None:
    img = write_image(tmp_path / "in.png", 640, 480, seed=3)
    n = MIN_BATCH + 4
    with KlingFake(api_key=KEY) as fake:
        fake.polls_until_done = 5
        env = {"KLINGAI_API_KEY": KEY, "KLINGAI_BASE_URL": fake.base_url, "STILLMOTION_POLL_INTERVAL_MS": "200"}
        async with connect(make_settings(**env)) as client:
            ids = await submit_kling_jobs(client, img, n)
            done = [await wait_done(client, j) for j in ids]
        assert [d["status"] for d in done] == ["succeeded"] * n
        lists = [c for c in fake.calls("GET", PATH) if c.path == PATH]
        singles = [c for c in fake.calls("GET", PATH) if c.path.startswith(PATH + "/")]
        assert fake.list_requests == len(lists) > 0
        # every poll of a job that polled alongside MIN_BATCH - 1 others went through a list, but
        # for the one that confirms the end the list showed (#21: a job acts on its own task's answer)
        assert len(singles) < 2 * n, (len(singles), len(lists))
        for c in lists:
            q = dict(c.query)
            assert q["pageNum"] == "1" and 30 <= int(q["pageSize"]) <= 500, q
            assert json.dumps(c.query)  # plain query strings only
        fake.assert_clean()


async def test_a_list_that_does_not_show_our_tasks_is_left_alone_for_a_while() -> None:
    p = ListingProvider(20, listed=set())  # the provider's list never shows these tasks
    batcher = StatusBatcher()
    await _poll_all(batcher, p, p.all, rounds=3)
    assert len(p.pages) == 1  # one list, found nothing: every later poll is a single GET
    assert len(p.singles) == 60 and batcher.stats.batched_polls == 0


# -- the list is only a hint (#21) ---------------------------------------------------------


@pytest.mark.parametrize("fault", KlingFake.LIST_FAULTS)
async def test_a_misbehaving_task_list_never_gives_a_job_the_wrong_result(
    make_settings: SettingsFactory, tmp_path: Path, fault: str
) -> None:
    """12 batched Kling jobs against a list that lies (another job's row, every task twice with a
    failed or processing row first, a frozen status, 500 for good, 1203) while single task queries
    tell the truth: every job succeeds with the bytes of its OWN task's video."""
    img = write_image(tmp_path / "in.png", 640, 480, seed=3)
    n = 12
    with KlingFake(api_key=KEY) as fake:
        fake.polls_until_done = 5
        fake.distinct_videos = True
        fake.list_fault = fault
        env = {"KLINGAI_API_KEY": KEY, "KLINGAI_BASE_URL": fake.base_url, "STILLMOTION_POLL_INTERVAL_MS": "150"}
        async with connect(make_settings(**env)) as client:
            ids = await submit_kling_jobs(client, img, n)
            done = {j: await wait_done(client, j) for j in ids}
        assert [d["status"] for d in done.values()] == ["succeeded"] * n, [d.get("error") for d in done.values()]
        videos = set()
        for job_id, d in done.items():
            own = fake.video_of(fake.external_ids[job_id])
            assert await anyio.Path(d["video"]["path"]).read_bytes() == own, f"job {job_id} saved another task's video"
            videos.add(own)
        assert len(videos) == n  # every task's video differs, so the check above could catch a swap
        assert fake.list_requests > 0  # the jobs were batched: the list was read (and distrusted)
        fake.assert_clean()
