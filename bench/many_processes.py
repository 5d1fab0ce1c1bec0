"""Section 4: many jobs across two stdio servers on one home vs the same jobs on one server.

The fake Kling server runs in a process of its own (``fakehost``); every request it records
names the stillmotion instance that sent it (User-Agent), so double polls are counted, not
guessed. Each run: N jobs (10 s fake generation, 2 s polls) submitted round-robin to the
servers by 25 concurrent callers, until every job has ended. CPU is the servers' CPU time
together; requests are everything the fake received, per job.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from .common import Row, Section, Stat
from .fakehost import FakeKlingProcess, RequestInfo
from .overhead import KEY, PATH, _args, small_png
from .stdio import StdioMCP, server_env


def _ended(db: Path) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return int(con.execute("SELECT COUNT(*) FROM jobs WHERE status IN ('succeeded','failed','cancelled')").fetchone()[0])
    finally:
        con.close()


def _succeeded(db: Path) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return int(con.execute("SELECT COUNT(*) FROM jobs WHERE status='succeeded'").fetchone()[0])
    finally:
        con.close()


async def _run(tmp: Path, fake: FakeKlingProcess, n_jobs: int, n_servers: int, log: Callable[[str], None]) -> dict[str, Any]:
    home = tmp / f"home-{n_servers}-servers"
    img = small_png(tmp / "small.png")
    fake.set("generation_seconds", 10.0)
    fake.set("polls_until_done", None)
    fake.call("clear")
    env = server_env(home, {"KLINGAI_API_KEY": KEY, "KLINGAI_BASE_URL": fake.base_url, "STILLMOTION_BACKGROUND": "0"})
    async with contextlib.AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(StdioMCP(env)) for _ in range(n_servers)]
        cpu0 = [s.watch.cpu_seconds() for s in servers if s.watch is not None]
        t0 = time.perf_counter()
        limiter = anyio.CapacityLimiter(25)

        async def submit(i: int) -> None:
            async with limiter:
                await servers[i % n_servers].job("animate_image", _args(img, 2000))

        async with anyio.create_task_group() as tg:
            for i in range(n_jobs):
                tg.start_soon(submit, i)
        deadline = time.perf_counter() + 120 + n_jobs * 0.1
        while time.perf_counter() < deadline:
            if _ended(home / "jobs.sqlite3") >= n_jobs:
                break
            await anyio.sleep(0.25)
        wall = time.perf_counter() - t0
        cpu = sum(s.watch.cpu_seconds() for s in servers if s.watch is not None) - sum(cpu0)
    reqs: list[RequestInfo] = fake.call("requests")
    by_task: dict[str, set[str]] = {}
    for r in reqs:
        if r.method == "GET" and r.path.startswith(PATH + "/"):
            by_task.setdefault(r.path.rsplit("/", 1)[1], set()).add(r.instance)
    creates = sum(1 for r in reqs if r.method == "POST" and r.path == PATH)
    log(f"  {n_servers} server(s): {n_jobs} jobs ended in {wall:.1f} s, {cpu:.1f} s CPU, {len(reqs)} requests")
    return {
        "succeeded": _succeeded(home / "jobs.sqlite3"),
        "cpu_ms": cpu / n_jobs * 1000,
        "req": len(reqs) / n_jobs,
        "creates": creates,
        "double": sum(1 for who in by_task.values() if len(who) > 1),
        "instances": len({i for who in by_task.values() for i in who}),
        "wall": wall,
    }


def run(tmp: Path, *, quick: bool, log: Callable[[str], None]) -> Section:
    sec = Section("4. Two servers on one home vs one server (fake Kling, loopback)")
    n = 100 if quick else 500
    log(f"section 4: {n} jobs on one server, then across two servers on one home")
    with FakeKlingProcess(KEY) as fake:
        one = anyio.run(_run, tmp, fake, n, 1, log)
        two = anyio.run(_run, tmp, fake, n, 2, log)
    for label, res in (("one server", one), ("two servers", two)):
        sec.add(Row("", f"{n} jobs, {label}: succeeded", "jobs", Stat.of([float(res["succeeded"])]), f"= {n}",
                    res["succeeded"] == n, note=f"{res['creates']} creates; ended after {res['wall']:.1f} s",
                    key=f"procs.{len(label.split()[0])}.ok"))
    sec.add(Row("", f"{n} jobs: CPU per job, one server", "ms", Stat.of([one["cpu_ms"]]), "", None, key="procs.cpu.one"))
    sec.add(Row("", f"{n} jobs: CPU per job, two servers (both)", "ms", Stat.of([two["cpu_ms"]]),
                f"<= 1.25x one ({one['cpu_ms'] * 1.25:.1f})", two["cpu_ms"] <= one["cpu_ms"] * 1.25, key="procs.cpu.two",
                note="the second server adds its own lease heartbeat, claim scan and store watch"))
    sec.add(Row("", f"{n} jobs: provider requests per job, one server", "req", Stat.of([one["req"]]), "", None,
                key="procs.req.one"))
    minimum = 1 + math.ceil(10 / 2) + 1  # create, polls every 2 s over a 10 s generation, download
    limit = max(one["req"], minimum) + 0.1
    sec.add(Row("", f"{n} jobs: provider requests per job, two servers", "req", Stat.of([two["req"]]),
                f"<= max(one, {minimum}) + 0.1 ({limit:.2f})", two["req"] <= limit, key="procs.req.two",
                note=f"{minimum} is the minimum; a busy server polls late (start-to-start), so it may send fewer"))
    sec.add(Row("", f"{n} jobs, two servers: tasks polled by both", "tasks", Stat.of([float(two["double"])]), "= 0",
                two["double"] == 0, note=f"{two['instances']} instances polled", key="procs.double"))
    return sec
