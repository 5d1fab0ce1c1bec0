"""Turn a finished MP4 into what a job hands back: probed facts, a contact sheet, the last frame."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from .contact_sheet import contact_sheet_png, last_frame_png
from .video import probe_video


def resource_uri(job_id: str, name: str) -> str:
    return f"stillmotion://jobs/{job_id}/{name}"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1024 * 1024), b""):
            h.update(chunk)
    return h.hexdigest()


def publish_video(video: Path, job_dir: Path) -> dict[str, Any]:
    """Probe (raises ValueError when the file does not decode), then write poster and last frame."""
    job_id = job_dir.name
    info = probe_video(video)
    if info.frame_count <= 0:
        raise ValueError("no decodable frames")
    poster = job_dir / "poster.png"
    last = job_dir / "last-frame.png"
    _write_atomic(poster, contact_sheet_png(video))
    _write_atomic(last, last_frame_png(video))
    return {
        "video": {
            "uri": resource_uri(job_id, "video.mp4"),
            "path": str(job_dir / "video.mp4"),
            "mime_type": "video/mp4",
            "bytes": video.stat().st_size,
            "duration_s": round(info.duration_s, 3),
            "width": info.width,
            "height": info.height,
            "fps": round(info.fps, 3),
            "frame_count": info.frame_count,
            "has_audio": info.has_audio,
            "sha256": sha256_file(video),
        },
        "poster": {"uri": resource_uri(job_id, "poster.png"), "path": str(poster), "mime_type": "image/png"},
        "last_frame": {"uri": resource_uri(job_id, "last-frame.png"), "path": str(last), "mime_type": "image/png"},
    }
