"""The background worker: finishes a home's jobs after the client that started them went away.

A stdio server that stops (stdin closed, SIGTERM, SIGHUP) while it owns unfinished jobs releases
them and calls `ensure_worker`: it takes the home's worker lock itself (an exclusive `flock`,
without waiting) and, only if it got it, starts the worker with the locked descriptor inherited,
so the worker holds the lock from its first instant and the lock is never free between "no worker
is running" and "one is starting": a burst of exiting servers starts at most one. It is started as a
detached process (its own session, so a client killing the server's process group does not
stop it; stdin, stdout and stderr on /dev/null, so the client still sees the server's stdout
close). The worker claims every unowned or stale job like any other process, logs to
`<home>/worker.log` (rotated at STILLMOTION_WORKER_LOG_BYTES, LOG_BACKUPS old files kept), and exits after `STILLMOTION_WORKER_IDLE_MS` with nothing to do.
`stillmotion worker` runs the same loop in the foreground (systemd, a container), without the
idle exit.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

import anyio

from ..providers._http import provider_client
from ..settings import Settings

if sys.platform != "win32":
    import fcntl

if TYPE_CHECKING:  # (service imports the runner; the worker imports the service lazily)
    from ..service import Service

log = logging.getLogger(__name__)

LOCK_NAME = "worker.lock"
LOG_NAME = "worker.log"
LOG_BACKUPS = 3
LOCK_FD_ENV = "STILLMOTION_WORKER_LOCK_FD"
"""Set for a worker started by `ensure_worker`: the inherited descriptor of the home's lock, already held."""
META_KEY = "worker"
"""meta key holding the running worker's owner id (for `stillmotion jobs`)."""


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


def log_to_file(home: Path, verbose: bool = False, max_bytes: int = 5_000_000) -> None:
    """The background worker's log: `<home>/worker.log`, rotated at `max_bytes` (LOG_BACKUPS old files kept)."""
    home.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        home / LOG_NAME, maxBytes=max_bytes, backupCount=LOG_BACKUPS, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


async def run_worker(settings: Settings, *, idle_exit: bool) -> int:
    """Drive every unowned or stale job of the home until stopped (or, with idle_exit, idle)."""
    from ..service import Service

    lock = inherited_lock() or take_lock(settings.home)
    if lock is None and idle_exit:
        log.info("another worker holds %s; exiting", lock_path(settings.home))
        return 0
    idle_s = settings.worker_idle_ms / 1000
    try:
        async with provider_client() as client:
            svc = Service.create(settings, client)
            log.info("worker %s started for %s", svc.runner.owner, settings.home)
            await _say_who(svc, svc.runner.owner)
            try:
                async with anyio.create_task_group() as tg:
                    # the signal receiver first: a SIGTERM right after start-up claimed jobs must still
                    # release them (measured under load: the default handler killed the worker)
                    stops = [getattr(signal, n) for n in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, n)]
                    with anyio.open_signal_receiver(*stops) as signals:
                        tg.start_soon(_stop_on_signal, signals, tg.cancel_scope)
                        await svc.start(tg)
                        while True:
                            await anyio.sleep(min(0.5, max(0.05, idle_s / 4)))
                            quiet = time.monotonic() - svc.runner.last_activity
                            if idle_exit and not svc.runner.busy and quiet >= idle_s:
                                # Unlock first, then look once more: a server that released jobs
                                # while it saw this worker alive has them taken here; one that
                                # looks after the unlock starts a new worker.
                                if lock is not None:
                                    lock.close()
                                    lock = None
                                await svc.runner.scan()
                                if svc.runner.busy:
                                    lock = take_lock(settings.home)
                                    continue
                                log.info("nothing to do for %.0f s; exiting", quiet)
                                break
                    svc.stop()
                    tg.cancel_scope.cancel()
            finally:
                svc.stop()
                with anyio.CancelScope(shield=True):  # off the loop: the store may be slow or down
                    await _say_who(svc, None)
                    await svc.aclose()
    finally:
        if lock is not None:
            lock.close()
    return 0


async def _say_who(svc: Service, owner: str | None) -> None:
    """Record (or, at exit, clear if still ours) which worker runs, for `stillmotion jobs`; through the
    store's own threads, and never fatal: a store that cannot be written only leaves the note stale."""
    from .async_store import StoreUnavailable

    try:
        if owner is not None:
            await svc.db.meta_set(META_KEY, owner)
        elif await svc.db.meta_get(META_KEY) == svc.runner.owner:
            await svc.db.meta_set(META_KEY, None)
    except StoreUnavailable as fault:
        log.warning("could not note the worker in the job store: %s", fault.why)


async def _stop_on_signal(signals: AsyncIterator[signal.Signals], scope: anyio.CancelScope) -> None:
    async for sig in signals:
        log.info("signal %d: releasing jobs and stopping", sig)
        scope.cancel()
        return
