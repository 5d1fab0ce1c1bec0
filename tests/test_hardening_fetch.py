"""Fetches are bounded (issue #11): redirects followed by hand with the guard on every hop and at
connect time (DNS rebinding), result size cap, partial files removed, provider ids escaped."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from stillmotion.errors import InvalidInput, ProviderError
from stillmotion.media.net import UrlGuard, download_to_file, fetch_bytes
from stillmotion.providers.kling import KlingProvider
from stillmotion.providers.wan import WanProvider
from stillmotion.providers.xai import XaiProvider
from tests.conftest import SettingsFactory, connect, structured, wait_done, write_image
from tests.fakes import KlingFake

pytestmark = pytest.mark.anyio
KEY = "kling-fetch-key"


class Canary:
    """A loopback HTTP server that counts every request it gets (it must get none)."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        canary = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                canary.hits.append(self.path)
                body = b"secret internal data"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def canary() -> Iterator[Canary]:
    c = Canary()
    try:
        yield c
    finally:
        c.close()


# -- DNS rebinding ------------------------------------------------------------------------------


def _rebinding_resolver(calls: list[str]) -> Any:
    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["93.184.216.34"] if len(calls) == 1 else ["127.0.0.1"]  # public to the check, loopback after

    return resolve


async def test_dns_rebinding_refused_at_connect(canary: Canary) -> None:
    calls: list[str] = []
    guard = UrlGuard(False, frozenset(), resolver=_rebinding_resolver(calls))
    with pytest.raises(InvalidInput) as info:
        await fetch_bytes(None, guard, f"http://rebind.example:{canary.port}/img.png", max_bytes=1000, argument="image")
    assert "loopback" in info.value.message and "127.0.0.1" in info.value.message
    assert len(calls) == 2  # the pre-flight check, then the connect's own resolution
    assert canary.hits == []


async def test_dns_rebinding_refused_for_result_downloads(canary: Canary, tmp_path: Path) -> None:
    calls: list[str] = []
    guard = UrlGuard(False, frozenset(), resolver=_rebinding_resolver(calls))
    dest = tmp_path / "video.part"
    with pytest.raises(ProviderError, match="loopback"):
        await download_to_file(None, guard, f"http://rebind.example:{canary.port}/v.mp4", dest, max_bytes=10**6)
    assert canary.hits == [] and not dest.exists()


async def test_image_url_redirect_to_loopback_refused(canary: Canary, tmp_path: Path) -> None:
    with KlingFake(api_key=KEY) as fake:
        fake.inject("GET /files/img.png", status=302, headers={"Location": f"http://localhost:{canary.port}/x.png"})
        guard = UrlGuard(False, frozenset({fake.base_url}))  # the first hop is allowed, the second is not
        with pytest.raises(InvalidInput, match="loopback"):
            await fetch_bytes(None, guard, fake.file_url("img.png"), max_bytes=10**6, argument="dynamic_masks[0].mask")
    assert canary.hits == []


# -- result downloads through the runner --------------------------------------------------------


@pytest.fixture
def img(tmp_path: Path) -> Path:
    return write_image(tmp_path / "in" / "photo.png", 640, 480, seed=5)


async def _run_kling_job(fake: KlingFake, make_settings: SettingsFactory, img: Path, **env: str) -> dict[str, Any]:
    settings = make_settings(KLINGAI_API_KEY=KEY, KLINGAI_BASE_URL=fake.base_url, **env)
    async with connect(settings) as client:
        job = structured(await client.call_tool(
            "animate_image", {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "waves"}))
        done = await wait_done(client, job["job_id"])
    done["_outputs"] = settings.output_dir / done["job_id"]
    return done


@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data/", "canary", "canary-by-name"])
async def test_result_redirect_to_private_address_fails_the_job(
    target: str, canary: Canary, make_settings: SettingsFactory, img: Path
) -> None:
    location = {
        "canary": f"http://127.0.0.1:{canary.port}/loot.mp4",
        "canary-by-name": f"http://localhost:{canary.port}/loot.mp4",
    }.get(target, target)
    with KlingFake(api_key=KEY) as fake:
        fake.inject("GET /files/", status=302, headers={"Location": location}, times=50)
        done = await _run_kling_job(fake, make_settings, img)
        downloads = fake.calls("GET", "/files/")
    assert done["status"] == "failed", done
    assert done["error"]["kind"] == "provider_error"
    assert "refused" in done["error"]["message"] and "private, loopback or link-local" in done["error"]["message"]
    assert len(downloads) == 1  # a refused redirect is not retried
    assert canary.hits == []
    assert [p.name for p in done["_outputs"].iterdir()] == [] if done["_outputs"].exists() else True


