"""A job the provider finished is never lost (issue #21): the store and the disk may fail, the
server stays up.

Real processes (a stdio server, a second process holding the SQLite write lock), real SQLite
files, the strict xAI fake on loopback. Long waits are scaled down through settings: the lease
(2 s instead of 30 s) and how long one SQLite statement waits for the lock (250 ms instead of
30 s), so a lock held for 4 s outlasts the lease exactly as a 35 s lock outlasts the default
30 s one: writes fail, are retried until the lease is gone, the jobs are released, and taken
over again once the lock is gone.
"""

from __future__ import annotations

import itertools
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from stillmotion.jobs.async_store import AsyncJobStore, StoreUnavailable, store_fault
from stillmotion.jobs.store import SqliteStore, new_job_id
from tests.conftest import write_image
from tests.fakes import XaiFake
from tests.stdio_client import StdioServer

XAI = "xai/grok-imagine-video"
XAI_CREATE = "/v1/videos/generations"
KEY = "xai-key-0123456789"
LEASE_MS = 2000
BUSY_MS = 250
LOCK_S = 4.0
"""Twice the lease: the writes the runner makes while the lock is held outlast the lease."""

LOCKER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
db.close()
"""


@pytest.fixture
def xai() -> Iterator[XaiFake]:
    fake = XaiFake(api_key=KEY)
    fake.start()
    try:
        yield fake
        assert fake.violations == []
    finally:
        fake.stop()


def stdio_env(home: Path, img: Path, fake: XaiFake, **extra: str) -> dict[str, str]:
    return {
        "STILLMOTION_HOME": str(home), "STILLMOTION_INPUT_ROOTS": str(img.parent), "STILLMOTION_BACKGROUND": "0",
        "XAI_API_KEY": KEY, "XAI_BASE_URL": fake.api_base, "STILLMOTION_POLL_INTERVAL_MS": "200",
        "STILLMOTION_RETRY_BASE_MS": "20", "STILLMOTION_LEASE_MS": str(LEASE_MS),
        "STILLMOTION_STORE_BUSY_TIMEOUT_MS": str(BUSY_MS), **extra,
    }  # fmt: skip


def xai_args(img: Path, **extra: Any) -> dict[str, Any]:
    return {"model": XAI, "image": str(img), "prompt": "waves roll in", "duration": 6, **extra}


def tool(srv: StdioServer, name: str, args: dict[str, Any]) -> dict[str, Any]:
    res = srv.call_tool(name, args)
    assert "result" in res, res
    return dict(res["result"])


def ok(result: dict[str, Any]) -> dict[str, Any]:
    assert result["isError"] is False, result["content"][0]["text"]
    return dict(result["structuredContent"])


def wait_all(srv: StdioServer, ids: list[str], status: set[str], timeout: float = 90) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = {j["job_id"]: j for j in ok(tool(srv, "list_jobs", {"limit": 200}))["jobs"] if j["job_id"] in ids}
        if len(jobs) == len(ids) and all(j["status"] in status for j in jobs.values()):
            return jobs
        if time.monotonic() > deadline:
            raise AssertionError({i: (j["status"], j.get("status_detail")) for i, j in jobs.items()})
        time.sleep(0.1)


@pytest.fixture
def img(tmp_path: Path) -> Path:
    return write_image(tmp_path / "in" / "photo.png", 640, 480, seed=7)


def test_sqlite_locked_by_another_process_while_12_jobs_run(home: Path, img: Path, xai: XaiFake) -> None:
    xai.polls_until_done = None  # every task pending until released
    srv = StdioServer(stdio_env(home, img, xai))
    locker: subprocess.Popen[str] | None = None
    try:
        srv.initialize()
        ids = [ok(tool(srv, "animate_image", xai_args(img)))["job_id"] for _ in range(12)]
        xai.wait_for_calls(12, "POST", XAI_CREATE, timeout=60)
        wait_all(srv, ids, {"running"})

        locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(home / "jobs.sqlite3")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        xai.polls_until_done = 1
        xai.release()  # every task is done: every job wants to write (done, downloading, succeeded)

        latencies: list[float] = []
        refused: dict[str, Any] | None = None
        until = time.monotonic() + LOCK_S
        while time.monotonic() < until:
            t0 = time.perf_counter()
            models = tool(srv, "list_models", {})
            latencies.append(time.perf_counter() - t0)
            assert models["isError"] is False
            if refused is None and len(latencies) > 5:
                # a submit while the store is locked: a clear error to retry, nothing accepted
                refused = tool(srv, "animate_image", xai_args(img))
            time.sleep(0.05)
        t0 = time.perf_counter()
        listed = srv.request("tools/list")["result"]["tools"]
        latencies.append(time.perf_counter() - t0)
        assert {t["name"] for t in listed} >= {"animate_image", "list_models"}
        assert locker.stdin is not None
        locker.stdin.write("\n")
        locker.stdin.flush()
        assert locker.wait(10) == 0

        done = wait_all(srv, ids, {"succeeded", "failed", "cancelled"}, timeout=120)
        assert {j["status"] for j in done.values()} == {"succeeded"}, done
        for j in done.values():
            assert Path(j["video"]["path"]).stat().st_size == j["video"]["bytes"] > 0
        assert refused is not None and refused["isError"] is True
        text = refused["content"][0]["text"]
        assert text.startswith("[unavailable]") and "locked" in text and "retry" in text, text
        assert len(xai.calls("POST", XAI_CREATE)) == 12  # the refused submit never reached the provider
        # the lock really hit the runner's writes, and they were waited out, then released and taken over
        log = srv.stderr.decode(errors="replace")
        assert "locked by another process" in log
        assert "released for takeover" in log and "took over job" in log
        print(f"\nlist_models under a locked SQLite: {len(latencies)} calls, max {max(latencies) * 1000:.0f} ms, "
              f"median {sorted(latencies)[len(latencies) // 2] * 1000:.0f} ms")
        assert max(latencies) < 1.0, latencies  # (the target is 200 ms; generous on a shared CI box)
    finally:
        if locker is not None:
            if locker.poll() is None:
                locker.kill()
            locker.communicate(timeout=10)
        srv.close()


# -- the asynchronous face, in process ---------------------------------------------------------


def test_a_locked_store_never_blocks_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = SqliteStore(path, busy_timeout_s=1.5)
    other = sqlite3.connect(str(path), isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    ticks: list[float] = []

    async def main() -> BaseException | None:
        db = AsyncJobStore(store)
        caught: BaseException | None = None

        async def ticker() -> None:
            while True:
                ticks.append(time.monotonic())
                await anyio.sleep(0.01)

        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            try:
                await db.meta_set("k", "v")  # waits 1.5 s for the lock on the store's thread
            except StoreUnavailable as exc:
                caught = exc
            tg.cancel_scope.cancel()
        await db.aclose()
        return caught

    caught = anyio.run(main)
    other.execute("ROLLBACK")
    other.close()
    assert isinstance(caught, StoreUnavailable) and "locked by another process" in caught.message
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) > 50 and max(gaps) < 0.5, max(gaps)  # the loop ticked on throughout


def test_store_faults_are_told_apart_from_bugs() -> None:
    assert store_fault(sqlite3.OperationalError("database is locked")) is not None
    assert "full" in (store_fault(sqlite3.OperationalError("database or disk is full")) or "")
    assert "full" in (store_fault(OSError(28, "No space left on device")) or "")
    assert store_fault(sqlite3.IntegrityError("UNIQUE constraint failed")) is None
    assert store_fault(ValueError("not writable job columns")) is None
    assert store_fault(KeyError(new_job_id())) is None
