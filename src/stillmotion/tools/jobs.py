"""check_job, list_jobs, cancel_job."""

from __future__ import annotations

from typing import Any, Literal

from mcp.types import CallToolResult
from pydantic import Field

from ..arguments import WAIT_MAX_S
from .base import CANCEL_ANNOTATIONS, READ_ANNOTATIONS, Args, Build, Call, ToolSpec, model_result
from .results import JobList, JobResult, call_result, job_result

JobId = Field(description="The job id a generation tool returned.")


class CheckJobArgs(Args):
    job_id: str = JobId
    wait_seconds: float = Field(0, ge=0, le=WAIT_MAX_S)  # the tool's description says what it does


class ListJobsArgs(Args):
    status: Literal["queued", "running", "downloading", "succeeded", "failed", "cancelled"] | None = None
    limit: int = Field(20, ge=1, le=200)


class CancelJobArgs(Args):
    job_id: str = Field(description="The job to cancel.")


async def check_job(args: CheckJobArgs, call: Call) -> CallToolResult:
    row = await call.service.wait(args.job_id, args.wait_seconds, call.progress())
    return call_result(row, links=call.settings.resource_links, shell=call.shell, file_links=call.settings.file_links)


async def list_jobs(args: ListJobsArgs, call: Call) -> CallToolResult:
    rows = await call.service.list(args.status, args.limit)
    return model_result(JobList(jobs=[job_result(r, shell=call.shell, file_links=call.settings.file_links) for r in rows]))


async def cancel_job(args: CancelJobArgs, call: Call) -> CallToolResult:
    row, changed = await call.service.cancel(args.job_id)
    result = call_result(row, links=call.settings.resource_links, shell=call.shell, file_links=call.settings.file_links)
    if not changed:
        first = result.content[0]
        assert first.type == "text"
        first.text = f"Job {row.id} had already ended ({row.status}); nothing to cancel.\n" + first.text
    return result


def specs(build: Build) -> list[ToolSpec[Any]]:
    return [
        ToolSpec(
            name="check_job",
            title="Check job",
            description=(
                f"Status of a job. Waits up to wait_seconds (0-{WAIT_MAX_S}) for it to finish, reporting progress; "
                "on success returns the video path, a resource link and a contact sheet."
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
                "Stop a job. For provider jobs this stops our polling; the provider offers no cancel for running "
                "tasks, so it may still finish and bill the task."
            ),
            args=CancelJobArgs,
            handler=cancel_job,
            annotations=CANCEL_ANNOTATIONS,
            output=JobResult,
        ),
    ]
