"""Builds the MCPServer: the tools of tools/*, the resources, and a lifespan holding the service.

Tools are declared in tool modules (`specs(build) -> [ToolSpec]`, see tools/base.py) and run by
the `ToolCalls` extension, which validates arguments once and answers every mistake in one form.
Adding a tool module: append it to TOOL_MODULES.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
from mcp.server import MCPServer
from mcp.server.subscriptions import ResourceUpdated

from . import __version__
from .apps import apps_extension, file_origins, link_player
from .catalog import catalog_table
from .http.team import replicated
from .http.users import asker_middleware
from .plan.arguments import WAIT_MAX_S
from .providers._http import provider_client
from .service import Service
from .settings import Settings
from .tasks import TasksExtension
from .tools import _sdk, extend, generation, jobs, join, models, resources
from .tools.base import Build, ToolCalls, ToolSpec
from .tools.cost import register_spend_resource

log = logging.getLogger(__name__)

INSTRUCTIONS = f"""\
stillmotion turns a still image into an MP4. Generation tools (animate_image, interpolate_frames,
camera_move, motion_brush) check the request against the model's limits, start a durable job and
return at once (or after wait_seconds). Then call check_job with wait_seconds up to {WAIT_MAX_S} until the
status is succeeded; the result has the video's path, a resource link and a contact sheet.
The default model local/preview is free and offline; list_models shows the models and their limits.
Every generation tool also takes wait_seconds (wait that long for the result), idempotency_key (the same
key with the same arguments returns the same job: a retried call never pays twice) and dry_run (every
check and the price, without a job or any request). confirm_cost_usd is the price in USD the person
approved, for a job above the confirmation threshold when the client cannot ask them itself.
"""

TOOL_MODULES: Sequence[Any] = (generation, join, extend, jobs, models)
"""Modules with `specs(build: Build) -> list[ToolSpec]`, listed in this order."""


def tool_specs(settings: Settings, *, shell: bool = False) -> list[ToolSpec[Any]]:
    build = Build(settings=settings, shell=shell)
    return [spec for module in TOOL_MODULES for spec in module.specs(build)]


def build_server(settings: Settings | None = None, *, shell: bool = False) -> MCPServer[Service]:
    """The server. `shell=True` (stillmotion run) words next steps as shell commands."""
    settings = settings or Settings.from_env()
    specs = tool_specs(settings, shell=shell)
    bus = resources.ScopedBus()
    legacy = resources.LegacySubscriptions()
    running: list[Service] = []

    @asynccontextmanager
    async def lifespan(server: MCPServer[Service]) -> AsyncIterator[Service]:
        async def on_change(job_id: str) -> None:
            uri = f"stillmotion://jobs/{job_id}"
            try:
                await bus.publish(ResourceUpdated(uri=uri))
                await legacy.notify(uri)
            except Exception:  # a notification must never break a job
                log.debug("resource notification failed", exc_info=True)
        async with provider_client() as client:
            svc = Service.create(settings, client, on_change=on_change)
            running.append(svc)
            try:
                async with anyio.create_task_group() as tg:
                    await svc.start(tg)
                    try:
                        yield svc
                    finally:
                        svc.runner.stop()
                        tg.cancel_scope.cancel()
            finally:
                running.remove(svc)
                with anyio.CancelScope(shield=True):
                    await svc.aclose()  # only after every job task has stopped; off the loop

    calls = ToolCalls(specs, settings, shell=shell)
    tasks = TasksExtension()  # outermost: it wraps the tool calls whose jobs become tasks
    mcp: MCPServer[Service] = MCPServer(
        "stillmotion",
        title="stillmotion",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        website_url="https://github.com/stillmotion/stillmotion",
        subscriptions=bus,
        extensions=[tasks, apps_extension(file_origins(settings)), calls],
        tools=[_declared(spec) for spec in specs],
    )
    calls.server = mcp
    # every request runs as its user (users.py); listen streams skip other users' jobs
    mcp.middleware.extend([asker_middleware(settings), resources.listen_scope])
    link_player(mcp)  # _meta.ui.resourceUri on every job-returning tool (hosts without Apps ignore it)
    tasks.bind(mcp)
    if not replicated(settings):
        # (replicas serve 2025-era clients statelessly: no standing stream to notify on, so no
        # resources/subscribe; 2026-era subscriptions/listen works on every replica)
        legacy.register(mcp)
    resources.register(mcp, settings)
    register_spend_resource(mcp, settings, lambda: running[-1] if running else None)
    return mcp


def _declared(spec: ToolSpec[Any]) -> Any:
    from .tools.schema import published_output_schema

    return _sdk.declared_tool(
        name=spec.name,
        title=spec.title,
        description=spec.description,
        input_schema=spec.input_schema,
        output_schema=published_output_schema(spec.output) if spec.output is not None else None,
        annotations=spec.annotations,
        meta=spec.meta,
    )


def tools_list_payload(settings: Settings) -> list[dict[str, Any]]:
    """`[{name, description, inputSchema}]`: the part of tools/list a model reads on every turn."""
    return [{"name": s.name, "description": s.description, "inputSchema": s.input_schema} for s in tool_specs(settings)]


__all__ = ["build_server", "catalog_table", "tool_specs", "tools_list_payload"]
