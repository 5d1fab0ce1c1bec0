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
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from ..providers._http import provider_client
from ..settings import Settings
from .worker_lock import (
    LOCK_FD_ENV,
    LOG_NAME,
    ensure_worker,
    inherited_lock,
    lock_path,
    take_lock,
    worker_alive,
)

if TYPE_CHECKING:  # (service imports the runner; the worker imports the service lazily)
    from ..service import Service

log = logging.getLogger(__name__)

LOG_BACKUPS = 3
META_KEY = "worker"
"""meta key holding the running worker's owner id (for `stillmotion jobs`)."""


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
    # the package's own level too: an earlier setting in this process (a command's WARNING) must not
    # silence the worker's log
    logging.getLogger("stillmotion").setLevel(logging.DEBUG if verbose else logging.INFO)


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


# the lock and the start of a worker live in `worker_lock` (imported by `service`); named here too
__all__ = [
    "LOCK_FD_ENV", "LOG_BACKUPS", "LOG_NAME", "META_KEY", "ensure_worker", "inherited_lock", "lock_path",
    "log_to_file", "run_worker", "take_lock", "worker_alive",
]
