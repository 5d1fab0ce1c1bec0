"""Section 2: server overhead against the strict fake Kling server over loopback.

The fake (``tests/fakes.KlingFake``) runs on 127.0.0.1 in a process of its own (``fakehost``: so
that its request handling does not share the bench's GIL and inflate the latencies measured
here); the server is a stdio subprocess pointed at it with ``KLINGAI_BASE_URL``. Results are downloaded from the fake's own
origin (allowed without STILLMOTION_ALLOW_PRIVATE_NETWORK).

* Submit latency: ``animate_image`` with a 5 MB noise PNG given as a path. One untimed warm-up,
  then sequential calls; after each call the bench waits (at most 3 s) until the fake has
  created that job's task, so that every call is measured on a server that has finished the
  previous job's upload (base64 + POST of the image, which the job's task does right after
  the tool answers). These jobs poll every 60 s, so no poll or download overlaps the calls.
* ``check_job`` latency (wait_seconds 0), on a running job and on a succeeded job (whose
  answer carries the contact sheet inline).
* Many jobs in flight: fake generation time 10 s, poll interval 2 s; all jobs are submitted by
  25 concurrent callers, then the bench watches the server's SQLite file (read-only, so it adds
  no load to the server) until every job has ended. Completion lag = the job's ``updated_at``
  when it turned ``succeeded`` (wall clock, server process) - the fake task's done time
  (``Task.done_wall``, the wall-clock twin of ``fake.task_done_at``); both are on the same
  host's clock. It is split into detection (first poll at or after done - done) and
  download + publish (succeeded - the file request's arrival). Requests per job counts every
  request the fake received (creates, status polls, result downloads) divided by the jobs.
"""

from __future__ import annotations

import io
import math
import sqlite3
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from PIL import Image

from .common import MB, ProcWatch, Row, Section, Stat, check
from .fakehost import FakeKlingProcess, RequestInfo, TaskInfo
from .stdio import StdioMCP, server_env

KEY = "kling-bench-key"
MODEL = "klingai/kling-v2.1-i2v"
PATH = "/v1/videos/image2video"
PROMPT = "The camera slowly pushes in while leaves sway in the wind"


def noise_png(path: Path, target_bytes: int = 5_000_000) -> Path:
    """An RGB noise PNG of about ``target_bytes`` (noise barely compresses), 16:9-ish."""
    rng = np.random.default_rng(7)
    side = int(math.sqrt(target_bytes / 3 / (16 / 9)))
    h, w = side, int(side * 16 / 9)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    path.write_bytes(buf.getvalue())
    return path


def small_png(path: Path) -> Path:
    from tests.render.measure import textured_image

    Image.fromarray(textured_image(640, 480, seed=3)).save(path)
    return path


def _args(image: Path, poll_ms: int) -> dict[str, Any]:
    return {"model": MODEL, "image": str(image), "prompt": PROMPT, "kling": {"poll_interval_ms": poll_ms}}


def _env(home: Path, fake: FakeKlingProcess) -> dict[str, str]:
    return server_env(home, {"KLINGAI_API_KEY": KEY, "KLINGAI_BASE_URL": fake.base_url})


def _more_tasks(fake: FakeKlingProcess, than: int) -> bool:
    return fake.task_count() > than


async def _until(pred: Callable[[], bool], timeout: float, step: float = 0.002) -> bool:
    """Polls ``pred`` (state of the in-process fake, which has no async events) until true."""
    for _ in range(max(1, int(timeout / step))):
        if pred():
            return True
        await anyio.sleep(step)
    return pred()


# -- latency ----------------------------------------------------------------------------------


