"""The job store's behaviour, run against SQLite and a real PostgreSQL (one interface, the same rules)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stillmotion.jobs.store import JobStore, new_job_id
from tests.pg import PgCluster


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        s: Any = JobStore(tmp_path / "jobs.sqlite3")
    else:
        from stillmotion.jobs.pg_store import PgStore

        url = request.getfixturevalue("pg_url")
        s = PgStore(url)
    try:
        yield s
    finally:
        s.close()


def _create(store: Any, key: str | None = None, **kw: Any) -> Any:
    return store.create(
        job_id=kw.pop("job_id", None) or new_job_id(), tool="animate_image", model="local/preview", route="local",
        request={"prompt": "p", "nested": {"a": [1, 2.5]}}, args_hash=kw.pop("args_hash", "h"),
        idempotency_key=key, warnings=["w1"],
    )


def test_create_and_read_back(store: Any) -> None:
    row = _create(store)
    got = store.get(row.id)
    assert got == row
    assert got.status == "queued" and got.stage == "new" and got.progress is None
    assert got.request == {"prompt": "p", "nested": {"a": [1, 2.5]}} and got.warnings == ["w1"]
    assert got.operation is None and got.result is None and got.error is None and got.attempts == 0
    assert store.get("job_missing00") is None


def test_update_unless_terminal_loses_to_a_cancel(store: Any) -> None:
    row = _create(store)
    moved = store.update_unless_terminal(row.id, status="running", stage="polling", operation={"task": "t1"})
    assert moved is not None and moved.operation == {"task": "t1"} and moved.updated_at >= row.updated_at
    store.update_unless_terminal(row.id, status="cancelled", stage="done", error={"kind": "cancelled"})
    assert store.update_unless_terminal(row.id, status="succeeded", result={"video": {}}) is None
    final = store.get(row.id)
    assert final.status == "cancelled" and final.result is None and final.error == {"kind": "cancelled"}
    store.set_progress(row.id, 0.5)  # a late progress write does not touch an ended job
    assert store.get(row.id).progress is None


def test_recent_and_unfinished(store: Any) -> None:
    rows = [_create(store) for _ in range(4)]
    store.update(rows[1].id, status="succeeded", stage="done")
    store.update(rows[2].id, status="running", stage="polling")
    assert [r.id for r in store.recent(limit=3)] == [rows[3].id, rows[2].id, rows[1].id]
    assert [r.id for r in store.recent(status="succeeded")] == [rows[1].id]
    assert [r.id for r in store.unfinished()] == [rows[0].id, rows[2].id, rows[3].id]


def test_idempotency_key_is_unique(store: Any) -> None:
    first = _create(store, key="k1")
    with pytest.raises(Exception) as caught:
        _create(store, key="k1")
    assert caught.value is not None
    assert store.by_idempotency_key("k1") == first
    assert store.by_idempotency_key("k2") is None


def test_progress_from_threads(store: Any) -> None:
    rows = [_create(store) for _ in range(4)]

    def work(job_id: str) -> None:
        for i in range(20):
            store.set_progress(job_id, i / 20)

    threads = [threading.Thread(target=work, args=(r.id,)) for r in rows]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(store.get(r.id).progress == 0.95 for r in rows)


# -- PostgreSQL only -------------------------------------------------------------------------


def test_pg_schema_migrates_once_when_replicas_start_together(pg_url: str) -> None:
    from stillmotion.jobs.pg_store import MIGRATIONS, PgStore

    stores: list[PgStore] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def start() -> None:
        try:
            barrier.wait()
            stores.append(PgStore(pg_url, pool_size=2))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert {s.schema_version() for s in stores} == {len(MIGRATIONS)}
        row = _create(stores[0])
        assert all(s.get(row.id) == row for s in stores)  # every replica sees every job
    finally:
        for s in stores:
            s.close()


def test_pg_same_key_at_once_makes_one_job(pg_url: str) -> None:
    from stillmotion.jobs.pg_store import IdempotencyKeyTaken, PgStore

    a, b = PgStore(pg_url, pool_size=2), PgStore(pg_url, pool_size=2)
    try:
        for i in range(20):
            barrier = threading.Barrier(2)
            won: list[str] = []
            lost: list[str] = []

            def go(s: PgStore, i: int = i, barrier: threading.Barrier = barrier,
                   won: list[str] = won, lost: list[str] = lost) -> None:
                barrier.wait()
                try:
                    won.append(_create(s, key=f"race-{i}").id)
                except IdempotencyKeyTaken:
                    lost.append(f"race-{i}")

            ts = [threading.Thread(target=go, args=(s,)) for s in (a, b)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            assert len(won) == 1 and len(lost) == 1
            assert b.by_idempotency_key(f"race-{i}").id == won[0]
    finally:
        a.close()
        b.close()


def test_pg_listen_hears_changes_from_another_process(pg_url: str) -> None:
    from stillmotion.jobs.pg_store import PgStore

    a, b = PgStore(pg_url, pool_size=2), PgStore(pg_url, pool_size=2)
    heard: list[str] = []
    got = threading.Event()

    def on_change(job_id: str) -> None:
        heard.append(job_id)
        got.set()

    try:
        b.listen(on_change)
        row = _create(a)
        assert got.wait(10)
        got.clear()
        a.update_unless_terminal(row.id, status="running")
        assert got.wait(10)
        assert set(heard) == {row.id}
    finally:
        a.close()
        b.close()


def test_without_initdb_pg_tests_skip_locally_and_fail_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.pg as pgmod

    monkeypatch.setattr(pgmod, "find_pg_bin", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception), pgmod.pg_cluster():
        pass
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the PostgreSQL tests"), pgmod.pg_cluster():
        pass


def test_cluster_fixture_is_a_real_server(pg: PgCluster) -> None:
    import psycopg

    with psycopg.connect(pg.url()) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()
    assert version is not None and int(version[0]) >= 120000
