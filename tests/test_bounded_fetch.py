"""Every fetch is bounded (issue #22): an overall deadline besides the per-read timeout (a URL that
drips one byte at a time is refused), malformed URLs are `invalid_input` naming the argument for
images, masks, clips and audio alike, and a redirected image URL reaches the provider as the
final URL that was checked."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from stillmotion.errors import InvalidInput, ProviderError
from stillmotion.media.net import UrlGuard, download_to_file, fetch_to_file
from stillmotion.media.sources import load_media
from tests.conftest import SettingsFactory, connect, error_text, structured, wait_done
from tests.render.measure import textured_image
from tests.test_bounded_clips import RSS_CAP_MB, peak_rss_mb

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _rss_bounded() -> Iterator[None]:
    """The server runs in this process: its peak RSS stays under 800 MB in every case."""
    yield
    assert peak_rss_mb() < RSS_CAP_MB
Route = Callable[[BaseHTTPRequestHandler], None]
MALFORMED = ("http://h:12ab/x.png", "http://example.com:99999/x.png", "http://[::1/x.png")


class Host:
    """A loopback HTTP server answering each path with its own function."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self.hits: list[str] = []
        host = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                host.hits.append(self.path)
                route = routes.get(self.path)
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                try:
                    route(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def drip(h: BaseHTTPRequestHandler) -> None:
    """Declares 1,000 bytes, sends one every 0.1 s (each read is quick: the read timeout never fires)."""
    h.send_response(200)
    h.send_header("Content-Type", "image/png")
    h.send_header("Content-Length", "1000")
    h.end_headers()
    for _ in range(1000):
        h.wfile.write(b"\x89")
        h.wfile.flush()
        time.sleep(0.1)


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(textured_image(640, 480, 3)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def hosts() -> Iterator[tuple[Host, Host]]:
    data = png_bytes()

    def image(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    final = Host({"/final.png": image})

    def moved(h: BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", f"{final.base}/final.png")
        h.send_header("Content-Length", "0")
        h.end_headers()

    first = Host({"/drip.png": drip, "/moved.png": moved})
    try:
        yield first, final
    finally:
        first.close()
        final.close()


async def test_drip_url_refused_within_the_deadline(hosts: tuple[Host, Host], tmp_path: Path) -> None:
    first, _ = hosts
    dest = tmp_path / "got.bin"
    t0 = time.monotonic()
    with pytest.raises(InvalidInput) as caught:
        await fetch_to_file(
            UrlGuard(True, frozenset()), f"{first.base}/drip.png", dest, max_bytes=10_000, argument="image", deadline_s=0.5
        )
    assert time.monotonic() - t0 < 3
    assert caught.value.argument == "image" and "did not finish within 0.5 s" in caught.value.message
    assert not dest.exists()


async def test_drip_url_refused_through_the_tools(make_settings: SettingsFactory, hosts: tuple[Host, Host]) -> None:
    first, _ = hosts
    url = f"{first.base}/drip.png"
    settings = make_settings(STILLMOTION_ALLOW_PRIVATE_NETWORK="1", STILLMOTION_FETCH_TIMEOUT_S="1")
    async with connect(settings) as client:
        for tool, args, argument in (
            ("animate_image", {"image": url, "prompt": "x", "model": "local/preview"}, "image"),
            ("join_clips", {"clips": [url, url]}, "clips[0]"),
        ):
            t0 = time.monotonic()
            text = error_text(await client.call_tool(tool, args))
            elapsed = time.monotonic() - t0
            assert "invalid_input" in text and f"'{argument}'" in text and "STILLMOTION_FETCH_TIMEOUT_S" in text, text
            assert elapsed < 4, (tool, elapsed)


async def test_malformed_urls_are_invalid_input_naming_the_argument(
    make_settings: SettingsFactory, image_480: Path, tmp_path: Path
) -> None:
    async with connect(make_settings()) as client:
        for url in MALFORMED:
            calls = [
                ("animate_image", {"image": url, "prompt": "x", "model": "local/preview"}, "image"),
                ("interpolate_frames", {"start_image": str(image_480), "end_image": url, "model": "local/preview"}, "end_image"),
                (
                    "motion_brush",
                    {"image": str(image_480), "model": "local/preview",
                     "dynamic_masks": [{"mask": url, "trajectory": [{"x": 10, "y": 10}, {"x": 20, "y": 20}]}]},
                    "dynamic_masks[0].mask",
                ),
                ("join_clips", {"clips": [url, url]}, "clips[0]"),
            ]
            for tool, args, argument in calls:
                text = error_text(await client.call_tool(tool, args))
                assert "invalid_input" in text and f"'{argument}'" in text, (tool, url, text)
                assert "internal" not in text.lower(), text
    for url in MALFORMED:
        with pytest.raises(InvalidInput) as caught:
            await load_media(
                url, argument="wan.audio_url", client=None, guard=UrlGuard(False, frozenset()),  # type: ignore[arg-type]
                input_roots=None, resolve_resource=lambda job, name: None, max_bytes=1000, resources="a file",
            )  # fmt: skip
        assert caught.value.argument == "wan.audio_url" and "not a usable URL" in caught.value.message


async def test_redirected_image_goes_to_the_provider_as_the_final_url(
    make_settings: SettingsFactory, hosts: tuple[Host, Host]
) -> None:
    first, final = hosts
    settings = make_settings(STILLMOTION_ALLOW_PRIVATE_NETWORK="1", XAI_API_KEY="xai-test-key")
    args = {"image": f"{first.base}/moved.png", "prompt": "x", "model": "xai/grok-imagine-video", "dry_run": True}
    async with connect(settings) as client:
        dry = structured(await client.call_tool("animate_image", args))
    body = dry["request"]["body"]
    assert body["image"]["url"] == f"{final.base}/final.png", body
    assert first.hits == ["/moved.png"] and final.hits == ["/final.png"]


async def test_a_local_job_from_a_redirected_url_still_runs(make_settings: SettingsFactory, hosts: tuple[Host, Host]) -> None:
    first, _ = hosts
    settings = make_settings(STILLMOTION_ALLOW_PRIVATE_NETWORK="1")
    args = {"image": f"{first.base}/moved.png", "prompt": "x", "model": "local/preview", "duration": 1}
    async with connect(settings) as client:
        job = structured(await client.call_tool("animate_image", args))
        done = await wait_done(client, job["job_id"])
    assert done["status"] == "succeeded", done


async def test_result_download_has_the_deadline_too(hosts: tuple[Host, Host], tmp_path: Path) -> None:
    first, _ = hosts
    dest = tmp_path / "result.mp4"
    t0 = time.monotonic()
    with pytest.raises(ProviderError, match=r"did not finish within 0\.5 s") as caught:
        await download_to_file(
            None, UrlGuard(True, frozenset()), f"{first.base}/drip.png", dest, max_bytes=10_000, deadline_s=0.5
        )
    assert time.monotonic() - t0 < 3 and not caught.value.retryable and not dest.exists()
