"""The job core's parts on their own: the retry policy, owner ids, status_detail, `stillmotion jobs`."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from stillmotion.cli import main
from stillmotion.errors import ConcurrencyLimited, ProviderError, QuotaError, RateLimited, StillmotionError
from stillmotion.jobs.ownership import (
    new_owner_id,
    owner_is_alive,
    owner_is_gone,
    parse_owner,
    process_start_time,
    register_live,
    unregister_live,
)
from stillmotion.jobs.retry import RetryPolicy
from stillmotion.jobs.store import SqliteStore, new_job_id
from tests.conftest import SettingsFactory, connect, structured, wait_done
from tests.fakes import KlingFake

# -- retry policy --------------------------------------------------------------------------------


def _policy(**kw: Any) -> tuple[RetryPolicy, list[float]]:
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    return RetryPolicy(base_s=1.0, max_retries=3, sleep=sleep, jitter=lambda: 1.0, **kw), slept


def _failing(errors: list[StillmotionError], result: str = "ok") -> Any:
    calls = {"n": 0}

    async def fn() -> str:
        calls["n"] += 1
        if errors:
            raise errors.pop(0)
        return result

    fn.calls = calls  # type: ignore[attr-defined]
    return fn


def test_retry_backs_off_exponentially_and_honours_retry_after() -> None:
    policy, slept = _policy()
    details: list[str] = []

    async def on_wait(err: StillmotionError, detail: str) -> None:
        details.append(detail)

    fn = _failing([ProviderError("boom", retryable=True), RateLimited("slow down", retry_after=7.5),
                   ProviderError("boom", retryable=True)])  # fmt: skip
    assert anyio.run(lambda: policy.run(fn, on_wait=on_wait)) == "ok"
    assert slept == [1.0, 7.5, 4.0]
    assert details[0] == "retrying: boom, attempt 1 of 3, next in 1.0 s"
    assert details[1] == "retrying: slow down, attempt 2 of 3, next in 7.5 s"


def test_retry_gives_up_after_max_retries_and_never_retries_final_errors() -> None:
    policy, slept = _policy()
    fn = _failing([ProviderError(f"e{i}", retryable=True) for i in range(5)])
    with pytest.raises(ProviderError, match="e3"):
        anyio.run(lambda: policy.run(fn))
    assert len(slept) == 3 and fn.calls["n"] == 4
    policy, slept = _policy()
    with pytest.raises(QuotaError):
        anyio.run(lambda: policy.run(_failing([QuotaError("out of credits")])))
    assert slept == []


def test_retry_jitter_and_cap() -> None:
    policy = RetryPolicy(base_s=1.0, max_retries=20, cap_s=10.0, jitter=lambda: 0.0)
    assert policy.delay(1, ProviderError("x", retryable=True)) == 0.5
    assert policy.delay(12, ProviderError("x", retryable=True)) == 5.0  # cap, then half of it at jitter 0
    assert policy.delay(3, ProviderError("x", retryable=True, retry_after=30.0)) == 10.0


def test_concurrency_limit_waits_without_an_attempt_limit() -> None:
    policy, slept = _policy()
    details: list[str] = []

    async def on_wait(err: StillmotionError, detail: str) -> None:
        details.append(detail)

    fn = _failing([ConcurrencyLimited("all slots busy", retry_after=2.0) for _ in range(12)])
    assert anyio.run(lambda: policy.run(fn, on_wait=on_wait)) == "ok"
    assert len(slept) == 12 and details[-1] == "queued: all slots busy; trying again in 2.0 s"


# -- owner ids -----------------------------------------------------------------------------------


def test_owner_id_names_host_pid_and_start_time() -> None:
    oid = new_owner_id()
    parsed = parse_owner(str(oid))
    assert parsed == oid and oid.host == socket.gethostname().replace(":", "_")
    assert oid.start == process_start_time(oid.pid)
    assert owner_is_gone(str(oid)), "a runner of this process that is not running is gone"
    register_live(str(oid))
    try:
        assert not owner_is_gone(str(oid)) and owner_is_alive(str(oid)) is True
    finally:
        unregister_live(str(oid))


def test_owner_of_a_dead_or_recycled_pid_is_gone_at_once() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        start = process_start_time(proc.pid)
        assert start is not None
        live = f"{socket.gethostname().replace(':', '_')}:{proc.pid}:{start}:abc123"
        assert not owner_is_gone(live)
        assert owner_is_gone(live.replace(f":{start}:", f":{int(start) + 1}:")), "same pid, another process"
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
    assert owner_is_gone(live)
    assert not owner_is_gone(f"elsewhere:{proc.pid}:1:abc"), "on another host only the lease tells"
    assert owner_is_alive(f"elsewhere:{proc.pid}:1:abc") is None


# -- status_detail reaches the agent ---------------------------------------------------------------


@pytest.mark.anyio
async def test_check_job_shows_what_a_retry_is_waiting_for(make_settings: SettingsFactory, image_480: Path) -> None:
    with KlingFake(api_key="k") as fake:
        fake.inject("GET /v1/videos/image2video/", status=503, json={"code": 5001, "message": "busy"},
                    headers={"retry-after-ms": "400"}, times=3)  # fmt: skip
        settings = make_settings(KLINGAI_API_KEY="k", KLINGAI_BASE_URL=fake.base_url)
        async with connect(settings) as client:
            job = structured(await client.call_tool(
                "animate_image", {"model": "klingai/kling-v2.6-i2v", "image": str(image_480), "prompt": "x"}))  # fmt: skip
            seen: dict[str, Any] = {}
            with anyio.fail_after(20):
                while not seen.get("status_detail"):
                    res = await client.call_tool("check_job", {"job_id": job["job_id"]})
                    seen = structured(res)
                    await anyio.sleep(0.02)
            assert seen["status_detail"].startswith("retrying: Kling: busy (code 5001), attempt ")
            assert "Now: retrying: Kling: busy" in res.content[0].text
            done = await wait_done(client, job["job_id"])
        assert done["status"] == "succeeded" and done["status_detail"] is None


# -- stillmotion jobs --------------------------------------------------------------------------------


def test_jobs_command_shows_owners_and_the_worker(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setenv("STILLMOTION_HOME", str(home))
    store = SqliteStore(home / "jobs.sqlite3")
    live = new_owner_id()
    register_live(str(live))
    try:
        common: dict[str, Any] = {"tool": "animate_image", "model": "klingai/kling-v2.6-i2v", "route": "direct",
                                  "request": {}, "args_hash": "h", "idempotency_key": None, "warnings": []}  # fmt: skip
        mine = store.create(job_id=new_job_id(), owner=str(live), lease_s=30, **common)
        dead = store.create(job_id=new_job_id(), owner=f"{live.host}:999999999:1:dead00", lease_s=30, **common)
        free = store.create(job_id=new_job_id(), **common)
        store.update_owned(mine.id, str(live), {"status_detail": "retrying: x, attempt 1 of 5, next in 1.0 s"})
        store.close()
        assert main(["jobs"]) == 0
    finally:
        unregister_live(str(live))
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "background worker: not running"
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert f"owner {live} (alive)" in lines[mine.id] and "[retrying: x, attempt 1 of 5" in lines[mine.id]
    assert "(gone)" in lines[dead.id]
    assert "owner none (waiting for a process)" in lines[free.id]


# -- an HTTP server that stops -------------------------------------------------------------------


@pytest.mark.anyio
async def test_http_server_stopping_releases_its_jobs_and_starts_no_worker(
    make_settings: SettingsFactory, image_480: Path, home: Path
) -> None:
    from stillmotion.jobs.worker import worker_alive

    with KlingFake(api_key="k") as fake:
        fake.polls_until_done = None
        settings = make_settings("http", KLINGAI_API_KEY="k", KLINGAI_BASE_URL=fake.base_url,
                                 STILLMOTION_INPUT_ROOTS=str(image_480.parent), STILLMOTION_BACKGROUND="1")  # fmt: skip
        async with connect(settings) as client:
            job = structured(await client.call_tool(
                "animate_image", {"model": "klingai/kling-v2.6-i2v", "image": str(image_480), "prompt": "x"}))  # fmt: skip
            with anyio.fail_after(20):
                while not fake.calls("GET", "/v1/videos/image2video/"):
                    await anyio.sleep(0.02)
        store = SqliteStore(home / "jobs.sqlite3")
        try:
            row = store.get(job["job_id"])
        finally:
            store.close()
        assert row is not None and row.status == "running" and row.owner is None and row.lease_expires_at is None
        assert not worker_alive(home) and not (home / "worker.log").exists()


# -- Kling 1201 "already exists" on a create ------------------------------------------------------


@pytest.mark.anyio
async def test_kling_1201_already_exists_means_look_it_up(make_settings: SettingsFactory, image_480: Path) -> None:
    import httpx

    path = "/v1/videos/image2video"
    with KlingFake(api_key="k") as fake:
        # Our create is received, but before its answer comes another attempt created the same
        # external_task_id: Kling then answers ours with 1201 "already exists".
        fake.inject(f"POST {path}", status=400, delay_s=1.0,
                    json={"code": 1201, "message": "external_task_id already exists", "request_id": "r1"})  # fmt: skip
        settings = make_settings(KLINGAI_API_KEY="k", KLINGAI_BASE_URL=fake.base_url)
        async with connect(settings) as client:
            job = structured(await client.call_tool(
                "animate_image", {"model": "klingai/kling-v2.6-i2v", "image": str(image_480), "prompt": "x"}))  # fmt: skip
            with anyio.fail_after(20):
                while not fake.calls("POST", path):
                    await anyio.sleep(0.01)
            body = fake.calls("POST", path)[0].json
            assert body["external_task_id"] == job["job_id"]
            async with httpx.AsyncClient() as other:
                first = await other.post(fake.url(path), json=body, headers={"Authorization": "Bearer k"})
            assert first.json()["code"] == 0
            done = await wait_done(client, job["job_id"])
        assert done["status"] == "succeeded", done
        assert len(fake.tasks) == 1 and done["provider_task_id"] == first.json()["data"]["task_id"]
