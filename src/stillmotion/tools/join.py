"""The `join_clips` tool: several clips (job ids or videos) joined in order into one MP4.

It runs as a job on `local/preview` (route `local`) like any render, with the usual result, poster
and last frame. The engine is `media/join.py` (stream copy when it can, re-encode otherwise).
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from mcp.types import CallToolResult
from pydantic import Field

from ..catalog import MODELS
from ..errors import InvalidInput
from ..jobs.store import JobRow, args_fingerprint, validate_job_id
from ..media.extend import facts_of
from ..media.images import off_loop
from ..media.join import ClipRefused, crossfade_problem, decoded, measure_clip, planned_seconds
from ..media.net import UrlGuard
from ..media.publish import sha256_file
from ..media.sources import save_media
from ..plan.arguments import WAIT_MAX_S
from ..plan.requests import GenerationRequest, LocalOptions, StoredClip
from ..service import NewJob
from .base import GEN_ANNOTATIONS, Args, Build, Call, ToolSpec
from .results import JobResult, call_result

if TYPE_CHECKING:
    from ..service import Service

MIN_CLIPS, MAX_CLIPS = 2, 20
MAX_CROSSFADE_S = 2.0
CLIP_FORMS = (
    "a job id of a succeeded job, a video path, file:// or http(s) URL, or stillmotion://jobs/<id>/video.mp4"
)
DESCRIPTION = "Join clips (job ids or videos) into one MP4 (free, local; the first clip's size and fps)."


async def submit_join(svc: Service, clips: list[str], crossfade_s: float, idempotency_key: str | None) -> JobRow:
    """Measure every clip (see `keep_clip`), check every rule the join would fail on later, keep
    copies, store and start the job (`Service.create_job`). Every refusal is `invalid_input` naming
    the clip or argument."""
    if not MIN_CLIPS <= len(clips) <= MAX_CLIPS:
        raise InvalidInput("clips", f"has {len(clips)} items.", f"{MIN_CLIPS} to {MAX_CLIPS} clips")
    if not 0 <= crossfade_s <= MAX_CROSSFADE_S:
        raise InvalidInput("crossfade_s", f"is {crossfade_s}.", f"0 to {MAX_CROSSFADE_S} seconds")
    for i, value in enumerate(clips):
        if "\x00" in value:
            raise InvalidInput(f"clips[{i}]", "holds a NUL byte; no job id, path or URL can.", CLIP_FORMS)

    async def prepare(job_id: str, folder: Path) -> NewJob:
        await anyio.to_thread.run_sync(functools.partial(folder.mkdir, parents=True, exist_ok=True))
        stored: list[StoredClip] = []
        for i, value in enumerate(clips):
            stored.append(await keep_clip(svc, value, f"clips[{i}]", folder / f"clip_{i}.mp4", stored, crossfade_s))
        facts = [facts_of(c) for c in stored]
        problem = crossfade_problem(facts, crossfade_s)
        if problem is not None:
            raise InvalidInput("crossfade_s", f"{problem}.", "0 up to less than the shortest clip (see the message)")
        total_s = planned_seconds(facts, crossfade_s)
        _check_length(svc, total_s, len(clips) - 1)
        request = GenerationRequest(
            tool="join_clips", model="local/preview", route="local", duration=max(1, round(total_s)), clips=stored,
            crossfade_s=crossfade_s, local=LocalOptions(),
        )  # fmt: skip
        return NewJob(request, {"estimated_usd": 0.0, "basis": "join_clips: joined on this machine, free", "estimate": False}, [])

    fingerprint = args_fingerprint({"tool": "join_clips", "clips": clips, "crossfade_s": crossfade_s})
    return await svc.create_job(fingerprint, idempotency_key, prepare)


def _check_length(svc: Service, seconds: float, index: int, partial: bool = False) -> None:
    limit = svc.settings.max_join_seconds
    if seconds > limit + 1e-9:
        upto = f"clips[0..{index}] already make" if partial else "the joined video would be"
        raise InvalidInput(
            f"clips[{index}]",
            f"makes the join too long: {upto} {seconds:.2f} s; this server joins at most {limit:g} s "
            "(STILLMOTION_MAX_JOIN_SECONDS).",
            f"clips adding up to at most {limit:g} s",
        )


async def keep_clip(
    svc: Service, value: str, argument: str, dest: Path, before: list[StoredClip] | None = None, crossfade_s: float = 0.0
) -> StoredClip:
    """A video argument (a succeeded job's id, a path, a URL or a stillmotion:// video) kept at `dest`:
    join_clips' clips and extend_video's video. Copy (a job's video: hard-linked where the file system
    allows) or fetch the clip, streamed and capped, then measure it: header checks first (size, frame
    rate, packet timing), then the running length against STILLMOTION_MAX_JOIN_SECONDS, and only then
    (for a video this server did not make) a decode of every frame, on the image work threads (two at a time)."""
    before = before or []
    i = len(before)
    source_path = await _job_video(svc, value.strip(), argument)
    if source_path is not None:
        await anyio.to_thread.run_sync(_link_or_copy, source_path, dest)
        own = True
    else:
        await save_media(
            value,
            dest,
            argument=argument,
            guard=UrlGuard(svc.settings.allow_private_network, frozenset()),
            input_roots=svc.settings.input_roots,
            resolve_resource=svc.resource_path,
            max_bytes=svc.settings.max_download_bytes,
            resources="stillmotion://jobs/<id>/video.mp4 of a succeeded job",
            names=frozenset({"video.mp4"}),
            deadline_s=svc.settings.fetch_timeout_s,
        )
        own = value.strip().startswith("stillmotion://")
    max_pixels = MODELS["local/preview"].image_rules.max_pixels
    try:
        facts = await off_loop(measure_clip, dest, max_pixels=max_pixels, decode=False)
        so_far = float(sum(facts_of(c).duration for c in before) + facts.duration) - crossfade_s * len(before)
        _check_length(svc, so_far, i, partial=True)
        if not own:
            facts = await off_loop(decoded, facts, max_pixels)
    except ClipRefused as exc:
        raise InvalidInput(argument, f"cannot be joined: it {exc}.", CLIP_FORMS) from None
    size, sha256 = await anyio.to_thread.run_sync(_size_and_hash, dest)
    return StoredClip(
        path=str(dest), source=value, bytes=size, sha256=sha256, width=facts.width, height=facts.height,
        fps=str(facts.fps), frame_count=facts.frame_count, has_audio=facts.has_audio, rotation=facts.rotation,
    )  # fmt: skip


def _size_and_hash(path: Path) -> tuple[int, str]:
    return path.stat().st_size, sha256_file(path)


def _link_or_copy(source: Path, dest: Path) -> None:
    """A job's video is immutable once published: a hard link costs no disk (a copy where the
    output folder is on another file system)."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


