"""`local/preview`: renders a job on the CPU with the offline engine (`render/`).

Runs on a worker thread. Frames stream from the engine into the encoder; nothing holds the clip.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from ..media.images import decode_mask, decode_rgb
from ..media.publish import Samples
from ..media.video import encode_frames, frame_size, is_yuv420, yuv420_to_rgb
from ..render import (
    BrushRegion,
    brush_frames,
    camera_frames_yuv,
    choose_camera,
    fit_image,
    interpolate_frames,
    working_size,
)
from .base import JobContext

FPS = 24


def _fit_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    return cv2.resize(mask.astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_NEAREST) > 127


def render_job(
    ctx: JobContext,
    out: Path,
    progress: Callable[[float], None],
    *,
    hold_file: Path | None = None,
) -> tuple[list[str], Samples]:
    """Render the job into `out`; returns warnings for the job and the frames sampled for its poster."""
    req = ctx.request
    resolution = req.options.get("resolution", "720p")
    src = decode_rgb(ctx.image_bytes(req.image))
    in_h, in_w = src.shape[:2]
    size = working_size(in_w, in_h, resolution)
    start = fit_image(src, size)
    n = req.duration * FPS
    warnings: list[str] = []
    frames: Iterator[np.ndarray]
    if req.tool == "camera_move":
        assert req.camera is not None
        frames = camera_frames_yuv(start, req.camera.model_dump(exclude_none=True), n)
    elif req.tool == "interpolate_frames":
        assert req.end_image is not None
        end = fit_image(decode_rgb(ctx.image_bytes(req.end_image)), size)
        if abs(req.end_image.width / req.end_image.height - in_w / in_h) > 0.01:
            warnings.append("end_image has a different aspect ratio from image; it was resized to the start frame's size.")
        frames = interpolate_frames(start, end, n)
    elif req.tool == "motion_brush":
        sx, sy = size[0] / in_w, size[1] / in_h
        regions = [
            BrushRegion(
                mask=_fit_mask(decode_mask(ctx.image_bytes(m.image)), size),
                trajectory=[(x * sx, y * sy) for x, y in m.trajectory],
            )
            for m in req.dynamic_masks
        ]
        static = _fit_mask(decode_mask(ctx.image_bytes(req.static_mask)), size) if req.static_mask else None
        frames = brush_frames(start, regions, static, n)
    else:
        camera, why = choose_camera(req.prompt)
        frames = camera_frames_yuv(start, camera, n)
        warnings.append(
            f"local/preview animates a still by camera motion only ({why}); it does not generate new content."
        )
    samples = Samples(n)
    # camera moves render straight into the encoder's pixel format (I420); the others are RGB
    fmt = "rgb24" if req.tool in ("interpolate_frames", "motion_brush") else "yuv420p"
    encode_frames(_watch(frames, n, progress, hold_file, samples), out, fps=FPS, frame_format=fmt)
    return warnings, samples


def _watch(
    frames: Iterator[np.ndarray],
    n: int,
    progress: Callable[[float], None],
    hold_file: Path | None,
    samples: Samples,
) -> Iterator[np.ndarray]:
    for i, frame in enumerate(frames):
        if i == 2 and hold_file is not None:
            # test hook: a deterministic point at which a kill -9 lands mid-render (progress()
            # still runs, so a cancel or a server shutdown ends the wait)
            while hold_file.exists():
                progress(min(0.99, i / n))
                time.sleep(0.02)
        progress(min(0.99, i / n))
        if not is_yuv420(frame):
            samples.offer(i, frame)  # the engine yields a fresh array per frame; keeping it is safe
        elif i in samples.indices or i == n - 1:
            samples.offer(i, yuv420_to_rgb(frame, *frame_size(frame)))  # only the frames kept
        yield frame
    progress(1.0)
