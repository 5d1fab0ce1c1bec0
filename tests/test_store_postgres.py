"""The store contract on a real PostgreSQL (tests/pg.py starts a throwaway cluster), plus what
only matters with replicas: migrations when several start at once, the idempotency race,
SKIP LOCKED claims, the shared-folder marker."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from stillmotion.jobs.pg_store import PgStore
from stillmotion.jobs.shared_home import MARKER, NotShared, check_shared_folders
from stillmotion.jobs.store import SCHEMA_VERSION, DuplicateIdempotencyKey, JobRow, JobStore, new_job_id
from tests.pg import PgCluster
from tests.store_contract import *  # noqa: F403
from tests.store_contract import OpenStore


@pytest.fixture
def open_store(pg_url: str) -> OpenStore:
    return lambda: PgStore(pg_url, pool_size=2)


def _new(store: JobStore, key: str | None = None, owner: str | None = None) -> JobRow:
    return store.create(
        job_id=new_job_id(), tool="animate_image", model="klingai/kling-v2.6-i2v", route="direct",
        request={"prompt": "p"}, args_hash="h", idempotency_key=key, warnings=[], owner=owner,
        lease_s=30 if owner else None,
    )


def _together(n: int, fn: Callable[[int], None]) -> list[BaseException]:
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            fn(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_replicas_starting_together_migrate_once(pg_url: str) -> None:
    stores: list[PgStore] = []
    assert _together(6, lambda i: stores.append(PgStore(pg_url, pool_size=1))) == []
    try:
        assert {s.meta_get("schema_version") for s in stores} == {str(SCHEMA_VERSION)}
        row = _new(stores[0])
        assert all(s.get(row.id) == row for s in stores), "every replica sees every job"
    finally:
        for s in stores:
            s.close()


def test_same_key_on_two_replicas_at_once_makes_one_job(open_store: OpenStore) -> None:
    a, b = open_store(), open_store()
    try:
        for i in range(25):
            won: list[str] = []

            def go(n: int, i: int = i, won: list[str] = won) -> None:
                try:
                    won.append(_new((a, b)[n], key=f"race-{i}").id)
                except DuplicateIdempotencyKey:
                    pass

            assert _together(2, go) == []
            assert len(won) == 1
            held = b.by_idempotency_key(f"race-{i}")
            assert held is not None and held.id == won[0]
        assert len(a.recent(limit=100)) == 25
    finally:
        a.close()
        b.close()


def test_claim_skips_a_row_another_replica_has_locked(open_store: OpenStore, pg_url: str) -> None:
    import psycopg

    store = open_store()
    try:
        row = _new(store)
        with psycopg.connect(pg_url) as other:  # another replica mid-write on this row
            other.execute("SELECT id FROM jobs WHERE id=%s FOR UPDATE", (row.id,))
            assert store.claim(row.id, "b", 30) is None, "no waiting on a locked row: skip it"
        got = store.claim(row.id, "b", 30)
        assert got is not None and got.owner == "b"
    finally:
        store.close()


def test_leases_are_on_the_database_clock(open_store: OpenStore) -> None:
    store = open_store()
    try:
        row = _new(store, owner="a")
        import psycopg

        with psycopg.connect(store.url) as conn:
            db_now = conn.execute("SELECT extract(epoch from clock_timestamp())::float8").fetchone()
        assert db_now is not None and row.lease_expires_at == pytest.approx(db_now[0] + 30, abs=2)
        assert store.now() == pytest.approx(db_now[0], abs=2)
    finally:
        store.close()


def test_shared_folder_marker(open_store: OpenStore, tmp_path: Path) -> None:
    store = open_store()
    try:
        shared, other = tmp_path / "shared", tmp_path / "not-shared"
        check_shared_folders(store, {"home_id": ("STILLMOTION_HOME", shared)})
        marker = (shared / MARKER).read_text().strip()
        assert store.meta_get("home_id") == marker
        check_shared_folders(store, {"home_id": ("STILLMOTION_HOME", shared)})  # a second replica, same volume
        with pytest.raises(NotShared, match=r"STILLMOTION_HOME=.*not-shared.*volume every replica mounts"):
            check_shared_folders(store, {"home_id": ("STILLMOTION_HOME", other)})
        (other / MARKER).write_text("someone-elses\n")
        with pytest.raises(NotShared, match="says someone-elses"):
            check_shared_folders(store, {"home_id": ("STILLMOTION_HOME", other)})
    finally:
        store.close()


def test_first_replicas_racing_on_an_empty_volume_agree(open_store: OpenStore, tmp_path: Path) -> None:
    stores = [open_store() for _ in range(4)]
    try:
        shared = tmp_path / "vol"
        errors = _together(4, lambda i: check_shared_folders(stores[i], {"home_id": ("STILLMOTION_HOME", shared)}))
        assert errors == []
        assert [p.name for p in shared.iterdir()] == [MARKER]
    finally:
        for s in stores:
            s.close()


def test_without_initdb_pg_tests_skip_locally_and_fail_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.pg as pgmod

    monkeypatch.setattr(pgmod, "find_pg_bin", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception), pgmod.pg_cluster():
        pass
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the PostgreSQL tests"), pgmod.pg_cluster():
        pass


def test_cluster_is_a_real_server_run_by_a_non_root_user(pg: PgCluster) -> None:
    import psycopg

    with psycopg.connect(pg.url()) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()
    assert version is not None and int(version[0]) >= 120000
    owner = (pg.data / "PG_VERSION").stat().st_uid
    import os

    assert owner != 0 or os.geteuid() != 0


def test_jobs_command_lists_the_team_store(open_store: OpenStore, pg_url: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.replicas import base_env

    store = open_store()
    try:
        row = _new(store, owner="otherhost:1:2:abc")
    finally:
        store.close()
    env = base_env(STILLMOTION_HOME=str(tmp_path / "home"), STILLMOTION_DATABASE_URL=pg_url)
    out = subprocess.run([sys.executable, "-m", "stillmotion", "jobs"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert row.id in out.stdout and "owner otherhost:1:2:abc" in out.stdout
