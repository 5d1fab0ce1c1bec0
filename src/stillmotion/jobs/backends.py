"""The one opener of the job store the settings name: PostgreSQL when STILLMOTION_DATABASE_URL is
set, else SQLite under STILLMOTION_HOME. Servers, the worker, every command (`jobs`, `spend`) and
every resource open it here, so they all read the same jobs (issue #21: `spend` on a replica once
read the home's SQLite file while the jobs lived in PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from ..settings import Settings
from .store import BUSY_TIMEOUT_S, JobStore, SqliteStore


def open_store(db_path: Path, database_url: str | None = None, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> JobStore:
    """The store for these settings: PostgreSQL for a postgresql:// URL, else SQLite under the home.
    (Commands and resources open it through `open_for_settings`, which also checks a replica's shared
    folders.) It lives here, above both engines, so that neither store module imports the other."""
    if database_url:
        from .pg_store import PgStore  # (psycopg is imported only when PostgreSQL is used)

        return PgStore(database_url)
    return SqliteStore(db_path, busy_timeout_s=busy_timeout_s)


def open_for_settings(settings: Settings, *, serving: bool = True) -> JobStore:
    """`serving`: a process that drives jobs and writes files (a server, the worker) also checks that
    it sees the same shared folders as the other replicas of a PostgreSQL store; a report (`spend`,
    `jobs`) only reads rows, wherever it runs."""
    url = settings.database_url.reveal() if settings.database_url is not None else None
    store = open_store(settings.db_path, url, busy_timeout_s=settings.store_busy_timeout_ms / 1000)
    if url is None or not serving:
        return store
    from .shared_home import check_shared_folders

    try:
        folders = {"home_id": ("STILLMOTION_HOME", settings.home)}
        if settings.output_dir.resolve() != (settings.home / "outputs").resolve():
            folders["output_dir_id"] = ("STILLMOTION_OUTPUT_DIR", settings.output_dir)
        check_shared_folders(store, folders)
    except BaseException:
        store.close()
        raise
    return store
