"""check_job, list_jobs, cancel_job, delete_job."""

from __future__ import annotations

from typing import Any, Literal

from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from ..plan.arguments import WAIT_MAX_S
from .base import CANCEL_ANNOTATIONS, READ_ANNOTATIONS, Args, Build, Call, ToolSpec
from .results import JobList, JobResult, call_result, job_line, job_list_text

JobId = Field(description="The job id a generation tool returned.")


class CheckJobArgs(Args):
    job_id: str = JobId
    wait_seconds: float = Field(0, ge=0, le=WAIT_MAX_S)  # the tool's description says what it does


class ListJobsArgs(Args):
    status: Literal["queued", "running", "downloading", "succeeded", "failed", "cancelled"] | None = None
    limit: int = Field(20, ge=1, le=200)


class CancelJobArgs(Args):
    job_id: str = Field(description="The job to cancel.")


class DeleteJobArgs(Args):
    job_id: str = Field(description="A finished job's id.")


class DeleteResult(BaseModel):
    job_id: str
    deleted: bool
    status: str = Field(description="The status the job had.")
    freed_bytes: int = Field(description="Bytes of files (video, poster, last frame, input copies) removed.")


DELETE_ANNOTATIONS = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)


async def check_job(args: CheckJobArgs, call: Call) -> CallToolResult:
    row = await call.service.wait(args.job_id, args.wait_seconds, call.progress())
    return call_result(row, links=call.settings.resource_links, shell=call.shell, file_links=call.settings.file_links)


async def list_jobs(args: ListJobsArgs, call: Call) -> CallToolResult:
    rows = await call.service.list(args.status, args.limit)
    listed = JobList(jobs=[job_line(r) for r in rows])
    return CallToolResult(
        content=[TextContent(type="text", text=job_list_text(listed.jobs, shell=call.shell))],
        # a line leaves out what a job does not have; cost always says both figures (null: unknown)
        structured_content={"jobs": [{k: v for k, v in j.model_dump(mode="json").items() if v is not None}
                                     for j in listed.jobs]},
    )


async def cancel_job(args: CancelJobArgs, call: Call) -> CallToolResult:
    row, changed = await call.service.cancel(args.job_id)
    result = call_result(row, links=call.settings.resource_links, shell=call.shell, file_links=call.settings.file_links)
    if not changed:
        first = result.content[0]
        assert first.type == "text"
        first.text = f"Job {row.id} had already ended ({row.status}); nothing to cancel.\n" + first.text
    return result


async def delete_job(args: DeleteJobArgs, call: Call) -> CallToolResult:
    from ..jobs.gc import human_bytes

    gone = await call.service.delete(args.job_id)
    res = DeleteResult(job_id=gone.job_id, deleted=True, status=gone.status, freed_bytes=gone.bytes)
    text = (f"Deleted job {gone.job_id} ({gone.status}): its files, input copies and record are gone "
            f"({human_bytes(gone.bytes)} freed); its links no longer work.")
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=res.model_dump(mode="json"))


def specs(build: Build) -> list[ToolSpec[Any]]:
    return [
        ToolSpec(
            name="check_job",
            title="Check job",
            description=(
                f"Status of a job. Waits up to wait_seconds (0-{WAIT_MAX_S}) for it to finish, reporting progress; "
                "on success: the video's path, a link and a contact sheet."
            ),
            args=CheckJobArgs,
            handler=check_job,
            annotations=READ_ANNOTATIONS,
            output=JobResult,
        ),
        ToolSpec(
            name="list_jobs",
            title="List jobs",
            description="Recent jobs, newest first, optionally filtered by status.",
            args=ListJobsArgs,
            handler=list_jobs,
            annotations=READ_ANNOTATIONS,
            output=JobList,
        ),
        ToolSpec(
            name="cancel_job",
            title="Cancel job",
            description=(
                "Stop a job. Providers have no cancel for running tasks: one may still finish and bill."
            ),
            args=CancelJobArgs,
            handler=cancel_job,
            annotations=CANCEL_ANNOTATIONS,
            output=JobResult,
        ),
        ToolSpec(
            name="delete_job",
            title="Delete job",
            description="Delete a finished job: its files, inputs and record.",
            args=DeleteJobArgs,
            handler=delete_job,
            annotations=DELETE_ANNOTATIONS,
            output=DeleteResult,
        ),
    ]
