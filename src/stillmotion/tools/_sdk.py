"""Every use of the MCP SDK's internals, in one place.

stillmotion publishes its own input schemas and validates tool arguments itself (one error
form for every mistake), which the SDK's public API does not offer directly. What it needs
beyond the public surface is here, and test_sdk_fence.py fails loudly when an SDK release
changes any of it:

- `Tool` (mcp.server.mcpserver.tools.base) built with our own `parameters` and output schema,
  and `func_metadata` for its placeholder function;
- `MCPServer._lowlevel_server.add_request_handler` for the 2025-era `resources/subscribe`
  (the SDK's documented workaround; MCPServer serves only `subscriptions/listen`);
- `MCPServer._lowlevel_server.get_request_handler("tools/call")`: the composed tools/call chain,
  which the tasks extension runs `check_job` through (so a completed task carries exactly what
  `check_job` answers);
- `MCPServer._tool_manager.get_tool` to stamp the player app's `_meta.ui` on registered tools.

Public API used elsewhere: `Extension.intercept_tool_call` (tools/base.py) and
`ServerRequestContext.lifespan_context` / `.session.report_progress`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cached_property
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools.base import Tool
from mcp.server.mcpserver.utilities.func_metadata import func_metadata
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

SDK_PRIVATE_NAMES = ("_lowlevel_server", "_tool_manager")
"""Private MCPServer attributes stillmotion touches (test_sdk_fence checks they still exist)."""


class DeclaredTool(Tool):
    """An SDK tool whose input and output schemas are ours, not derived from a signature."""

    declared_output_schema: dict[str, Any] | None = Field(default=None, exclude=True)

    @cached_property
    def output_schema(self) -> dict[str, Any] | None:
        return self.declared_output_schema


async def _runs_through_the_interceptor() -> None:
    """Placeholder body: stillmotion tools are run by tools/base.py's interceptor, which
    validates the arguments once and never calls this. Only `MCPServer.call_tool()` (the
    Python API, which skips extensions) gets here."""
    raise ToolError("stillmotion tools run through tools/call (MCPServer.call_tool skips argument validation)")


def declared_tool(
    *,
    name: str,
    title: str,
    description: str,
    input_schema: dict[str, Any],
    output_schema: dict[str, Any] | None,
    annotations: ToolAnnotations,
    meta: dict[str, Any] | None = None,
) -> Tool:
    return DeclaredTool(
        fn=_runs_through_the_interceptor,
        name=name,
        title=title,
        description=description,
        parameters=input_schema,
        fn_metadata=func_metadata(_runs_through_the_interceptor),
        is_async=True,
        context_kwarg=None,
        annotations=annotations,
        meta=meta,
        declared_output_schema=output_schema,
    )


def add_legacy_request_handler(
    server: MCPServer[Any], method: str, params_type: type[BaseModel], handler: Callable[[Any, Any], Awaitable[Any]]
) -> None:
    """A request handler MCPServer does not serve (the 2025-era resources/subscribe)."""
    server._lowlevel_server.add_request_handler(method, params_type, handler)


def tools_call_handler(server: MCPServer[Any]) -> Callable[[Any, Any], Awaitable[Any]] | None:
    """The server's tools/call handler with every extension's interceptor around it."""
    entry = server._lowlevel_server.get_request_handler("tools/call")
    return entry.handler if entry is not None else None


def registered_tool(server: MCPServer[Any], name: str) -> Tool | None:
    """A registered tool, to amend its `_meta` after registration."""
    return server._tool_manager.get_tool(name)
