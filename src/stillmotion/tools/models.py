"""list_models (a compact table, or one model's full limits) and the catalog the resource serves."""

from __future__ import annotations

import json
from typing import Any, Literal

from mcp.types import CallToolResult, TextContent
from pydantic import Field

from ..catalog import MODELS, ModelSpec, resolve_model_id
from ..errors import InvalidInput
from ..plan.routes import SHORT_TOOL, enabled_by, route_now, tools_of
from ..plan.validation import did_you_mean
from ..settings import Settings
from .base import READ_ANNOTATIONS, Args, Build, Call, ToolSpec


class ListModelsArgs(Args):
    tool: Literal["animate_image", "interpolate_frames", "camera_move", "motion_brush"] | None = Field(
        None, description="Only models serving this tool."
    )
    model: str | None = Field(None, description="One model's full limits.")


def public_catalog(settings: Settings, tool: str | None = None) -> list[dict[str, Any]]:
    """Every model with every limit: the stillmotion://models resource and list_models(model=...)."""
    out = []
    for m in MODELS.values():
        tools = tools_of(m, settings)
        if tool is not None and tool not in tools:
            continue
        routes = ["local"] if m.is_local else (["direct"] if m.direct_name else []) + (["gateway"] if m.gateway_id else [])
        entry = m.to_public(routes=routes, tools=tools)
        route, why = route_now(m, settings)
        entry["route_now"] = route
        entry["enabled_by"] = enabled_by(m)
        if why is not None:
            entry["unavailable_because"] = why
        out.append(entry)
    return out


def _durations(m: ModelSpec) -> str:
    return m.describe_durations()


def compact_rows(settings: Settings, tool: str | None) -> list[dict[str, Any]]:
    rows = []
    for m in MODELS.values():
        tools = tools_of(m, settings)
        if tool is not None and tool not in tools:
            continue
        route, _ = route_now(m, settings)
        row: dict[str, Any] = {
            "id": m.id,
            "tools": [SHORT_TOOL[t] for t in tools],
            "durations": _durations(m),
            "modes": "|".join(m.modes) or None,
            "prompt_max": m.prompt_max,
            "route_now": route,
        }
        if route is None:
            row["needs"] = enabled_by(m)
        rows.append(row)
    return rows


def table_text(rows: list[dict[str, Any]]) -> str:
    lines = [
        "model | tools | durations | modes | prompt max | route now",
    ]
    for r in rows:
        route = r["route_now"] or f"needs {r['needs']}"
        lines.append(
            f"{r['id']} | {','.join(r['tools'])} | {r['durations']} | {r['modes'] or '-'} | {r['prompt_max']} | {route}"
        )
    lines.append(
        "Per-tool modes/durations are in each tool's model description; list_models with model=<id> gives one "
        "model's full limits; the stillmotion://models resource has them all."
    )
    return "\n".join(lines)


async def list_models(args: ListModelsArgs, call: Call) -> CallToolResult:
    settings = call.settings
    if args.model is not None:
        mid = resolve_model_id(args.model)
        if mid is None:
            near = did_you_mean(args.model, list(MODELS), cutoff=0.6)
            raise InvalidInput(
                "model", f"unknown model {args.model!r}" + (f"; did you mean '{near}'?" if near else "."), list(MODELS)
            )
        entry = next(e for e in public_catalog(settings) if e["id"] == mid)
        return CallToolResult(
            content=[TextContent(type="text", text=json.dumps(entry, indent=1))], structured_content={"models": [entry]}
        )
    rows = compact_rows(settings, args.tool)
    return CallToolResult(content=[TextContent(type="text", text=table_text(rows))], structured_content={"models": rows})


def specs(build: Build) -> list[ToolSpec[Any]]:
    return [
        ToolSpec(
            name="list_models",
            title="List models",
            description=(
                "The models: tools, durations, modes, whether a key is set. model=<id>: its full limits."
            ),
            args=ListModelsArgs,
            handler=list_models,
            annotations=READ_ANNOTATIONS,
        )
    ]