async def _latency(
    tmp: Path, fake: FakeKlingProcess, n_submit: int, n_check: int, log: Callable[[str], None]
) -> dict[str, Any]:
    big = noise_png(tmp / "noise-5mb.png")
    size = big.stat().st_size
    fake.set("generation_seconds", None)
    fake.set("polls_until_done", 1)
    out: dict[str, Any] = {"png_bytes": size}
    async with StdioMCP(_env(tmp / "home-latency", fake)) as mcp:
        assert mcp.watch is not None
        # warm-up: the first Kling job imports the provider module, opens connections, and
        # finishes (download, publish), so that check_job has a succeeded job to read
        first = await mcp.job("animate_image", _args(big, 200))
        await mcp.wait_job(first)
        submit: list[float] = []
        for _ in range(n_submit):
            tasks = fake.task_count()
            t0 = time.perf_counter()
            await mcp.job("animate_image", _args(big, 60_000))
            submit.append((time.perf_counter() - t0) * 1000)
            await _until(partial(_more_tasks, fake, tasks), 3.0)
        out["submit_ms"] = submit
        log(f"  submit p50 {Stat.of(submit).median:.1f} ms")
        # a running job: long poll interval so that it stays running
        tasks = fake.task_count()
        running = await mcp.job("animate_image", _args(big, 600_000))
        await _until(lambda: fake.task_count() > tasks, 5.0)
        await anyio.sleep(0.2)
        samples: dict[str, list[float]] = {"running": [], "succeeded": []}
        for label, job_id in (("running", running), ("succeeded", first)):
            for _ in range(n_check):
                t0 = time.perf_counter()
                await mcp.call_tool("check_job", {"job_id": job_id})
                samples[label].append((time.perf_counter() - t0) * 1000)
        out["check_ms"] = samples
        log(f"  check_job p50 running {Stat.of(samples['running']).median:.2f} ms, "
            f"succeeded {Stat.of(samples['succeeded']).median:.2f} ms")
        await mcp.call_tool("cancel_job", {"job_id": running})
        # one small job alone on the server: its download + publish time is the "plus the download"
        # allowance of the completion-lag target
        mono_to_wall = time.time() - time.monotonic()
        alone = await mcp.wait_job(await mcp.job("animate_image", _args(small_png(tmp / "small.png"), 200)))
        task_id = alone["provider_task_id"]
        file_at = [r.at for r in fake.call("requests") if r.path == f"/files/{task_id}.mp4"]
        db = sqlite3.connect(f"file:{tmp / 'home-latency' / 'jobs.sqlite3'}?mode=ro", uri=True)
        try:
            (updated,) = db.execute("SELECT updated_at FROM jobs WHERE id=?", (alone["job_id"],)).fetchone()
        finally:
            db.close()
        out["alone_finish_s"] = updated - (file_at[0] + mono_to_wall)
    return out


# -- many jobs --------------------------------------------------------------------------------


def _db_counts(db_path: Path) -> dict[str, int]:
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
        try:
            return dict(db.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())
        finally:
            db.close()
    except sqlite3.Error:
        return {}


def _db_rows(db_path: Path) -> list[tuple[str, str, str | None, float, float | None]]:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    try:
        return list(db.execute("SELECT id, status, provider_task_id, updated_at, provider_done_at FROM jobs"))
    finally:
        db.close()


def lag_parts(
    reqs: list[RequestInfo],
    tasks: dict[str, TaskInfo],
    rows: list[tuple[str, str, str | None, float, float | None]],
    mono_to_wall: float,
) -> dict[str, list[float]]:
    """Each succeeded job's completion lag (fake done -> `succeeded` written), and its three parts:
    done -> the first status poll or task list at or after it (a list shows every task), that ->
    the download request, the download request -> `succeeded`."""
    polls_by_task: dict[str, list[float]] = {}
    listed_at: list[float] = []
    file_at: dict[str, float] = {}
    for r in reqs:
        if r.method == "GET" and r.path.startswith(PATH + "/"):
            polls_by_task.setdefault(r.path.rsplit("/", 1)[1], []).append(r.at)
        elif r.method == "GET" and r.path == PATH:
            listed_at.append(r.at)
        elif r.path.startswith("/files/"):
            file_at[r.path.rsplit("/", 1)[1].removesuffix(".mp4")] = r.at
    out: dict[str, list[float]] = {"lag": [], "detect": [], "handoff": [], "finish": []}
    for _job_id, status, task_id, updated_at, _ in rows:
        task = tasks.get(task_id or "")
        if status != "succeeded" or task is None or task.done_at is None or task.done_wall is None:
            continue
        out["lag"].append(updated_at - task.done_wall)
        seen = [a for a in polls_by_task.get(task.id, []) + listed_at if a >= task.done_at]
        if seen:
            out["detect"].append(min(seen) - task.done_at)
            if task.id in file_at:
                out["handoff"].append(file_at[task.id] - min(seen))
        if task.id in file_at:
            out["finish"].append(updated_at - (file_at[task.id] + mono_to_wall))
    return out


