"""Builds the MCPServer: tools, resources, and a lifespan holding the service.

Tool input schemas are generated from the catalog at start-up: each generation tool's `model`
enum lists exactly the models that can serve it (every Kling model when
STILLMOTION_STRICT_CAPABILITIES=0), and its description states the per-model rules.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import anyio
import httpx
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.server.subscriptions import ResourceUpdated
from mcp.types import (
    CallToolResult,
    EmptyResult,
    SubscribeRequestParams,
    ToolAnnotations,
    UnsubscribeRequestParams,
)
from pydantic import ConfigDict, Field, ValidationError

from . import __version__
from .catalog import MODELS, ModelSpec, catalog_table, model_ids_for_tool, models_for_tool, tool_model_rules
from .errors import StillmotionError
from .jobs.store import JobRow
from .requests import (
    CameraControl,
    DynamicMask,
    KlingOptions,
    LocalOptions,
    MaskInput,
    WanOptions,
    XaiOptions,
)
from .service import Service
from .settings import Settings
from .tools.cost import (
    GEN_EXCLUDED_FROM_FINGERPRINT,
    Asker,
    GenerationResult,
    confirm,
    cost_params,
    dry_run_result,
    fix_output_schema,
    register_spend_resource,
)
from .tools.results import JobList, JobResult, call_result, job_result
from .validation import ToolArgs

log = logging.getLogger(__name__)

INSTRUCTIONS = """\
stillmotion turns a still image into an MP4. Generation tools (animate_image, interpolate_frames,
camera_move, motion_brush) check the request against the model's limits, start a durable job and
return at once (or after wait_seconds). Then call check_job with wait_seconds up to 50 until the
status is succeeded; the result has the video's path, a resource link and a contact sheet.
The default model local/preview is free and offline; list_models shows every model's limits.
"""

GEN_ANNOTATIONS = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)
READ_ANNOTATIONS = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
CANCEL_ANNOTATIONS = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)

WaitSeconds = Annotated[
    float, Field(ge=0, le=50, description="Wait up to this many seconds for the job to finish (progress is reported).")
]
IMAGE_FORMS = (
    "A local path, file:// URI, http(s) URL, data: URI, raw base64, or stillmotion://jobs/<id>/last-frame.png "
    "of an earlier job (to chain clips)."
)

TOOL_TEXT = {
    "animate_image": (
        "Animate a still image: the image becomes the first frame and the prompt describes the motion. "
        "local/preview animates with a camera move steered by motion words in the prompt (zoom in, pan left, ...)."
    ),
    "interpolate_frames": "Make a clip that starts on start_image and ends on end_image (first/last-frame).",
    "camera_move": (
        "Move the camera over the still scene. camera = {type: simple, config: {one non-zero axis of horizontal, "
        "vertical, pan, tilt, roll, zoom in [-10, 10]}} or a preset type (down_back, forward_up, "
        "right_turn_forward, left_turn_forward) with no config. Signs: negative horizontal = left, negative "
        "vertical = down, negative pan = left, negative tilt = down, negative roll = counter-clockwise, negative "
        "zoom = narrower field of view (content grows). On local/preview +-10 means 15 deg pan/tilt, 30 deg roll, "
        "2x zoom, or a quarter frame of translation."
    ),
    "motion_brush": (
        "Move masked regions along trajectories while a static mask holds still. dynamic_masks: 1-6 of "
        "{mask, trajectory: [{x, y}, ...]} with points in input-image pixels, origin at the BOTTOM-LEFT corner "
        "(2-77 points for 5 s). Masks may be images or shapes {box: [x0, y0, x1, y1]} / {polygon: [[x, y], ...]}."
    ),
}


def _param(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _tool_durations(model: ModelSpec, tool: str) -> tuple[int, ...]:
    feature = model.features.get(tool)
    return feature.durations if feature is not None and feature.durations else model.durations


def _common_params(tool: str, strict: bool, default_model: str) -> list[inspect.Parameter]:
    ids = model_ids_for_tool(tool, strict=strict)
    models = models_for_tool(tool, strict=strict)
    default = default_model if default_model in ids else None
    durations = sorted({d for m in models for d in _tool_durations(m, tool)})
    prompt_max = max(m.prompt_max for m in models)
    return [
        _param(
            "model",
            Annotated[
                Literal[tuple(ids)] | None,
                Field(description=f"Model id (default {default_model}). Per-model rules:\n" + tool_model_rules(tool, strict=strict)),
            ],
            default,
        ),
        _param(
            "prompt",
            Annotated[
                str | None,
                Field(
                    max_length=prompt_max,
                    description="Describe the motion. Required on Kling (max 2500), Wan 2.6 (max 1500) and xAI (max 4096); optional on local/preview (max 2500).",
                ),
            ],
            None,
        ),
        _param(
            "negative_prompt",
            Annotated[str | None, Field(max_length=2500, description="What to avoid. Max 2500 chars on Kling, 500 on Wan; xAI has none.")],
            None,
        ),
        _param(
            "duration",
            Annotated[
                int | None,
                Field(ge=min(durations), le=max(durations), description="Seconds; the model's set is in the model rules. Default 5."),
            ],
            None,
        ),
        _param("wait_seconds", WaitSeconds, 0),
        _param(
            "idempotency_key",
            Annotated[
                str | None,
                Field(min_length=1, max_length=200, description="Same key + same arguments = the same job, never a second submission."),
            ],
            None,
        ),
        _param("kling", Annotated[KlingOptions | None, Field(description="KlingAI options.")], None),
        _param("wan", Annotated[WanOptions | None, Field(description="Alibaba Wan options.")], None),
        _param("xai", Annotated[XaiOptions | None, Field(description="xAI Grok Imagine options.")], None),
        _param("local", Annotated[LocalOptions | None, Field(description="local/preview options.")], None),
    ]


ImageArg = Annotated[str, Field(min_length=1, description=IMAGE_FORMS)]
TOOL_PARAMS: dict[str, list[inspect.Parameter]] = {
    "animate_image": [_param("image", Annotated[str, Field(min_length=1, description="The first frame. " + IMAGE_FORMS)])],
    "interpolate_frames": [
        _param("start_image", Annotated[str, Field(min_length=1, description="The first frame. " + IMAGE_FORMS)]),
        _param("end_image", Annotated[str, Field(min_length=1, description="The last frame. " + IMAGE_FORMS)]),
    ],
    "camera_move": [
        _param("image", ImageArg),
        _param("camera", CameraControl),
    ],
    "motion_brush": [
        _param("image", ImageArg),
        _param("dynamic_masks", Annotated[list[DynamicMask], Field(min_length=1, max_length=6)]),
        _param("static_mask", Annotated[MaskInput | None, Field(description="Region that must hold still. " + IMAGE_FORMS)], None),
    ],
}


def _to_args(tool: str, kw: dict[str, Any]) -> ToolArgs:
    return ToolArgs(
        tool=tool,
        model=kw.get("model"),
        prompt=kw.get("prompt"),
        negative_prompt=kw.get("negative_prompt"),
        duration=kw.get("duration"),
        image=kw.get("image") or kw.get("start_image"),
        end_image=kw.get("end_image"),
        camera=kw.get("camera"),
        dynamic_masks=kw.get("dynamic_masks"),
        static_mask=kw.get("static_mask"),
        kling=kw.get("kling"),
        wan=kw.get("wan"),
        xai=kw.get("xai"),
        local=kw.get("local"),
        image_argument="start_image" if tool == "interpolate_frames" else "image",
    )


def _raw(kw: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in kw.items():
        if k in ("wait_seconds", "idempotency_key", *GEN_EXCLUDED_FROM_FINGERPRINT):
            continue
        out[k] = v.model_dump(mode="json", exclude_none=True) if hasattr(v, "model_dump") else (
            [x.model_dump(mode="json", exclude_none=True) if hasattr(x, "model_dump") else x for x in v]
            if isinstance(v, list)
            else v
        )
    return out


def _service(ctx: Context[Service]) -> Service:
    return ctx.request_context.lifespan_context


async def _progress_reporter(ctx: Context[Service]) -> Callable[[JobRow], Any]:
    sent = {"p": -1.0}

    async def report(row: JobRow) -> None:
        p = row.progress if row.progress is not None else 0.0
        if row.terminal:
            p = 1.0
        if p <= sent["p"] and not row.terminal:
            return
        sent["p"] = max(p, sent["p"])
        await ctx.report_progress(sent["p"], 1.0, f"{row.status}" + (f" {p:.0%}" if row.progress is not None else ""))

    return report


def _tool_error(exc: StillmotionError) -> ToolError:
    return ToolError(f"[{exc.kind}] {exc.message}")


def _make_generation_tool(tool: str, settings: Settings) -> Callable[..., Any]:
    async def fn(**kw: Any) -> CallToolResult:
        ctx: Context[Service] = kw.pop("ctx")
        svc = _service(ctx)
        wait_seconds = float(kw.get("wait_seconds") or 0)
        try:
            if kw.get("dry_run"):
                return await dry_run_result(svc, _to_args(tool, kw))
            asker = Asker(
                ctx.protocol_version, ctx.client_capabilities, ctx.session, ctx.request_id,
                ctx.input_responses, ctx.request_state,
            )
            ask = await confirm(
                svc, _to_args(tool, kw), confirm_cost_usd=kw.get("confirm_cost_usd"),
                idempotency_key=kw.get("idempotency_key"), asker=asker,
            )
            if ask is not None:
                return ask  # type: ignore[return-value]  # 2026-07-28: the client asks the person, then retries
            row = await svc.submit(_to_args(tool, kw), raw_args=_raw(kw), idempotency_key=kw.get("idempotency_key"))
            if wait_seconds > 0:
                row = await svc.wait(row.id, wait_seconds, await _progress_reporter(ctx))
        except StillmotionError as exc:
            raise _tool_error(exc) from exc
        except ValidationError as exc:
            raise ToolError(f"[invalid_input] {exc}") from exc
        except Exception as exc:  # never a bare "Error executing tool": say what broke
            log.exception("%s failed unexpectedly", tool)
            raise ToolError(f"[provider_error] internal error in {tool}: {type(exc).__name__}: {exc}"[:2000]) from exc
        return call_result(row)

    params = [*TOOL_PARAMS[tool], *_common_params(tool, settings.strict_capabilities, settings.default_model)]
    params = cost_params(params)
    params.append(inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context))
    ret = Annotated[CallToolResult, GenerationResult]
    fn.__signature__ = inspect.Signature(params, return_annotation=ret)  # type: ignore[attr-defined]
    fn.__annotations__ = {p.name: p.annotation for p in params} | {"return": ret}
    fn.__name__ = tool
    return fn


def _forbid_extra_arguments(server: MCPServer[Any], name: str) -> None:
    """Unknown argument names are errors (a typo must not be dropped silently)."""
    tool = server._tool_manager.get_tool(name)
    assert tool is not None
    base = tool.fn_metadata.arg_model
    strict = type(base.__name__, (base,), {"model_config": ConfigDict(arbitrary_types_allowed=True, extra="forbid")})
    tool.fn_metadata.arg_model = strict
    tool.parameters["additionalProperties"] = False


def build_server(settings: Settings | None = None) -> MCPServer[Service]:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(server: MCPServer[Service]) -> AsyncIterator[Service]:
        async def on_change(job_id: str) -> None:
            uri = f"stillmotion://jobs/{job_id}"
            try:
                await server._subscriptions.publish(ResourceUpdated(uri=uri))
                for session in list(legacy_subscribers.get(uri, ())):
                    try:
                        await session.send_resource_updated(uri)
                    except Exception:
                        legacy_subscribers[uri].discard(session)
            except Exception:  # a notification must never break a job
                log.debug("resource notification failed", exc_info=True)

        # Keep-alive as many connections as may be open: httpcore closes every idle connection while
        # more than max_keepalive_connections exist, so a lower cap reconnects over and over under load.
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(follow_redirects=False, limits=limits) as client:
            svc = Service.create(settings, client, on_change=on_change)
            try:
                async with anyio.create_task_group() as tg:
                    await svc.start(tg)
                    try:
                        yield svc
                    finally:
                        svc.runner.stop()
                        tg.cancel_scope.cancel()
            finally:
                svc.close()  # only after every job task has stopped

    legacy_subscribers: dict[str, set[Any]] = {}

    mcp: MCPServer[Service] = MCPServer(
        "stillmotion", title="stillmotion", version=__version__, instructions=INSTRUCTIONS, lifespan=lifespan,
        website_url="https://github.com/stillmotion/stillmotion",
    )

    _serve_legacy_subscriptions(mcp, legacy_subscribers)

    for tool in ("animate_image", "interpolate_frames", "camera_move", "motion_brush"):
        mcp.add_tool(
            _make_generation_tool(tool, settings),
            name=tool,
            title=tool.replace("_", " ").capitalize(),
            description=TOOL_TEXT[tool] + " Returns a job at once; follow it with check_job.",
            annotations=GEN_ANNOTATIONS,
        )
        _forbid_extra_arguments(mcp, tool)
        fix_output_schema(mcp._tool_manager.get_tool(tool).output_schema)  # type: ignore[union-attr]

    @mcp.tool(annotations=READ_ANNOTATIONS)
    async def check_job(
        job_id: Annotated[str, Field(description="The job id a generation tool returned.")],
        ctx: Context[Service],
        wait_seconds: WaitSeconds = 0,
    ) -> Annotated[CallToolResult, JobResult]:
        """Status of a job. Waits up to wait_seconds (0-50) for it to finish, reporting progress; on success returns
        the video path, a resource link and a contact sheet."""
        svc = _service(ctx)
        try:
            row = await svc.wait(job_id, wait_seconds, await _progress_reporter(ctx))
        except StillmotionError as exc:
            raise _tool_error(exc) from exc
        return call_result(row)

    @mcp.tool(annotations=READ_ANNOTATIONS)
    async def list_jobs(
        ctx: Context[Service],
        status: Literal["queued", "running", "downloading", "succeeded", "failed", "cancelled"] | None = None,
        limit: Annotated[int, Field(ge=1, le=200)] = 20,
    ) -> JobList:
        """Recent jobs, newest first, optionally filtered by status."""
        return JobList(jobs=[job_result(r) for r in _service(ctx).list(status, limit)])

    @mcp.tool(annotations=CANCEL_ANNOTATIONS)
    async def cancel_job(
        job_id: Annotated[str, Field(description="The job to cancel.")], ctx: Context[Service]
    ) -> Annotated[CallToolResult, JobResult]:
        """Stop a job. For provider jobs this stops our polling; the provider offers no cancel for running tasks,
        so it may still finish and bill the task."""
        svc = _service(ctx)
        try:
            row, changed = svc.cancel(job_id)
        except StillmotionError as exc:
            raise _tool_error(exc) from exc
        result = call_result(row)
        if not changed:
            assert result.content and result.content[0].type == "text"
            result.content[0].text = f"Job {row.id} had already ended ({row.status}); nothing to cancel.\n" + result.content[0].text
        return result

    @mcp.tool(annotations=READ_ANNOTATIONS)
    async def list_models(
        tool: Literal["animate_image", "interpolate_frames", "camera_move", "motion_brush"] | None = None,
    ) -> dict[str, Any]:
        """Every model with its capabilities, limits, routes and which tools accept it."""
        return {"models": _public_catalog(settings, tool)}

    for tool in ("check_job", "list_jobs", "cancel_job", "list_models"):
        _forbid_extra_arguments(mcp, tool)

    register_spend_resource(mcp, settings)

    @mcp.resource("stillmotion://models", name="models", mime_type="application/json", description="The model catalog.")
    def models_resource() -> str:
        return json.dumps({"models": _public_catalog(settings, None)}, indent=1)

    @mcp.resource("stillmotion://jobs/{job_id}", name="job", mime_type="application/json", description="A job as JSON.")
    def job_resource(job_id: str, ctx: Context[Service]) -> str:
        try:
            row = _service(ctx).get(job_id)
        except StillmotionError as exc:
            raise ResourceError(exc.message) from exc
        return job_result(row).model_dump_json(indent=1)

    def _file(job_id: str, name: str, ctx: Context[Service]) -> bytes:
        path = _service(ctx).resource_path(job_id, name)
        if path is None:
            raise ResourceError(f"stillmotion://jobs/{job_id}/{name} does not exist (unknown job, or not succeeded)")
        return path.read_bytes()

    @mcp.resource("stillmotion://jobs/{job_id}/video.mp4", name="video", mime_type="video/mp4", description="A job's MP4.")
    def video_resource(job_id: str, ctx: Context[Service]) -> bytes:
        return _file(job_id, "video.mp4", ctx)

    @mcp.resource("stillmotion://jobs/{job_id}/poster.png", name="poster", mime_type="image/png", description="Contact sheet.")
    def poster_resource(job_id: str, ctx: Context[Service]) -> bytes:
        return _file(job_id, "poster.png", ctx)

    @mcp.resource(
        "stillmotion://jobs/{job_id}/last-frame.png", name="last-frame", mime_type="image/png", description="Final frame."
    )
    def last_frame_resource(job_id: str, ctx: Context[Service]) -> bytes:
        return _file(job_id, "last-frame.png", ctx)

    return mcp


def _serve_legacy_subscriptions(mcp: MCPServer[Service], subscribers: dict[str, set[Any]]) -> None:
    """2025-era `resources/subscribe`: MCPServer serves only the 2026 `subscriptions/listen`, so the
    legacy handlers go on the low-level server (the SDK's documented workaround). Each subscribed
    session gets `notifications/resources/updated` when that job changes."""

    async def subscribe(ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
        subscribers.setdefault(str(params.uri), set()).add(ctx.session)
        return EmptyResult()

    async def unsubscribe(ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
        subscribers.get(str(params.uri), set()).discard(ctx.session)
        return EmptyResult()

    low = mcp._lowlevel_server
    low.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    low.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)


def _public_catalog(settings: Settings, tool: str | None) -> list[dict[str, Any]]:
    from .validation import choose_route

    out = []
    for m in MODELS.values():
        tools = [t for t in ("animate_image", "interpolate_frames", "camera_move", "motion_brush")
                 if m.id in model_ids_for_tool(t, strict=settings.strict_capabilities)]
        if tool is not None and tool not in tools:
            continue
        routes = ["local"] if m.is_local else ["direct"] + (["gateway"] if m.gateway_id else [])
        entry = m.to_public(routes=routes, tools=tools)
        try:
            entry["route_now"] = choose_route(m, settings)
        except StillmotionError as exc:
            entry["route_now"] = None
            entry["unavailable_because"] = exc.message
        out.append(entry)
    return out


__all__ = ["build_server", "catalog_table"]
