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

import contextlib
import inspect
import itertools
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import anyio
import httpx
import pytest
from mcp import Client

from stillmotion.jobs.async_store import AsyncJobStore, StoreUnavailable, store_fault
from stillmotion.jobs.pg_store import PgStore
from stillmotion.jobs.store import JobStore, SqliteStore, new_job_id
from stillmotion.settings import Settings
from tests.conftest import connect, running, write_image
from tests.fakes import XaiFake
from tests.pg import pg_cluster
from tests.replicas import EXE, Replica, base_env, replicas
from tests.stdio_client import StdioServer

XAI = "xai/grok-imagine-video"
XAI_CREATE = "/v1/videos/generations"
KEY = "xai-key-0123456789"
LEASE_MS = 2000
BUSY_MS = 250
HEALTH_BOUND_S = 2.0
"""Generous bounds for what must never wait on the store (measured values are printed)."""
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
    with running(XaiFake(api_key=KEY)) as fake:
        yield fake


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


def assert_videos(srv: StdioServer, ids: list[str]) -> None:
    """Every job's full result (check_job) names a video file of the size it says."""
    for job_id in ids:
        j = ok(tool(srv, "check_job", {"job_id": job_id}))
        assert j["status"] == "succeeded", j
        assert Path(j["video"]["path"]).stat().st_size == j["video"]["bytes"] > 0


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
        assert_videos(srv, ids)
        assert refused is not None and refused["isError"] is True
        text = refused["content"][0]["text"]
        assert text.startswith("[unavailable]") and "locked" in text and "retry" in text, text
        assert len(xai.calls("POST", XAI_CREATE)) == 12  # the refused submit never reached the provider
        # the lock really hit the runner's writes (a job whose writes outlasted its lease, how many
        # depends on when their polls came due, was released and driven again: all succeeded above)
        log = srv.stderr.decode(errors="replace")
        assert "locked by another process" in log
        print(f"\nlist_models under a locked SQLite: {len(latencies)} calls, max {max(latencies) * 1000:.0f} ms, "
              f"median {sorted(latencies)[len(latencies) // 2] * 1000:.0f} ms")
        assert max(latencies) < HEALTH_BOUND_S, latencies  # (the target is 200 ms; generous on a shared box)
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


# -- PostgreSQL: an outage and restarts under two replicas --------------------------------------

OUTAGE_S = 4.0
"""Twice the lease (the issue's 20 s outage against the default 30 s lease is scaled with the lease)."""


