"""How a stillmotion tool is declared and run.

A tool is a `ToolSpec`: a name, a pydantic argument model, a handler `(args, call) -> result`
and its texts. The server lists each spec with its converter-safe schema (tools/schema.py),
and `ToolCalls` (an SDK extension wrapping `tools/call`) runs every call: it validates the
arguments ONCE into the spec's model, answers any mistake in the one error form
(tools/argerrors.py), then calls the handler. Errors never carry the SDK's "Error executing
tool" prefix or pydantic's dumps.

To add a tool: write `async def handler(args: MyArgs, call: Call) -> CallToolResult`, declare a
`ToolSpec` in a module's `specs(build)` function and list the module in server.TOOL_MODULES.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from mcp.server import MCPServer
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension
from mcp.types import CallToolRequestParams, CallToolResult, InputRequiredResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ValidationError

from ..errors import InvalidInput, StillmotionError, Unavailable
from ..jobs.async_store import unavailable
from ..jobs.store import JobRow
from ..plan.arguments import Args as Args  # every tool module's argument base (re-exported)
from ..plan.validation import did_you_mean
from ..settings import Settings
from .argerrors import argument_error, fit
from .schema import JSON, published_schema, raw_schema

if TYPE_CHECKING:
    from ..service import Service

log = logging.getLogger(__name__)

A = TypeVar("A", bound=BaseModel)

GEN_ANNOTATIONS = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)
READ_ANNOTATIONS = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
CANCEL_ANNOTATIONS = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)


@dataclass(frozen=True)
class Build:
    """What tool modules get to declare their tools."""

    settings: Settings
    shell: bool = False
    """The caller is a person at a shell (`stillmotion run`): next steps name commands."""


ProgressReport = Callable[[float, float | None, str | None], Awaitable[None]]


@dataclass
class Call:
    """One tool call, as a handler sees it.

    `request` (the SDK's per-request context: session, protocol_version, request_id, meta) and
    `params` (the raw tools/call params: input_responses, request_state, _meta) are there for
    handlers that talk back to the client (elicitation, input-required rounds)."""

    service: Service
    settings: Settings
    shell: bool
    report: ProgressReport
    request: ServerRequestContext[Any, Any] | None = None
    params: CallToolRequestParams | None = None

    def progress(self) -> Callable[[JobRow], Awaitable[None]]:
        """A job-update callback that reports monotonic progress with the job's status (and why it waits)."""
        sent = -1.0

        async def report(row: JobRow) -> None:
            nonlocal sent
            p = 1.0 if row.terminal else (row.progress if row.progress is not None else 0.0)
            detail = row.status_detail
            if p <= sent and not row.terminal:
                return  # progress must increase (MCP); the detail rides on the next notification
            sent = max(p, sent)
            message = row.status + (f" {p:.0%}" if row.progress is not None else "")
            if detail and not row.terminal:
                message += f": {detail}"
            await self.report(sent, 1.0, message)

        return report


@dataclass(frozen=True)
class ToolSpec(Generic[A]):
    name: str
    title: str
    description: str
    args: type[A]
    handler: Callable[[A, Call], Awaitable[CallToolResult | InputRequiredResult]]
    annotations: ToolAnnotations
    output: type[BaseModel] | None = None
    specialise: Callable[[JSON], JSON] | None = None
    """Catalog-dependent edits of the published input schema (model enum, bounds, descriptions)."""
    meta: dict[str, Any] | None = None
    error_schema: JSON = field(init=False, repr=False, compare=False)
    input_schema: JSON = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        schema = published_schema(self.args)
        if self.specialise is not None:
            schema = self.specialise(schema)
        object.__setattr__(self, "input_schema", schema)
        object.__setattr__(self, "error_schema", raw_schema(self.args))

    def validate(self, arguments: dict[str, Any]) -> A:
        try:
            return self.args.model_validate(arguments)
        except ValidationError as exc:
            raise argument_error(exc, self.error_schema) from None


def error_result(exc: StillmotionError) -> CallToolResult:
    """Every tool error reads the same: `[kind] message`."""
    if isinstance(exc, InvalidInput):
        exc = fit(exc)
    return CallToolResult(content=[TextContent(type="text", text=f"[{exc.kind}] {exc.message}")], is_error=True)


def model_result(value: BaseModel) -> CallToolResult:
    """A structured result: the JSON as text (for clients without structured content) and as data."""
    return CallToolResult(
        content=[TextContent(type="text", text=value.model_dump_json())], structured_content=value.model_dump(mode="json")
    )


class ToolCalls(Extension):
    """Runs stillmotion's tools: arguments validated once, every mistake in one form."""

    identifier = "io.github.stillmotion/tool-calls"

    def __init__(self, specs: Sequence[ToolSpec[Any]], settings: Settings, *, shell: bool = False) -> None:
        self.specs = {s.name: s for s in specs}
        self.app_settings = settings  # not `settings`: Extension.settings() is the SDK's
        self.shell = shell
        self.server: MCPServer[Any] | None = None

    async def intercept_tool_call(
        self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        spec = self.specs.get(params.name)
        if spec is None:
            known = [t.name for t in await self.server.list_tools()] if self.server is not None else list(self.specs)
            if params.name in known:
                return await call_next(ctx)  # another extension's or module's plain SDK tool
            return error_result(unknown_tool(params.name, known))
        try:
            args = spec.validate(params.arguments or {})
            call = Call(ctx.lifespan_context, self.app_settings, self.shell, ctx.session.report_progress, ctx, params)
            return await spec.handler(args, call)
        except StillmotionError as exc:
            return error_result(exc)
        except Exception as exc:  # never a bare "Error executing tool": say what broke
            fault = unavailable(exc)
            if fault is not None:  # the store or the disk: a clear error to retry, never "internal"
                log.warning("%s: %s", params.name, fault.message)
                return error_result(Unavailable(fault.message))
            log.exception("%s failed unexpectedly", params.name)
            message = f"internal error in {params.name}: {type(exc).__name__}: {exc}"[:2000]
            return CallToolResult(content=[TextContent(type="text", text=f"[provider_error] {message}")], is_error=True)


def unknown_tool(name: str, known: Sequence[str]) -> InvalidInput:
    near = did_you_mean(name, known, cutoff=0.6)
    rule = f"unknown tool {name!r}" + (f"; did you mean '{near}'?" if near else ".")
    return InvalidInput("name", rule, list(known))
