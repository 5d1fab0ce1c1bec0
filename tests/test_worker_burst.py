"""One worker (#21): deciding to start the home's background worker and starting it happen under
one file lock, so 30 servers exiting within a second start at most one. `worker.log` rotates.

The 30 are real processes running the exit path of a stdio server (`ensure_worker`, after its jobs
were released), not 30 whole servers: a whole server costs ~3 s of CPU to start, too much for a
test on a small shared machine; the race is all in `ensure_worker`, and the worker it starts is
the real `stillmotion worker --background`."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from stillmotion.jobs.ownership import parse_owner
from stillmotion.jobs.store import SqliteStore
from stillmotion.jobs.worker import LOG_BACKUPS, LOG_NAME, META_KEY, log_to_file, worker_alive

SERVERS = 30


EXIT_PATH = """
import sys, time
from pathlib import Path
from stillmotion.jobs.worker import ensure_worker
from stillmotion.settings import Settings

settings = Settings.from_env(transport="stdio")
print("ready", flush=True)
go = Path(sys.argv[1])
while not go.exists():
    time.sleep(0.002)
print("started" if ensure_worker(settings) else "skipped", flush=True)
"""
"""What a stdio server does when it exits owning released jobs (Service.close -> ensure_worker)."""


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_thirty_servers_exiting_at_once_start_at_most_one_worker(tmp_path: Path) -> None:
    """30 real processes run a stdio server's exit path (`ensure_worker`) released within the
    same few milliseconds: exactly one background worker starts (the others see its lock at once)."""
    home = tmp_path / "home"
    home.mkdir()
    go = tmp_path / "go"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STILLMOTION_")}
    env |= {"STILLMOTION_HOME": str(home), "STILLMOTION_BACKGROUND": "1", "STILLMOTION_WORKER_IDLE_MS": "300"}
    procs = [subprocess.Popen([sys.executable, "-c", EXIT_PATH, str(go)], stdout=subprocess.PIPE, env=env, text=True)
             for _ in range(SERVERS)]  # fmt: skip
    worker_pid: int | None = None
    try:
        for p in procs:  # every process is up and waiting
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        go.touch()
        answers = []
        for p in procs:
            out, _ = p.communicate(timeout=120)
            answers.append(out.strip())
        assert sorted(answers) == ["skipped"] * (SERVERS - 1) + ["started"], answers
        _wait(lambda: (home / LOG_NAME).exists() and "started for" in (home / LOG_NAME).read_text(), 120,
              "the worker to start")  # fmt: skip
        owner = SqliteStore(home / "jobs.sqlite3")
        try:
            worker = owner.meta_get(META_KEY)
        finally:
            owner.close()
        parsed = parse_owner(worker) if worker else None
        worker_pid = parsed.pid if parsed is not None else None
        _wait(lambda: not worker_alive(home), 120, "the idle worker to exit")
        log_text = (home / LOG_NAME).read_text()
        assert len(re.findall(r"worker \S+ started for", log_text)) == 1, log_text[-2000:]
        assert "another worker holds" not in log_text  # no second worker was even started
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        if worker_pid is not None:
            with contextlib.suppress(OSError):
                os.kill(worker_pid, signal.SIGKILL)


def test_worker_log_rotates_at_its_size_cap(tmp_path: Path) -> None:
    root, package = logging.getLogger(), logging.getLogger("stillmotion")
    saved, level, package_level = list(root.handlers), root.level, package.level
    package.setLevel(logging.WARNING)  # as a command run earlier in this process leaves it (cli.py)
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
        package.setLevel(package_level)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [LOG_NAME] + [f"{LOG_NAME}.{i}" for i in range(1, LOG_BACKUPS + 1)], files
    assert all((tmp_path / f).stat().st_size <= 2000 for f in files)
    assert "job_0399" in (tmp_path / LOG_NAME).read_text()  # the newest lines are in the current file
