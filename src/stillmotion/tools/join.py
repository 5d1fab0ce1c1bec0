"""The `join_clips` tool: several clips (job ids or videos) joined in order into one MP4.

It runs as a job on `local/preview` (route `local`) like any render, with the usual result, poster
and last frame. The engine is `media/join.py` (stream copy when it can, re-encode otherwise).
"""

from __future__ import annotations

import functools
import logging
import shutil
import time
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from mcp.types import CallToolResult
from pydantic import Field

from ..arguments import WAIT_MAX_S
from ..errors import InvalidInput, Unavailable
from ..jobs.async_store import unavailable
from ..jobs.store import DuplicateIdempotencyKey, JobRow, args_fingerprint, new_job_id, validate_job_id
from ..media.join import ClipFacts, clip_facts, planned_frames
from ..media.net import UrlGuard
from ..media.publish import sha256_file
from ..media.sources import load_media
from ..media.video import probe_video
from ..requests import GenerationRequest, LocalOptions, StoredClip
from .base import GEN_ANNOTATIONS, Args, Build, Call, ToolSpec
from .results import JobResult, call_result

if TYPE_CHECKING:
    from ..service import Service

log = logging.getLogger(__name__)

MIN_CLIPS, MAX_CLIPS = 2, 20
MAX_CROSSFADE_S = 2.0
CLIP_FORMS = (
    "a job id of a succeeded job, a video path, file:// or http(s) URL, or stillmotion://jobs/<id>/video.mp4"
)
DESCRIPTION = "Join clips (job ids or videos) into one MP4 (free, local; the first clip's size and fps)."


async def submit_join(svc: Service, clips: list[str], crossfade_s: float, idempotency_key: str | None) -> JobRow:
    """Check every clip (readable, decodable, under the size cap), keep copies, store and start the job."""
    if not MIN_CLIPS <= len(clips) <= MAX_CLIPS:
        raise InvalidInput("clips", f"has {len(clips)} items.", f"{MIN_CLIPS} to {MAX_CLIPS} clips")
    if not 0 <= crossfade_s <= MAX_CROSSFADE_S:
        raise InvalidInput("crossfade_s", f"is {crossfade_s}.", f"0 to {MAX_CROSSFADE_S} seconds")
    fingerprint = args_fingerprint({"tool": "join_clips", "clips": clips, "crossfade_s": crossfade_s})
    if idempotency_key is not None:
        existing = await svc.db.by_idempotency_key(idempotency_key)
        if existing is not None:
            return _same_or_error(existing, fingerprint)

    job_id = new_job_id()
    folder = svc.settings.inputs_dir / job_id
    sent = time.monotonic()
    try:
        await anyio.to_thread.run_sync(functools.partial(folder.mkdir, parents=True, exist_ok=True))
        stored = [await keep_clip(svc, value, f"clips[{i}]", folder / f"clip_{i}.mp4") for i, value in enumerate(clips)]
        facts = [ClipFacts(Path(c.path), c.width, c.height, Fraction(c.fps), c.frame_count, c.has_audio) for c in stored]
        shortest = min(f.duration for f in facts)
        if crossfade_s > 0 and crossfade_s >= shortest:
            raise InvalidInput(
                "crossfade_s", f"is {crossfade_s} s, not shorter than the shortest clip ({float(shortest):.2f} s).",
                f"0 to {min(MAX_CROSSFADE_S, float(shortest)):.2f} seconds (less than the shortest clip)",
            )
        total_s = planned_frames(facts, crossfade_s) / facts[0].fps
        request = GenerationRequest(
            tool="join_clips",
            model="local/preview",
            route="local",
            duration=max(1, round(total_s)),
            clips=stored,
            crossfade_s=crossfade_s,
            local=LocalOptions(),
        )
        row = await svc.db.create(
            job_id=job_id,
            tool="join_clips",
            model="local/preview",
            route="local",
            request=request.model_dump(mode="json"),
            args_hash=fingerprint,
            idempotency_key=idempotency_key,
            warnings=[],
            owner=svc.runner.owner,
            lease_s=svc.runner.lease_s,
        )
    except DuplicateIdempotencyKey:
        shutil.rmtree(folder, ignore_errors=True)
        assert idempotency_key is not None
        existing = await svc.db.by_idempotency_key(idempotency_key)
        assert existing is not None
        return _same_or_error(existing, fingerprint)
    except BaseException as exc:
        shutil.rmtree(folder, ignore_errors=True)
        fault = unavailable(exc) if isinstance(exc, Exception) else None
        if fault is not None:  # the store or the disk cannot take the job: nothing accepted, retry
            raise Unavailable(f"the job was not accepted: {fault.message}") from exc
        raise
    log.info("job %s created: join_clips of %d clips", job_id, len(clips))
    svc.runner.launch_new(row, leased_at=sent)
    return row


