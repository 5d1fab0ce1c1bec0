"""Resources: the model catalog, each job as JSON, and a finished job's files; plus the 2025-era
`resources/subscribe` for clients that do not speak `subscriptions/listen`.

Users (issue #23): reads go through `Service.get`/`resource_path` (the asker's jobs only), and a
subscription to another user's job is acknowledged exactly like one to an unknown job, and never
fires (`ScopedBus`, `listen_scope`, `LegacySubscriptions`)."""

from __future__ import annotations

import contextvars
import json
import re
from collections.abc import Callable
from typing import Any

from mcp.server import MCPServer
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated, ServerEvent
from mcp.types import EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams

from ..errors import StillmotionError
from ..http.users import current
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


JOB_URI = re.compile(r"^stillmotion://jobs/([^/]+)(?:/.*)?$")
_LISTEN_HIDDEN: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("listen_hidden", default=frozenset())


def _job_ids(uris: list[str]) -> set[str]:
    return {m.group(1) for u in uris if (m := JOB_URI.match(u))}


async def hidden_jobs(svc: Service, uris: list[str]) -> frozenset[str]:
    """The job ids among `uris` the asker may not follow: unknown, or another user's (off the loop)."""
    ids = _job_ids(uris)
    if not ids or current().admin:
        return frozenset()
    scope = current().scope
    found = await svc.db.run(lambda: {i for i in ids if svc.store.get(i, user=scope) is not None})
    return frozenset(ids - found)


async def listen_scope(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """`subscriptions/listen`: note which requested jobs are not the asker's, for `ScopedBus`."""
    if ctx.method != "subscriptions/listen" or ctx.request_id is None:
        return await call_next(ctx)
    notifications = (ctx.params or {}).get("notifications")
    uris = notifications.get("resourceSubscriptions") if isinstance(notifications, dict) else None
    if not isinstance(uris, list) or not uris:
        return await call_next(ctx)
    token = _LISTEN_HIDDEN.set(await hidden_jobs(ctx.lifespan_context, [str(u) for u in uris]))
    try:
        return await call_next(ctx)
    finally:
        _LISTEN_HIDDEN.reset(token)


class ScopedBus(InMemorySubscriptionBus):
    """A listen stream subscribed (under `listen_scope`) to jobs that are not its user's never gets
    their updates: the subscription is acknowledged as asked, like one to a job that does not exist."""

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        hidden = _LISTEN_HIDDEN.get()
        if not hidden:
            return super().subscribe(listener)

        def scoped(event: ServerEvent) -> None:
            if isinstance(event, ResourceUpdated) and _job_ids([event.uri]) & hidden:
                return
            listener(event)

        return super().subscribe(scoped)


class LegacySubscriptions:
    """2025-era `resources/subscribe`: each subscribed session gets `notifications/resources/updated`."""

    def __init__(self) -> None:
        self.subscribers: dict[str, set[Any]] = {}

    def register(self, mcp: MCPServer[Any]) -> None:
        async def subscribe(ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
            if await hidden_jobs(ctx.lifespan_context, [str(params.uri)]):
                return EmptyResult()  # another user's job: answered as for an unknown one, never notified
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