class Prober:
    """Asks both replicas' /healthz and /readyz ten times a second on a thread of its own."""

    def __init__(self, reps: list[Replica]) -> None:
        self.reps = reps
        self.health: list[tuple[float, str, float, int]] = []  # (when, replica, seconds, status; 0 = no answer)
        self.ready: list[tuple[float, str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=2.0) as http:
            while not self._stop.is_set():
                for r in self.reps:
                    t0 = time.monotonic()
                    try:
                        code = http.get(r.base + "/healthz").status_code
                    except httpx.HTTPError:
                        code = 0
                    self.health.append((t0, r.name, time.monotonic() - t0, code))
                    try:
                        ready = http.get(r.base + "/readyz").status_code
                    except httpx.HTTPError:
                        ready = 0
                    self.ready.append((time.monotonic(), r.name, ready))
                self._stop.wait(0.1)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def ready_again(self, name: str, since: float, timeout: float = 30.0) -> float:
        """Seconds from `since` until the replica's /readyz next answered 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for when, who, code in list(self.ready):
                if who == name and when >= since and code == 200:
                    return when - since
            time.sleep(0.05)
        raise AssertionError(f"{name} not ready {timeout} s after the database came back")


async def mcp_serves_again(rep: Replica, since: float, timeout: float = 30.0) -> float:
    """Seconds from `since` until a fresh MCP session on the replica lists jobs again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with anyio.fail_after(5):
                async with Client(rep.url) as c:  # type: ignore[arg-type]
                    res = await c.call_tool("list_jobs", {})
            if not res.is_error:
                return time.monotonic() - since
        except Exception:  # the replica is not serving yet: try again
            pass
        assert time.monotonic() < deadline, f"{rep.name} does not serve MCP again:\n{rep.log.read_text()[-3000:]}"
        await anyio.sleep(0.2)


def healed(probe: Prober, reps: list[Replica], back: float) -> tuple[list[float], list[float]]:
    """Seconds after `back` until each replica was ready, and until each served MCP (asked together)."""
    serve: list[float] = [0.0] * len(reps)

    async def all_serve() -> None:
        async def one(i: int) -> None:
            serve[i] = await mcp_serves_again(reps[i], back)

        async with anyio.create_task_group() as tg:
            for i in range(len(reps)):
                tg.start_soon(one, i)

    anyio.run(all_serve)
    return [probe.ready_again(r.name, back) for r in reps], serve


def test_postgres_stopped_and_restarted_under_two_replicas(tmp_path: Path, img: Path, xai: XaiFake) -> None:
    with pg_cluster() as cluster:
        url = cluster.create_database()
        env = base_env(
            STILLMOTION_HOME=str(tmp_path / "shared"), STILLMOTION_DATABASE_URL=url, STILLMOTION_INPUT_ROOTS=str(img.parent),
            XAI_API_KEY=KEY, XAI_BASE_URL=xai.api_base, STILLMOTION_POLL_INTERVAL_MS="200", STILLMOTION_RETRY_BASE_MS="20",
            STILLMOTION_LEASE_MS=str(LEASE_MS),
        )  # fmt: skip
        xai.polls_until_done = None
        ids: list[str] = []
        with replicas(["r0", "r1"], env, tmp_path / "logs") as reps, Prober(reps) as probe:

            async def submit(n: int) -> None:
                async with contextlib.AsyncExitStack() as stack:
                    cs = [await stack.enter_async_context(Client(r.url)) for r in reps]  # type: ignore[arg-type]
                    for i in range(n):
                        res = await cs[i % 2].call_tool("animate_image", xai_args(img))
                        assert not res.is_error, res.content
                        assert res.structured_content is not None
                        ids.append(res.structured_content["job_id"])

            # 1. stopped for twice the lease, every task finishing meanwhile
            anyio.run(submit, 10)
            xai.wait_for_calls(10, "POST", XAI_CREATE, timeout=60)
            stopped = time.monotonic()
            cluster.stop_server()
            xai.polls_until_done = 1
            xai.release()

            async def during_outage() -> Any:
                with anyio.fail_after(30):
                    async with Client(reps[0].url) as c:  # type: ignore[arg-type]
                        return await c.call_tool("animate_image", xai_args(img))

            refused = anyio.run(during_outage)
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))  # the outage itself
            cluster.start_server()
            back = time.monotonic()
            ready_s, serve_s = healed(probe, reps, back)
            assert refused.is_error and refused.content[0].text.startswith("[unavailable]"), refused.content
            assert "PostgreSQL" in refused.content[0].text and "retry" in refused.content[0].text

            # 2. `pg_ctl restart` three times with jobs in flight
            xai.polls_until_done = None
            anyio.run(submit, 10)
            xai.wait_for_calls(20, "POST", XAI_CREATE, timeout=60)
            restarts: list[tuple[list[float], list[float]]] = []
            for k in range(3):
                if k == 1:
                    xai.polls_until_done = 1
                    xai.release()
                cluster.restart()
                back = time.monotonic()
                restarts.append(healed(probe, reps, back))

            store = PgStore(url, pool_size=2)
            try:
                deadline = time.monotonic() + 120
                while True:
                    got = [store.get(i) for i in ids]
                    if all(r is not None and r.terminal for r in got) or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
            finally:
                store.close()
        done = {r.id: r for r in got if r is not None}
        assert len(done) == 20
        bad = {i: (r.status, r.stage, r.error) for i, r in done.items() if r.status != "succeeded"}
        assert not bad, (bad, [line for r in reps for line in r.log.read_text().splitlines()
                               if any(i in line for i in bad)][:40])
        assert len(xai.calls("POST", XAI_CREATE)) == 20  # one create per job: none lost, none sent twice
        # /healthz answered throughout, on both replicas (the target is a second; the bound
        # is generous for a shared CI box: before, it waited on the store, tens of seconds)
        assert probe.health and all(code == 200 and took < HEALTH_BOUND_S for _, _, took, code in probe.health), [
            h for h in probe.health if h[3] != 200 or h[2] >= HEALTH_BOUND_S][:5]
        # /readyz said so while the database was down
        assert any(code == 503 and stopped < when < back_first for when, _, code in probe.ready
                   for back_first in [stopped + OUTAGE_S])
        took = sorted(h[2] for h in probe.health)
        print(f"\n/healthz: {len(took)} probes, median {took[len(took) // 2] * 1000:.0f} ms, "
              f"p99 {took[int(len(took) * 0.99)] * 1000:.0f} ms, max {took[-1] * 1000:.0f} ms")
        print(f"after a {OUTAGE_S:.0f} s outage: /readyz 200 after {max(ready_s):.1f} s, MCP after {max(serve_s):.1f} s; "
              + "; ".join(f"restart {i + 1}: ready {max(a):.1f} s, MCP {max(b):.1f} s" for i, (a, b) in enumerate(restarts))
              )
        assert max(ready_s) < 10 and max(serve_s) < 15
        assert all(max(a) < 10 and max(b) < 15 for a, b in restarts)
        for r in reps:
            text = r.log.read_text()
            assert "Task group is not initialized" not in text and "internal error" not in text


