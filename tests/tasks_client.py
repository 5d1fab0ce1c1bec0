"""A client side of the tasks extension (SEP-2663) for the tests, on the SDK's ClientExtension:
it declares `io.modelcontextprotocol/tasks`, claims `resultType: "task"` on tools/call, and can
resolve a task by polling tasks/get, as a host would."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import anyio
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.client.session import ClientSession
from mcp_types import CallToolResult, Request, RequestParams, Result
from pydantic import ConfigDict, Field

EXTENSION_ID = "io.modelcontextprotocol/tasks"


class CreateTaskResult(Result):
    model_config = ConfigDict(extra="allow")
    result_type: Literal["task"] = Field(alias="resultType")
    task_id: str = Field(alias="taskId")
    status: str
    status_message: str | None = Field(None, alias="statusMessage")
    created_at: str = Field(alias="createdAt")
    last_updated_at: str = Field(alias="lastUpdatedAt")
    ttl_ms: int | None = Field(alias="ttlMs")
    poll_interval_ms: int | None = Field(None, alias="pollIntervalMs")


class TaskView(Result):
    """A tasks/get answer: the Task fields plus `result` once completed."""

    model_config = ConfigDict(extra="allow")
    result_type: str | None = Field(None, alias="resultType")
    task_id: str = Field(alias="taskId")
    status: str
    status_message: str | None = Field(None, alias="statusMessage")
    ttl_ms: int | None = Field(None, alias="ttlMs")
    poll_interval_ms: int | None = Field(None, alias="pollIntervalMs")
    result: dict[str, Any] | None = None


class Ack(Result):
    model_config = ConfigDict(extra="allow")
    result_type: str | None = Field(None, alias="resultType")


class TaskIdParams(RequestParams):
    task_id: str = Field(alias="taskId")


class UpdateParams(TaskIdParams):
    input_responses: dict[str, Any] = Field(default_factory=dict, alias="inputResponses")


class GetTask(Request[TaskIdParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    params: TaskIdParams
    name_param: ClassVar[str | None] = "taskId"  # Mcp-Name carries the task id over HTTP


class UpdateTask(Request[UpdateParams, Literal["tasks/update"]]):
    method: Literal["tasks/update"] = "tasks/update"
    params: UpdateParams
    name_param: ClassVar[str | None] = "taskId"


class CancelTask(Request[TaskIdParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    params: TaskIdParams
    name_param: ClassVar[str | None] = "taskId"


async def get_task(session: ClientSession, task_id: str) -> TaskView:
    return await session.send_request(GetTask(params=TaskIdParams(taskId=task_id)), TaskView)


async def cancel_task(session: ClientSession, task_id: str) -> Ack:
    return await session.send_request(CancelTask(params=TaskIdParams(taskId=task_id)), Ack)


async def update_task(session: ClientSession, task_id: str) -> Ack:
    return await session.send_request(UpdateTask(params=UpdateParams(taskId=task_id)), Ack)


async def _resolve(task: CreateTaskResult, ctx: ClaimContext) -> CallToolResult:
    for _ in range(600):
        view = await get_task(ctx.session, task.task_id)
        if view.status == "completed" and view.result is not None:
            return CallToolResult.model_validate(view.result)
        if view.status in ("failed", "cancelled"):
            raise RuntimeError(f"task {view.status}: {view.status_message}")
        await anyio.sleep(min(view.poll_interval_ms or 1000, 200) / 1000)
    raise TimeoutError(task.task_id)


class TasksClient(ClientExtension):
    identifier = EXTENSION_ID

    def claims(self) -> Sequence[ResultClaim[Any]]:
        return (ResultClaim(result_type="task", model=CreateTaskResult, resolve=_resolve),)


def open_jobs(path: Any) -> Any:
    """The job store for a test to read or repair (the store interface when it exists)."""
    try:
        from stillmotion.jobs.backends import open_store
    except ImportError:
        from stillmotion.jobs.store import JobStore

        return JobStore(path)
    return open_store(path)
