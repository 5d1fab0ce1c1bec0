"""The store contract on SQLite, plus the in-place migration of a first-release database."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from stillmotion.jobs.store import SCHEMA_VERSION, SqliteStore
from tests.store_contract import *  # noqa: F403
from tests.store_contract import OpenStore


@pytest.fixture
def open_store(tmp_path: Path) -> OpenStore:
    return lambda: SqliteStore(tmp_path / "jobs.sqlite3")


V1_SCHEMA = """
CREATE TABLE jobs (
    id TEXT PRIMARY KEY, tool TEXT NOT NULL, model TEXT NOT NULL, route TEXT NOT NULL, status TEXT NOT NULL,
    stage TEXT NOT NULL, progress REAL, created_at REAL NOT NULL, updated_at REAL NOT NULL, request TEXT NOT NULL,
    args_hash TEXT NOT NULL, idempotency_key TEXT UNIQUE, operation TEXT, provider_task_id TEXT,
    warnings TEXT NOT NULL DEFAULT '[]', error TEXT, result TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    provider_done_at REAL
);
"""


def test_first_release_database_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    row = ("job_polling00", "animate_image", "m", "direct", "running", "polling", None, 1.0, 2.0, "{}", "h", None)
    db.execute(
        "INSERT INTO jobs (id, tool, model, route, status, stage, progress, created_at, updated_at, request, args_hash,"
        " idempotency_key, operation) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (*row, json.dumps({"task_id": "t1", "_submitted_at": 1234.5})),
    )
    db.execute(
        "INSERT INTO jobs (id, tool, model, route, status, stage, progress, created_at, updated_at, request, args_hash,"
        " idempotency_key, operation, result) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        ("job_download0", "animate_image", "m", "direct", "downloading", "downloading", None, 1.0, 2.0, "{}", "h", None,
         json.dumps({"task_id": "t2"}), json.dumps({"pending_video": {"url": "https://x/v.mp4", "expires": 99.0}})),
    )
    db.commit()
    db.close()

    for _ in range(2):  # a second open finds the schema current and changes nothing
        store = SqliteStore(path)
        try:
            polling = store.get("job_polling00")
            downloading = store.get("job_download0")
            assert polling is not None and downloading is not None
            assert polling.operation == {"task_id": "t1"} and polling.submitted_at == 1234.5
            assert downloading.result is None and downloading.video_url == "https://x/v.mp4"
            assert downloading.video_url_expires_at == 99.0
            assert polling.owner is None and {r.id for r in store.claimable()} == {"job_polling00", "job_download0"}
            assert store.meta_get("schema_version") == str(SCHEMA_VERSION)
        finally:
            store.close()


def test_keys_made_before_users_become_the_local_users(tmp_path: Path) -> None:
    """Issue #23: an upgraded database's jobs and idempotency keys are the local user's."""
    path = tmp_path / "jobs.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    db.execute(
        "INSERT INTO jobs (id, tool, model, route, status, stage, progress, created_at, updated_at, request, args_hash,"
        " idempotency_key) VALUES ('job_withkey00','animate_image','m','local','succeeded','done',NULL,1,2,'{}','h','k')"
    )
    db.commit()
    db.close()
    for _ in range(2):
        store = SqliteStore(path)
        try:
            row = store.by_idempotency_key("k")
            assert row is not None and row.id == "job_withkey00" and row.user_id == "local"
            assert store.by_idempotency_key("k", user="alice") is None
            assert store.get("job_withkey00", user="alice") is None
        finally:
            store.close()
