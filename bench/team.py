"""Section 5: a team server. The same load on one `serve --http` process with SQLite, then on
three `serve --http` replicas sharing one PostgreSQL (a throwaway cluster, tests/pg.py) and one
folder. Jobs per second (submit of the first to the end of the last) and CPU per job: the
stillmotion processes together, and PostgreSQL's own processes separately.

The fake Kling runs in its own process (``fakehost``); each run: N jobs (5 s fake generation,
1 s polls) submitted round-robin over HTTP by 24 concurrent callers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio

from .common import ProcWatch, Row, Section, Stat
from .fakehost import FakeKlingProcess
from .overhead import KEY, _args, small_png

EXE = [sys.executable, "-m", "stillmotion"]


def _cluster_cpu(data: Path) -> float:
    """CPU seconds of every process of the cluster (postmaster and its children)."""
    import psutil

    pid = int((data / "postmaster.pid").read_text().split()[0])
    root = psutil.Process(pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)
    return total


@contextlib.contextmanager
def _replicas(n: int, env: dict[str, str], logdir: Path) -> Iterator[list[tuple[str, subprocess.Popen[bytes]]]]:
    import httpx
    from tests.replicas import free_port

    logdir.mkdir(parents=True, exist_ok=True)
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        for i in range(n):
            port = free_port()
            with open(logdir / f"r{i}.log", "wb") as fh:
                proc = subprocess.Popen([*EXE, "serve", "--http", "--port", str(port)], env=env,
                                        stdout=subprocess.DEVNULL, stderr=fh, stdin=subprocess.DEVNULL)
            procs.append((f"http://127.0.0.1:{port}", proc))
        for base, proc in procs:
            deadline = time.monotonic() + 180  # a shared, busy machine starts slowly
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"replica exited: {(logdir / 'r0.log').read_text()[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("replica not ready")
                time.sleep(0.1)
        yield procs
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
            if proc.poll() is None:
                proc.kill()


async def _load(bases: list[str], img: Path, n_jobs: int) -> None:
    from mcp import Client

    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(Client(b + "/mcp")) for b in bases]
        limiter = anyio.CapacityLimiter(24)

        async def submit(i: int) -> None:
            async with limiter:
                res = await clients[i % len(clients)].call_tool("animate_image", _args(img, 1000))
                assert not res.is_error, res

        async with anyio.create_task_group() as tg:
            for i in range(n_jobs):
                tg.start_soon(submit, i)


def _run(
    tmp: Path, fake: FakeKlingProcess, n_jobs: int, replicas: int, database_url: str | None,
    ended: Callable[[], tuple[int, int]], pg_data: Path | None, log: Callable[[str], None],
) -> dict[str, Any]:
    from tests.replicas import base_env

    home = tmp / f"home-{replicas}"
    img = small_png(tmp / "small.png")
    fake.set("generation_seconds", 5.0)
    fake.set("polls_until_done", None)
    fake.call("clear")
    env = base_env(STILLMOTION_HOME=str(home), STILLMOTION_INPUT_ROOTS=str(tmp), KLINGAI_API_KEY=KEY,
                   KLINGAI_BASE_URL=fake.base_url, **({"STILLMOTION_DATABASE_URL": database_url} if database_url else {}))
    with _replicas(replicas, env, tmp / f"logs-{replicas}") as procs:
        watches = [ProcWatch(p.pid) for _, p in procs]
        cpu0 = sum(w.cpu_seconds() for w in watches)
        pg0 = _cluster_cpu(pg_data) if pg_data else 0.0
        t0 = time.perf_counter()
        anyio.run(_load, [b for b, _ in procs], img, n_jobs)
        deadline = time.perf_counter() + 120 + n_jobs * 0.2
        while time.perf_counter() < deadline and ended()[0] < n_jobs:
            time.sleep(0.25)
        wall = time.perf_counter() - t0
        cpu = sum(w.cpu_seconds() for w in watches) - cpu0
        pg_cpu = (_cluster_cpu(pg_data) - pg0) if pg_data else 0.0
    done, ok = ended()
    log(f"  {replicas} replica(s) {'PostgreSQL' if database_url else 'SQLite'}: {done}/{n_jobs} ended in {wall:.1f} s,"
        f" {cpu:.1f} s CPU (+{pg_cpu:.1f} s PostgreSQL)")
    return {"ok": ok, "wall": wall, "jps": n_jobs / wall, "cpu_ms": cpu / n_jobs * 1000, "pg_ms": pg_cpu / n_jobs * 1000}


def run(tmp: Path, *, quick: bool, log: Callable[[str], None]) -> Section:
    from tests.pg import PgCluster, _free_port, _run_as, find_pg_bin

    sec = Section("5. Team server: SQLite, one process vs PostgreSQL, three replicas (fake Kling, HTTP)")
    n = 60 if quick else 200
    bindir = find_pg_bin()
    if bindir is None:
        sec.notes.append("skipped: no PostgreSQL (initdb) on this machine")
        return sec
    tmp.mkdir(parents=True, exist_ok=True)
    log(f"section 5: {n} jobs on one SQLite server, then on three PostgreSQL replicas")

    def sqlite_ended(home: Path) -> Callable[[], tuple[int, int]]:
        def count() -> tuple[int, int]:
            db = home / "jobs.sqlite3"
            if not db.exists():
                return 0, 0
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                row = con.execute("SELECT COUNT(*) FILTER (WHERE status IN ('succeeded','failed','cancelled')),"
                                  " COUNT(*) FILTER (WHERE status='succeeded') FROM jobs").fetchone()
                return int(row[0]), int(row[1])
            finally:
                con.close()

        return count

    def pg_ended(url: str) -> Callable[[], tuple[int, int]]:
        import psycopg

        def count() -> tuple[int, int]:
            with psycopg.connect(url) as conn:
                row = conn.execute("SELECT COUNT(*) FILTER (WHERE status IN ('succeeded','failed','cancelled')),"
                                   " COUNT(*) FILTER (WHERE status='succeeded') FROM jobs").fetchone()
                assert row is not None
                return int(row[0]), int(row[1])

        return count

    import tempfile

    root = Path(tempfile.mkdtemp(prefix="stillmotion-pg-bench-"))
    cluster = PgCluster(bindir=bindir, root=root, port=_free_port(), user=_run_as())
    try:
        cluster.start()
        url = cluster.create_database()
        with FakeKlingProcess(KEY) as fake:
            one = _run(tmp, fake, n, 1, None, sqlite_ended(tmp / "home-1"), None, log)
            three = _run(tmp, fake, n, 3, url, pg_ended(url), cluster.data, log)
    finally:
        cluster.stop()
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    for label, res in (("SQLite, 1 process", one), ("PostgreSQL, 3 replicas", three)):
        sec.add(Row("", f"{n} jobs, {label}: succeeded", "jobs", Stat.of([float(res["ok"])]), f"= {n}", res["ok"] == n,
                    note=f"ended after {res['wall']:.1f} s", key=f"team.{label[:3].lower()}.ok"))
        sec.add(Row("", f"{n} jobs, {label}: jobs per second", "jobs/s", Stat.of([res["jps"]]), "", None,
                    key=f"team.{label[:3].lower()}.jps"))
        sec.add(Row("", f"{n} jobs, {label}: stillmotion CPU per job", "ms", Stat.of([res["cpu_ms"]]), "", None,
                    note="all replicas together" if "3" in label else "", key=f"team.{label[:3].lower()}.cpu"))
    sec.add(Row("", f"{n} jobs, PostgreSQL, 3 replicas: PostgreSQL CPU per job", "ms", Stat.of([three["pg_ms"]]), "",
                None, note="the cluster's own processes", key="team.pg.dbcpu"))
    os.environ.pop("STILLMOTION_DATABASE_URL", None)
    return sec
