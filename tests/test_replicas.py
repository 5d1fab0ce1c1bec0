"""A team server: `stillmotion serve --http` replicas on one real PostgreSQL and one shared folder.

Real processes, real PostgreSQL (tests/pg.py), the strict provider fakes (they attribute every
request to the replica that sent it by its User-Agent). Leases are short (1500 ms); hold points
are fake tasks held pending and the render hold file, never sleeps a result depends on.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import pytest
from mcp import Client

from stillmotion.jobs.pg_store import PgStore
from stillmotion.jobs.store import JobRow
from stillmotion.media.video import probe_video
from tests.conftest import write_image
from tests.fakes import BlobFake, GatewayFake, KlingFake, XaiFake
from tests.fakes.base import FakeServer, Recorded, instance_of
from tests.replicas import Replica, RoundRobinProxy, base_env, replicas, start_replica

LEASE_MS = 1500
KLING, XAI, WAN, LOCAL = "klingai/kling-v2.6-i2v", "xai/grok-imagine-video", "alibaba/wan-v2.6-i2v", "local/preview"
KLING_PATH, XAI_CREATE, XAI_STATUS = "/v1/videos/image2video", "/v1/videos/generations", "/v1/videos/"
GW_START, GW_STATUS = "/v4/ai/video-model/start", "/v4/ai/video-model/status"
LOCAL_ARGS = {"duration": 1, "local": {"resolution": "480p"}}
TERMINAL = ("succeeded", "failed", "cancelled")


class Fakes:
    """Kling and xAI direct, Wan through the AI Gateway (no Alibaba key), local renders."""

    def __init__(self) -> None:
        self.kling = KlingFake(api_key="kling-key")
        self.xai = XaiFake(api_key="xai-key-0123456789")
        self.gateway = GatewayFake(api_key="gw-key")
        self.blob = BlobFake()  # Wan through the Gateway takes image URLs: local images go through Blob
        self.all: list[FakeServer] = [self.kling, self.xai, self.gateway, self.blob]

    def env(self) -> dict[str, str]:
        return {
            "KLINGAI_API_KEY": "kling-key", "KLINGAI_BASE_URL": self.kling.base_url,
            "XAI_API_KEY": "xai-key-0123456789", "XAI_BASE_URL": self.xai.api_base,
            "AI_GATEWAY_API_KEY": "gw-key", "AI_GATEWAY_BASE_URL": self.gateway.base_url + "/v4/ai",
            "BLOB_READ_WRITE_TOKEN": self.blob.token, "VERCEL_BLOB_API_URL": self.blob.base_url,
        }  # fmt: skip

    def hold(self) -> None:
        for f in self.all:
            f.polls_until_done = None

    def release(self) -> None:
        for f in self.all:
            f.polls_until_done = 1
            f.release()


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    fk = Fakes()
    for f in fk.all:
        f.start()
    try:
        yield fk
        for f in fk.all:
            assert f.violations == []
    finally:
        for f in fk.all:
            f.stop()


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """The shared volume every replica mounts (STILLMOTION_HOME)."""
    return tmp_path / "shared-volume"


@pytest.fixture
def img(tmp_path: Path) -> Path:
    return write_image(tmp_path / "in" / "photo.png", 640, 480, seed=7)


def team_env(pg_url: str, shared: Path, img: Path, fakes: Fakes | None = None, **extra: str) -> dict[str, str]:
    env = {
        "STILLMOTION_HOME": str(shared), "STILLMOTION_DATABASE_URL": pg_url, "STILLMOTION_INPUT_ROOTS": str(img.parent),
        "STILLMOTION_POLL_INTERVAL_MS": "200", "STILLMOTION_RETRY_BASE_MS": "20", "STILLMOTION_LEASE_MS": str(LEASE_MS),
        **(fakes.env() if fakes else {}),
    }  # fmt: skip
    return base_env(**{**env, **extra})


def gen_args(model: str, img: Path, **extra: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"model": model, "image": str(img)}
    args.update(LOCAL_ARGS if model == LOCAL else {"prompt": "waves roll in", "duration": 5 if model != XAI else 6})
    args.update(extra)
    return args


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content[0].text if result.content else result
    assert result.structured_content is not None
    return dict(result.structured_content)


def rows(store: PgStore, ids: list[str]) -> dict[str, JobRow]:
    out = {}
    for i in ids:
        r = store.get(i)
        assert r is not None
        out[i] = r
    return out


def wait_rows(store: PgStore, ids: list[str], cond: Callable[[JobRow], bool], timeout: float = 120) -> dict[str, JobRow]:
    deadline = time.monotonic() + timeout
    while True:
        got = rows(store, ids)
        if all(cond(r) for r in got.values()):
            return got
        if time.monotonic() > deadline:
            bad = {i: (r.status, r.stage, r.owner, r.status_detail) for i, r in got.items() if not cond(r)}
            raise AssertionError(f"{len(bad)} jobs not there: {list(bad.items())[:5]}")
        time.sleep(0.1)


def assert_published(shared: Path, row: JobRow) -> None:
    assert row.status == "succeeded", (row.id, row.status, row.error)
    assert row.result is not None
    video = row.result["video"]
    path = Path(video["path"])
    assert path == shared / "outputs" / row.id / "video.mp4"
    data = path.read_bytes()
    assert len(data) == video["bytes"] and hashlib.sha256(data).hexdigest() == video["sha256"]
    assert probe_video(path).frame_count == video["frame_count"] > 0


def kling_lists(fk: Fakes) -> list[Recorded]:
    """Kling task-list requests (a replica polling 8+ Kling jobs asks for the list instead)."""
    return [r for r in fk.kling.calls("GET", KLING_PATH) if r.path == KLING_PATH]


def task_polls(fk: Fakes) -> dict[str, list[Recorded]]:
    """provider task -> its status polls, in order of arrival."""
    out: dict[str, list[Recorded]] = {}
    for r in fk.kling.calls("GET", KLING_PATH):
        if r.path != KLING_PATH:  # the task list names no task: see kling_lists()
            out.setdefault("kling:" + r.path[len(KLING_PATH):].lstrip("/"), []).append(r)
    for r in fk.xai.calls("GET", XAI_STATUS):
        out.setdefault("xai:" + r.path[len(XAI_STATUS):], []).append(r)
    for r in fk.gateway.calls("POST", GW_STATUS):
        out.setdefault("gw:" + r.obj["operation"]["gatewayJobId"], []).append(r)
    return out


async def call_all(fns: list[Callable[[], Any]], limit: int = 8) -> list[Any]:
    """Run coroutine factories with at most `limit` at once; results in order."""
    results: list[Any] = [None] * len(fns)
    sem = anyio.Semaphore(limit)

    async def one(i: int) -> None:
        async with sem:
            results[i] = await fns[i]()

    async with anyio.create_task_group() as tg:
        for i in range(len(fns)):
            tg.start_soon(one, i)
    return results


@contextlib.asynccontextmanager
async def clients(reps: list[Replica], mode: str = "auto") -> Any:
    async with contextlib.AsyncExitStack() as stack:
        out = [await stack.enter_async_context(Client(r.url, mode=mode)) for r in reps]  # type: ignore[arg-type]
        yield out


# ------------------------------------------------------------------------------------------------


def test_three_replicas_one_killed_mid_run(
    pg_url: str, shared: Path, img: Path, fakes: Fakes, tmp_path: Path
) -> None:
    """Jobs submitted round-robin to three replicas; one is SIGKILLed while every job is in
    flight; the other two finish everything, one provider task per job, one poller at a time."""
    n_jobs = int(os.environ.get("STILLMOTION_TEST_REPLICA_JOBS", "60"))
    pattern = [KLING, XAI, WAN, KLING, XAI, KLING, WAN, XAI, KLING, LOCAL]
    models = [pattern[i % len(pattern)] for i in range(n_jobs)]
    hold = tmp_path / "hold-render"
    hold.touch()
    fakes.hold()
    env = team_env(pg_url, shared, img, fakes, STILLMOTION_TEST_HOLD_FILE=str(hold), STILLMOTION_POLL_INTERVAL_MS="500",
                   STILLMOTION_LEASE_MS="5000")  # a gone pid on this host is stale at once; live ones keep theirs
    store = PgStore(pg_url, pool_size=2)
    with replicas(["r0", "r1", "r2"], env, tmp_path / "logs") as reps:

        n_kling, n_xai, n_wan = (models.count(m) for m in (KLING, XAI, WAN))

        async def before_kill() -> tuple[list[str], str]:
            async with clients(reps) as cs:
                ids = [structured(x)["job_id"] for x in await call_all([
                    (lambda i=i: cs[i % 3].call_tool("animate_image", gen_args(models[i], img)))
                    for i in range(n_jobs)
                ])]
                # every create is out before the kill (the hold points keep the tasks pending)
                await anyio.to_thread.run_sync(lambda: fakes.kling.wait_for_calls(n_kling, "POST", KLING_PATH, timeout=90))
                await anyio.to_thread.run_sync(lambda: fakes.xai.wait_for_calls(n_xai, "POST", XAI_CREATE, timeout=90))
                await anyio.to_thread.run_sync(lambda: fakes.gateway.wait_for_calls(n_wan, "POST", GW_START, timeout=90))
                # every replica answers for every job, also those another replica drives
                looks = await call_all([
                    (lambda j=j, c=c: c.call_tool("check_job", {"job_id": j})) for j in ids for c in cs
                ])
                assert all(structured(x)["status"] in ("queued", "running") for x in looks)
                # cancel a Kling job from a replica that does not drive it
                k = next(i for i in range(3, n_jobs) if models[i] == KLING)
                cancelled = structured(await cs[(k + 1) % 3].call_tool("cancel_job", {"job_id": ids[k]}))
                assert cancelled["status"] == "cancelled"
                # one Kling and one xAI create in flight on r1 at the kill: received (the task
                # exists), answer held back
                fakes.kling.inject_hang(f"POST {KLING_PATH}", seconds=60)
                fakes.xai.inject_hang(f"POST {XAI_CREATE}", seconds=60)
                for m in (KLING, XAI):
                    in_flight.append(structured(await cs[1].call_tool("animate_image", gen_args(m, img)))["job_id"])
                await anyio.to_thread.run_sync(lambda: fakes.kling.wait_for_calls(n_kling + 1, "POST", KLING_PATH, timeout=90))
                await anyio.to_thread.run_sync(lambda: fakes.xai.wait_for_calls(n_xai + 1, "POST", XAI_CREATE, timeout=90))
                return ids, ids[k]

        in_flight: list[str] = []
        ids, victim = anyio.run(before_kill)
        wait_rows(store, in_flight, lambda r: r.stage == "submitting", timeout=30)
        remote = [j for j, m in zip(ids, models, strict=True) if m != LOCAL]
        wait_rows(store, [j for j in remote if j != victim], lambda r: r.stage == "polling", timeout=60)
        locals_ = [j for j, m in zip(ids, models, strict=True) if m == LOCAL]
        deadline = time.monotonic() + 60  # each replica renders one local job at a time (held mid-render)
        while sum(r.status == "running" for r in rows(store, locals_).values()) < min(3, len(locals_)):
            assert time.monotonic() < deadline, "local renders did not start"
            time.sleep(0.1)

        before = rows(store, ids)
        owners = {r.owner for r in before.values() if r.owner}
        assert len(owners) == 3, owners  # each replica owns the jobs it accepted
        r1_owner = before[ids[1]].owner
        assert r1_owner is not None
        r1_jobs = [j for j, r in before.items() if r.owner == r1_owner and not r.terminal] + in_flight
        assert r1_jobs

        reps[1].extra["kill"] = True
        reps[1].proc.send_signal(signal.SIGKILL)
        reps[1].proc.wait(10)
        killed_at = time.monotonic()
        hold.unlink()
        fakes.release()
        done = wait_rows(store, ids + in_flight, lambda r: r.terminal, timeout=180)
        # the Kling create whose answer died with r1 is found again by external_task_id; the xAI
        # one cannot be looked up: interrupted, never sent a second time
        kling_in_flight, xai_in_flight = (done[j] for j in in_flight)
        assert_published(shared, kling_in_flight)
        assert xai_in_flight.status == "failed" and (xai_in_flight.error or {}).get("kind") == "interrupted"
        n_kling, n_xai = n_kling + 1, n_xai + 1

        survivors = {done[j].owner for j in r1_jobs}
        assert r1_owner not in survivors and survivors <= owners, survivors
        for j in ids:
            if j == victim:
                assert done[j].status == "cancelled"
                continue
            assert_published(shared, done[j])
        # one provider task per job: creates never resent, also for the jobs taken over
        assert len(fakes.kling.calls("POST", KLING_PATH)) == n_kling == len(fakes.kling.tasks)
        assert len(fakes.xai.calls("POST", XAI_CREATE)) == n_xai == len(fakes.xai.tasks)
        assert fakes.gateway.starts == n_wan == len(fakes.gateway.tasks)
        # each task polled by one replica at a time: the killed one until the kill, then one other
        polls = task_polls(fakes)
        lists = kling_lists(fakes)
        kling_single = [t for t in polls if t.startswith("kling:")]
        # every other task polled singly (the interrupted xAI task never); Kling tasks singly or
        # through the task list of the replica driving them
        assert len(polls) - len(kling_single) >= n_xai - 1 + n_wan
        assert len(kling_single) >= n_kling or lists
        assert all(r.at < killed_at for r in lists if instance_of(r) == r1_owner)
        for task, seq in polls.items():
            who: list[str] = []
            for r in seq:
                if not who or who[-1] != instance_of(r):
                    who.append(instance_of(r))
            assert len(who) == len(set(who)), (task, who)  # never back to an earlier poller
            if r1_owner in who:
                assert who[0] == r1_owner and len(who) <= 2, (task, who)
            assert all(r.at < killed_at for r in seq if instance_of(r) == r1_owner)

        # check_job, cancel_job and the video resource on every live replica for every job
        live = [reps[0], reps[2]]

        async def everywhere() -> None:
            async with clients(live) as cs:
                for c in cs:
                    checks = await call_all([(lambda j=j, c=c: c.call_tool("check_job", {"job_id": j})) for j in ids])
                    assert [structured(x)["status"] for x in checks] == [done[j].status for j in ids]
                    ended = await call_all([(lambda j=j, c=c: c.call_tool("cancel_job", {"job_id": j})) for j in ids])
                    assert all("already ended" in x.content[0].text for x in ended)
                    videos = await call_all([
                        (lambda j=j, c=c: c.read_resource(f"stillmotion://jobs/{j}/video.mp4")) for j in ids if j != victim
                    ])
                    for j, v in zip([j for j in ids if j != victim], videos, strict=True):
                        data = base64.b64decode(v.contents[0].blob)
                        assert hashlib.sha256(data).hexdigest() == done[j].result["video"]["sha256"]  # type: ignore[index]

        anyio.run(everywhere)
    store.close()


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_one_session_alternating_between_two_replicas(
    mode: str, pg_url: str, shared: Path, img: Path, tmp_path: Path
) -> None:
    env = team_env(pg_url, shared, img)
    with replicas(["a", "b"], env, tmp_path / "logs") as reps, RoundRobinProxy([r.base for r in reps]) as proxy:

        async def session() -> None:
            async with Client(proxy.url, mode=mode) as c:  # type: ignore[arg-type]
                names = {t.name for t in (await c.list_tools()).tools}
                assert {"animate_image", "check_job", "cancel_job"} <= names
                job = structured(await c.call_tool("animate_image", gen_args(LOCAL, img, wait_seconds=0)))
                progress: list[float] = []

                async def on_progress(p: float, total: float | None, message: str | None) -> None:
                    progress.append(p)

                for _ in range(30):
                    got = structured(await c.call_tool(
                        "check_job", {"job_id": job["job_id"], "wait_seconds": 5}, progress_callback=on_progress
                    ))
                    if got["status"] in TERMINAL:
                        break
                assert got["status"] == "succeeded", got
                assert progress and progress[-1] == 1.0, "progress reaches the caller through any replica"
                # the signed file link one replica made is honoured by every replica (shared secret + volume)
                link = urlsplit(got["video"]["http_url"])
                async with httpx.AsyncClient(timeout=30) as web:
                    for r in reps:
                        got_file = await web.get(f"{r.base}{link.path}?{link.query}")
                        assert got_file.status_code == 200
                        assert hashlib.sha256(got_file.content).hexdigest() == got["video"]["sha256"]
                listed = structured(await c.call_tool("list_jobs", {}))
                assert job["job_id"] in [j["job_id"] for j in listed["jobs"]]
                video = await c.read_resource(f"stillmotion://jobs/{job['job_id']}/video.mp4")
                assert len(video.contents) == 1
                again = await c.call_tool("cancel_job", {"job_id": job["job_id"]})
                assert "already ended" in again.content[0].text
                second = structured(await c.call_tool("animate_image", gen_args(LOCAL, img, idempotency_key="k")))
                assert structured(await c.call_tool("check_job", {"job_id": second["job_id"]}))["job_id"] == second["job_id"]

        anyio.run(session)
        # the calls really alternated: both replicas answered parts of the one session
        assert set(proxy.sent) == {reps[0].base, reps[1].base}
        assert len(proxy.sent) >= 8
        assert all(a != b for a, b in zip(proxy.sent, proxy.sent[1:], strict=False))


def test_listen_on_one_replica_hears_a_job_another_drives(
    pg_url: str, shared: Path, img: Path, tmp_path: Path
) -> None:
    hold = tmp_path / "hold-render"
    hold.touch()
    env = team_env(pg_url, shared, img, STILLMOTION_TEST_HOLD_FILE=str(hold))
    with replicas(["a", "b"], env, tmp_path / "logs") as reps:

        async def go() -> list[str]:
            async with Client(reps[0].url) as a, Client(reps[1].url) as b:
                job = structured(await a.call_tool("animate_image", gen_args(LOCAL, img)))
                uri = f"stillmotion://jobs/{job['job_id']}"
                seen: list[str] = []
                async with b.listen(resource_subscriptions=[uri]) as sub:
                    hold.unlink()
                    with anyio.fail_after(60):
                        async for event in sub:
                            seen.append(str(getattr(event, "uri", "")))
                            st = structured(await b.call_tool("check_job", {"job_id": job["job_id"]}))["status"]
                            if st == "succeeded":
                                break
                return seen

        seen = anyio.run(go)
        assert seen and len(set(seen)) == 1


def test_legacy_clients_on_replicas_are_not_offered_subscribe(pg_url: str, shared: Path, img: Path, tmp_path: Path) -> None:
    with replicas(["a"], team_env(pg_url, shared, img), tmp_path / "logs") as reps:

        async def caps() -> Any:
            async with Client(reps[0].url, mode="legacy") as c:
                return c.server_capabilities

        got = anyio.run(caps)
        assert got is None or got.resources is None or not got.resources.subscribe


def test_same_idempotency_key_on_two_replicas_at_once(
    pg_url: str, shared: Path, img: Path, fakes: Fakes, tmp_path: Path
) -> None:
    env = team_env(pg_url, shared, img, fakes)
    with replicas(["a", "b"], env, tmp_path / "logs") as reps:

        async def race() -> list[tuple[str, str]]:
            async with clients(reps) as (a, b):
                pairs: list[tuple[str, str]] = []
                for i in range(50):
                    args = gen_args(KLING, img, prompt=f"race {i}", idempotency_key=f"team-key-{i}")
                    ra, rb = await call_all([lambda args=args: a.call_tool("animate_image", args),
                                             lambda args=args: b.call_tool("animate_image", args)])
                    pairs.append((structured(ra)["job_id"], structured(rb)["job_id"]))
                return pairs

        pairs = anyio.run(race)
        assert all(x == y for x, y in pairs)
        assert len({x for x, _ in pairs}) == 50
        store = PgStore(pg_url, pool_size=1)
        try:
            assert len(store.recent(limit=500)) == 50
            wait_rows(store, [x for x, _ in pairs], lambda r: r.terminal, timeout=120)
        finally:
            store.close()
        assert len(fakes.kling.calls("POST", KLING_PATH)) == 50


def test_max_running_kling_across_three_replicas(
    pg_url: str, shared: Path, img: Path, fakes: Fakes, tmp_path: Path
) -> None:
    fakes.kling.max_concurrent = 5  # a sixth unfinished task would be answered 429/1303 and counted
    fakes.hold()
    env = team_env(pg_url, shared, img, fakes, STILLMOTION_MAX_RUNNING_KLINGAI="5")
    store = PgStore(pg_url, pool_size=1)
    with replicas(["r0", "r1", "r2"], env, tmp_path / "logs") as reps:

        async def submit() -> list[str]:
            async with clients(reps) as cs:
                res = await call_all([
                    (lambda i=i: cs[i % 3].call_tool("animate_image", gen_args(KLING, img, prompt=f"job {i}")))
                    for i in range(40)
                ])
                return [structured(x)["job_id"] for x in res]

        ids = anyio.run(submit)
        fakes.kling.wait_for_calls(5, "POST", KLING_PATH, timeout=60)
        waiting = wait_rows(
            store, ids, lambda r: r.stage == "polling" or (r.status_detail or "").find("MAX_RUNNING_KLINGAI=5") >= 0,
            timeout=60,
        )
        assert sum(1 for r in waiting.values() if r.stage == "polling") == 5
        queued = [r for r in waiting.values() if r.stage != "polling"]
        assert len(queued) == 35 and all(r.status == "queued" for r in queued)
        assert "5 of 5 KlingAI tasks are running" in (queued[0].status_detail or "")
        fakes.release()
        fakes.kling.polls_until_done = 2
        done = wait_rows(store, ids, lambda r: r.terminal, timeout=240)
        for r in done.values():
            assert_published(shared, r)
        assert fakes.kling.concurrency_rejections == 0
        assert len(fakes.kling.tasks) == 40 == len(fakes.kling.calls("POST", KLING_PATH))
        assert len({instance_of(r) for r in fakes.kling.calls("POST", KLING_PATH)}) == 3
    store.close()


def test_refuses_a_home_other_replicas_cannot_see(pg_url: str, shared: Path, img: Path, tmp_path: Path) -> None:
    with replicas(["a"], team_env(pg_url, shared, img), tmp_path / "logs"):
        stray = start_replica("stray", team_env(pg_url, tmp_path / "local-disk", img), tmp_path / "logs")
        try:
            assert stray.proc.wait(60) != 0
        finally:
            stray.stop()
        log = stray.log.read_text()
        assert "refusing to start" in log and "STILLMOTION_HOME" in log and "volume every replica mounts" in log


def test_sigterm_releases_leases_for_the_other_replica(
    pg_url: str, shared: Path, img: Path, fakes: Fakes, tmp_path: Path
) -> None:
    fakes.hold()
    env = team_env(pg_url, shared, img, fakes, STILLMOTION_LEASE_MS="60000")  # takeover must not wait for a lease
    store = PgStore(pg_url, pool_size=1)
    with replicas(["a", "b"], env, tmp_path / "logs") as reps:

        async def submit() -> list[str]:
            async with Client(reps[0].url) as a:
                return [structured(await a.call_tool("animate_image", gen_args(KLING, img, prompt=f"p{i}")))["job_id"]
                        for i in range(4)]

        ids = anyio.run(submit)
        wait_rows(store, ids, lambda r: r.stage == "polling", timeout=60)
        a_owner = rows(store, ids)[ids[0]].owner
        t0 = time.monotonic()
        assert reps[0].stop(signal.SIGTERM) in (0, -signal.SIGTERM)
        released = rows(store, ids)
        assert all(r.owner != a_owner for r in released.values())
        taken = wait_rows(store, ids, lambda r: r.owner is not None and r.owner != a_owner, timeout=30)
        assert time.monotonic() - t0 < 30, "taken over at once, not after the 60 s lease"
        fakes.release()
        done = wait_rows(store, ids, lambda r: r.terminal, timeout=60)
        assert all(r.status == "succeeded" for r in done.values())
        assert {r.owner for r in taken.values()} == {r.owner for r in done.values()}
    store.close()
    assert len(fakes.kling.tasks) == 4

