"""Replicas on one PostgreSQL store must share STILLMOTION_HOME and STILLMOTION_OUTPUT_DIR.

A job's inputs and outputs are files; any replica may be asked for any job's file, and any
replica may take a job over. So every replica must see the same folders (a shared volume: NFS,
EFS, a Kubernetes ReadWriteMany volume). The first replica writes a marker file with a random
id into each folder and stores that id in the database; every later replica finds the same id
in its folder, or refuses to start.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Protocol

MARKER = ".stillmotion-shared-id"


class MetaStore(Protocol):
    def meta_get(self, key: str) -> str | None: ...

    def meta_setdefault(self, key: str, value: str) -> str: ...


class NotShared(SystemExit):
    """This replica's folder is not the one the other replicas on the database use."""


def _read(marker: Path) -> str | None:
    try:
        return marker.read_text().strip() or None
    except FileNotFoundError:
        return None


def _write_once(folder: Path) -> str:
    """The folder's id: the existing marker's, or a new one written atomically (link() fails if a
    marker appeared meanwhile, so two replicas starting at once agree on one id)."""
    marker = folder / MARKER
    existing = _read(marker)
    if existing is not None:
        return existing
    tmp = folder / f"{MARKER}.{os.getpid()}.{secrets.token_hex(4)}"
    tmp.write_text(secrets.token_hex(16) + "\n")
    try:
        os.link(tmp, marker)
    except FileExistsError:
        pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    held = _read(marker)
    assert held is not None
    return held


def check_shared_folders(store: MetaStore, folders: dict[str, tuple[str, Path]]) -> None:
    """folders: meta key -> (environment variable, folder). Raises NotShared with the fix."""
    for key, (var, folder) in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        known = store.meta_get(key)
        mine = _read(folder / MARKER)
        if known is None:
            mine = _write_once(folder)
            known = store.meta_setdefault(key, mine)
        if mine != known:
            what = f"its marker {folder / MARKER} " + ("is missing" if mine is None else f"says {mine}")
            raise NotShared(
                f"refusing to start: {var}={folder} is not the folder the other replicas on this database use "
                f"(the database expects marker id {known}; {what}). Replicas share the job database AND the files: "
                f"put {var} on a volume every replica mounts (NFS, EFS, a Kubernetes ReadWriteMany volume). "
                f"If this folder really is the shared one (moved on purpose), copy the marker file from the old "
                f"folder, or run DELETE FROM meta WHERE key='{key}' to adopt it."
            )