async def test_more_than_five_redirects_fail(make_settings: SettingsFactory, img: Path) -> None:
    with KlingFake(api_key=KEY) as fake:
        fake.inject("GET /files/", status=307, headers={"Location": fake.file_url("again.mp4")}, times=50)
        done = await _run_kling_job(fake, make_settings, img)
        downloads = fake.calls("GET", "/files/")
    assert done["status"] == "failed" and "more than 5" in done["error"]["message"], done
    assert len(downloads) == 6  # the first request and five redirects


async def test_result_within_redirects_is_downloaded(make_settings: SettingsFactory, img: Path) -> None:
    with KlingFake(api_key=KEY) as fake:
        real = fake.add_file("moved.mp4", fake.result_bytes())
        fake.inject("GET /files/", status=302, headers={"Location": "/files/hop.mp4"})
        fake.inject("GET /files/hop.mp4", status=301, headers={"Location": real})
        done = await _run_kling_job(fake, make_settings, img)
    assert done["status"] == "succeeded", done
    assert await anyio.Path(done["video"]["path"]).read_bytes() == fake.result_bytes()


async def test_result_over_the_cap_leaves_no_file(make_settings: SettingsFactory, img: Path) -> None:
    with KlingFake(api_key=KEY) as fake:
        done = await _run_kling_job(fake, make_settings, img, STILLMOTION_MAX_RESULT_BYTES="20000")
    assert done["status"] == "failed" and "20000-byte cap" in done["error"]["message"], done
    assert "STILLMOTION_MAX_RESULT_BYTES" in done["error"]["message"]
    assert list(done["_outputs"].iterdir()) == []


async def test_truncated_downloads_leave_no_partial_file(make_settings: SettingsFactory, img: Path) -> None:
    with KlingFake(api_key=KEY) as fake:
        fake.truncate_file("*")
        done = await _run_kling_job(fake, make_settings, img)
        downloads = fake.calls("GET", "/files/")
    assert done["status"] == "failed" and "result download" in done["error"]["message"], done
    assert len(downloads) == 6  # retried five times, each partial file removed
    assert list(done["_outputs"].iterdir()) == []


async def test_over_cap_stream_without_length_removed(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("the guarded client must be used, not the one passed in")

    with KlingFake(api_key=KEY) as fake:
        url = fake.add_large_file("big.mp4", 3_000_000)
        dest = tmp_path / "big.part"
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as unused:
            with pytest.raises(ProviderError, match="cap"):
                await download_to_file(unused, UrlGuard(False, frozenset({fake.base_url})), url, dest, max_bytes=1_000_000)
    assert not dest.exists()


# -- provider ids in URLs -----------------------------------------------------------------------


async def test_provider_ids_are_escaped(make_settings: SettingsFactory) -> None:
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path)
        return httpx.Response(500, json={"code": 5000, "message": "boom"})

    evil = "../../v1/account?x=1#y"
    settings = make_settings(KLINGAI_API_KEY="kk-1234", ALIBABA_API_KEY="ak-1234", XAI_API_KEY="xk-1234")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        for cls, op in ((KlingProvider, {"task_id": evil}), (WanProvider, {"task_id": evil}),
                        (XaiProvider, {"request_id": evil})):
            with pytest.raises(ProviderError):
                await cls(client, settings).status(None, op)  # type: ignore[arg-type]
    escaped = b"..%2F..%2Fv1%2Faccount%3Fx%3D1%23y"
    assert len(seen) == 3
    for raw in seen:
        assert raw.endswith(b"/" + escaped), raw


def test_inline_base64_result_is_capped_and_leaves_nothing(tmp_path: Path) -> None:
    import base64

    from stillmotion.media.net import write_base64_file

    data = base64.b64encode(b"v" * 10_000).decode()
    dest = tmp_path / "inline.part"
    assert write_base64_file(data, dest, max_bytes=10_000) == 10_000 and dest.read_bytes() == b"v" * 10_000
    with pytest.raises(ProviderError, match="STILLMOTION_MAX_RESULT_BYTES"):
        write_base64_file(data, dest, max_bytes=5_000)
    assert not dest.exists()
