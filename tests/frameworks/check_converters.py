"""Converter checks, run INSIDE the framework venv (tests/frameworks/setup.sh) by tests/test_frameworks.py.

They read what `python -m tests.frameworks.dump DIR` wrote with the project's code (the tool list
and a finished job's tool result with STILLMOTION_RESOURCE_LINKS=0; FRAMEWORKS_DUMP names DIR)
and hand them to the converters users run:

- langchain-google-genai: every tool at once, as langchain-mcp-adapters builds them;
- openai-agents: every MCP tool converted in strict mode stays strict;
- pydantic-ai: the OpenAI (strict) and Google JSON-schema transformers accept every tool with its
  argument names, required lists, types and enums unchanged;
- ChatOpenAI (chat completions and responses): a finished job's result, as langchain-mcp-adapters
  turns it into a ToolMessage, becomes a request payload (no network: loopback base_url, payload
  only).

Each check also runs a control that the converter rejects (the shape the issue reported), so a
check that cannot fail would show.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import mcp.types as T
import pytest

DUMP = Path(os.environ.get("FRAMEWORKS_DUMP", "tests/frameworks/out"))
NULL = {"type": "null"}


def tools() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((DUMP / "tools.json").read_text())
    return data


def finished_result() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DUMP / "finished_result.json").read_text())
    return data


class FakeSession:
    """What langchain-mcp-adapters calls: answers every call with one recorded result."""

    def __init__(self, result: dict[str, Any]) -> None:
        self.result = T.CallToolResult.model_validate(result)

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None, *args: Any, **kwargs: Any) -> T.CallToolResult:
        return self.result


def lc_tools(schemas: list[dict[str, Any]], session: Any = None) -> list[Any]:
    from langchain_mcp_adapters.tools import convert_mcp_tool_to_langchain_tool

    connection = None if session is not None else {"transport": "stdio", "command": "false", "args": []}
    return [
        convert_mcp_tool_to_langchain_tool(session, T.Tool.model_validate(t), connection=connection)  # type: ignore[arg-type]
        for t in schemas
    ]


NESTED_UNION_TOOL = {
    "name": "old_motion_brush",
    "inputSchema": {
        "type": "object",
        "properties": {"static_mask": {"anyOf": [{"anyOf": [{"type": "string"}, {"type": "object", "properties": {"box": {"type": "array", "items": {"type": "number"}}}}]}, NULL]}},
    },
}


# -- langchain-google-genai --------------------------------------------------------------


def _shape(schema: dict[str, Any]) -> dict[str, Any]:
    """Argument names, required names and JSON types at the top level (nullable unions unwrapped)."""
    out = {}
    for name, prop in schema.get("properties", {}).items():
        members = [m for m in prop.get("anyOf", [prop]) if m != NULL]
        out[name] = sorted({str(m.get("type")) for m in members})
    return {"properties": out, "required": sorted(schema.get("required", []))}


def test_langchain_google_genai_converts_every_tool_at_once() -> None:
    from langchain_google_genai._function_utils import convert_to_genai_function_declarations

    ours = tools()
    declared = convert_to_genai_function_declarations(lc_tools(ours))
    functions = [f for tool in declared for f in (tool.function_declarations or [])]
    assert [f.name for f in functions] == [t["name"] for t in ours]
    gemini_type = {"string": "STRING", "integer": "INTEGER", "number": "NUMBER", "boolean": "BOOLEAN", "object": "OBJECT", "array": "ARRAY"}
    for f, t in zip(functions, ours, strict=True):
        params = f.parameters
        assert params is not None and params.properties is not None
        shape = _shape(t["inputSchema"])
        assert set(params.properties) == set(shape["properties"]), t["name"]
        assert sorted(params.required or []) == shape["required"], t["name"]
        for name, types in shape["properties"].items():
            if len(types) == 1:  # a single type keeps its type
                got = params.properties[name]
                kinds = {getattr(got.type, "name", None)} | {getattr(m.type, "name", None) for m in (got.any_of or [])}
                assert gemini_type[types[0]] in kinds, (t["name"], name, got)


def test_control_nested_union_breaks_langchain_google_genai() -> None:
    from langchain_google_genai._function_utils import convert_to_genai_function_declarations

    with pytest.raises(Exception):  # noqa: B017 - whatever the converter raises (IndexError today)
        convert_to_genai_function_declarations(lc_tools([NESTED_UNION_TOOL]))


# -- openai-agents --------------------------------------------------------------------------


def _agents_function_tools(schemas: list[dict[str, Any]]) -> list[Any]:
    from agents.mcp import MCPServerStdio, MCPUtil

    server = MCPServerStdio(params={"command": "false", "args": []})
    return [MCPUtil.to_function_tool(T.Tool.model_validate(t), server, convert_schemas_to_strict=True) for t in schemas]


def test_openai_agents_strict_mode_keeps_every_tool_strict() -> None:
    ours = tools()
    converted = _agents_function_tools(ours)
    assert [c.name for c in converted] == [t["name"] for t in ours]
    for c in converted:
        assert c.strict_json_schema is True, c.name
        schema = c.params_json_schema
        assert set(schema["required"]) == set(schema["properties"]), c.name


def test_control_bare_ref_falls_back_to_non_strict() -> None:
    bare_ref = {
        "name": "old_tool",
        "inputSchema": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"camera": {"$ref": "#/$defs/Camera"}},
            "$defs": {"Camera": {"type": "object", "properties": {"type": {"type": "string"}}, "additionalProperties": True}},
        },
    }
    (converted,) = _agents_function_tools([bare_ref])
    assert converted.strict_json_schema is False


# -- pydantic-ai ----------------------------------------------------------------------------


def _meaning(schema: Any) -> Any:
    """What a schema accepts, coarsely: property names, required names, types, enums (recursively)."""
    if isinstance(schema, dict):
        keep = {}
        for key in ("type", "enum", "properties", "items", "anyOf", "required"):
            if key in schema:
                value = schema[key]
                if key == "properties":
                    keep[key] = {k: _meaning(v) for k, v in value.items()}
                elif key == "anyOf":
                    keep[key] = sorted(json.dumps(_meaning(m), sort_keys=True) for m in value)
                elif key == "required":
                    keep[key] = sorted(value)
                else:
                    keep[key] = _meaning(value)
        return keep
    if isinstance(schema, list):
        return [_meaning(v) for v in schema]
    return schema


def test_pydantic_ai_openai_strict_transformer_accepts_every_tool() -> None:
    from pydantic_ai.profiles.openai import OpenAIJsonSchemaTransformer

    for t in tools():
        transformer = OpenAIJsonSchemaTransformer(copy.deepcopy(t["inputSchema"]), strict=True)
        out = transformer.walk()
        assert transformer.is_strict_compatible, t["name"]
        ours = _meaning(t["inputSchema"])
        theirs = _meaning(out)
        # strict mode lists every property as required (optional ones stay nullable): compare the rest
        assert _drop_required(theirs) == _drop_required(ours), t["name"]


def _drop_required(meaning: Any) -> Any:
    if isinstance(meaning, dict):
        return {k: _drop_required(v) for k, v in meaning.items() if k != "required"}
    if isinstance(meaning, list):
        return [_drop_required(v) for v in meaning]
    if isinstance(meaning, str) and meaning.startswith("{"):
        return json.dumps(_drop_required(json.loads(meaning)), sort_keys=True)
    return meaning


def test_pydantic_ai_google_transformer_keeps_every_tool_unchanged_in_meaning() -> None:
    from pydantic_ai.profiles.google import GoogleJsonSchemaTransformer

    for t in tools():
        out = GoogleJsonSchemaTransformer(copy.deepcopy(t["inputSchema"])).walk()
        assert _meaning(out) == _meaning(t["inputSchema"]), t["name"]


# -- a finished job's result through ChatOpenAI ----------------------------------------------


async def _tool_message(result: dict[str, Any]) -> Any:
    (tool,) = lc_tools([t for t in tools() if t["name"] == "check_job"], session=FakeSession(result))
    job_id = result["structuredContent"]["job_id"]
    return await tool.ainvoke({"type": "tool_call", "id": "call_1", "name": "check_job", "args": {"job_id": job_id}})


def _payloads(tool_message: Any) -> list[dict[str, Any]]:
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_openai import ChatOpenAI

    call = {"id": "call_1", "name": "check_job", "args": {"job_id": "x"}, "type": "tool_call"}
    messages = [HumanMessage("animate my photo"), AIMessage("", tool_calls=[call]), tool_message]
    out = []
    for responses in (False, True):
        llm = ChatOpenAI(model="gpt-4o-mini", api_key="sk-test", base_url="http://127.0.0.1:9/v1", use_responses_api=responses)  # type: ignore[arg-type]
        out.append(llm._get_request_payload(messages))
    return out


@pytest.mark.anyio
async def test_chat_openai_takes_a_finished_job_without_resource_links() -> None:
    result = finished_result()
    assert result["structuredContent"]["status"] == "succeeded"
    assert not [b for b in result["content"] if b["type"] == "resource_link"]
    message = await _tool_message(result)
    chat, responses = _payloads(message)
    path = result["structuredContent"]["video"]["path"]
    assert path in json.dumps(chat["messages"][-1]) and path in json.dumps(responses["input"])


@pytest.mark.anyio
async def test_control_a_resource_link_breaks_chat_openai() -> None:
    result = finished_result()
    video = result["structuredContent"]["video"]
    result["content"].insert(1, {"type": "resource_link", "name": "v.mp4", "uri": video["uri"], "mimeType": "video/mp4"})
    message = await _tool_message(result)
    with pytest.raises(ValueError, match=r"file"):
        _payloads(message)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
