"""`resources/read` of a job's files, bounded: a file over STILLMOTION_MAX_RESOURCE_BYTES is not
sent inline (base64 in one JSON message would hold it several times over in memory); the error
names the file's path and a download URL instead. The read itself runs on a worker thread."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import anyio.to_thread
from mcp.server.mcpserver.exceptions import ResourceError

from ..settings import Settings


def download_url(path: Path, job_id: str, name: str, settings: Settings) -> str:
    """The HTTP transport's signed link when there is one, else the file's own file:// URL."""
    if settings.file_links is not None:
        return settings.file_links.url(job_id, name)
    return path.resolve().as_uri()


def _read_capped(path: Path, cap: int) -> bytes | int:
    """The bytes, or the file's size when it is over the cap (at most cap + 1 bytes are read)."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > cap:
            return size
        data = fh.read(cap + 1)
    return data if len(data) <= cap else len(data)


async def read_resource_file(path: Path, job_id: str, name: str, settings: Settings) -> bytes:
    cap = settings.max_resource_bytes
    got = await anyio.to_thread.run_sync(_read_capped, path, cap)
    if isinstance(got, int):
        raise ResourceError(
            f"stillmotion://jobs/{job_id}/{name} is {got} bytes, over the {cap}-byte limit for resources/read "
            f"(STILLMOTION_MAX_RESOURCE_BYTES). Read the file at {path} or download it from "
            f"{download_url(path, job_id, name, settings)}"
        )
    return got
