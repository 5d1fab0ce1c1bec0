"""Deleting finished jobs: `delete_job`, retention and the disk cap (`stillmotion gc`).

- `delete_job`: a finished job's output folder, input copies, any Vercel Blob uploads not deleted
  yet, then its row (a conditional DELETE that never touches an unfinished job). The files live on
  the folder every replica shares, so the job's signed `/files` links answer 404 on every replica
  once the call returns.
- Retention (`STILLMOTION_RETENTION_DAYS`): finished jobs created more than that many days ago
  are deleted as above.
- The disk cap (`STILLMOTION_MAX_OUTPUT_GB`): while the output folder holds more than the cap,
  the oldest finished jobs' output folders and input copies are deleted and their rows kept with
  `files_deleted` set. Unfinished jobs and jobs created less than an hour ago are never touched.
- Servers and workers run both at start-up and about hourly; `meta_claim_interval` lets one
  process per round do it and the others skip.
- Orphans: a job folder with no row (a job deleted by hand in the database, a submission that
  died between writing its inputs and its row) is removed once it is older than an hour.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import anyio
import anyio.to_thread
import httpx

from ..errors import InvalidInput
from ..settings import Settings
from .async_store import AsyncJobStore
from .store import JobRow, JobStore, validate_job_id

log = logging.getLogger(__name__)

GC_KEY = "gc_last_run"
GC_INTERVAL_S = 3600.0
"""Servers and workers collect about hourly (one process per round, across the store)."""
STARTUP_GATE_S = 60.0
"""At start-up a process collects unless another did within this long (a fleet starting together)."""
MIN_AGE_S = 3600.0
"""The disk cap never deletes the files of a job created less than this long ago, nor an orphan folder."""
BATCH = 500

Action = Literal["deleted", "files deleted", "orphan folder deleted"]


@dataclass(frozen=True)
class Deletion:
    job_id: str
    action: Action
    reason: str
    status: str
    created_at: float
    bytes: int


@dataclass
class GcReport:
    dry_run: bool
    items: list[Deletion] = field(default_factory=list)
    output_bytes_before: int = 0
    cap_bytes: int | None = None

    @property
    def freed_bytes(self) -> int:
        return sum(d.bytes for d in self.items)


def job_folders(settings: Settings, job_id: str) -> tuple[Path, Path]:
    return settings.output_dir / job_id, settings.inputs_dir / job_id


def tree_bytes(path: Path) -> int:
    """Bytes of the files under `path` (0 when it does not exist)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def job_bytes(settings: Settings, job_id: str) -> int:
    return sum(tree_bytes(p) for p in job_folders(settings, job_id))


def remove_job_files(settings: Settings, job_id: str) -> int:
    """Delete the job's output folder and input copies; returns the bytes freed."""
    freed = 0
    for folder in job_folders(settings, job_id):
        size = tree_bytes(folder)
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            freed += size
    return freed


def _blob_urls(settings: Settings, row: JobRow) -> list[str]:
    """The job's Blob uploads still to delete (the janitor marks the ones it already deleted)."""
    from ..providers.blob import DONE_MARKER

    urls = [u for u in (row.request.get("blobs") or []) if isinstance(u, str)]
    if not urls or (settings.inputs_dir / row.id / DONE_MARKER).exists():
        return []
    return urls


async def _delete_blobs(settings: Settings, client: httpx.AsyncClient | None, row: JobRow, urls: list[str]) -> None:
    if not urls:
        return
    if client is None or settings.blob_token is None:
        log.warning("job %s: %d Vercel Blob file(s) left (BLOB_READ_WRITE_TOKEN unset)", row.id, len(urls))
        return
    from ..providers.blob import BlobClient, delete_quietly

    await delete_quietly(BlobClient(client, settings), urls)


async def delete_job(
    db: AsyncJobStore, settings: Settings, client: httpx.AsyncClient | None, job_id: str, *, user: str | None = None
) -> Deletion:
    """`delete_job`: a finished job's files, input copies, Blob uploads and row. Raises InvalidInput
    for an unknown or unfinished job (nothing is deleted then). `user`: the asker's scope (None: every
    job); another user's job reads as no job, exactly like an unknown id."""
    validate_job_id(job_id)
    row = await db.get(job_id, user=user)
    if row is None:
        raise InvalidInput("job_id", f"no job {job_id} on this server.", "an id returned by a generation tool or list_jobs")
    if not row.terminal:
        raise InvalidInput(
            "job_id",
            f"job {job_id} is {row.status}; only finished jobs (succeeded, failed, cancelled) can be deleted. "
            "Cancel it first with cancel_job.",
            "a finished job's id",
        )
    return await _delete_finished(db, settings, client, row, "deleted by request")


