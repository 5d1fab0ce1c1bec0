"""The job store a server opens for its settings: PostgreSQL when STILLMOTION_DATABASE_URL is set
(after checking that this replica sees the shared folders), else SQLite under STILLMOTION_HOME."""

from __future__ import annotations

from ..settings import Settings
from .store import JobStore, open_store


def open_for_settings(settings: Settings) -> JobStore:
    url = settings.database_url.reveal() if settings.database_url is not None else None
    store = open_store(settings.db_path, url)
    if url is None:
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
