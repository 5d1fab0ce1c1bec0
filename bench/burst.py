"""Section 9: memory under a burst (issue #22). On request: `python -m bench --sections 9 --no-report`.

* 500 `animate_image` calls at once, each a 1280x720 noise PNG given as a path, on xAI against
  the strict fake (`tests/fakes.XaiFake`, 3 s generation, 1 s polls); every call in flight at the
  same moment (500 concurrent requests on one stdio session). Peak RSS of the server process
  (VmHWM, reset after start-up) from the first call until every job ended, and how many of the
  500 submissions and jobs succeeded.
* 50 `join_clips` calls at once, each three 2 s 720p24 clips given as paths (the server measures
  and decodes every clip at submit, then joins them one job at a time).

`BENCH_BURST_PARTS=animate` (or `join`) runs one part. The server is a stdio subprocess (its RSS is its own); the fake runs in the bench process.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from PIL import Image

from .common import MB, Row, Section, Stat, check
from .join import _clip
from .stdio import ServerError, StdioMCP, server_env

KEY = "xai-bench-key"
MODEL = "xai/grok-imagine-video"
RSS_TARGET_MB = 300


def noise_png_720p(path: Path) -> Path:
    rng = np.random.default_rng(22)
    arr = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    path.write_bytes(buf.getvalue())
    return path


async def _burst(mcp: StdioMCP, calls: list[tuple[str, dict[str, Any]]]) -> tuple[list[str], list[str], float]:
    """Every call at once; (job ids, errors, seconds until the last answer)."""
    ids: list[str] = []
    errors: list[str] = []
    t0 = time.perf_counter()

    async def one(name: str, args: dict[str, Any]) -> None:
        try:
            ids.append(await mcp.job(name, args))
        except ServerError as exc:
            errors.append(str(exc)[:300])

    async with anyio.create_task_group() as tg:
        for name, args in calls:
            tg.start_soon(one, name, args)
    return ids, errors, time.perf_counter() - t0


async def _finish(mcp: StdioMCP, ids: list[str], limit: int = 50) -> dict[str, int]:
    states: dict[str, int] = {}
    sem = anyio.Semaphore(limit)

    async def one(job_id: str) -> None:
        async with sem:
            done = await mcp.wait_job(job_id)
        states[done["status"]] = states.get(done["status"], 0) + 1

    async with anyio.create_task_group() as tg:
        for job_id in ids:
            tg.start_soon(one, job_id)
    return states


async def _animate(tmp: Path, n: int, log: Callable[[str], None], poll_ms: int = 1000) -> dict[str, Any]:
    from tests.fakes import XaiFake

    png = noise_png_720p(tmp / "noise-720p.png")
    with XaiFake(api_key=KEY) as fake:
        fake.generation_seconds = 3.0
        fake.polls_until_done = None
        env = server_env(tmp / "home-animate", {"XAI_API_KEY": KEY, "XAI_BASE_URL": fake.api_base})
        async with StdioMCP(env) as mcp:
            assert mcp.watch is not None
            idle = mcp.watch.rss()
            mcp.watch.reset_peak()
            args = {"model": MODEL, "image": str(png), "prompt": "waves roll in", "duration": 5,
                    "xai": {"poll_interval_ms": poll_ms}}  # fmt: skip
            ids, errors, submit_s = await _burst(mcp, [("animate_image", args)] * n)
            log(f"  {len(ids)} submitted, {len(errors)} refused in {submit_s:.1f} s; peak so far {mcp.watch.peak() / MB:.0f} MB")
            states = await _finish(mcp, ids)
            peak = mcp.watch.peak()
        violations = list(fake.violations)
        creates = len(fake.calls("POST", "/v1/videos/generations"))
    return {"png_bytes": png.stat().st_size, "ids": len(ids), "errors": errors, "states": states,
            "peak": peak, "idle": idle, "submit_s": submit_s, "violations": violations, "creates": creates}  # fmt: skip


async def _join(tmp: Path, n: int, log: Callable[[str], None]) -> dict[str, Any]:
    clips = [str(_clip(tmp / f"clip{i}.mp4", 1280, 720, 24, 2.0, i + 1)) for i in range(3)]
    env = server_env(tmp / "home-join")
    async with StdioMCP(env) as mcp:
        assert mcp.watch is not None
        idle = mcp.watch.rss()
        mcp.watch.reset_peak()
        ids, errors, submit_s = await _burst(mcp, [("join_clips", {"clips": clips})] * n)
        log(f"  {len(ids)} joins submitted, {len(errors)} refused in {submit_s:.1f} s")
        t0 = time.perf_counter()
        states = await _finish(mcp, ids, limit=n)
        run_s = time.perf_counter() - t0
        peak = mcp.watch.peak()
    return {"ids": len(ids), "errors": errors, "states": states, "peak": peak, "idle": idle,
            "submit_s": submit_s, "run_s": run_s}  # fmt: skip


def run(tmp: Path, *, quick: bool, log: Callable[[str], None]) -> Section:
    sec = Section("9. Memory under a burst (issue #22)")
    n, m = (100, 10) if quick else (500, 50)
    parts = os.environ.get("BENCH_BURST_PARTS", "animate,join").split(",")
    if "animate" in parts:
        _run_animate(sec, tmp, n, log)
    if "join" in parts:
        _run_join(sec, tmp, m, log)
    return sec


def _rows(sec: Section, what: str, n: int, got: dict[str, Any], rss_note: str, ok_note: str) -> None:
    """Two rows per burst: the server's peak RSS against the target, and how many jobs succeeded."""
    ok = got["states"].get("succeeded", 0)
    peak = got["peak"] / MB
    sec.add(Row("", f"{n} {what} at once: server peak RSS", "MB", Stat.of([peak]), f"<= {RSS_TARGET_MB} MB",
                check(peak, RSS_TARGET_MB), f"idle {got['idle'] / MB:.0f} MB; {rss_note}", key=f"burst.{what}.rss"))
    sec.add(Row("", f"{n} {what} at once: jobs succeeded", "jobs", Stat.of([float(ok)]), f"= {n}", ok == n,
                f"states {got['states']}; refused {len(got['errors'])} {got['errors'][:2]}{ok_note}",
                key=f"burst.{what}.ok"))  # fmt: skip


