"""Turn a finished MP4 into what a job hands back: probed facts, a contact sheet, the last frame.

A provider's file is decoded once, in full (that is the check that it is a decodable MP4), and
the contact-sheet tiles and the last frame are sampled in the same pass. A local render brings
its own samples (taken from the frames as they were encoded), so its file is only header-checked.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import cv2
from av.video.frame import VideoFrame

from .contact_sheet import contact_sheet_from_frames, frame_png, pick_indices
from .video import Frame, VideoInfo, probe_header, probe_video, stream_header, to_rgb

SHEET_TILES = 6
TILE_WIDTH = 200


@dataclass
class Samples:
    """Frames kept while rendering: the contact-sheet tiles (in order) and the final frame."""

    n_frames: int
    indices: list[int] = field(init=False)
    tiles: dict[int, Frame] = field(default_factory=dict)
    last: Frame | None = None
    seen: int = 0

    def __post_init__(self) -> None:
        self.indices = pick_indices(self.n_frames, SHEET_TILES)

    def offer(self, index: int, frame: Frame) -> None:
        if index in self.indices:
            self.tiles[index] = _tile(frame)
        self.last = frame
        self.seen = index + 1

    def frames(self) -> list[Frame]:
        assert self.last is not None
        if all(i in self.tiles for i in self.indices):
            return [self.tiles[i] for i in self.indices]
        fallback = _tile(self.last)  # a header that overstated the frame count
        return [self.tiles.get(i, fallback) for i in self.indices]


def _tile_size(width: int, height: int) -> tuple[int, int]:
    return (TILE_WIDTH, max(2, round(TILE_WIDTH * height / width)))


def _tile(frame: Frame) -> Frame:
    """Shrink a sampled frame to contact-sheet tile width at once (keeps memory flat at 1080p)."""
    h, w = frame.shape[:2]
    return cast(Frame, cv2.resize(frame, _tile_size(w, h), interpolation=cv2.INTER_AREA))


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


def _decode_and_sample(video: Path) -> tuple[VideoInfo, Samples]:
    declared = stream_header(video)[0]
    if declared <= 0:
        declared = probe_video(video).frame_count  # rare: no count in the header
    samples = Samples(declared)
    wanted = set(samples.indices)
    last: list[VideoFrame] = []

    def on_frame(i: int, frame: VideoFrame) -> None:
        if i in wanted:  # scaled while converted: no full-size RGB copy, no second resize
            samples.tiles[i] = to_rgb(frame, _tile_size(frame.width, frame.height))
        last[:] = [frame]

    info = probe_video(video, on_frame)
    samples.last = to_rgb(last[0])
    return info, samples


def publish_video(video: Path, job_dir: Path, samples: Samples | None = None) -> dict[str, Any]:
    """Check the file (raises ValueError when it is not a decodable MP4), then write the poster and
    last frame next to it and return the job's result record."""
    job_id = job_dir.name
    if samples is not None and samples.last is not None:
        info = probe_header(video)
        if info.frame_count != samples.seen:
            raise ValueError(f"the encoder wrote {info.frame_count} frames, {samples.seen} were rendered")
    else:
        info, samples = _decode_and_sample(video)
    if info.frame_count <= 0:
        raise ValueError("no decodable frames")
    poster = job_dir / "poster.png"
    last = job_dir / "last-frame.png"
    times = [i / info.fps for i in samples.indices] if info.fps > 0 else None
    _write_atomic(poster, contact_sheet_from_frames(samples.frames(), times=times))
    assert samples.last is not None
    _write_atomic(last, frame_png(samples.last))
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
