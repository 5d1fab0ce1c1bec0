"""Section 6: server work per provider job with agents waiting in ``check_job``.

The same fake Kling server as section 2 (its own process, loopback), but the way agents use the
server: every job is submitted and then watched by its own agent, which calls ``check_job`` with
``wait_seconds`` 50 (and a progress token) until the job ends. 500 jobs, 10 s fake generation,
0.5 s polls: 500 waiting ``check_job`` calls for the whole run.

* Server CPU per job: user + system CPU of the server process from the first submit until every
  job has ended, divided by the jobs.
* Completion lag: the job's ``updated_at`` when it turned ``succeeded`` - the fake task's done
  time (both wall clock on the same host). Target: one poll interval + the download and publish
  of one job alone on the server (measured first, in the same run).
* Agent lag: the same, up to the moment the agent's ``check_job`` answer with ``succeeded``
  arrived in the bench process (what the agent sees).

``BENCH_PYSPY=<path.svg|.txt>``: record the server with py-spy during the 500 jobs (profiling
only; py-spy's sampling costs the server a little CPU).
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from .common import Row, Section, Stat, check
from .fakehost import FakeKlingProcess
from .overhead import PATH, _args, _db_counts, _db_rows, _env, lag_parts, small_png
from .stdio import TERMINAL, StdioMCP

POLL_MS = 500
GENERATION_S = 10.0


async def _check_until_end(mcp: StdioMCP, job_id: str, token: str) -> tuple[dict[str, Any], float, int]:
    calls = 0
    while True:
        calls += 1
        res = await mcp.request(
            "tools/call",
            {"name": "check_job", "arguments": {"job_id": job_id, "wait_seconds": 50}, "_meta": {"progressToken": token}},
        )
        sc: dict[str, Any] = res["structuredContent"]
        if sc["status"] in TERMINAL:
            return sc, time.time(), calls


async def _alone(tmp: Path, fake: FakeKlingProcess) -> float:
    """One small job alone on a fresh server: download request -> succeeded (the target's allowance)."""
    home = tmp / "home-alone"
    fake.set("generation_seconds", 1.0)
    fake.set("polls_until_done", None)
    mono_to_wall = time.time() - time.monotonic()
    vals: list[float] = []
    async with StdioMCP(_env(home, fake)) as mcp:
        for _ in range(3):
            done = await mcp.wait_job(await mcp.job("animate_image", _args(small_png(tmp / "small.png"), POLL_MS)))
            task_id = done["provider_task_id"]
            file_at = [r.at for r in fake.call("requests") if r.path == f"/files/{task_id}.mp4"]
            db = sqlite3.connect(f"file:{home / 'jobs.sqlite3'}?mode=ro", uri=True)
            try:
                (updated,) = db.execute("SELECT updated_at FROM jobs WHERE id=?", (done["job_id"],)).fetchone()
            finally:
                db.close()
            vals.append(updated - (file_at[0] + mono_to_wall))
    return sorted(vals)[len(vals) // 2]


def _start_spy(pid: int) -> subprocess.Popen[bytes] | None:
    out = os.environ.get("BENCH_PYSPY")
    exe = shutil.which("py-spy")
    if not out or not exe or not pid:
        return None
    fmt = "raw" if out.endswith(".txt") else "flamegraph"
    return subprocess.Popen(
        [exe, "record", "-p", str(pid), "-o", out, "-f", fmt, "-r", "50", "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


async def _many(tmp: Path, fake: FakeKlingProcess, n_jobs: int, log: Callable[[str], None]) -> dict[str, Any]:
    img = small_png(tmp / "small.png")
    home = tmp / f"home-waiters-{n_jobs}"
    fake.set("generation_seconds", GENERATION_S)
    fake.set("polls_until_done", None)
    fake.call("clear")
    out: dict[str, Any] = {}
    seen_at: dict[str, float] = {}
    check_calls: list[int] = []
    async with StdioMCP(_env(home, fake)) as mcp:
        assert mcp.watch is not None
        spy = _start_spy(mcp.proc.pid if mcp.proc else 0)
        cpu0 = mcp.watch.cpu_seconds()
        t_start = time.perf_counter()
        limiter = anyio.CapacityLimiter(25)

        async def agent(i: int) -> None:
            async with limiter:
                job_id = await mcp.job("animate_image", _args(img, POLL_MS))
            _, at, calls = await _check_until_end(mcp, job_id, f"agent-{i}")
            seen_at[job_id] = at
            check_calls.append(calls)

        async with anyio.create_task_group() as tg:
            for i in range(n_jobs):
                tg.start_soon(agent, i)
        t_all = time.perf_counter() - t_start
        cpu = mcp.watch.cpu_seconds() - cpu0
        counts = _db_counts(home / "jobs.sqlite3")
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            spy.wait(timeout=60)
    rows = _db_rows(home / "jobs.sqlite3")
    tasks = {t.id: t for t in fake.call("tasks")}
    reqs = fake.call("requests")
    parts = lag_parts(reqs, tasks, rows, time.time() - time.monotonic())
    agent_lags: list[float] = []
    for job_id, status, task_id, _updated_at, _ in rows:
        task = tasks.get(task_id or "")
        if status == "succeeded" and task is not None and task.done_wall is not None and job_id in seen_at:
            agent_lags.append(seen_at[job_id] - task.done_wall)
    done = sorted(t.done_wall for t in tasks.values() if t.done_wall is not None)
    out.update(
        n=n_jobs, counts=counts, total_s=t_all, cpu_s=cpu, agent_lag=agent_lags, requests=len(reqs),
        check_calls=sum(check_calls), load=os.getloadavg()[0],
        lists=sum(1 for r in reqs if r.method == "GET" and r.path == PATH), **parts,
        done_spread=(done[-1] - done[0]) if done else 0.0,
    )
    return out


def run(tmp: Path, *, quick: bool, log: Callable[[str], None]) -> Section:
    sec = Section("6. Server work per provider job, agents waiting in check_job")
    n_jobs = 100 if quick else 500
    log(f"section 6: {n_jobs} jobs, {POLL_MS} ms polls, one agent per job waiting in check_job")
    with FakeKlingProcess("kling-bench-key") as fake:
        alone = anyio.run(_alone, tmp, fake)
        fake.call("clear")
        load0 = os.getloadavg()[0]
        many = anyio.run(_many, tmp, fake, n_jobs, log)
    n = many["n"]
    ok = many["counts"].get("succeeded", 0)
    sec.add(Row("", f"{n} jobs + {n} waiting check_job: succeeded", "jobs", Stat.of([float(ok)]), f"= {n}", ok == n,
                note=f"states {many['counts']}", key="waiters.ok"))
    sec.add(Row("", f"{n} jobs + {n} waiting check_job: server CPU per job", "ms",
                Stat.of([many["cpu_s"] / n * 1000]), "", None,
                note=f"{many['cpu_s']:.1f} s CPU over {many['total_s']:.1f} s wall; {many['requests']} provider "
                f"requests, {many['check_calls']} check_job calls; load average {load0:.1f} -> {many['load']:.1f}",
                key="waiters.cpu"))
    sec.add(Row("", f"{n} jobs: provider requests per job", "req", Stat.of([many["requests"] / n]), "", None,
                note=f"{many['requests']} requests, of which {many['lists']} task-list requests",
                key="waiters.requests"))
    limit = POLL_MS / 1000 + alone
    lag = Stat.of(many["lag"])
    sec.add(Row("", f"{n} jobs + {n} waiting check_job: completion lag (fake done -> succeeded)", "s", lag,
                f"median <= {limit:.2f} s", check(lag.median, limit), key="waiters.lag",
                note=f"target: poll interval {POLL_MS / 1000:g} s + download and publish of one job alone "
                f"({alone * 1000:.0f} ms)"))
    sec.add(Row("", f"{n} jobs: lag part 1, done -> next poll", "s", Stat.of(many["detect"]), "", None,
                key="waiters.detect", note=f"the fake's tasks ended over {many['done_spread']:.1f} s"))
    sec.add(Row("", f"{n} jobs: lag part 2, that poll -> download request", "s", Stat.of(many["handoff"]), "", None,
                key="waiters.handoff"))
    sec.add(Row("", f"{n} jobs: lag part 3, download + publish", "s", Stat.of(many["finish"]), "", None,
                key="waiters.finish"))
    sec.add(Row("", f"{n} jobs + {n} waiting check_job: agent lag (fake done -> check_job answers succeeded)", "s",
                Stat.of(many["agent_lag"]), "", None, key="waiters.agent_lag"))
    return sec
