"""check_job's wait: woken by changes, never by timed re-reads, and no change slips between the
read and the wait (hundreds of agents wait at once; each re-read is a store read and a JSON decode)."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from stillmotion import service as service_mod
from stillmotion.jobs.async_store import AsyncJobStore
from stillmotion.jobs.store import JobRow, JobStore, SqliteStore, new_job_id
from stillmotion.service import Service
from tests.conftest import SettingsFactory


class CountingStore(SqliteStore):
    gets = 0

    def get(self, job_id: str, *, user: str | None = None) -> JobRow | None:
        self.gets += 1
        return super().get(job_id, user=user)


def _job(store: JobStore, owner: str) -> JobRow:
    return store.create(
        job_id=new_job_id(), tool="animate_image", model="klingai/kling-v2.1-i2v", route="direct",
        request={"prompt": "p"}, args_hash="h", idempotency_key=None, warnings=[], owner=owner, lease_s=30,
    )


def _service(make_settings: SettingsFactory) -> tuple[Service, CountingStore]:
    settings = make_settings()
    svc = Service.create(settings, httpx.AsyncClient())
    svc.store.close()
    store = CountingStore(settings.db_path)
    svc.store = svc.runner.store = store
    svc.db = svc.runner.db = AsyncJobStore(store)
    return svc, store


def test_a_waiter_reads_the_job_only_when_it_changes(make_settings: SettingsFactory) -> None:
    svc, store = _service(make_settings)
    row = _job(store, svc.runner.owner)

    async def main() -> JobRow:
        return await svc.wait(row.id, 2.5)

    store.gets = 0
    out = anyio.run(main)
    # one read at the start, one when the wait ends: no re-reads while nothing changed
    assert out.status == "queued" and store.gets == 2
    anyio.run(svc.client.aclose)
    store.close()


def test_a_change_while_the_waiter_reports_progress_is_not_missed(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_mod, "WAIT_RECHECK_S", 1000.0)  # only a change event can end this wait early
    svc, store = _service(make_settings)
    row = _job(store, svc.runner.owner)
    other = SqliteStore(store.path)  # a second process
    reports: list[str] = []

    async def on_update(r: JobRow) -> None:
        reports.append(r.status)
        if len(reports) == 1:
            # between the waiter's read and its wait: another process ends the job, and this
            # process's store watch sees it
            other.cancel(r.id, {"kind": "cancelled", "message": "x", "retryable": False})
            await svc.runner.watch()
            await anyio.lowlevel.checkpoint()

    async def main() -> Any:
        with anyio.fail_after(60):
            return await svc.wait(row.id, 30, on_update)

    svc.runner._watch_mark = store.now() - 1
    out = anyio.run(main)
    assert out.status == "cancelled" and reports == ["queued", "cancelled"]
    anyio.run(svc.client.aclose)
    other.close()
    store.close()
