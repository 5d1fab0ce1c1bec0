"""The player app: served as ui://stillmotion/player.html with the Apps MIME type, linked from every
job tool, one self-contained file built from web/player (and not stale), and clients without Apps
get exactly the ordinary result."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from mcp import Client
from mcp_types import TextResourceContents

from stillmotion.apps import APP_MIME_TYPE, PLAYER_URI, player_html
from stillmotion.tools.results import call_result
from tests.conftest import SettingsFactory, connect, structured, wait_done
from tests.tasks_client import open_jobs

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "web" / "player"
SOURCES = ["package.json", "package-lock.json", "build.mjs", "src/index.html", "src/style.css", "src/main.ts", "src/test-host.ts"]
LOCAL = {"model": "local/preview", "local": {"resolution": "480p"}, "duration": 1}


def test_built_player_is_self_contained_and_matches_its_sources() -> None:
    html = player_html()
    m = re.match(r"<!-- stillmotion player \(MCP App\)\. .* source-sha256: ([0-9a-f]{64}) -->", html)
    assert m, "player.html lacks its build header"
    h = hashlib.sha256()
    for name in SOURCES:  # the same list and hashing as web/player/build.mjs
        h.update((name + "\n").encode())
        h.update((WEB / name).read_text(encoding="utf-8").replace("\r\n", "\n").encode())
    assert m.group(1) == h.hexdigest(), "player.html is stale: run `npm ci && npm run build` in web/player"
    host = (ROOT / "tests" / "browser" / "host.js").read_text(encoding="utf-8")
    assert host.startswith(f"// Built by web/player/build.mjs from src/test-host.ts; do not edit. source-sha256: {m.group(1)}\n")
    # nothing is fetched at run time: no external script, style, font or module
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|@import|https?://[^\s\"')]+\.(js|css|mjs)\b", html)
    assert "ui/initialize" in html  # the official App class is bundled in
    assert len(html.encode()) < 600_000


async def test_player_resource_and_tool_links(make_settings: SettingsFactory) -> None:
    async with connect(make_settings()) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        for name in ("animate_image", "interpolate_frames", "camera_move", "motion_brush", "check_job"):
            assert tools[name].meta is not None and tools[name].meta["ui"]["resourceUri"] == PLAYER_URI, name
        for name in ("list_jobs", "cancel_job", "list_models"):
            assert not (tools[name].meta or {}).get("ui"), name
        read = await client.read_resource(PLAYER_URI)
        content = read.contents[0]
        assert isinstance(content, TextResourceContents) and content.mime_type == APP_MIME_TYPE
        assert content.text == player_html()
        listed = {str(r.uri): r for r in (await client.list_resources()).resources}
        assert listed[PLAYER_URI].mime_type == APP_MIME_TYPE
        caps = client.server_capabilities.extensions or {}
        assert "io.modelcontextprotocol/ui" in caps


async def test_clients_without_apps_get_exactly_the_ordinary_result(
    make_settings: SettingsFactory, image_480: Path
) -> None:
    settings = make_settings()
    async with connect(settings) as client:  # declares no Apps support
        job = structured(await client.call_tool("animate_image", {"image": str(image_480), **LOCAL}))
        await wait_done(client, job["job_id"])
        got = await client.call_tool("check_job", {"job_id": job["job_id"]})

    store = open_jobs(settings.db_path)
    try:
        row = store.get(job["job_id"])
        assert row is not None
        expected = call_result(row)
    finally:
        store.close()
    dump = got.model_dump(mode="json", exclude_none=True, exclude={"meta", "result_type"})
    assert dump == expected.model_dump(mode="json", exclude_none=True, exclude={"meta", "result_type"})
    assert not any("ui://" in str(block) for block in got.content)


async def test_signed_file_origin_goes_into_the_player_csp(make_settings: SettingsFactory) -> None:
    from types import SimpleNamespace

    from mcp.server import MCPServer

    from stillmotion.apps import apps_extension, file_origins

    http = SimpleNamespace(file_links=SimpleNamespace(base_url="https://video.example.com:8443/base"))
    assert file_origins(http) == ["https://video.example.com:8443"]
    assert file_origins(make_settings()) == []  # stdio: no file links, nothing declared
    server: MCPServer[None] = MCPServer("t", extensions=[apps_extension(file_origins(http))])
    async with Client(server) as client:
        (res,) = (await client.list_resources()).resources
        assert res.meta is not None and res.meta["ui"]["csp"] == {"resourceDomains": ["https://video.example.com:8443"]}
    async with connect(make_settings()) as client:
        listed = {str(r.uri): r for r in (await client.list_resources()).resources}
        assert "csp" not in ((listed[PLAYER_URI].meta or {}).get("ui") or {})  # the spec's default CSP applies


async def test_over_http_the_player_may_load_the_signed_file_links(make_settings: SettingsFactory) -> None:
    import dataclasses

    from stillmotion.http.links import FileLinks
    from stillmotion.server import build_server

    settings = dataclasses.replace(make_settings("http"), file_links=FileLinks("http://127.0.0.1:8765", b"k" * 32))
    async with Client(build_server(settings)) as client:
        listed = {str(r.uri): r for r in (await client.list_resources()).resources}
    meta = listed[PLAYER_URI].meta
    assert meta is not None and meta["ui"]["csp"] == {"resourceDomains": ["http://127.0.0.1:8765"]}