async def _many(tmp: Path, fake: FakeKlingProcess, n_jobs: int, log: Callable[[str], None]) -> dict[str, Any]:
    img = small_png(tmp / "small.png")
    home = tmp / f"home-many-{n_jobs}"
    fake.set("generation_seconds", 10.0)
    fake.set("polls_until_done", None)
    fake.call("clear")
    mono_to_wall = time.time() - time.monotonic()
    out: dict[str, Any] = {}
    async with StdioMCP(_env(home, fake)) as mcp:
        assert mcp.watch is not None
        idle_rss = mcp.watch.rss() / MB
        mcp.watch.reset_peak()
        cpu0 = mcp.watch.cpu_seconds()
        fake_watch = ProcWatch(fake.pid)
        fake_cpu0 = fake_watch.cpu_seconds()
        t_start = time.perf_counter()
        ids: list[str] = []
        limiter = anyio.CapacityLimiter(25)

        async def submit_one() -> None:
            async with limiter:
                ids.append(await mcp.job("animate_image", _args(img, 2000)))

        async with anyio.create_task_group() as tg:
            for _ in range(n_jobs):
                tg.start_soon(submit_one)
        t_submitted = time.perf_counter() - t_start
        log(f"  {n_jobs} jobs submitted in {t_submitted:.1f} s")
        deadline = time.perf_counter() + 120 + n_jobs * 0.1
        while time.perf_counter() < deadline:
            live = _db_counts(home / "jobs.sqlite3")
            ended = sum(live.get(s, 0) for s in ("succeeded", "failed", "cancelled"))
            if ended >= n_jobs:
                break
            await anyio.sleep(0.25)
        t_all = time.perf_counter() - t_start
        cpu = mcp.watch.cpu_seconds() - cpu0
        fake_cpu = fake_watch.cpu_seconds() - fake_cpu0
        peak = mcp.watch.peak() / MB
        # confirm the end state through MCP too
        listed = (await mcp.call_tool("list_jobs", {"status": "succeeded", "limit": 200}))["structuredContent"]["jobs"]
    rows = _db_rows(home / "jobs.sqlite3")
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[1]] = counts.get(row[1], 0) + 1
    reqs: list[RequestInfo] = fake.call("requests")
    connections = int(fake.call("counts")["connections"])
    tasks: dict[str, TaskInfo] = {t.id: t for t in fake.call("tasks")}
    creates = [r for r in reqs if r.method == "POST" and r.path == PATH]
    polls = [r for r in reqs if r.method == "GET" and r.path.startswith(PATH + "/")]
    files = [r for r in reqs if r.path.startswith("/files/")]
    parts = lag_parts(reqs, tasks, rows, mono_to_wall)
    out.update(
        n=n_jobs,
        counts=counts,
        listed=len(listed),
        submit_s=t_submitted,
        total_s=t_all,
        idle_rss=idle_rss,
        peak_rss=peak,
        cpu_s=cpu,
        fake_cpu_s=fake_cpu,
        creates=len(creates),
        polls=len(polls),
        lists=sum(1 for r in reqs if r.method == "GET" and r.path == PATH),
        files=len(files),
        requests=len(reqs),
        **parts,
        violations=fake.call("violations"),
        connections=connections,
    )
    return out


