"""Several processes on one STILLMOTION_HOME: every job driven by exactly one of them.

Real stdio subprocesses against the strict fakes, which attribute every request to the process
that sent it (the instance in its User-Agent). Leases are short (3000 ms, 1500 ms where one must lapse) and polls fast (50 ms);
hold points are fake tasks that stay pending until released, hung create answers and the
render hold file, never sleeps that a result depends on.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stillmotion.jobs.ownership import parse_owner, pid_alive
from stillmotion.jobs.store import JobRow, SqliteStore
from stillmotion.jobs.worker import META_KEY, worker_alive
from stillmotion.media.video import probe_video
from tests.conftest import write_image
from tests.fakes import KlingFake, WanFake, XaiFake
from tests.fakes.base import FakeServer, Recorded, instance_of
from tests.stdio_client import StdioServer

LEASE_MS = 3000
"""Long enough that a live owner starved of CPU on a loaded CI machine still renews in time;
takeovers of killed owners do not wait for it (their pid is gone). The paused-owner test, which
does wait for a lease to lapse, uses PAUSE_LEASE_MS."""
PAUSE_LEASE_MS = 1500
KLING, WAN, XAI = "klingai/kling-v2.6-i2v", "alibaba/wan-v2.6-i2v", "xai/grok-imagine-video"
KLING_PATH, WAN_CREATE, WAN_TASKS = "/v1/videos/image2video", "/api/v1/services/aigc/video-generation/video-synthesis", "/api/v1/tasks/"
XAI_CREATE, XAI_STATUS = "/v1/videos/generations", "/v1/videos/"
LOCAL_ARGS = {"duration": 1, "local": {"resolution": "480p"}}


class Fakes:
    def __init__(self) -> None:
        self.kling = KlingFake(api_key="kling-key")
        self.wan = WanFake(api_key="sk-wan-key")
        self.xai = XaiFake(api_key="xai-key-0123456789")
        self.all: list[FakeServer] = [self.kling, self.wan, self.xai]

    def env(self) -> dict[str, str]:
        return {
            "KLINGAI_API_KEY": "kling-key", "KLINGAI_BASE_URL": self.kling.base_url,
            "ALIBABA_API_KEY": "sk-wan-key", "ALIBABA_BASE_URL": self.wan.base_url,
            "XAI_API_KEY": "xai-key-0123456789", "XAI_BASE_URL": self.xai.api_base,
        }  # fmt: skip

    def hold_tasks(self) -> None:
        for f in self.all:
            f.polls_until_done = None  # pending until release()

    def release_tasks(self) -> None:
        for f in self.all:
            f.polls_until_done = 2
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
def img(tmp_path: Path) -> Path:
    return write_image(tmp_path / "in" / "photo.png", 640, 480, seed=3)


@pytest.fixture
def servers() -> Iterator[list[StdioServer]]:
    started: list[StdioServer] = []
    yield started
    for srv in started:
        with contextlib.suppress(Exception):
            if srv.proc.poll() is None:
                os.kill(srv.proc.pid, signal.SIGCONT)
            srv.kill()


def _env(home: Path, fakes: Fakes, **extra: str) -> dict[str, str]:
    return {"STILLMOTION_HOME": str(home), "STILLMOTION_POLL_INTERVAL_MS": "50", "STILLMOTION_RETRY_BASE_MS": "20",
            "STILLMOTION_LEASE_MS": str(LEASE_MS), **fakes.env(), **extra}  # fmt: skip


def _start(servers: list[StdioServer], env: dict[str, str]) -> StdioServer:
    srv = StdioServer(env)
    servers.append(srv)
    srv.initialize()
    return srv


def _submit(srv: StdioServer, model: str, img: Path, prompt: str = "waves roll in") -> str:
    args: dict[str, Any] = {"model": model, "image": str(img)}
    args.update(LOCAL_ARGS if model == "local/preview" else {"prompt": prompt})
    res = srv.call_tool("animate_image", args)["result"]
    assert res["isError"] is False, res
    return str(res["structuredContent"]["job_id"])


def _rows(home: Path, ids: list[str] | None = None) -> dict[str, JobRow]:
    store = SqliteStore(home / "jobs.sqlite3")
    try:
        rows = {r.id: r for r in store.recent(limit=500)}
    finally:
        store.close()
    return {i: rows[i] for i in ids} if ids is not None else rows


def _wait_rows(home: Path, ids: list[str], cond: Callable[[JobRow], bool], timeout: float = 60) -> dict[str, JobRow]:
    deadline = time.monotonic() + timeout
    while True:
        rows = _rows(home, ids)
        if all(cond(r) for r in rows.values()):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError({i: (r.status, r.stage, r.owner, r.status_detail) for i, r in rows.items() if not cond(r)})
        time.sleep(0.05)


def _wait(cond: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _assert_published(home: Path, row: JobRow) -> None:
    assert row.status == "succeeded", (row.id, row.status, row.error)
    assert row.result is not None
    video = row.result["video"]
    path = Path(video["path"])
    assert path == home / "outputs" / row.id / "video.mp4"
    data = path.read_bytes()
    assert len(data) == video["bytes"] and hashlib.sha256(data).hexdigest() == video["sha256"]
    assert probe_video(path).frame_count == video["frame_count"] > 0
    assert not list(path.parent.glob(".*.part")), "a temporary file was left behind"


def _task_polls(calls: list[Recorded], prefix: str) -> dict[str, set[str]]:
    """task id -> the instances that polled it."""
    out: dict[str, set[str]] = {}
    for r in calls:
        if r.method == "GET" and r.path.startswith(prefix) and len(r.path) > len(prefix):
            out.setdefault(r.path[len(prefix) :].lstrip("/"), set()).add(instance_of(r))
    return out


def _owner(home: Path, job_id: str) -> str:
    owner = _rows(home, [job_id])[job_id].owner
    assert owner is not None
    return owner


# ------------------------------------------------------------------------------------------------


def test_two_servers_one_home_every_job_driven_once(
    fakes: Fakes, home: Path, img: Path, tmp_path: Path, servers: list[StdioServer]
) -> None:
    hold = tmp_path / "hold-render"
    hold.touch()
    fakes.hold_tasks()
    a = _start(servers, _env(home, fakes, STILLMOTION_TEST_HOLD_FILE=str(hold), STILLMOTION_MAX_RETRIES="1000"))
    a_jobs = [_submit(a, m, img) for m in (KLING, KLING, WAN, WAN, XAI, XAI, "local/preview", "local/preview")]
    fakes.kling.wait_for_calls(2, "POST", KLING_PATH, timeout=20)
    fakes.wan.wait_for_calls(2, "POST", WAN_CREATE, timeout=20)
    fakes.xai.wait_for_calls(2, "POST", XAI_CREATE, timeout=20)
    # the provider is recovering while B starts: A's next xAI creates are answered 503 and retried
    fakes.xai.inject(f"POST {XAI_CREATE}", status=503, json={"code": "unavailable", "error": "try later"},
                     headers={"retry-after-ms": "200"}, times=10_000)
    a_jobs += [_submit(a, XAI, img, "a retried create"), _submit(a, XAI, img, "another")]
    fakes.xai.wait_for_calls(4, "POST", XAI_CREATE, timeout=20)
    a_id = _owner(home, a_jobs[0])

    b = _start(servers, _env(home, fakes))
    b_jobs = [_submit(b, m, img, "from b") for m in (KLING, WAN, "local/preview")]
    b_id = _owner(home, b_jobs[0])
    assert a_id != b_id
    # both run side by side for several leases: B's scans must leave A's live jobs alone
    time.sleep(1.5 * LEASE_MS / 1000)  # past the lease A's jobs got at submit: renewals keep them
    rows = _rows(home, a_jobs)
    assert all(r.owner == a_id for r in rows.values()), {r.id: r.owner for r in rows.values()}
    retrying = [rows[j] for j in a_jobs[-2:]]
    assert all(r.status == "queued" and r.stage in ("new", "submitting") for r in retrying), retrying
    assert all(r.status_detail and r.status_detail.startswith("retrying: xAI: try later") for r in retrying), retrying
    fakes.xai.clear_injections()
    hold.unlink()
    fakes.release_tasks()

    done = _wait_rows(home, a_jobs + b_jobs, lambda r: r.terminal, timeout=90)
    for job_id, row in done.items():
        _assert_published(home, row)
        assert row.owner == (a_id if job_id in a_jobs else b_id), "a job changed hands although its owner lived"
    # one provider task per job, each polled by one process only
    assert len(fakes.kling.tasks) == 3 and len(fakes.wan.tasks) == 3 and len(fakes.xai.tasks) == 4
    for fake, prefix in ((fakes.kling, KLING_PATH), (fakes.wan, WAN_TASKS), (fakes.xai, XAI_STATUS)):
        polls = _task_polls(fake.calls("GET"), prefix)
        assert set(polls) <= set(fake.tasks) | {r.obj.get("external_task_id") for r in fake.calls("POST")}
        assert all(len(who) == 1 for who in polls.values()), polls
        assert {i for who in polls.values() for i in who} <= {a_id, b_id}
    # the 503s were retried by A alone
    assert set(fakes.xai.by_instance("POST", XAI_CREATE)) == {a_id}


def test_kill9_owner_while_other_server_runs_takes_over(
    fakes: Fakes, home: Path, img: Path, tmp_path: Path, servers: list[StdioServer]
) -> None:
    hold = tmp_path / "hold-render"
    hold.touch()
    fakes.hold_tasks()
    a = _start(servers, _env(home, fakes, STILLMOTION_TEST_HOLD_FILE=str(hold)))
    polling = [_submit(a, m, img) for m in (KLING, WAN, XAI)]
    fakes.kling.wait_for_calls(1, "POST", KLING_PATH, timeout=20)
    fakes.wan.wait_for_calls(1, "POST", WAN_CREATE, timeout=20)
    fakes.xai.wait_for_calls(1, "POST", XAI_CREATE, timeout=20)
    # the next creates are received (the tasks exist) but their answers hang: in flight at the kill
    for fake, path in ((fakes.kling, KLING_PATH), (fakes.wan, WAN_CREATE), (fakes.xai, XAI_CREATE)):
        fake.inject_hang(f"POST {path}", seconds=60)
    in_flight = {m: _submit(a, m, img, "in flight") for m in (KLING, WAN, XAI)}
    fakes.kling.wait_for_calls(2, "POST", KLING_PATH, timeout=20)
    fakes.wan.wait_for_calls(2, "POST", WAN_CREATE, timeout=20)
    fakes.xai.wait_for_calls(2, "POST", XAI_CREATE, timeout=20)
    local = _submit(a, "local/preview", img)
    _wait_rows(home, [local], lambda r: r.status == "running" and r.progress is not None)
    for m in (KLING, WAN, XAI):
        assert _rows(home, [in_flight[m]])[in_flight[m]].stage == "submitting"

    a_id = _owner(home, local)
    _start(servers, _env(home, fakes))
    a.kill()  # SIGKILL: A runs no shutdown code
    killed_at = time.monotonic()
    fakes.release_tasks()
    everything = [*polling, *in_flight.values(), local]
    done = _wait_rows(home, everything, lambda r: r.terminal, timeout=60)
    took = time.monotonic() - killed_at
    owners = {r.owner for r in done.values()}
    assert len(owners) == 1 and a_id not in owners, owners  # B finished every job A owned, without a restart
    for job_id in [*polling, in_flight[KLING], local]:
        _assert_published(home, done[job_id])
    for m in (WAN, XAI):  # a create in flight at the kill cannot be looked up: interrupted, never resent
        row = done[in_flight[m]]
        assert row.status == "failed" and row.error is not None and row.error["kind"] == "interrupted", row.error
        assert "not resubmitted" in row.error["message"]
    assert len(fakes.kling.calls("POST", KLING_PATH)) == 2 and len(fakes.kling.tasks) == 2  # found by external id
    assert len(fakes.wan.calls("POST", WAN_CREATE)) == 2 and len(fakes.xai.calls("POST", XAI_CREATE)) == 2
    print(f"B finished A's jobs {took:.2f} s after the kill (lease {LEASE_MS} ms)")


def test_kill9_while_waiting_for_a_create_slot_sends_after_restart(
    fakes: Fakes, home: Path, img: Path, servers: list[StdioServer]
) -> None:
    fakes.wan.inject_hang(f"POST {WAN_CREATE}", seconds=60, times=8)  # every create slot busy
    a = _start(servers, _env(home, fakes))
    jobs = [_submit(a, WAN, img, f"clip {i}") for i in range(11)]
    fakes.wan.wait_for_calls(8, "POST", WAN_CREATE, timeout=30)
    rows = _rows(home, jobs)
    waiting = [j for j in jobs if rows[j].stage == "new"]
    assert len(waiting) == 3, [(r.stage, r.status) for r in rows.values()]
    assert all(rows[j].status == "queued" for j in waiting)
    a.kill()

    _start(servers, _env(home, fakes))
    done = _wait_rows(home, jobs, lambda r: r.terminal, timeout=60)
    for j in waiting:
        _assert_published(home, done[j])
    interrupted = [j for j in jobs if j not in waiting]
    assert all(done[j].error and done[j].error["kind"] == "interrupted" for j in interrupted)  # type: ignore[index]
    assert len(fakes.wan.calls("POST", WAN_CREATE)) == 11 and len(fakes.wan.tasks) == 11


@pytest.mark.parametrize("how", ["stdin closed", "SIGTERM"])
def test_jobs_outlive_the_client(fakes: Fakes, home: Path, img: Path, servers: list[StdioServer], how: str) -> None:
    fakes.hold_tasks()
    env = _env(home, fakes, STILLMOTION_BACKGROUND="1", STILLMOTION_WORKER_IDLE_MS="1000")
    a = _start(servers, env)
    jobs = [_submit(a, KLING, img), _submit(a, WAN, img), _submit(a, XAI, img)]
    fakes.kling.wait_for_calls(1, "GET", KLING_PATH + "/", timeout=20)
    fakes.wan.wait_for_calls(1, "GET", WAN_TASKS, timeout=20)
    fakes.xai.wait_for_calls(1, "GET", XAI_STATUS, timeout=20)
    a_id = _owner(home, jobs[0])
    worker_pid = 0
    try:
        if how == "SIGTERM":
            a.proc.send_signal(signal.SIGTERM)
        else:
            assert a.proc.stdin is not None
            a.proc.stdin.close()
        assert a.proc.wait(timeout=20) == 0
        a._reader.join(timeout=5)  # the server's stdout closed although the worker lives on
        assert not a._reader.is_alive()
        _wait(lambda: worker_alive(home), what="the background worker")
        _wait(lambda: _store_meta(home) is not None, what="the worker's id")
        worker = str(_store_meta(home))
        parsed = parse_owner(worker)
        assert parsed is not None
        worker_pid = parsed.pid
        assert worker != a_id and os.getsid(worker_pid) == worker_pid, "the worker runs in its own session"
        listing = subprocess.run([sys.executable, "-m", "stillmotion", "jobs"], env={**os.environ, **env},
                                 capture_output=True, text=True, timeout=60, check=True).stdout  # fmt: skip
        assert listing.splitlines()[0] == f"background worker: alive ({worker})"
        # a server that starts while the worker runs leaves the worker's jobs alone
        _start(servers, _env(home, fakes))
        _wait_rows(home, jobs, lambda r: r.owner == worker)
        time.sleep(1.5 * LEASE_MS / 1000)
        assert all(r.owner == worker for r in _rows(home, jobs).values())
        fakes.release_tasks()
        done = _wait_rows(home, jobs, lambda r: r.terminal, timeout=60)
        for row in done.values():
            _assert_published(home, row)
            assert row.owner == worker
        _wait(lambda: not pid_alive(worker_pid) or _zombie(worker_pid), timeout=30, what="the idle worker to exit")
        assert not worker_alive(home)
        assert "worker" in (home / "worker.log").read_text()
    finally:
        if worker_pid and pid_alive(worker_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker_pid, signal.SIGKILL)


def _store_meta(home: Path) -> str | None:
    store = SqliteStore(home / "jobs.sqlite3")
    try:
        return store.meta_get(META_KEY)
    finally:
        store.close()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return True


def test_paused_owner_writes_nothing_over_the_new_owner(
    fakes: Fakes, home: Path, img: Path, tmp_path: Path, servers: list[StdioServer]
) -> None:
    hold = tmp_path / "hold-render"
    hold.touch()
    fakes.hold_tasks()
    lease = {"STILLMOTION_LEASE_MS": str(PAUSE_LEASE_MS)}
    a = _start(servers, _env(home, fakes, STILLMOTION_TEST_HOLD_FILE=str(hold), **lease))
    jobs = [_submit(a, "local/preview", img), _submit(a, KLING, img)]
    fakes.kling.wait_for_calls(1, "GET", KLING_PATH + "/", timeout=20)
    _wait_rows(home, jobs[:1], lambda r: r.status == "running" and r.progress is not None)
    a_id = _owner(home, jobs[0])
    os.kill(a.proc.pid, signal.SIGSTOP)  # a suspended laptop: A's leases lapse
    try:
        b = _start(servers, _env(home, fakes, **lease))
        assert b.proc.poll() is None
        fakes.release_tasks()
        done = _wait_rows(home, jobs, lambda r: r.terminal, timeout=60)
        b_id = done[jobs[0]].owner
        assert b_id is not None and b_id != a_id and done[jobs[1]].owner == b_id
        for row in done.values():
            _assert_published(home, row)
        files = {j: (home / "outputs" / j / "video.mp4").read_bytes() for j in jobs}
        polls_before = len(fakes.kling.by_instance("GET", KLING_PATH + "/").get(a_id, []))
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    # A wakes up still "driving" both jobs: its heartbeat finds them gone and it stops
    _wait(lambda: a.stderr.count(b"stopped driving job") >= 2, what="A to notice it lost both jobs")
    _wait(lambda: not list((home / "outputs" / jobs[0]).glob(".*.part")), what="A's render temp file to go")
    after = _rows(home, jobs)
    for j in jobs:
        assert after[j] == done[j], f"A wrote over job {j}"
        assert (home / "outputs" / j / "video.mp4").read_bytes() == files[j]
    assert len(fakes.kling.by_instance("GET", KLING_PATH + "/").get(a_id, [])) <= polls_before + 1
    assert len(fakes.kling.tasks) == 1
    hold.unlink()


def test_cancel_and_follow_from_another_process(
    fakes: Fakes, home: Path, img: Path, servers: list[StdioServer]
) -> None:
    fakes.hold_tasks()
    a = _start(servers, _env(home, fakes))
    to_cancel = _submit(a, KLING, img, "cancel me")
    to_follow = _submit(a, WAN, img, "follow me")
    fakes.kling.wait_for_calls(1, "GET", KLING_PATH + "/", timeout=20)
    fakes.wan.wait_for_calls(1, "GET", WAN_TASKS, timeout=20)
    a_id = _owner(home, to_cancel)
    b = _start(servers, _env(home, fakes))
    uri = f"stillmotion://jobs/{to_follow}"
    assert "error" not in b.request("resources/subscribe", {"uri": uri})

    res = b.call_tool("cancel_job", {"job_id": to_cancel})["result"]
    assert res["structuredContent"]["status"] == "cancelled"
    task = fakes.kling.last_task().id

    def a_polls() -> int:
        return sum(1 for r in fakes.kling.by_instance("GET", KLING_PATH + "/").get(a_id, []) if r.path.endswith(task))

    # A sees the cancelled row within about a second and stops polling the task
    deadline = time.monotonic() + 5
    before = a_polls()
    while True:
        time.sleep(0.5)  # ten poll intervals
        now = a_polls()
        if now == before:
            break
        assert time.monotonic() < deadline, "A kept polling a job cancelled elsewhere"
        before = now

    fakes.release_tasks()
    followed = b.call_tool("check_job", {"job_id": to_follow, "wait_seconds": 30})["result"]["structuredContent"]
    assert followed["status"] == "succeeded" and _owner(home, to_follow) == a_id
    def heard() -> bool:
        return any(b"notifications/resources/updated" in line and uri.encode() in line for line in b.stdout_lines)

    # B's store watch (every 0.5 s) may see the final change just after check_job read it
    _wait(heard, timeout=10, what="B's subscriber to hear about a job A drives")


def test_foreground_worker_finishes_jobs_and_releases_on_sigterm(
    fakes: Fakes, home: Path, img: Path, servers: list[StdioServer]
) -> None:
    fakes.hold_tasks()
    a = _start(servers, _env(home, fakes))
    jobs = [_submit(a, KLING, img), _submit(a, WAN, img)]
    fakes.kling.wait_for_calls(1, "GET", KLING_PATH + "/", timeout=20)
    fakes.wan.wait_for_calls(1, "GET", WAN_TASKS, timeout=20)
    a.kill()
    env = {**os.environ, **_env(home, fakes), "PYTHONUNBUFFERED": "1"}
    worker = subprocess.Popen([sys.executable, "-m", "stillmotion", "worker"], env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        _wait(lambda: worker_alive(home), what="the foreground worker's lock")
        def worker_owns(r: JobRow) -> bool:
            parsed = parse_owner(r.owner or "")
            return parsed is not None and parsed.pid == worker.pid

        _wait_rows(home, jobs, worker_owns)  # A was killed: the worker takes its jobs at once
        worker.send_signal(signal.SIGTERM)  # stopping releases its jobs for the next process
        assert worker.wait(timeout=20) == 0
        released = _rows(home, jobs)
        assert all(r.owner is None and not r.terminal for r in released.values()), released
        assert not worker_alive(home)
        _start(servers, _env(home, fakes))
        fakes.release_tasks()
        for row in _wait_rows(home, jobs, lambda r: r.terminal).values():
            _assert_published(home, row)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        for pipe in (worker.stdout, worker.stderr):
            if pipe is not None:
                pipe.close()
