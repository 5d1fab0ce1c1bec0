"""Resources: the model catalog, each job as JSON, and a finished job's files; plus the 2025-era
`resources/subscribe` for clients that do not speak `subscriptions/listen`."""

from __future__ import annotations

import json
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError
from mcp.types import EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams

from ..errors import StillmotionError
from ..service import Service
from ..settings import Settings
from . import _sdk
from .models import public_catalog
from .resource_files import read_resource_file
from .results import job_result


def register(mcp: MCPServer[Service], settings: Settings) -> None:
    def service(ctx: Context[Service]) -> Service:
        return ctx.request_context.lifespan_context

    @mcp.resource("stillmotion://models", name="models", mime_type="application/json", description="The model catalog.")
    def models_resource() -> str:
        return json.dumps({"models": public_catalog(settings)}, indent=1)

    @mcp.resource("stillmotion://jobs/{job_id}", name="job", mime_type="application/json", description="A job as JSON.")
    async def job_resource(job_id: str, ctx: Context[Service]) -> str:
        svc = service(ctx)
        try:
            row = await svc.get(job_id)
        except StillmotionError as exc:
            raise ResourceError(exc.message) from exc
        return job_result(row, file_links=svc.settings.file_links).model_dump_json(indent=1)

    async def _file(job_id: str, name: str, ctx: Context[Service]) -> bytes:
        svc = service(ctx)
        path = await svc.resource_path(job_id, name)
        if path is None:
            raise ResourceError(f"stillmotion://jobs/{job_id}/{name} does not exist (unknown job, or not succeeded)")
        # capped by STILLMOTION_MAX_RESOURCE_BYTES (the error names the path and a download URL), off the loop
        return await read_resource_file(path, job_id, name, svc.settings)

    @mcp.resource("stillmotion://jobs/{job_id}/video.mp4", name="video", mime_type="video/mp4", description="A job's MP4.")
    async def video_resource(job_id: str, ctx: Context[Service]) -> bytes:
        return await _file(job_id, "video.mp4", ctx)

    @mcp.resource("stillmotion://jobs/{job_id}/poster.png", name="poster", mime_type="image/png", description="Contact sheet.")
    async def poster_resource(job_id: str, ctx: Context[Service]) -> bytes:
        return await _file(job_id, "poster.png", ctx)

    @mcp.resource(
        "stillmotion://jobs/{job_id}/last-frame.png", name="last-frame", mime_type="image/png", description="Final frame."
    )
    async def last_frame_resource(job_id: str, ctx: Context[Service]) -> bytes:
        return await _file(job_id, "last-frame.png", ctx)


class LegacySubscriptions:
    """2025-era `resources/subscribe`: each subscribed session gets `notifications/resources/updated`."""

    def __init__(self) -> None:
        self.subscribers: dict[str, set[Any]] = {}

    def register(self, mcp: MCPServer[Any]) -> None:
        async def subscribe(ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
            self.subscribers.setdefault(str(params.uri), set()).add(ctx.session)
            return EmptyResult()

        async def unsubscribe(ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
            self.subscribers.get(str(params.uri), set()).discard(ctx.session)
            return EmptyResult()

        _sdk.add_legacy_request_handler(mcp, "resources/subscribe", SubscribeRequestParams, subscribe)
        _sdk.add_legacy_request_handler(mcp, "resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)

    async def notify(self, uri: str) -> None:
        for session in list(self.subscribers.get(uri, ())):
            try:
                await session.send_resource_updated(uri)
            except Exception:
                self.subscribers[uri].discard(session)