def _same_or_error(existing: JobRow, fingerprint: str) -> JobRow:
    if existing.args_hash != fingerprint:
        raise InvalidInput(
            "idempotency_key",
            f"was already used for job {existing.id} with different arguments; the same key must come with "
            "the same arguments (use a new key for a new request).",
            f"the arguments of job {existing.id}, or a new key",
        )
    return existing


async def keep_clip(svc: Service, value: str, argument: str, dest: Path) -> StoredClip:
    """A video argument (a succeeded job's id, a path, a URL or a stillmotion:// video) checked and copied
    to `dest`: readable, decodable, under the size cap. join_clips' clips and extend_video's video."""
    source_path = await _job_video(svc, value.strip(), argument)
    if source_path is not None:
        await anyio.to_thread.run_sync(shutil.copyfile, source_path, dest)
        own = True
    else:
        media = await load_media(
            value,
            argument=argument,
            client=svc.client,
            guard=UrlGuard(svc.settings.allow_private_network, frozenset()),
            input_roots=svc.settings.input_roots,
            resolve_resource=svc.resource_path,
            max_bytes=svc.settings.max_download_bytes,
            resources="stillmotion://jobs/<id>/video.mp4 of a succeeded job",
        )
        await anyio.to_thread.run_sync(dest.write_bytes, media.data)
        own = value.strip().startswith("stillmotion://")
    try:
        facts, has_audio = await anyio.to_thread.run_sync(_check_clip, dest, own)
    except ValueError as exc:
        raise InvalidInput(argument, f"is not a decodable video: {exc}.", CLIP_FORMS) from None
    size = dest.stat().st_size
    if size > svc.settings.max_download_bytes:
        raise InvalidInput(argument, f"is {size} bytes, over the {svc.settings.max_download_bytes}-byte cap.")
    return StoredClip(
        path=str(dest), source=value, bytes=size, sha256=await anyio.to_thread.run_sync(sha256_file, dest),
        width=facts.width, height=facts.height, fps=str(facts.fps), frame_count=facts.frame_count, has_audio=has_audio,
    )  # fmt: skip


def _check_clip(path: Path, own: bool) -> tuple[ClipFacts, bool]:
    """Header facts; a video from outside this server is also decoded in full (the decodability check)."""
    try:
        facts = clip_facts(path)
        if not own:
            info = probe_video(path)
            facts = ClipFacts(path, info.width, info.height, facts.fps, info.frame_count, info.has_audio)
    except Exception as exc:  # PyAV raises many kinds for a file that is not a video
        raise ValueError(str(exc)[:200]) from None
    return facts, facts.has_audio


async def _job_video(svc: Service, value: str, argument: str) -> Path | None:
    """The result file of a job id given as a clip; None when the value is not a job of this server."""
    try:
        validate_job_id(value)
    except InvalidInput:
        return None
    row = await svc.db.get(value)
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
    return [
        ToolSpec(
            name="join_clips",
            title="Join clips",
            description=DESCRIPTION,
            args=JoinClipsArgs,
            handler=join_clips,
            annotations=GEN_ANNOTATIONS,
            output=JobResult,
        )
    ]