def test_spend_on_postgres_command_and_resource(pg_url: str, tmp_path: Path) -> None:
    owner = "spend-test"
    store = PgStore(pg_url, pool_size=2)

    def add(n: int, usd: float, *stages: str, status: str) -> None:
        job_id = f"job_{n:016x}"
        store.create(job_id=job_id, tool="animate_image", model=XAI, route="direct", request={}, args_hash="h",
                     idempotency_key=None, warnings=[], cost={"estimated_usd": usd, "basis": "test", "estimate": True},
                     owner=owner, lease_s=60)
        for stage in stages:
            assert store.update_owned(job_id, owner, {"stage": stage, "status": "running"})
        assert store.update_owned(job_id, owner, {"status": status, "stage": "done"})

    try:
        add(1, 1.25, "submitting", "polling", status="succeeded")
        add(2, 2.5, "submitting", "polling", status="failed")  # failed after its create: billed
        add(3, 4.0, status="failed")  # never sent: nothing
        truth = store.spend(None, "month")
    finally:
        store.close()
    assert truth["budget"]["committed_usd"] == pytest.approx(3.75)

    home = tmp_path / "laptop"  # a home with no SQLite file: the command must read PostgreSQL
    env = base_env(STILLMOTION_HOME=str(home), STILLMOTION_DATABASE_URL=pg_url)
    out = subprocess.run([*EXE, "spend", "--json"], env=env, capture_output=True, text=True, check=True, timeout=60)
    report = json.loads(out.stdout)
    assert report["budget"]["committed_usd"] == pytest.approx(3.75)
    assert report["rows"] == truth["rows"]

    async def resource() -> dict[str, Any]:
        settings = Settings.from_env({"STILLMOTION_HOME": str(tmp_path / "replica"), "STILLMOTION_DATABASE_URL": pg_url,
                                      "STILLMOTION_BACKGROUND": "0"}, transport="http")
        async with connect(settings) as client:
            text = (await client.read_resource("stillmotion://spend")).contents[0].text  # type: ignore[union-attr]
        return dict(json.loads(text))

    via_resource = anyio.run(resource)
    assert via_resource["budget"]["committed_usd"] == pytest.approx(3.75)
    assert via_resource["rows"] == truth["rows"]
    assert not (home / "jobs.sqlite3").exists() and not (tmp_path / "replica" / "jobs.sqlite3").exists()