def _run_animate(sec: Section, tmp: Path, n: int, log: Callable[[str], None]) -> None:
    log(f"section 9: {n} animate_image at once (1280x720 PNG path, xAI fake)")
    a = anyio.run(_animate, tmp, n, log)
    _rows(sec, "animate_image", n, a, f"PNG {a['png_bytes'] / 1e6:.1f} MB; all answered in {a['submit_s']:.1f} s",
          f"; fake violations {len(a['violations'])}")


def _run_join(sec: Section, tmp: Path, m: int, log: Callable[[str], None]) -> None:
    log(f"section 9: {m} join_clips at once (three 2 s 720p clips)")
    j = anyio.run(_join, tmp, m, log)
    _rows(sec, "join_clips", m, j, f"submits answered in {j['submit_s']:.1f} s, joins done {j['run_s']:.1f} s later", "")


def run_nothing_lost(tmp: Path, *, quick: bool, log: Callable[[str], None]) -> Section:
    """Issue #21: four runs of 500 xAI jobs at once (1280x720 PNG path, 0.5 s polls): every job
    succeeds, and each is created exactly once (nothing lost, nothing paid twice)."""
    sec = Section("10. Nothing lost: four bursts of xAI jobs (issue #21)")
    runs, n = (2, 100) if quick else (4, 500)
    succeeded = creates = 0
    states: dict[str, int] = {}
    peaks: list[float] = []
    for i in range(runs):
        log(f"section 10: run {i + 1} of {runs}: {n} animate_image at once on xAI, 0.5 s polls")
        scratch = tmp / f"run{i}"
        scratch.mkdir(parents=True, exist_ok=True)
        got = anyio.run(_animate, scratch, n, log, 500)
        succeeded += got["states"].get("succeeded", 0)
        creates += got["creates"]
        peaks.append(got["peak"] / MB)
        for k, v in got["states"].items():
            states[k] = states.get(k, 0) + v
        log(f"  run {i + 1}: {got['states']}, {got['creates']} creates, {len(got['violations'])} fake violations")
    total = runs * n
    sec.add(Row("", f"{runs} x {n} xAI jobs: succeeded", "jobs", Stat.of([float(succeeded)]), f"= {total}",
                succeeded == total, f"states {states}", key="lost.succeeded"))
    sec.add(Row("", f"{runs} x {n} xAI jobs: create requests", "requests", Stat.of([float(creates)]), f"= {total}",
                creates == total, "one create per job: none lost before its create, none paid twice", key="lost.creates"))
    sec.add(Row("", f"{runs} x {n} xAI jobs: server peak RSS per run", "MB", Stat.of(peaks), "", None,
                "1280x720 noise PNG path per call", key="lost.rss"))
    return sec
