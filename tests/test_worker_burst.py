"""One worker (#21): 30 real stdio servers that own unfinished jobs close within a second; deciding
to start the home's background worker and starting it happen under one file lock, so at most one
worker ever starts, and it finishes all 30 jobs. `worker.log` rotates."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import time
from pathlib import Path

from stillmotion.jobs.store import SqliteStore
from stillmotion.jobs.worker import LOG_BACKUPS, LOG_NAME, log_to_file, worker_alive
from tests.conftest import write_image
from tests.fakes import KlingFake
from tests.stdio_client import StdioServer

SERVERS = 30
KLING = "klingai/kling-v2.6-i2v"
PATH = "/v1/videos/image2video"
STARTED = re.compile(rb"started background worker pid (\d+)")


def _wait(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_thirty_servers_closing_at_once_start_at_most_one_worker(tmp_path: Path) -> None:
    home = tmp_path / "home"
    img = write_image(tmp_path / "in.png", 640, 480, seed=2)
    servers: list[StdioServer] = []
    worker_pids: set[int] = set()
    with KlingFake(api_key="kling-key") as fake:
        fake.polls_until_done = None  # every task runs until released: the servers close owning them
        env = {"STILLMOTION_HOME": str(home), "KLINGAI_API_KEY": "kling-key", "KLINGAI_BASE_URL": fake.base_url,
               "STILLMOTION_POLL_INTERVAL_MS": "100", "STILLMOTION_LEASE_MS": "3000",
               "STILLMOTION_WORKER_IDLE_MS": "500"}  # fmt: skip
        try:
            servers = [StdioServer(env) for _ in range(SERVERS)]
            for srv in servers:
                srv.initialize()
            calls = [srv.send_request("tools/call", {"name": "animate_image", "arguments": {
                "model": KLING, "image": str(img), "prompt": f"burst {i}"}}) for i, srv in enumerate(servers)]  # fmt: skip
            for srv, rid in zip(servers, calls, strict=True):
                (answer,) = srv.collect([rid], timeout=120)
                assert not answer["result"].get("isError"), answer
            fake.wait_for_calls(SERVERS, "POST", PATH, timeout=120)  # every job's task exists

            t0 = time.monotonic()
            for srv in servers:  # the client goes away: stdin closes, each server releases its job
                assert srv.proc.stdin is not None
                srv.proc.stdin.close()
            assert time.monotonic() - t0 < 1.0
            for srv in servers:
                srv.proc.wait(timeout=60)
                srv.close()
                worker_pids.update(int(m) for m in STARTED.findall(srv.stderr))
            assert len(worker_pids) <= 1, f"{len(worker_pids)} background workers started"
            assert len(worker_pids) == 1  # the jobs were released: someone had to start one

            fake.release()
            store = SqliteStore(home / "jobs.sqlite3")
            try:
                _wait(lambda: all(r.terminal for r in store.recent(limit=100)) and len(store.recent(limit=100)) == SERVERS,
                      120, "the worker to finish the jobs")  # fmt: skip
                rows = store.recent(limit=100)
            finally:
                store.close()
            assert [r.status for r in rows] == ["succeeded"] * SERVERS
            _wait(lambda: not worker_alive(home), 30, "the idle worker to exit")
            log_text = (home / LOG_NAME).read_text()
            assert len(re.findall(r"worker \S+ started for", log_text)) == 1, log_text[-2000:]
            assert "another worker holds" not in log_text  # no second worker even got as far as starting
            fake.assert_clean()
        finally:
            for srv in servers:
                with contextlib.suppress(Exception):
                    srv.kill()
            for pid in worker_pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


def test_worker_log_rotates_at_its_size_cap(tmp_path: Path) -> None:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    try:
        log_to_file(tmp_path, max_bytes=2000)
        for i in range(400):
            logging.getLogger("stillmotion.jobs").info("job job_%04d took over from nobody, stage polling", i)
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
            h.close()
        for h in saved:
            root.addHandler(h)
        root.setLevel(level)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [LOG_NAME] + [f"{LOG_NAME}.{i}" for i in range(1, LOG_BACKUPS + 1)], files
    assert all((tmp_path / f).stat().st_size <= 2000 for f in files)
    assert "job_0399" in (tmp_path / LOG_NAME).read_text()  # the newest lines are in the current file