# -- a full disk under a stdio server ------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `where` (root only; the test skips where mounting is refused)."""
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def fill(path: Path) -> int:
    """Write `path` until the disk is full; returns the bytes written."""
    written = 0
    chunk = b"\0" * (256 * 1024)
    with open(path, "wb", buffering=0) as fh:
        while True:
            try:
                written += fh.write(chunk)
            except OSError:
                break
        with contextlib.suppress(OSError):  # the last partial chunk
            while fh.write(b"\0" * 4096):
                written += 4096
    return written


def test_disk_full_under_a_stdio_server_with_jobs_in_flight(tmp_path: Path, img: Path, xai: XaiFake) -> None:
    with small_tmpfs(tmp_path / "small", "48m") as home:
        xai.polls_until_done = None
        srv = StdioServer(stdio_env(home, img, xai))
        try:
            srv.initialize()
            ids = [ok(tool(srv, "animate_image", xai_args(img)))["job_id"] for _ in range(4)]
            xai.wait_for_calls(4, "POST", XAI_CREATE, timeout=60)
            wait_all(srv, ids, {"running"})

            filler = home / "filler"
            assert fill(filler) > 0
            xai.polls_until_done = 1
            xai.release()  # every job now downloads its video onto the full disk
            refused = tool(srv, "animate_image", xai_args(img))
            text = refused["content"][0]["text"]
            assert refused["isError"] is True and text.startswith("[unavailable]"), text
            assert "full" in text and "retry" in text, text
            deadline = time.monotonic() + 3 * LEASE_MS / 1000  # the jobs meet the full disk meanwhile
            while time.monotonic() < deadline:
                assert tool(srv, "list_models", {})["isError"] is False  # the server lives
                time.sleep(0.2)
            assert srv.proc.poll() is None
            still = ok(tool(srv, "list_jobs", {"limit": 50}))["jobs"]
            assert {j["job_id"] for j in still} == set(ids)  # the refused submit left no job
            assert all(j["status"] in ("running", "downloading") for j in still), still

            filler.unlink()  # space comes back: every accepted job finishes, with no restart
            done = wait_all(srv, ids, {"succeeded", "failed", "cancelled"}, timeout=120)
            assert {j["status"] for j in done.values()} == {"succeeded"}, done
            assert_videos(srv, ids)
            assert len(xai.calls("POST", XAI_CREATE)) == 4
            log = srv.stderr.decode(errors="replace")
            assert "full" in log and "internal error" not in log
        finally:
            srv.close()


# -- one job's store faults never take the server down -------------------------------------------


class FaultyStore(SqliteStore):
    """A real SQLite store whose every write about the jobs in `broken` fails (a disk I/O error)."""

    broken: ClassVar[set[str]] = set()
    failed_writes: ClassVar[int] = 0
    """How many writes about a broken job failed."""

    def update_owned(self, job_id: str, owner: str, values: Any, *, lease_s: float | None = None) -> Any:
        if job_id in self.broken:
            type(self).failed_writes += 1
            raise sqlite3.OperationalError("disk I/O error")
        return super().update_owned(job_id, owner, values, lease_s=lease_s)

    def release(self, owner: str, job_ids: Any = None) -> int:
        if job_ids is not None and set(job_ids) & self.broken:
            raise sqlite3.OperationalError("disk I/O error")
        return super().release(owner, job_ids)