async def _delete_finished(
    db: AsyncJobStore, settings: Settings, client: httpx.AsyncClient | None, row: JobRow, reason: str
) -> Deletion:
    """Files first (a finished job never runs again, so nothing writes them any more; its links
    answer 404 from then on, on every replica), then Blob uploads, then the row. A crash in between
    leaves the row, and deleting again finishes the work."""
    urls = _blob_urls(settings, row)  # (read before the inputs folder, which holds the janitor's marker, goes)
    freed = await anyio.to_thread.run_sync(remove_job_files, settings, row.id)
    await _delete_blobs(settings, client, row, urls)
    await db.delete_finished(row.id)
    log.info("job %s (user %s) deleted (%s): %d bytes freed", row.id, row.user_id, reason, freed)
    return Deletion(row.id, "deleted", reason, row.status, row.created_at, freed)


def _retention_cutoff(settings: Settings, now: float) -> float | None:
    days = settings.retention_days
    return None if days is None else now - days * 86400.0


def _job_dirs(root: Path) -> list[Path]:
    try:
        return [p for p in root.iterdir() if p.is_dir() and p.name.startswith("job_")]
    except FileNotFoundError:
        return []


def _plan_sync(store: JobStore, settings: Settings, dry_run: bool) -> tuple[GcReport, list[JobRow]]:
    """The file work of one round (a worker thread): retention's rows are only listed here (their
    deletion and Blob cleanup follow on the loop); the cap and orphans are done here."""
    report = GcReport(dry_run=dry_run, cap_bytes=settings.max_output_bytes)
    now = store.now()
    expired: list[JobRow] = []
    cutoff = _retention_cutoff(settings, now)
    if cutoff is not None:
        expired = store.finished_created_before(cutoff, limit=100_000)
    gone = {r.id for r in expired}
    # orphans: folders whose job has no row (older than an hour: a new job's inputs precede its row)
    for root in (settings.output_dir, settings.inputs_dir):
        for folder in _job_dirs(root):
            if folder.name in gone:
                continue
            try:
                mtime = folder.stat().st_mtime
            except OSError:
                continue
            if time.time() - mtime < MIN_AGE_S or store.get(folder.name) is not None:
                continue
            size = tree_bytes(folder)
            if not dry_run:
                shutil.rmtree(folder, ignore_errors=True)
            report.items.append(Deletion(folder.name, "orphan folder deleted", "no job row", "-", mtime, size))
    # the cap: measured after retention's deletions (in a dry run: as if they had happened)
    cap = settings.max_output_bytes
    if cap is not None:
        total = tree_bytes(settings.output_dir)
        total -= sum(tree_bytes(settings.output_dir / r.id) for r in expired)
        total -= sum(d.bytes for d in report.items if d.action == "orphan folder deleted")
        report.output_bytes_before = total
        while total > cap:
            rows = store.finished_with_files(now - MIN_AGE_S, limit=BATCH)
            progressed = False
            for row in rows:
                if total <= cap:
                    break
                if row.id in gone:
                    continue
                out = tree_bytes(settings.output_dir / row.id)
                size = out + tree_bytes(settings.inputs_dir / row.id)
                if not dry_run:
                    store.mark_files_deleted(row.id)  # row first: check_job never names a missing file
                    remove_job_files(settings, row.id)
                total -= out
                progressed = True
                report.items.append(Deletion(row.id, "files deleted", "over STILLMOTION_MAX_OUTPUT_GB", row.status,
                                             row.created_at, size))
            if dry_run or not progressed or len(rows) < BATCH:
                break  # (a dry run marks nothing, so the next batch would repeat this one)
    return report, expired


async def collect(db: AsyncJobStore, settings: Settings, client: httpx.AsyncClient | None, *,
                  dry_run: bool = False) -> GcReport:
    """Retention and the disk cap, now (`stillmotion gc`, and each round of `run_periodically`)."""
    report, expired = await db.run(_plan_sync, db.sync, settings, dry_run)  # (file work: on the store's threads)
    days = settings.retention_days
    why = f"older than {days:g} days" if days is not None else "retention"
    done: list[Deletion] = []
    for row in expired:
        if dry_run:
            size = await anyio.to_thread.run_sync(job_bytes, settings, row.id)
            done.append(Deletion(row.id, "deleted", why, row.status, row.created_at, size))
            continue
        done.append(await _delete_finished(db, settings, client, row, why))
    report.items[:0] = done
    return report


def enabled(settings: Settings) -> bool:
    return settings.retention_days is not None or settings.max_output_bytes is not None


async def run_periodically(db: AsyncJobStore, settings: Settings, client: httpx.AsyncClient | None,
                           interval_s: float = GC_INTERVAL_S) -> None:
    """Servers and workers: a round at start-up and then about hourly, by one process at a time."""
    gate = STARTUP_GATE_S
    while True:
        try:
            if await db.meta_claim_interval(GC_KEY, min(gate, interval_s * 0.9)):
                report = await collect(db, settings, client)
                if report.items:
                    log.info("gc: %d job(s) cleaned, %s freed", len(report.items), human_bytes(report.freed_bytes))
        except Exception:  # a store hiccup: the next round tries again
            log.warning("gc round failed", exc_info=True)
        gate = interval_s * 0.9
        await anyio.sleep(interval_s)


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"
