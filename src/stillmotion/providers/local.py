"""`local/preview`: renders a job on the CPU with the offline engine (`render/`).

Runs on a worker thread. Frames stream from the engine into the encoder; nothing holds the clip.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..catalog import ModelSpec
from ..errors import Cancelled, InvalidInput
from ..media.images import decode_mask, decode_rgb
from ..media.join import ClipFacts, can_stream_copy, join, planned_frames
from ..media.publish import Samples
from ..media.video import encode_frames, frame_size, is_yuv420, yuv420_to_rgb
from ..plan.requests import GenerationRequest, KlingOptions, KlingShot, LocalOptions
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
from .families import FAMILIES
from .rules import Checked, OptionContext

FPS = 24
SHOTS_WARNING = (
    "local/preview renders kling.shots as one camera move per shot with a cut between them: it shows the "
    "structure of the paid request, not its content (nothing is generated)."
)
FAMILY = FAMILIES["local"]
IGNORED_WITH_SHOTS = frozenset({"shots", "shot_type"})


def check_options(given: LocalOptions | None, ctx: OptionContext) -> Checked[LocalOptions]:
    """local/preview's options, plus the one thing it reads from another provider: `kling.shots`."""
    opts = given or LocalOptions()
    kl = ctx.kling
    if kl is None or not kl.shots:
        return Checked(opts)
    if ctx.tool != "animate_image":
        raise InvalidInput("kling.shots", f"multi-shot is for animate_image only (got {ctx.tool}).", ["animate_image"])
    from .kling import check_shot_list  # the same shot rules as the paid request

    total = check_shot_list(kl.shots, ctx.duration, ctx.spec.durations, ctx.spec.id)
    return Checked(
        opts,
        [SHOTS_WARNING],
        duration=total,
        kling_shots=KlingOptions(shots=kl.shots, shot_type="customize"),
    )


def schema(lo: dict[str, Any], tool: str, models: list[ModelSpec]) -> None:
    if tool != "animate_image":
        lo.pop("fps", None)  # still taken (24/25/30); listed where a frame rate matters most


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
    if req.tool == "join_clips":
        return _join(req, out, progress)
    local = req.local or LocalOptions()
    resolution = local.resolution
    fps = local.fps
    src = decode_rgb(ctx.image_bytes(req.start_image))
    in_h, in_w = src.shape[:2]
    size = working_size(in_w, in_h, resolution)
    start = fit_image(src, size)
    n = req.duration * fps
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
    elif req.kling is not None and req.kling.shots:
        frames, whys = _shot_frames(start, req.kling.shots, fps)
        warnings.append(
            "local/preview shots, each a camera move from the still with a cut between them: "
            + "; ".join(f"shot {i + 1} ({s.duration} s): {why}" for i, (s, why) in enumerate(zip(req.kling.shots, whys, strict=True)))
            + "."
        )
    else:
        camera, why = choose_camera(req.prompt)
        frames = camera_frames_yuv(start, camera, n)
        warnings.append(
            f"local/preview animates a still by camera motion only ({why}); it does not generate new content."
        )
    samples = Samples(n)
    # camera moves render straight into the encoder's pixel format (I420); the others are RGB
    fmt = "rgb24" if req.tool in ("interpolate_frames", "motion_brush") else "yuv420p"
    encode_frames(_watch(frames, n, progress, hold_file, samples), out, fps=fps, frame_format=fmt)
    return warnings, samples


def _shot_frames(start: np.ndarray, shots: list[KlingShot], fps: int) -> tuple[Iterator[np.ndarray], list[str]]:
    """Kling shots previewed: one camera move per shot (from its own prompt), each from the still,
    so every shot boundary is a cut. I420 frames, like animate_image's; the moves are chosen up front."""
    picks = [choose_camera(shot.prompt) for shot in shots]

    def chain() -> Iterator[np.ndarray]:
        for shot, (camera, _why) in zip(shots, picks, strict=True):
            yield from camera_frames_yuv(start, camera, shot.duration * fps)

    return chain(), [why for _camera, why in picks]


def _join(req: GenerationRequest, out: Path, progress: Callable[[float], None]) -> tuple[list[str], Samples]:
    """join_clips: stream copy when it can (the publisher then samples the file), else re-encode.
    The clip copies are deleted once the join has ended here, done or failed; a render handed over
    (Cancelled: a shutdown or a lost lease) keeps them for the process that takes the job."""
    clips = [
        ClipFacts(Path(c.path), c.width, c.height, Fraction(c.fps), c.frame_count, c.has_audio, c.rotation)
        for c in req.clips
    ]
    handed_over = False
    try:
        if can_stream_copy(clips, req.crossfade_s):
            report = join(clips, out, 0.0, progress)
            return report.warnings, Samples(report.frames)
        samples = Samples(planned_frames(clips, req.crossfade_s))
        report = join(clips, out, req.crossfade_s, progress, on_frame=samples.offer)
        return report.warnings, samples
    except Cancelled:
        handed_over = True
        raise
    finally:
        if not handed_over:
            _drop_copies([c.path for c in clips])


def _drop_copies(paths: list[Path]) -> None:
    """Delete the job's clip copies, then their folder if that left it empty."""
    for path in paths:
        path.unlink(missing_ok=True)
    for folder in {p.parent for p in paths}:
        with contextlib.suppress(OSError):
            folder.rmdir()


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