async def _job_video(svc: Service, value: str, argument: str) -> Path | None:
    """The result file of a job id given as a clip; None when the value is not a job of this server."""
    try:
        validate_job_id(value)
    except InvalidInput:
        return None
    row = await svc.find(value)  # another user's job id is no job here: it is tried as a path, and refused as one
    if row is None:
        return None
    if row.status != "succeeded":
        raise InvalidInput(argument, f"job {value} is {row.status}; only a succeeded job's video can be used.", CLIP_FORMS)
    path = await svc.resource_path(value, "video.mp4")
    if path is None:
        raise InvalidInput(argument, f"job {value} has no video file any more.", CLIP_FORMS)
    return path


class JoinClipsArgs(Args):
    clips: list[str] = Field(min_length=MIN_CLIPS, max_length=MAX_CLIPS)
    crossfade_s: float = Field(0.0, ge=0, le=MAX_CROSSFADE_S)
    wait_seconds: float = Field(0, ge=0, le=WAIT_MAX_S)


async def join_clips(args: JoinClipsArgs, call: Call) -> CallToolResult:
    row = await submit_join(call.service, args.clips, args.crossfade_s, None)
    if args.wait_seconds > 0:
        row = await call.service.wait(row.id, args.wait_seconds, call.progress())
    return call_result(row, links=call.settings.resource_links, shell=call.shell)


def specs(build: Build) -> list[ToolSpec[Any]]:
    return [ToolSpec(name="join_clips", title="Join clips", description=DESCRIPTION, args=JoinClipsArgs,
                     handler=join_clips, annotations=GEN_ANNOTATIONS, output=JobResult)]