def run(tmp: Path, *, quick: bool, log: Callable[[str], None]) -> Section:
    sec = Section("2. Server overhead against the fake Kling server (loopback)")
    n_submit = 30 if quick else 100
    n_check = 100 if quick else 300
    n_jobs = 100 if quick else 500
    log("section 2: server overhead vs fake Kling")
    with FakeKlingProcess(KEY) as fake:
        lat = anyio.run(_latency, tmp, fake, n_submit, n_check, log)
        fake.call("clear")
        log(f"  {n_jobs} jobs in flight (10 s generation, 2 s polls)")
        many = anyio.run(_many, tmp, fake, n_jobs, log)

    sub = Stat.of(lat["submit_ms"], p99=True)
    assert sub.p99 is not None
    sec.add(Row("", f"animate_image submit, {lat['png_bytes'] / 1e6:.1f} MB PNG path, p50", "ms", sub, "<= 25 ms",
                check(sub.median, 25), key="overhead.submit.p50"))
    sec.add(Row("", "animate_image submit, p99", "ms", Stat(sub.p99, math.nan, math.nan, sub.n), "<= 100 ms",
                check(sub.p99, 100), key="overhead.submit.p99", note="the same calls as the p50 row"))
    for label in ("running", "succeeded"):
        st = Stat.of(lat["check_ms"][label], p99=True)
        sec.add(Row("", f"check_job p50 ({label} job)", "ms", st, "<= 5 ms", check(st.median, 5),
                    note=f"p99 {st.p99:.1f} ms, n={st.n}", key=f"overhead.check.{label}"))

    n = many["n"]
    ok = many["counts"].get("succeeded", 0)
    sec.add(Row("", f"{n} jobs in flight: succeeded", "jobs", Stat.of([float(ok)]), f"= {n}", ok == n,
                note=f"states {many['counts']}; fake violations {len(many['violations'])}", key="overhead.many.ok"))
    sec.add(Row("", f"{n} jobs: server peak RSS", "MB", Stat.of([many["peak_rss"]]), "<= 300 MB",
                check(many["peak_rss"], 300), note=f"idle {many['idle_rss']:.0f} MB", key="overhead.many.rss"))
    sec.add(Row("", f"{n} jobs: server CPU time per job", "ms", Stat.of([many["cpu_s"] / n * 1000]), "", None,
                note=f"{many['cpu_s']:.1f} s CPU over {many['total_s']:.1f} s wall (the fake: {many['fake_cpu_s']:.1f} s)",
                key="overhead.many.cpu"))
    # one poll per job every 2 s over a 10 s task: the minimum without a task list (Kling's list
    # answers many polls in one request, so a batched run comes in under it)
    minimum = 1 + math.ceil(10 / 2) + 1
    per_job = many["requests"] / n
    sec.add(Row("", f"{n} jobs: provider requests per job", "req", Stat.of([per_job]), f"<= {minimum}",
                per_job <= minimum + 0.5,
                note=f"{many['creates']} creates, {many['polls']} single polls, {many['lists']} task-list requests, "
                f"{many['files']} downloads; "
                f"{many['connections']} TCP connections opened",
                key="overhead.many.requests"))
    fin = Stat.of(many["finish"])
    lag = Stat.of(many["lag"])
    alone = lat["alone_finish_s"]
    limit = 2.0 + alone
    sec.add(Row("", f"{n} jobs: completion lag (fake done -> succeeded)", "s", lag,
                f"median <= {limit:.2f} s", check(lag.median, limit), key="overhead.many.lag",
                note=f"target: poll interval 2 s + download and publish of one job alone ({alone * 1000:.0f} ms)"))
    det = Stat.of(many["detect"])
    sec.add(Row("", f"{n} jobs: lag part 1, done -> next poll", "s", det, "", None, key="overhead.many.detect"))
    sec.add(Row("", f"{n} jobs: lag part 2, that poll -> download request", "s", Stat.of(many["handoff"]), "", None,
                key="overhead.many.handoff"))
    sec.add(Row("", f"{n} jobs: lag part 3, download + publish", "s", fin, "", None, key="overhead.many.finish"))
    sec.notes.append(
        f"All {n} jobs were submitted in {many['submit_s']:.1f} s (25 concurrent callers) and all had ended "
        f"{many['total_s']:.1f} s after the first submit."
    )
    return sec
