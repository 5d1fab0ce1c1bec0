"""Which job store a process opens: PostgreSQL when STILLMOTION_DATABASE_URL is set, else SQLite."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..settings import Settings
from .store import JobStore

if TYPE_CHECKING:
    from .pg_store import PgStore

AnyStore = "JobStore | PgStore"


def open_store(settings: Settings) -> JobStore | PgStore:
    if settings.database_url is None:
        return JobStore(settings.db_path)
    from .pg_store import PgStore
    from .shared_home import check_shared_folders

    store = PgStore(settings.database_url.reveal())
    try:
        folders = {"home_id": ("STILLMOTION_HOME", settings.home)}
        if settings.output_dir.resolve() != (settings.home / "outputs").resolve():
            folders["output_dir_id"] = ("STILLMOTION_OUTPUT_DIR", settings.output_dir)
        check_shared_folders(store, folders)
    except BaseException:
        store.close()
        raise
    return store
