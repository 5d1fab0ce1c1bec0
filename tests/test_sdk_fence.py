"""The MCP SDK internals stillmotion relies on are all in tools/_sdk.py, and still there.

When an SDK release renames or removes one of them, these tests fail with the name, before any
client notices a missing tool schema or a dropped `resources/subscribe`.
"""

from __future__ import annotations

import inspect
import re
from functools import cached_property
from pathlib import Path

import pytest
from mcp.server import MCPServer
from mcp.server.context import ServerRequestContext
from mcp.server.extension import Extension
from mcp.server.mcpserver.tools.base import Tool
from mcp.server.session import ServerSession

import stillmotion
from stillmotion.tools import _sdk
from tests.conftest import SettingsFactory, connect

pytestmark = pytest.mark.anyio
SRC = Path(stillmotion.__file__).parent
PRIVATE = re.compile(r"\._(lowlevel_server|tool_manager|resource_manager|prompt_manager|subscriptions|extensions|mcp_server|request_context|input_params)\b")


def test_private_sdk_names_are_used_only_in_the_fence() -> None:
    offenders = [
        f"{p.relative_to(SRC)}:{n}"
        for p in SRC.rglob("*.py")
        if p.name != "_sdk.py"
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if PRIVATE.search(line)
    ]
    assert offenders == []


def test_the_sdk_still_has_what_the_fence_uses() -> None:
    server = MCPServer("probe")
    for name in _sdk.SDK_PRIVATE_NAMES:
        assert hasattr(server, name), f"MCPServer.{name} is gone: update tools/_sdk.py"
    assert callable(server._lowlevel_server.add_request_handler)
    for field in ("fn", "name", "title", "description", "parameters", "fn_metadata", "is_async", "context_kwarg", "annotations", "meta"):
        assert field in Tool.model_fields, f"Tool.{field} is gone: update tools/_sdk.py"
    assert isinstance(inspect.getattr_static(Tool, "output_schema"), cached_property | property)
    assert "tools" in inspect.signature(MCPServer).parameters and "extensions" in inspect.signature(MCPServer).parameters
    assert "intercept_tool_call" in Extension.__dict__
    assert {"session", "lifespan_context"} <= set(ServerRequestContext.__annotations__)
    assert "report_progress" in ServerSession.__dict__


async def test_declared_schemas_reach_the_wire(make_settings: SettingsFactory) -> None:
    async with connect(make_settings()) as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
    assert tools["check_job"].output_schema is not None and "job_id" in tools["check_job"].output_schema["properties"]
    assert tools["camera_move"].input_schema["required"] == ["image", "camera"]


async def test_python_call_tool_says_why_it_cannot_run(make_settings: SettingsFactory) -> None:
    from mcp.server.mcpserver.exceptions import ToolError

    from stillmotion.server import build_server

    server = build_server(make_settings())
    with pytest.raises(ToolError, match="run through tools/call"):
        await server.call_tool("list_models", {})
