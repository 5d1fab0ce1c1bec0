"""The player in a real headless Chromium (Debian's package, driven by Playwright with
executable_path), hosted by the official Apps library's host side (AppBridge) under the spec's
default CSP, talking to the real stillmotion server through the in-memory MCP client.

Skips on a developer machine without chromium or playwright; fails under CI=true."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from stillmotion.apps import PLAYER_URI
from tests.conftest import SettingsFactory, connect, structured, wait_done
from tests.tasks_client import open_jobs

pytestmark = pytest.mark.anyio

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HOST_DIR = Path(__file__).parent / "browser"
LOCAL = {"model": "local/preview", "local": {"resolution": "480p"}, "duration": 1}
# What a host MUST apply when the resource declares no CSP (MCP Apps spec, "Restrictive Default").
DEFAULT_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; media-src 'self' data:; connect-src 'none'"
)
H264 = 'video/mp4; codecs="avc1.42E01E"'


def _need_browser() -> Any:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        async_playwright = None
    missing = [what for what, ok in (("chromium", CHROMIUM), ("playwright", async_playwright)) if not ok]
    if missing:
        why = f"{' and '.join(missing)} not installed (apt-get install chromium; pip install playwright)"
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run the browser test: " + why)
        pytest.skip(why)
    return async_playwright


def _shots(tmp_path: Path) -> Path:
    """Screenshots go to STILLMOTION_SCREENSHOT_DIR (docs/ when refreshing them), else a tmp dir."""
    out = Path(os.environ.get("STILLMOTION_SCREENSHOT_DIR") or tmp_path / "shots")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _dump(model: Any) -> dict[str, Any]:
    return dict(model.model_dump(by_alias=True, mode="json", exclude_none=True))


@asynccontextmanager
async def _browser() -> AsyncIterator[Any]:
    async_playwright = _need_browser()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            await browser.close()


async def _host(browser: Any, client: Client, *, csp: str = DEFAULT_CSP, page: Any = None) -> tuple[Any, Any]:
    """A page running the official AppBridge with the player from resources/read; returns (page, player frame)."""
    page = page or await browser.new_page(viewport={"width": 740, "height": 560})

    async def forward(method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "tools/call":
            return _dump(await client.call_tool(params["name"], params.get("arguments") or {}))
        if method == "resources/read":
            return _dump(await client.read_resource(params["uri"]))
        raise ValueError(method)

    await page.expose_function("mcpRequest", forward)
    host_js = (HOST_DIR / "host.js").read_text(encoding="utf-8")
    html = (HOST_DIR / "host.html").read_text(encoding="utf-8").replace("/*HOST*/", host_js)
    await page.set_content(html)
    tool = {t.name: t for t in (await client.list_tools()).tools}["animate_image"]
    uri = (tool.meta or {})["ui"]["resourceUri"]
    assert uri == PLAYER_URI
    player = (await client.read_resource(uri)).contents[0]
    await page.evaluate("([html, csp]) => window.mountPlayer(html, csp)", [player.text, csp])  # type: ignore[union-attr]
    frame = next(f for f in page.frames if f is not page.main_frame)
    return page, frame


async def _until(frame: Any, expr: str, rounds: int = 600) -> None:
    """Poll a condition in the player (wait_for_function would eval() under the player's CSP)."""
    for _ in range(rounds):
        if await frame.evaluate(expr):
            return
        await anyio.sleep(0.05)
    raise AssertionError(f"never true in the player: {expr}")


async def _park(client: Client, job_id: str) -> dict[str, Any]:
    for _ in range(400):
        sc = structured(await client.call_tool("check_job", {"job_id": job_id}))
        if sc["status"] == "running" and sc["progress"]:
            return sc
        await anyio.sleep(0.05)
    raise AssertionError("render never reached the hold point")


async def test_player_plays_a_finished_clip(make_settings: SettingsFactory, image_480: Path, tmp_path: Path) -> None:
    async with connect(make_settings()) as client, _browser() as browser:
        job = structured(await client.call_tool("animate_image", {"image": str(image_480), **LOCAL}))
        await wait_done(client, job["job_id"])
        result = await client.call_tool("check_job", {"job_id": job["job_id"]})
        page, frame = await _host(browser, client)
        support = await frame.evaluate(f"document.createElement('video').canPlayType('{H264}')")
        assert support in ("probably", "maybe"), f"this Chromium cannot play H.264 ({support!r})"

        violated = await frame.evaluate("""() => new Promise((resolve) => {
            document.addEventListener("securitypolicyviolation", (e) => resolve(e.effectiveDirective), { once: true });
            const img = new Image(); img.src = "http://127.0.0.1:9/probe.png";
        })""")
        assert violated == "img-src"  # the player runs under the spec's restrictive CSP: no network at all

        await page.evaluate("r => window.sendToolResult(r)", _dump(result))
        await _until(frame, "document.getElementById('video').readyState >= 2 && !document.getElementById('play').disabled")
        log = await page.evaluate("window.hostLog")
        assert f"resources/read stillmotion://jobs/{job['job_id']}/video.mp4" in log  # read through the server
        assert await frame.inner_text("#fact-size") == "640×480"
        assert await frame.inner_text("#fact-duration") == "1.00 s at 24 fps"
        assert await frame.inner_text("#fact-model") == "local/preview (local)"
        assert await frame.inner_text("#time") == "0:00.0 / 0:01.0"
        assert await frame.evaluate("document.getElementById('video').duration") == pytest.approx(1.0, abs=0.05)

        await frame.focus("#play")  # the keyboard alone: Tab-reachable button, Enter plays
        await page.keyboard.press("Enter")
        await _until(frame, "document.getElementById('video').currentTime > 0.3")
        assert await frame.get_attribute("#play", "aria-label") in ("Pause", "Play")  # ended clips flip back
        await frame.evaluate("document.getElementById('video').pause()")
        await frame.focus("#video")
        await page.keyboard.press("Home")
        await _until(frame, "document.getElementById('video').currentTime === 0")
        await page.keyboard.press("ArrowRight")  # scrubbing from the keyboard
        await _until(frame, "document.getElementById('video').currentTime >= 0.45")
        await _until(frame, "document.getElementById('seek').value === '500'")  # the seek bar follows the clip
        assert await frame.inner_text("#time") == "0:00.5 / 0:01.0"
        await page.locator(".chat").screenshot(path=str(_shots(tmp_path) / "player-finished.png"))


async def test_player_follows_a_running_job_to_its_video(
    make_settings: SettingsFactory, image_480: Path, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    hold.touch()
    async with connect(make_settings(STILLMOTION_TEST_HOLD_FILE=str(hold))) as client, _browser() as browser:
        job = structured(await client.call_tool("animate_image", {"image": str(image_480), **LOCAL}))
        sc = await _park(client, job["job_id"])
        result = await client.call_tool("check_job", {"job_id": job["job_id"]})
        page, frame = await _host(browser, client)
        await page.evaluate("r => window.sendToolResult(r)", _dump(result))
        await frame.wait_for_selector("#running:not([hidden])")
        pct = f"{round(sc['progress'] * 100)}%"
        assert await frame.inner_text("#status") == f"running {pct}"
        assert await frame.evaluate("document.getElementById('progress').value") == pytest.approx(sc["progress"])
        assert "local/preview" in await frame.inner_text("#running-text")
        await page.locator(".chat").screenshot(path=str(_shots(tmp_path) / "player-running.png"))

        hold.unlink()  # the render finishes; the player, long-polling check_job through the host, shows the clip
        await _until(frame, "document.getElementById('video').readyState >= 1")
        assert await frame.inner_text("#status") == "done"
        assert "tools/call check_job" in await page.evaluate("window.hostLog")


async def test_player_shows_a_failed_job(make_settings: SettingsFactory, image_480: Path, tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    hold.touch()
    settings = make_settings(STILLMOTION_TEST_HOLD_FILE=str(hold))
    async with connect(settings) as client, _browser() as browser:
        job = structured(await client.call_tool("animate_image", {"image": str(image_480), **LOCAL}))
        await _park(client, job["job_id"])
        store = open_jobs(settings.db_path)  # the provider's verdict, as the runner stores it
        store.update(job["job_id"], status="failed", stage="done", error={
            "kind": "content_filtered", "message": "The provider's safety filter blocked this output.", "retryable": False})
        store.close()
        result = await client.call_tool("check_job", {"job_id": job["job_id"]})
        page, frame = await _host(browser, client)
        await page.evaluate("r => window.sendToolResult(r)", _dump(result))
        await frame.wait_for_selector("#failed:not([hidden])")
        assert await frame.inner_text("#error") == "content_filtered: The provider's safety filter blocked this output."
        assert await frame.get_attribute("#error", "role") == "alert"
        assert "safety filter" in await frame.inner_text("#next-step")
        assert await frame.inner_text("#status") == "failed"
        assert await frame.is_hidden("#done") and await frame.is_hidden("#running")
        await page.locator(".chat").screenshot(path=str(_shots(tmp_path) / "player-failed.png"))
        hold.unlink()


def _csp_for(resource_meta: dict[str, Any] | None) -> str:
    """What a host builds from the resource's `_meta.ui.csp`: the default plus the declared origins."""
    domains = " ".join(((resource_meta or {}).get("ui") or {}).get("csp", {}).get("resourceDomains", []))
    return DEFAULT_CSP.replace("media-src 'self' data:", f"media-src 'self' data: {domains}".rstrip())


@asynccontextmanager
async def _file_server(root: Path) -> AsyncIterator[str]:
    """A loopback HTTP server for the clip, standing in for the transport's signed /files/ links."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


async def test_player_plays_from_a_declared_file_url_and_falls_back_when_refused(
    make_settings: SettingsFactory, image_480: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings()
    async with connect(settings) as client:
        job = structured(await client.call_tool("animate_image", {"image": str(image_480), **LOCAL}))
        await wait_done(client, job["job_id"])
    clip_dir = settings.output_dir / job["job_id"]
    # one origin the resource declares, one it does not: the host's CSP refuses the second, so the
    # player falls back to reading the clip through the server
    async with _file_server(clip_dir) as origin, _file_server(clip_dir) as undeclared:
        import stillmotion.server

        monkeypatch.setattr(stillmotion.server, "file_origins", lambda _settings: [origin])  # as over HTTP
        async with connect(settings) as client, _browser() as browser:
            listed = {str(r.uri): r for r in (await client.list_resources()).resources}
            csp = _csp_for(listed[PLAYER_URI].meta)
            assert origin in csp
            for base, read_through_server in ((origin, False), (undeclared, True)):
                result = _dump(await client.call_tool("check_job", {"job_id": job["job_id"]}))
                result["structuredContent"]["video"]["http_url"] = f"{base}/video.mp4?exp=1&sig=x"
                page = await browser.new_page()
                _, frame = await _host(browser, client, csp=csp, page=page)
                await page.evaluate("r => window.sendToolResult(r)", result)
                await _until(frame, "document.getElementById('video').readyState >= 2")
                reads = [e for e in await page.evaluate("window.hostLog") if e.startswith("resources/read stillmotion")]
                assert bool(reads) is read_through_server, (base, reads)
                src = await frame.evaluate("document.getElementById('video').currentSrc")
                assert src.startswith(f"{base}/video.mp4") if not read_through_server else src.startswith("data:video/mp4")
                await page.close()


def test_over_http_the_player_plays_the_signed_file_link(home: Path, image_480: Path) -> None:
    """The real HTTP transport: the result's `video.http_url` (a signed /files/ link) is declared
    in the player resource's CSP, and the clip plays from it without a resources/read."""
    import base64
    import socket
    import subprocess
    import sys
    import time

    import httpx

    _need_browser()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("STILLMOTION_")}
    env.update(STILLMOTION_HOME=str(home), STILLMOTION_BACKGROUND="0", PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "stillmotion", "serve", "--http", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        for _ in range(200):
            try:
                httpx.get(url, timeout=0.5)
                break
            except httpx.HTTPError:
                time.sleep(0.1)

        async def run() -> None:
            image = "data:image/png;base64," + base64.b64encode(await anyio.Path(image_480).read_bytes()).decode()
            async with Client(url) as client, _browser() as browser:
                job = structured(await client.call_tool("animate_image", {"image": image, **LOCAL}))
                await wait_done(client, job["job_id"])
                result = _dump(await client.call_tool("check_job", {"job_id": job["job_id"]}))
                link = result["structuredContent"]["video"]["http_url"]
                assert link.startswith(f"http://127.0.0.1:{port}/files/")
                listed = {str(r.uri): r for r in (await client.list_resources()).resources}
                csp = _csp_for(listed[PLAYER_URI].meta)
                assert f"http://127.0.0.1:{port}" in csp
                page, frame = await _host(browser, client, csp=csp)
                await page.evaluate("r => window.sendToolResult(r)", result)
                await _until(frame, "document.getElementById('video').readyState >= 2")
                assert await frame.evaluate("document.getElementById('video').currentSrc") == link
                assert not [e for e in await page.evaluate("window.hostLog") if "video.mp4" in e]  # no inline read

        anyio.run(run)
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