def test_a_failing_mark_failed_write_never_takes_the_server_down(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch, image_480: Path
) -> None:
    from stillmotion import service as service_mod

    settings = make_settings(STILLMOTION_LEASE_MS="600")
    monkeypatch.setattr(service_mod, "open_for_settings", lambda s: FaultyStore(s.db_path))
    seed = SqliteStore(settings.db_path)
    doomed = new_job_id()  # a job whose request cannot be read: the runner ends it as failed ...
    seed.create(job_id=doomed, tool="animate_image", model="local/preview", route="local", request={"bad": True},
                args_hash="h", idempotency_key=None, warnings=[])
    FaultyStore.broken = {doomed}  # ... and that write fails, and so does releasing it
    FaultyStore.failed_writes = 0

    async def main() -> tuple[dict[str, Any], bool]:
        async with connect(settings) as client:
            # the doomed job is claimed, fails, and its end cannot be recorded, again and again
            # (retried while its lease lasts, which the heartbeat keeps renewing)
            with anyio.fail_after(60):
                while FaultyStore.failed_writes < 3:
                    await anyio.sleep(0.02)
            job = await client.call_tool("animate_image", {"image": str(image_480), "duration": 1,
                                                           "local": {"resolution": "480p"}, "wait_seconds": 45})
            assert job.structured_content is not None, job.content
            models = await client.call_tool("list_models", {})
            return dict(job.structured_content), not models.is_error

    try:
        done, alive = anyio.run(main)
    finally:
        FaultyStore.broken = set()
    assert alive and done["status"] == "succeeded", done  # the task group outlived the doomed job
    row = seed.get(doomed)
    seed.close()
    assert row is not None and row.status == "queued"  # never recorded as failed by a store that could not


def test_every_store_method_has_an_async_face() -> None:
    """A method added to JobStore needs its one line in AsyncJobStore (`name = exposed(JobStore.name)`)."""
    public = {n for n, v in vars(JobStore).items() if callable(v) and not n.startswith("_")} - {"close"}
    missing = sorted(n for n in public if not inspect.iscoroutinefunction(getattr(AsyncJobStore, n, None)))
    assert not missing, f"add to AsyncJobStore: {missing}"


class SlowSubmittingStore(SqliteStore):
    """A real SQLite store whose writes marking a job `submitting` take longer than half the lease
    (a store slowed by another process, a paused machine) the first `slow` times."""

    slow: ClassVar[int] = 0
    delay_s: ClassVar[float] = 0.0

    def _maybe_slow(self, values: Any) -> None:
        if values.get("stage") == "submitting" and SlowSubmittingStore.slow > 0:
            SlowSubmittingStore.slow -= 1
            time.sleep(SlowSubmittingStore.delay_s)  # (on the store's own thread, never the event loop)

    def update_owned(self, job_id: str, owner: str, values: Any, *, lease_s: float | None = None) -> Any:
        self._maybe_slow(values)
        return super().update_owned(job_id, owner, values, lease_s=lease_s)

    def update_owned_capped(self, job_id: str, owner: str, values: Any, *, cap: Any, lease_s: float | None = None) -> Any:
        self._maybe_slow(values)
        return super().update_owned_capped(job_id, owner, values, cap=cap, lease_s=lease_s)


def test_a_slow_store_before_the_create_never_fails_the_job(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch, img: Path, xai: XaiFake
) -> None:
    """More slow `submitting` writes than the create's retry count: the job waits (queued) and is
    created once; before, five such rounds ended it `failed` without a create."""
    from stillmotion import service as service_mod

    settings = make_settings(STILLMOTION_LEASE_MS="600", STILLMOTION_MAX_RETRIES="2",
                             XAI_API_KEY=KEY, XAI_BASE_URL=xai.api_base)
    monkeypatch.setattr(service_mod, "open_for_settings", lambda s: SlowSubmittingStore(s.db_path))
    SlowSubmittingStore.slow, SlowSubmittingStore.delay_s = 5, 0.4  # > lease / 2, more rounds than retries

    async def main() -> dict[str, Any]:
        async with connect(settings) as client:
            job = await client.call_tool("animate_image", {**xai_args(img), "wait_seconds": 45})
            assert job.structured_content is not None, job.content
            return dict(job.structured_content)

    try:
        done = anyio.run(main)
    finally:
        SlowSubmittingStore.slow = 0
    assert done["status"] == "succeeded", done
    assert len(xai.calls("POST", XAI_CREATE)) == 1
