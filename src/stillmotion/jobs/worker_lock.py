"""The home's worker lock, and starting the detached background worker (`ensure_worker`).

Kept apart from `jobs/worker.py` (the worker's own loop, which runs a `Service`) so that
`Service.close` can start a worker without `service` and `worker` importing each other. See
`jobs/worker.py` for how the lock is handed over.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import IO

from ..settings import Settings

if sys.platform != "win32":
    import fcntl

log = logging.getLogger("stillmotion.jobs.worker")  # (the worker's log name, as before the split)

LOCK_NAME = "worker.lock"
LOG_NAME = "worker.log"
LOCK_FD_ENV = "STILLMOTION_WORKER_LOCK_FD"
"""Set for a worker started by `ensure_worker`: the inherited descriptor of the home's lock, already held."""


def lock_path(home: Path) -> Path:
    return home / LOCK_NAME


def take_lock(home: Path) -> IO[bytes] | None:
    """The home's worker lock, held until the returned file is closed (or the process dies); None when taken."""
    if sys.platform == "win32":
        return None
    home.mkdir(parents=True, exist_ok=True)
    fh = open(lock_path(home), "ab")  # held for the life of the worker
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        return None
    return fh


def worker_alive(home: Path) -> bool:
    """Whether a worker holds this home's lock right now."""
    if sys.platform == "win32" or not lock_path(home).exists():
        return False
    fh = take_lock(home)
    if fh is None:
        return True
    fh.close()
    return False


def ensure_worker(settings: Settings) -> bool:
    """Start a detached background worker for this home unless one is alive. True if one was started."""
    if not settings.background or sys.platform == "win32":
        return False
    # Deciding and starting under one lock: the lock taken here is handed to the worker (the
    # inherited descriptor shares it), so no other server can see "no worker" until it exits.
    lock = take_lock(settings.home)
    if lock is None:
        log.info("a background worker is already running for %s; it takes the released jobs", settings.home)
        return False
    try:
        env = dict(os.environ)
        env["STILLMOTION_HOME"] = str(settings.home)
        env["STILLMOTION_OUTPUT_DIR"] = str(settings.output_dir)
        env[LOCK_FD_ENV] = str(lock.fileno())
        cmd = [sys.executable, "-m", "stillmotion", "worker", "--background"]
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
            pass_fds=(lock.fileno(),),
            env=env,
            cwd=str(settings.home),
        )
    finally:
        lock.close()  # the worker's copy of the descriptor keeps the lock
    log.info("started background worker pid %d for %s (log: %s)", proc.pid, settings.home, settings.home / LOG_NAME)
    return True


def inherited_lock() -> IO[bytes] | None:
    """The lock `ensure_worker` handed to this process (None when started otherwise, or not held)."""
    raw = os.environ.pop(LOCK_FD_ENV, None)
    if raw is None or sys.platform == "win32" or not raw.isdigit():
        return None
    try:
        fh = os.fdopen(int(raw), "ab")
    except OSError:
        return None
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours already: succeeds at once
    except OSError:
        fh.close()
        return None
    return fh
