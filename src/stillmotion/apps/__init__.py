"""MCP Apps (io.modelcontextprotocol/ui): the player shown inside the conversation.

`player.html` is built from `web/player` (one self-contained file: the official
`@modelcontextprotocol/ext-apps` App class, script and style inline, nothing fetched at run
time) and committed. Tools that return a job carry `_meta.ui.resourceUri` pointing at it;
hosts without Apps ignore that key and get exactly the ordinary result.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any
from urllib.parse import urlsplit

from mcp.server import MCPServer
from mcp.server.apps import APP_MIME_TYPE, Apps, ResourceCsp

from ..tools import _sdk

PLAYER_URI = "ui://stillmotion/player.html"
# Every tool whose result is a job (join_clips once it exists); missing names are skipped.
PLAYER_TOOLS = ("animate_image", "interpolate_frames", "camera_move", "motion_brush", "join_clips", "check_job")

__all__ = [
    "APP_MIME_TYPE", "PLAYER_TOOLS", "PLAYER_URI", "apps_extension", "file_origins", "link_player", "player_html",
]


def player_html() -> str:
    return files(__package__).joinpath("player.html").read_text(encoding="utf-8")


def file_origins(settings: Any) -> list[str]:
    """The origin of the HTTP transport's signed file links (`video.http_url`), when it serves them."""
    base = getattr(getattr(settings, "file_links", None), "base_url", None)
    if not isinstance(base, str) or not base:
        return []
    url = urlsplit(base)
    return [f"{url.scheme}://{url.netloc}"] if url.scheme in ("http", "https") and url.netloc else []


def apps_extension(file_origins: list[str] | None = None) -> Apps:
    """The Apps extension serving the player. `file_origins` are origins the player may load
    media from (the HTTP server's signed file URLs); they go into the resource's CSP."""
    apps = Apps()
    apps.add_html_resource(
        PLAYER_URI,
        player_html(),
        name="player",
        title="stillmotion player",
        description="Plays a job's video inside the conversation; shows progress while it runs and the error if it fails.",
        csp=ResourceCsp(resource_domains=file_origins) if file_origins else None,
        prefers_border=True,
    )
    return apps


def link_player(server: MCPServer[Any]) -> list[str]:
    """Stamp `_meta.ui.resourceUri` on every job-returning tool already registered. Returns their names."""
    linked = []
    for name in PLAYER_TOOLS:
        tool = _sdk.registered_tool(server, name)
        if tool is None:
            continue
        meta = dict(tool.meta or {})
        meta["ui"] = {**meta.get("ui", {}), "resourceUri": PLAYER_URI}
        tool.meta = meta
        linked.append(name)
    return linked
