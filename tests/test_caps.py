"""Concurrency caps shared by every process on a store, on SQLite and PostgreSQL: the count and
the move to `submitting` are one serialised step, so processes together never exceed a cap."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from stillmotion.jobs.caps import CapReached, RunningCap, cap_for
from stillmotion.jobs.store import JobRow, JobStore, SqliteStore, new_job_id
from stillmotion.settings import Settings

KLING = ("klingai/kling-v2.6-i2v", "klingai/kling-v2.1-master-i2v")
CAP = RunningCap("klingai", 3, "direct", KLING)
OpenStore = Callable[[], JobStore]


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> OpenStore:
    if request.param == "sqlite":
        return lambda: SqliteStore(tmp_path / "jobs.sqlite3")
    from stillmotion.jobs.pg_store import PgStore

    url = request.getfixturevalue("pg_url")
    return lambda: PgStore(url, pool_size=2)


def _new(store: JobStore, owner: str, model: str = KLING[0], route: str = "direct") -> JobRow:
    return store.create(
        job_id=new_job_id(), tool="animate_image", model=model, route=route, request={}, args_hash="h",
        idempotency_key=None, warnings=[], owner=owner, lease_s=60,
    )


def test_cap_counts_jobs_running_at_the_provider_only(open_store: OpenStore) -> None:
    store = open_store()
    try:
        jobs = [_new(store, "a") for _ in range(6)]
        for j in jobs[:3]:
            assert store.update_owned_capped(j.id, "a", {"stage": "submitting"}, cap=CAP) is not None
        with pytest.raises(CapReached, match=r"3 of 3 KlingAI tasks .*STILLMOTION_MAX_RUNNING_KLINGAI=3"):
            store.update_owned_capped(jobs[3].id, "a", {"stage": "submitting"}, cap=CAP)
        assert (store.get(jobs[3].id) or jobs[3]).stage == "new", "over the cap: nothing written"
        # other groups do not count: the Gateway route, another provider, downloads, ended jobs
        _new_gw = _new(store, "a", route="gateway")
        store.update_owned(_new_gw.id, "a", {"stage": "polling"})
        other = _new(store, "a", model="xai/grok-imagine-video")
        store.update_owned(other.id, "a", {"stage": "polling"})
        with pytest.raises(CapReached):
            store.update_owned_capped(jobs[3].id, "a", {"stage": "submitting"}, cap=CAP)
        store.update_owned(jobs[0].id, "a", {"stage": "polling", "provider_done_at": 1.0})  # done at the provider
        assert store.update_owned_capped(jobs[3].id, "a", {"stage": "submitting"}, cap=CAP) is not None
        store.cancel(jobs[1].id, {"kind": "cancelled", "message": "x", "retryable": False})
        assert store.update_owned_capped(jobs[4].id, "a", {"stage": "submitting"}, cap=CAP) is not None
        with pytest.raises(CapReached):
            store.update_owned_capped(jobs[5].id, "a", {"stage": "submitting"}, cap=CAP)
        assert store.update_owned_capped(jobs[5].id, "b", {"stage": "submitting"}, cap=RunningCap(
            "klingai", 10, "direct", KLING)) is None, "not the owner: no write"
    finally:
        store.close()


def test_processes_together_never_exceed_the_cap(open_store: OpenStore) -> None:
    first = open_store()
    stores = [open_store() for _ in range(4)]
    try:
        jobs = [_new(first, f"p{i % 4}") for i in range(24)]
        won: list[str] = []
        lock = threading.Lock()
        barrier = threading.Barrier(4)

        def contend(i: int) -> None:
            barrier.wait()
            for j in jobs:
                if j.owner != f"p{i}":
                    continue
                try:
                    if stores[i].update_owned_capped(j.id, f"p{i}", {"stage": "submitting"}, cap=CAP) is not None:
                        with lock:
                            won.append(j.id)
                except CapReached:
                    pass

        threads = [threading.Thread(target=contend, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 3
        assert sum(1 for j in jobs if (first.get(j.id) or j).stage == "submitting") == 3
    finally:
        first.close()
        for s in stores:
            s.close()


def test_cap_for_settings() -> None:
    s = Settings.from_env({"STILLMOTION_MAX_RUNNING_KLINGAI": "5", "STILLMOTION_MAX_RUNNING_GATEWAY": "2"})
    kling = cap_for(s, "klingai/kling-v2.6-i2v", "direct")
    assert kling is not None and kling.limit == 5 and kling.route == "direct"
    assert kling.models is not None and all(m.startswith("klingai/") for m in kling.models) and len(kling.models) > 1
    gw = cap_for(s, "klingai/kling-v2.6-i2v", "gateway")
    assert gw == RunningCap("gateway", 2, "gateway", None)
    assert cap_for(s, "xai/grok-imagine-video", "direct") is None
    assert cap_for(s, "local/preview", "local") is None
