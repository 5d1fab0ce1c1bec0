"""The job result every job tool returns: a declared output schema plus content blocks."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from mcp.types import CallToolResult, ContentBlock, ImageContent, ResourceLink, TextContent
from pydantic import BaseModel, Field

from ..http.links import FileLinks
from ..jobs.store import JobRow
from ..scrub import scrub, scrub_obj


class JobErrorInfo(BaseModel):
    kind: Literal[
        "invalid_input", "auth", "quota", "rate_limited", "content_filtered", "provider_error",
        "timeout", "expired", "cancelled", "interrupted",
    ]
    message: str
    retryable: bool
    provider_code: str | None = None


class VideoFile(BaseModel):
    uri: str
    path: str
    mime_type: str = "video/mp4"
    bytes: int
    duration_s: float
    width: int
    height: int
    fps: float
    frame_count: int | None = None
    has_audio: bool
    sha256: str
    provider_url: str | None = None
    provider_url_expires_at: float | None = None
    http_url: str | None = Field(
        None, description="Over the HTTP transport: a signed, expiring link to download the file (Range supported)."
    )


class ImageFile(BaseModel):
    uri: str
    path: str
    mime_type: str = "image/png"
    http_url: str | None = Field(None, description="Over the HTTP transport: a signed, expiring download link.")


class CostInfo(BaseModel):
    estimated_usd: float | None = Field(description="null: price unknown")
    basis: str
    estimate: bool
    actual_usd: float | None = Field(None, description="as the provider reported it")


def job_cost(row: JobRow) -> CostInfo:
    info = row.cost or {}
    return CostInfo(
        estimated_usd=row.estimated_usd,
        basis=str(info.get("basis") or "no estimate was recorded for this job"),
        estimate=bool(info.get("estimate", True)),
        actual_usd=row.actual_usd,
    )


class JobIdentity(BaseModel):
    """The fields every job answer starts with (check_job's full result, list_jobs' lines)."""

    job_id: str
    tool: str
    model: str
    route: Literal["direct", "gateway", "local"]
    status: Literal["queued", "running", "downloading", "succeeded", "failed", "cancelled"]


class JobResult(JobIdentity):
    progress: float | None = Field(None, description="0-1 when known")
    status_detail: str | None = Field(
        None, description="What the job is doing right now when it is not plain progress (e.g. retrying a provider)."
    )
    created_at: str
    updated_at: str
    provider_task_id: str | None = None
    warnings: list[str] = Field(default_factory=list)
    error: JobErrorInfo | None = None
    cost: CostInfo
    next_step: str
    video: VideoFile | None = None
    poster: ImageFile | None = Field(None, description="Contact sheet: a few frames in one PNG.")
    last_frame: ImageFile | None = Field(None, description="The final frame as PNG; use its uri to chain clips.")
    files_deleted: bool = Field(
        False, description="The disk cap (STILLMOTION_MAX_OUTPUT_GB) deleted this finished job's files; the record stays."
    )


class CostLine(BaseModel):
    estimated_usd: float | None = None
    actual_usd: float | None = None


class VideoBrief(BaseModel):
    path: str
    bytes: int


class JobLine(JobIdentity):
    """One job in list_jobs: what tells jobs apart (check_job has the rest: files, links, next step)."""

    created_at: str
    progress: float | None = None
    status_detail: str | None = None
    error_kind: str | None = None
    video: VideoBrief | None = Field(None, description="A succeeded job's MP4 (check_job has its links and details).")
    files_deleted: bool | None = None
    cost: CostLine


class JobList(BaseModel):
    jobs: list[JobLine]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_NEXT_BY_ERROR = {
    "invalid_input": "Fix the argument named in the error and call the tool again.",
    "auth": "The provider refused the key: check the API key environment variable, then start a new job.",
    "quota": "The provider account is out of balance or credits: top it up before starting a new job.",
    "rate_limited": "The provider is rate-limiting: wait a minute, then start the job again.",
    "content_filtered": "The provider's safety filter blocked this: change the prompt or the image and start a new job.",
    "provider_error": "The provider failed: start the job again later, or try another model.",
    "timeout": "The provider took longer than poll_timeout_ms: start a new job with a longer poll timeout.",
    "expired": "The task or its result expired before it could be fetched: start a new job.",
    "cancelled": "The job was cancelled.",
    "interrupted": (
        "The server restarted while the create request was in flight: check the provider's console before "
        "starting the job again, to avoid paying twice."
    ),
}


def status_detail(row: JobRow) -> str | None:
    """What an unfinished job waits on (the store's `status_detail`, e.g. a retry); None once it ended."""
    return row.status_detail if row.status_detail and not row.terminal else None


def check_command(job_id: str) -> str:
    """The shell command that follows a job to its end."""
    return "stillmotion run check_job '" + json.dumps({"job_id": job_id}) + "' --wait"


def next_step(row: JobRow, *, shell: bool = False) -> str:
    """What to do next, for the caller at hand: a model calling tools, or a person in a shell."""
    if row.status == "succeeded":
        video = ((row.result or {}).get("video") or {}).get("path")
        where = f"at {video}" if video else "at video.path"
        chain = f"stillmotion://jobs/{row.id}/last-frame.png"
        if shell:
            command = "stillmotion run animate_image '" + json.dumps({"image": chain, "prompt": "..."}) + "' --wait"
            return f"Done. The MP4 is {where}. Chain another clip from its last frame: {command}"
        return f"Done. The MP4 is {where}; chain another clip from {chain}."
    if row.status in ("failed", "cancelled"):
        kind = (row.error or {}).get("kind", "provider_error")
        return _NEXT_BY_ERROR.get(kind, _NEXT_BY_ERROR["provider_error"])
    hint = "a few seconds" if row.route == "local" else "one to several minutes"
    detail = status_detail(row)
    waiting = f"It is {detail}. " if detail else ""
    if shell:
        return f"{waiting}Follow it with: {check_command(row.id)} (this usually takes {hint})."
    return f"{waiting}Call check_job with job_id '{row.id}' and wait_seconds 30 to wait for it (this usually takes {hint})."


FILES_DELETED_STEP = (
    "Its files were deleted to keep the outputs under STILLMOTION_MAX_OUTPUT_GB (the record stays); "
    "run the job again for a new video."
)


def job_line(row: JobRow) -> JobLine:
    video = ((row.result or {}).get("video") or {}) if row.status == "succeeded" else {}
    return JobLine(
        job_id=row.id, tool=row.tool, model=row.model, route=row.route, status=row.status,
        created_at=_iso(row.created_at),
        progress=row.progress if not row.terminal else None,
        status_detail=status_detail(row),
        error_kind=(row.error or {}).get("kind") if row.error else None,
        video=VideoBrief(path=video["path"], bytes=video.get("bytes", 0))
        if video.get("path") and not row.files_deleted else None,
        files_deleted=True if row.files_deleted else None,
        cost=CostLine(estimated_usd=row.estimated_usd, actual_usd=row.actual_usd),
    )


def job_list_text(lines: list[JobLine], *, shell: bool = False) -> str:
    """One line per job, and how to see one in full."""
    if not lines:
        return "No jobs."
    out = []
    for j in lines:
        parts = [j.job_id, j.status, j.tool, j.model, j.created_at[:16].replace("T", " ")]
        if j.progress is not None:
            parts.append(f"{j.progress:.0%}")
        if j.status_detail:
            parts.append(j.status_detail)
        if j.error_kind:
            parts.append(f"error {j.error_kind}")
        if j.files_deleted:
            parts.append("files deleted")
        elif j.video is not None:
            parts.append(j.video.path)
        out.append("  ".join(parts))
    how = "stillmotion run check_job '{\"job_id\": \"...\"}'" if shell else "check_job with its job_id"
    out.append(f"{len(lines)} job(s), newest first; {how} gives one job's files, links and next step.")
    return "\n".join(out)


def job_result(row: JobRow, *, shell: bool = False, file_links: FileLinks | None = None) -> JobResult:
    """`file_links` (the HTTP transport's) adds signed `http_url`s to the files of a succeeded job."""
    result = row.result or {}
    if file_links is not None and row.status == "succeeded" and result.get("video") and not row.files_deleted:
        result = file_links.add_to_result(row.id, result)
    video = result.get("video") if row.status == "succeeded" and not row.files_deleted else None
    return JobResult(
        job_id=row.id,
        tool=row.tool,
        model=row.model,
        route=row.route,
        status=row.status,
        progress=row.progress,
        status_detail=status_detail(row),
        created_at=_iso(row.created_at),
        updated_at=_iso(row.updated_at),
        provider_task_id=row.provider_task_id,
        warnings=[scrub(w) for w in row.warnings],
        error=JobErrorInfo.model_validate(scrub_obj(row.error)) if row.error else None,
        cost=job_cost(row),
        next_step=FILES_DELETED_STEP if row.files_deleted else next_step(row, shell=shell),
        files_deleted=bool(row.files_deleted),
        video=VideoFile.model_validate(video) if video else None,
        poster=ImageFile.model_validate(result["poster"]) if video and result.get("poster") else None,
        last_frame=ImageFile.model_validate(result["last_frame"]) if video and result.get("last_frame") else None,
    )


def summary_text(res: JobResult) -> str:
    head = f"Job {res.job_id} ({res.tool} on {res.model} via {res.route}): {res.status}"
    if res.progress is not None and res.status in ("running", "downloading"):
        head += f", {res.progress:.0%}"
    lines = [head + "."]
    if res.status_detail:
        lines.append(f"Now: {res.status_detail}.")
    if res.video is not None:
        v = res.video
        lines.append(
            f"Video: {v.path} ({v.width}x{v.height}, {v.duration_s:.2f} s at {v.fps:g} fps, {v.bytes} bytes"
            + (", with audio" if v.has_audio else "")
            + ")."
        )
        if v.http_url:
            lines.append(f"Download: {v.http_url}")
    if res.error is not None:
        lines.append(f"Error ({res.error.kind}): {res.error.message}")
    if res.cost.estimated_usd == 0 and res.route == "local":
        lines.append("Cost: free (rendered on this machine).")
    elif res.cost.estimated_usd or res.cost.actual_usd is not None:
        c = res.cost
        lines.append(
            "Cost: "
            + (f"about ${c.estimated_usd:.2f} estimated" if c.estimated_usd is not None else "estimate unknown")
            + (f", ${c.actual_usd:.4g} reported by the provider" if c.actual_usd is not None else "")
            + "."
        )
    for w in res.warnings:
        lines.append(f"Warning: {w}")
    lines.append(res.next_step)
    return "\n".join(lines)


def call_result(
    row: JobRow, *, links: bool = True, shell: bool = False, file_links: FileLinks | None = None
) -> CallToolResult:
    """The job as a tool result. `links=False` (STILLMOTION_RESOURCE_LINKS=0) leaves the
    resource_link out, for frameworks that cannot pass links on; the text still names the path.
    `file_links` (the HTTP transport's) adds signed `http_url`s."""
    res = job_result(row, shell=shell, file_links=file_links)
    content: list[ContentBlock] = [TextContent(type="text", text=summary_text(res))]
    if res.video is not None and links:
        content.append(
            ResourceLink(
                type="resource_link",
                name=f"{res.job_id}.mp4",
                title=f"{res.tool} video",
                uri=res.video.uri,
                mime_type="video/mp4",
                size=res.video.bytes,
                description=f"{res.video.width}x{res.video.height}, {res.video.duration_s:.2f} s; file: {res.video.path}",
            )
        )
    if res.video is not None:
        if res.poster is not None and Path(res.poster.path).is_file():
            data = Path(res.poster.path).read_bytes()
            content.append(ImageContent(type="image", data=base64.b64encode(data).decode(), mime_type="image/png"))
    return CallToolResult(
        content=content,
        structured_content=res.model_dump(mode="json"),
    )
