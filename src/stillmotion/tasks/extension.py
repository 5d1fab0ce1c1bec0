"""SEP-2663 tasks on top of stillmotion's jobs.

For a client that declares `io.modelcontextprotocol/tasks` on a 2026-07-28 request, a generation
tool answers with a task (`resultType: "task"`) instead of the job result; the task id is a new,
unguessable name for the job. `tasks/get`, `tasks/update` and `tasks/cancel` read and act on the
job in the durable store, so a task lives exactly as long as its job and survives a restart.

Status mapping (SEP-2663): queued/running/downloading -> working; succeeded or failed ->
completed, carrying exactly the result `check_job` returns (a failed generation is a completed
call whose result says so; the task status `failed` is for protocol errors only, which never
happen here); cancelled -> cancelled.

Server-side rules the SDK leaves to us: no task for a request that did not declare the extension
(the runner passes `resultType: task` through unchecked); `params.task` (the 2025 spelling) is
ignored; `tasks/*` from a non-declaring client gets -32021; on HTTP the `Mcp-Name` header must
equal `params.taskId` (the SDK checks it only for core methods).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from mcp import MCPError
from mcp.server import MCPServer
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver.server import require_client_extension
from mcp.shared.inbound import MCP_NAME_HEADER, decode_header_value
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    CallToolRequestParams,
    CallToolResult,
    RequestParams,
)
from mcp_types import methods as _methods
from mcp_types.jsonrpc import HEADER_MISMATCH
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ConfigDict, Field

from ..catalog import JOB_TOOLS
from ..jobs.store import JobRow
from ..tools import _sdk
from .store import TaskRow, TaskStore

log = logging.getLogger(__name__)

EXTENSION_ID = "io.modelcontextprotocol/tasks"
TASK_TOOLS = frozenset(JOB_TOOLS)  # every tool that makes a job (extend_video included)
TTL_MS = 7 * 24 * 3600 * 1000  # a week: a person may come back to a clip the next day
POLL_MS = {"local": 1000}  # local renders take seconds; provider jobs take minutes
DEFAULT_POLL_MS = 5000
JOB_META = "stillmotion/job_id"  # in each task's _meta: the job behind it, for check_job and the resources

TaskStatus = Literal["working", "completed", "cancelled"]
STATUS: dict[str, TaskStatus] = {
    "queued": "working",
    "running": "working",
    "downloading": "working",
    "succeeded": "completed",
    "failed": "completed",
    "cancelled": "cancelled",
}


class TaskIdParams(RequestParams):
    model_config = ConfigDict(extra="allow")
    task_id: str = Field(alias="taskId", min_length=1, max_length=200)


class UpdateTaskParams(TaskIdParams):
    input_responses: dict[str, Any] = Field(default_factory=dict, alias="inputResponses")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _status_message(row: JobRow) -> str:
    detail = getattr(row, "status_detail", None)  # the runner's own words, where the store has them
    if isinstance(detail, str) and detail:
        return detail
    if row.status in ("failed", "cancelled") and row.error:
        return f"{row.status}: {row.error.get('kind', 'error')}: {row.error.get('message', '')}".strip()
    if row.progress is not None and row.status in ("running", "downloading"):
        return f"{row.status} {row.progress:.0%}"
    return row.status


class TasksExtension(Extension):
    identifier = EXTENSION_ID

    def __init__(self) -> None:
        self._server: MCPServer[Any] | None = None

    def bind(self, server: MCPServer[Any]) -> None:
        """Give the extension the server whose `check_job` produces completed results, and gate
        `subscriptions/listen` task notifications (which this server does not push) on the declaration."""
        self._server = server
        server.middleware.append(self._listen_gate)

    async def _listen_gate(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """SEP-2663: a non-declaring client asking `subscriptions/listen` for `taskIds` gets -32021.
        A declaring one is acknowledged without them (the SDK echoes only what it honors): poll tasks/get."""
        if ctx.method == "subscriptions/listen" and ctx.request_id is not None:
            notifications = (ctx.params or {}).get("notifications")
            if isinstance(notifications, dict) and "taskIds" in notifications:
                require_client_extension(ctx, EXTENSION_ID)
        return await call_next(ctx)

    def methods(self) -> Sequence[MethodBinding]:
        versions = frozenset(MODERN_PROTOCOL_VERSIONS)
        return (
            MethodBinding("tasks/get", TaskIdParams, self._get, protocol_versions=versions),
            MethodBinding("tasks/update", UpdateTaskParams, self._update, protocol_versions=versions),
            MethodBinding("tasks/cancel", TaskIdParams, self._cancel, protocol_versions=versions),
        )

    # -- tools/call -----------------------------------------------------------------------

    async def intercept_tool_call(
        self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if params.name not in TASK_TOOLS or not self._declared(ctx):
            return await call_next(ctx)  # params.task (the 2025 opt-in) plays no part either way
        if isinstance(params.arguments, dict) and "wait_seconds" in params.arguments:
            params.arguments["wait_seconds"] = 0  # the task replaces waiting inside the call
        result = await call_next(ctx)
        if not isinstance(result, CallToolResult) or result.is_error or not result.structured_content:
            return result  # bad input and other immediate errors stay ordinary tool results
        job_id = result.structured_content.get("job_id")
        if not isinstance(job_id, str):
            return result
        svc = ctx.lifespan_context
        task = await svc.db.run(self._store(svc).create, job_id, TTL_MS)
        log.info("task created for job %s (user %s)", job_id, svc.asker.user)  # the task id is a bearer: never logged
        return {"resultType": "task", **self._task(task, await svc.get(job_id))}

    @staticmethod
    def _declared(ctx: ServerRequestContext[Any, Any]) -> bool:
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            return False
        caps = ctx.session.client_capabilities
        return bool(caps and caps.extensions and EXTENSION_ID in caps.extensions)

    # -- tasks/* --------------------------------------------------------------------------

    async def _get(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> dict[str, Any]:
        task, row = await self._resolve(ctx, params)
        out: dict[str, Any] = {"resultType": "complete", **self._task(task, row)}
        if out["status"] == "completed":
            out["result"] = await self._check_job(ctx, row.id)
        return out

    async def _update(self, ctx: ServerRequestContext[Any, Any], params: UpdateTaskParams) -> dict[str, Any]:
        await self._resolve(ctx, params)  # no job ever asks for input, so every response is ignored (SEP-2663 allows it)
        return {"resultType": "complete"}

    async def _cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> dict[str, Any]:
        _task, row = await self._resolve(ctx, params)
        if not row.terminal:
            await ctx.lifespan_context.cancel(row.id)
        return {"resultType": "complete"}

    async def _resolve(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> tuple[TaskRow, JobRow]:
        require_client_extension(ctx, EXTENSION_ID)
        self._check_name_header(ctx, params.task_id)
        svc = ctx.lifespan_context
        task = await svc.db.run(self._store(svc).get, params.task_id)
        if task is None:
            raise MCPError(code=INVALID_PARAMS, message="Failed to retrieve task: Task not found")
        if task.expired():  # the mapping goes now (the job stays): a later lookup finds no task
            await svc.db.run(self._store(svc).forget, task.task_id)
            raise MCPError(code=INVALID_PARAMS, message="Failed to retrieve task: Task has expired")
        row = await svc.find(task.job_id)
        if row is None:  # another user's task (or its job was deleted): exactly as an unknown task id
            raise MCPError(code=INVALID_PARAMS, message="Failed to retrieve task: Task not found")
        return task, row

    @staticmethod
    def _check_name_header(ctx: ServerRequestContext[Any, Any], task_id: str) -> None:
        headers = getattr(ctx.request, "headers", None)
        if headers is None:
            return  # stdio and in-memory: no routing headers
        if decode_header_value(headers.get(MCP_NAME_HEADER)) != task_id:
            raise MCPError(code=HEADER_MISMATCH, message=f"{MCP_NAME_HEADER} header does not match the request body's 'taskId' parameter")

    # -- shapes ---------------------------------------------------------------------------

    @staticmethod
    def _task(task: TaskRow, row: JobRow) -> dict[str, Any]:
        return {
            "taskId": task.task_id,
            "status": STATUS[row.status],
            "statusMessage": _status_message(row),
            "createdAt": _iso(task.created_at),
            "lastUpdatedAt": _iso(max(task.created_at, row.updated_at)),
            "ttlMs": task.ttl_ms,
            "pollIntervalMs": POLL_MS.get(row.route, DEFAULT_POLL_MS),
            "_meta": {JOB_META: row.id},
        }

    async def _check_job(self, ctx: ServerRequestContext[Any, Any], job_id: str) -> dict[str, Any]:
        """Exactly what `tools/call check_job` answers: the server's own tools/call handler (every
        extension's interceptor included) runs check_job, and the result is shaped as on the wire."""
        assert self._server is not None, "TasksExtension.bind(server) was not called"
        handler = _sdk.tools_call_handler(self._server)
        if handler is None:
            raise MCPError(code=INTERNAL_ERROR, message="tools/call is not served")
        result = await handler(ctx, CallToolRequestParams(name="check_job", arguments={"job_id": job_id}))
        dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True) if isinstance(result, BaseModel) else dict(result or {})
        return _methods.serialize_server_result("tools/call", ctx.protocol_version, dumped)

    @staticmethod
    def _store(svc: Any) -> TaskStore:
        return TaskStore(svc.store)
