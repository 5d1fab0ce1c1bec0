"""Each provider's status mapping and error table, unit-tested through its public `status()` with
`httpx.MockTransport`: no MCP, no loopback server, no download. One answer in, one `Status` or
one error of the tree out; the end-to-end tests keep what only they can show."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from stillmotion.catalog import MODELS
from stillmotion.errors import (
    AuthError,
    ConcurrencyLimited,
    ContentFiltered,
    Expired,
    InvalidInput,
    MissingCredentials,
    ProviderError,
    ProviderRejectedInput,
    QuotaError,
    RateLimited,
    StillmotionError,
)
from stillmotion.plan.requests import GenerationRequest, StoredClip, StoredImage, WanOptions, XaiOptions
from stillmotion.providers._http import WireRequest, http_error
from stillmotion.providers.base import JobContext, Provider, Status
from stillmotion.providers.families import FAMILIES
from stillmotion.providers.gateway import GatewayProvider, map_error
from stillmotion.providers.kling import KlingProvider
from stillmotion.providers.registry import REGISTRY, native_extension
from stillmotion.providers.wan import WanProvider
from stillmotion.providers.xai import XaiProvider
from tests.conftest import SettingsFactory, write_image

pytestmark = pytest.mark.anyio

Answer = Callable[[httpx.Request], httpx.Response]


def job(model: str, img: Path) -> JobContext:
    data = img.read_bytes()
    image = StoredImage(path=str(img), mime="image/png", width=64, height=48, bytes=len(data), sha256="-")
    req = GenerationRequest(tool="animate_image", model=model, route="direct", prompt="x", duration=5, image=image)
    return JobContext("job_0123456789abcdef", req)


@pytest.fixture
def img(tmp_path: Path) -> Path:
    return write_image(tmp_path / "in.png", 64, 48, seed=3)


async def poll(make: Callable[[httpx.AsyncClient], Provider], ctx: JobContext, op: dict[str, Any], answer: Answer) -> tuple[Status, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        return await make(client).status(ctx, op), seen


async def poll_error(make: Callable[[httpx.AsyncClient], Provider], ctx: JobContext, op: dict[str, Any], answer: Answer) -> StillmotionError:
    with pytest.raises(StillmotionError) as info:
        await poll(make, ctx, op, answer)
    return info.value


# -- Kling ---------------------------------------------------------------------------------------


def kling_answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Answer:
    return lambda _r: httpx.Response(status, json=body, headers=headers)


@pytest.fixture
def kling(make_settings: SettingsFactory) -> Callable[[httpx.AsyncClient], Provider]:
    settings = make_settings(KLINGAI_API_KEY="k-unit", KLINGAI_BASE_URL="https://kling.test")
    return lambda client: KlingProvider(client, settings)


@pytest.mark.parametrize(
    ("http", "code", "kind", "retryable"),
    [
        (401, 1000, AuthError, False),
        (401, 1004, AuthError, False),
        (429, 1102, QuotaError, False),
        (400, 1200, ProviderRejectedInput, False),
        (400, 1301, ContentFiltered, False),
        (429, 1302, RateLimited, True),
        (500, 5000, ProviderError, True),
        (503, 5001, ProviderError, True),
    ],
)
async def test_kling_error_table(
    kling: Callable[[httpx.AsyncClient], Provider], img: Path, http: int, code: int, kind: type[StillmotionError], retryable: bool
) -> None:
    err = await poll_error(kling, job("klingai/kling-v2.6-i2v", img), {"task_id": "t1"},
                           kling_answer(http, {"code": code, "message": "m", "request_id": "r"}))
    assert type(err) is kind, (code, err)
    assert err.provider_code == str(code) and err.retryable is retryable


async def test_kling_1303_is_the_concurrency_limit_not_a_rate_limit(kling: Callable[[httpx.AsyncClient], Provider], img: Path) -> None:
    """1303 = the account's parallel-task limit: the job waits locally (ConcurrencyLimited), with at
    least a second between tries even when Kling sends no Retry-After."""
    err = await poll_error(kling, job("klingai/kling-v2.6-i2v", img), {"task_id": "t1"},
                           kling_answer(429, {"code": 1303, "message": "parallel task over resource pack limit"}))
    assert type(err) is ConcurrencyLimited and err.kind == "rate_limited"
    assert err.retry_after is not None and err.retry_after >= 1.0
    err2 = await poll_error(kling, job("klingai/kling-v2.6-i2v", img), {"task_id": "t1"},
                            kling_answer(429, {"code": 1302, "message": "rate"}))
    assert type(err2) is RateLimited


async def test_kling_http_fallbacks_without_a_code(kling: Callable[[httpx.AsyncClient], Provider], img: Path) -> None:
    ctx = job("klingai/kling-v2.6-i2v", img)
    bare = lambda status, headers=None: (lambda _r: httpx.Response(status, text="nope", headers=headers))  # noqa: E731
    assert type(await poll_error(kling, ctx, {"task_id": "t"}, bare(401))) is AuthError
    limited = await poll_error(kling, ctx, {"task_id": "t"}, bare(429, {"Retry-After": "7"}))
    assert type(limited) is RateLimited and limited.retry_after == 7.0
    server = await poll_error(kling, ctx, {"task_id": "t"}, bare(502))
    assert type(server) is ProviderError and server.retryable


async def test_kling_status_mapping_and_request(kling: Callable[[httpx.AsyncClient], Provider], img: Path) -> None:
    ctx = job("klingai/kling-v2.6-i2v", img)
    ok = {"code": 0, "data": {"task_id": "t/1", "task_status": "succeed",
                              "task_result": {"videos": [{"url": "https://cdn.test/v.mp4", "duration": "5"}]}}}
    st, seen = await poll(kling, ctx, {"task_id": "t/1"}, kling_answer(200, ok))
    assert st.state == "completed" and st.video is not None and st.video.url == "https://cdn.test/v.mp4"
    assert st.video.url_expires_at is not None  # Kling's URLs expire: the runner refreshes them
    (req,) = seen
    assert req.method == "GET" and req.url.raw_path == b"/v1/videos/image2video/t%2F1"
    assert req.headers["authorization"] == "Bearer k-unit"
    pending, _ = await poll(kling, ctx, {"task_id": "t"}, kling_answer(200, {"code": 0, "data": {"task_status": "processing"}}))
    assert pending.state == "pending"
    filtered, _ = await poll(kling, ctx, {"task_id": "t"}, kling_answer(200, {"code": 0, "data": {
        "task_status": "failed", "task_status_msg": "Failure to pass the risk control system"}}))
    assert filtered.state == "failed" and isinstance(filtered.error, ContentFiltered)
    no_url, _ = await poll(kling, ctx, {"task_id": "t"}, kling_answer(200, {"code": 0, "data": {"task_status": "succeed"}}))
    assert no_url.state == "failed" and isinstance(no_url.error, ProviderError)


# -- Wan (DashScope) -----------------------------------------------------------------------------


@pytest.fixture
def wan(make_settings: SettingsFactory) -> Callable[[httpx.AsyncClient], Provider]:
    settings = make_settings(ALIBABA_API_KEY="w-unit", ALIBABA_BASE_URL="https://dash.test")
    return lambda client: WanProvider(client, settings)


@pytest.mark.parametrize(
    ("http", "code", "kind", "retryable"),
    [
        (401, "InvalidApiKey", AuthError, False),
        (429, "Throttling.RateQuota", RateLimited, True),
        (500, "InternalError", ProviderError, True),
    ],
)
async def test_wan_error_table(
    wan: Callable[[httpx.AsyncClient], Provider], img: Path, http: int, code: str, kind: type[StillmotionError], retryable: bool
) -> None:
    err = await poll_error(wan, job("alibaba/wan-v2.6-i2v", img), {"task_id": "t"},
                           lambda _r: httpx.Response(http, json={"code": code, "message": "m", "request_id": "r"}))
    assert isinstance(err, kind), (code, err)
    assert err.retryable is retryable


async def test_wan_status_mapping(wan: Callable[[httpx.AsyncClient], Provider], img: Path) -> None:
    ctx = job("alibaba/wan-v2.6-i2v", img)
    done = {"request_id": "r", "output": {"task_id": "t", "task_status": "SUCCEEDED", "video_url": "https://oss.test/v.mp4"}}
    st, seen = await poll(wan, ctx, {"task_id": "t"}, lambda _r: httpx.Response(200, json=done))
    assert st.state == "completed" and st.video is not None and st.video.url == "https://oss.test/v.mp4"
    assert seen[0].url.path == "/api/v1/tasks/t" and seen[0].headers["authorization"] == "Bearer w-unit"
    running = {"request_id": "r", "output": {"task_id": "t", "task_status": "RUNNING"}}
    assert (await poll(wan, ctx, {"task_id": "t"}, lambda _r: httpx.Response(200, json=running)))[0].state == "pending"
    garbled = await poll_error(wan, ctx, {"task_id": "t"}, lambda _r: httpx.Response(200, text="<html>"))
    assert isinstance(garbled, ProviderError) and garbled.retryable  # a garbled poll answer is polled again


# -- xAI -----------------------------------------------------------------------------------------


@pytest.fixture
def xai(make_settings: SettingsFactory) -> Callable[[httpx.AsyncClient], Provider]:
    settings = make_settings(XAI_API_KEY="x-unit", XAI_BASE_URL="https://xai.test")
    return lambda client: XaiProvider(client, settings)


async def test_xai_status_mapping(xai: Callable[[httpx.AsyncClient], Provider], img: Path) -> None:
    ctx = job("xai/grok-imagine-video", img)
    pending, seen = await poll(xai, ctx, {"request_id": "r1"}, lambda _r: httpx.Response(202, json={"progress": 40}))
    assert pending.state == "pending" and pending.progress == pytest.approx(0.4)
    assert seen[0].url.path.endswith("/videos/r1")
    done = {"status": "done", "video": {"url": "https://x.test/v.mp4", "respect_moderation": True}}
    st, _ = await poll(xai, ctx, {"request_id": "r1"}, lambda _r: httpx.Response(200, json=done))
    assert st.state == "completed" and st.video is not None and st.video.url == "https://x.test/v.mp4"
    blocked = {"status": "done", "video": {"url": "https://x.test/v.mp4", "respect_moderation": False}}
    st, _ = await poll(xai, ctx, {"request_id": "r1"}, lambda _r: httpx.Response(200, json=blocked))
    assert st.state == "failed" and isinstance(st.error, ContentFiltered)
    expired, _ = await poll(xai, ctx, {"request_id": "r1"}, lambda _r: httpx.Response(200, json={"status": "expired"}))
    assert expired.state == "failed" and isinstance(expired.error, Expired)


@pytest.mark.parametrize(
    ("http", "body", "kind"),
    [
        (401, {"error": "Incorrect API key provided"}, AuthError),
        (400, {"code": "Client specified an invalid argument", "error": "Incorrect API key provided: xa***"}, AuthError),
        (429, {"error": {"message": "Too many requests", "type": "rate_limit"}}, RateLimited),
        (403, {"error": "Your team has run out of credits"}, QuotaError),
        (503, {"error": "overloaded"}, ProviderError),
    ],
)
async def test_xai_error_table(
    xai: Callable[[httpx.AsyncClient], Provider], img: Path, http: int, body: dict[str, Any], kind: type[StillmotionError]
) -> None:
    err = await poll_error(xai, job("xai/grok-imagine-video", img), {"request_id": "r1"},
                           lambda _r: httpx.Response(http, json=body))
    assert type(err) is kind, (body, err)
    assert "x-unit" not in str(err)


# -- the one HTTP fallback (after each provider's own table) -------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [(401, AuthError, False), (403, AuthError, False), (429, RateLimited, True), (503, ProviderError, True),
     (418, ProviderError, False), (400, ProviderRejectedInput, False)],
)
def test_shared_http_fallback(status: int, kind: type[StillmotionError], retryable: bool) -> None:
    err = http_error(status, "P: m", str(status), 4.0)
    assert type(err) is kind and err.retryable is retryable and err.provider_code == str(status)
    assert err.message == "P: m"
    if kind is RateLimited or retryable:
        assert err.retry_after == 4.0


@pytest.mark.parametrize(("status", "kind", "retryable"),
                         [(401, AuthError, False), (429, RateLimited, True), (503, ProviderError, True), (418, ProviderError, False)])
async def test_every_route_falls_back_on_the_status_alone(
    kling: Callable[[httpx.AsyncClient], Provider], wan: Callable[[httpx.AsyncClient], Provider],
    xai: Callable[[httpx.AsyncClient], Provider], img: Path, status: int, kind: type[StillmotionError], retryable: bool,
) -> None:
    """An answer no provider table recognises (no code, a plain text body) reads the same on every route."""
    bare: Answer = lambda _r: httpx.Response(status, text="nope", headers={"Retry-After": "3"})  # noqa: E731
    for make, model, op in ((kling, "klingai/kling-v2.6-i2v", {"task_id": "t"}), (wan, "alibaba/wan-v2.6-i2v", {"task_id": "t"}),
                            (xai, "xai/grok-imagine-video", {"request_id": "r"})):
        err = await poll_error(make, job(model, img), op, bare)
        assert type(err) is kind and err.retryable is retryable, (model, err)
        if kind is RateLimited:
            assert err.retry_after == 3.0
    gw = map_error("nope", None, status, retry_after=3.0)
    assert type(gw) is kind and gw.retryable is retryable


# -- create_request: the one create request, shown by the dry run and sent by start() ------------


def _b64(img: Path) -> str:
    return base64.b64encode(img.read_bytes()).decode("ascii")


async def create_and_start(
    make: Callable[[httpx.AsyncClient], Provider], ctx: JobContext, answer: dict[str, Any]
) -> tuple[WireRequest, httpx.Request]:
    """(what create_request returns, what start() then sends) for one job."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=answer)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        provider = make(client)
        wire = provider.create_request(ctx)
        assert seen == []  # building the request sends nothing
        await provider.start(ctx)
    (request,) = seen
    assert_sent(request, wire)
    return wire, request


def assert_sent(request: httpx.Request, wire: WireRequest) -> None:
    assert (request.method, str(request.url)) == (wire.method, wire.url)
    assert json.loads(request.content) == wire.body
    for name, value in wire.headers.items():
        assert request.headers[name] == value, name


async def test_kling_create_request_is_what_start_sends(make_settings: SettingsFactory, img: Path) -> None:
    settings = make_settings(KLINGAI_API_KEY="k-unit", KLINGAI_BASE_URL="https://kling.test/")
    ctx = job("klingai/kling-v2.6-i2v", img)
    wire, _ = await create_and_start(lambda c: KlingProvider(c, settings), ctx, {"code": 0, "data": {"task_id": "t1"}})
    assert wire == WireRequest(
        "POST", "https://kling.test/v1/videos/image2video",
        {"Authorization": "Bearer k-unit", "Content-Type": "application/json"},
        {"model_name": "kling-v2-6", "prompt": "x", "image": _b64(img), "duration": "5",
         "external_task_id": "job_0123456789abcdef"},
    )


async def test_wan_create_request_is_what_start_sends(make_settings: SettingsFactory, img: Path) -> None:
    settings = make_settings(ALIBABA_API_KEY="w-unit", ALIBABA_BASE_URL="https://dash.test")
    ctx = job("alibaba/wan-v2.6-i2v", img)
    answer = {"output": {"task_id": "t1", "task_status": "PENDING"}}
    wire, _ = await create_and_start(lambda c: WanProvider(c, settings), ctx, answer)
    assert wire == WireRequest(
        "POST", "https://dash.test/api/v1/services/aigc/video-generation/video-synthesis",
        {"Authorization": "Bearer w-unit", "Content-Type": "application/json", "X-DashScope-Async": "enable"},
        {"model": "wan2.6-i2v", "input": {"prompt": "x", "img_url": "data:image/png;base64," + _b64(img)},
         "parameters": {"duration": 5, "resolution": "720P"}},
    )


async def test_xai_create_request_is_what_start_sends_both_paths(make_settings: SettingsFactory, img: Path) -> None:
    settings = make_settings(XAI_API_KEY="x-unit", XAI_BASE_URL="https://xai.test/v1")
    ctx = job("xai/grok-imagine-video", img)
    headers = {"Authorization": "Bearer x-unit", "Content-Type": "application/json"}
    wire, _ = await create_and_start(lambda c: XaiProvider(c, settings), ctx, {"request_id": "r1"})
    assert wire == WireRequest(
        "POST", "https://xai.test/v1/videos/generations", headers,
        {"model": "grok-imagine-video", "prompt": "x", "duration": 5, "resolution": "480p",
         "image": {"url": "data:image/png;base64," + _b64(img)}},
    )
    clip = StoredClip(path=str(img), source="https://cdn.test/src.mp4", bytes=1, sha256="-", width=64, height=48,
                      fps="24", frame_count=48, has_audio=False)
    native = JobContext("job_0123456789abcdef", ctx.request.model_copy(
        update={"tool": "extend_video", "xai": XaiOptions(native=True), "clips": [clip], "duration": 6}))
    wire, _ = await create_and_start(lambda c: XaiProvider(c, settings), native, {"request_id": "r2"})
    assert wire == WireRequest(
        "POST", "https://xai.test/v1/videos/extensions", headers,
        {"model": "grok-imagine-video", "prompt": "x", "duration": 6, "video": {"url": "https://cdn.test/src.mp4"}},
    )


async def test_gateway_create_request_is_what_start_sends(make_settings: SettingsFactory, img: Path) -> None:
    settings = make_settings(AI_GATEWAY_API_KEY="g-unit", AI_GATEWAY_BASE_URL="https://gw.test/v4/ai")
    ctx = job("klingai/kling-v2.6-i2v", img)
    ctx.request.route = "gateway"
    wire, _ = await create_and_start(lambda c: GatewayProvider(c, settings), ctx, {"operation": {"gatewayJobId": "g1"}})
    assert wire == WireRequest(
        "POST", "https://gw.test/v4/ai/video-model/start",
        {"Authorization": "Bearer g-unit", "ai-gateway-protocol-version": "0.0.1", "ai-gateway-auth-method": "api-key",
         "ai-video-model-specification-version": "4", "ai-model-id": "klingai/kling-v2.6-i2v",
         "content-type": "application/json", "idempotency-key": "stillmotion_job_0123456789abcdef"},
        {"prompt": "x", "n": 1, "duration": 5, "providerOptions": {},
         "image": {"type": "file", "mediaType": "image/png", "data": _b64(img)}},
    )


# -- each family's facts (providers/families.py) -------------------------------------------------


def test_families_cover_the_catalog_and_the_registry() -> None:
    assert {m.provider for m in MODELS.values()} <= set(FAMILIES)
    assert list(REGISTRY) == list(FAMILIES)
    assert all(REGISTRY[n].field == f.field for n, f in FAMILIES.items())
    assert {n for n, e in REGISTRY.items() if e.direct is not None} == {n for n, f in FAMILIES.items() if f.direct}


async def test_registry_hooks_audio_input_and_native_extension(make_settings: SettingsFactory, img: Path) -> None:
    wan_entry, xai_entry = REGISTRY["alibaba"], REGISTRY["xai"]
    audio = wan_entry.audio_source(WanOptions(audio_url="https://a.test/t.mp3"))
    assert audio is not None and (audio.value, audio.argument, audio.rules.max_bytes) == (
        "https://a.test/t.mp3", "wan.audio_url", 15 * 1024 * 1024)
    assert wan_entry.audio_source(WanOptions()) is None and xai_entry.audio_source(XaiOptions()) is None
    with pytest.raises(InvalidInput) as bad:
        audio.rules.check(b"not audio", audio.argument)
    assert bad.value.argument == "wan.audio_url"
    # the options that ask for a family's own extension, whichever tool argument carries them
    assert native_extension({"xai": XaiOptions(native=True)}.get) is xai_entry
    assert native_extension({"xai": XaiOptions(), "wan": WanOptions()}.get) is None and native_extension({}.get) is None
    assert xai_entry.extension is not None and xai_entry.extension.flag == "native"
    with pytest.raises(InvalidInput) as short:
        xai_entry.extension.check_source(1.0)
    assert short.value.argument == "video" and "2-15 s" in short.value.message
    xai_entry.extension.check_source(2.0)
    # its route says its answer is the whole video (nothing joined) only for extend_video with the flag
    settings = make_settings(XAI_API_KEY="x-unit")
    ctx = job("xai/grok-imagine-video", img)
    async with httpx.AsyncClient() as client:
        provider = XaiProvider(client, settings)
        assert not provider.extends_video(ctx)
        ctx.request.xai = XaiOptions(native=True)
        assert not provider.extends_video(ctx)  # animate_image: the option check refuses it before this
        ctx.request.tool = "extend_video"
        assert provider.extends_video(ctx)
        assert not WanProvider(client, make_settings(ALIBABA_API_KEY="a-unit")).extends_video(ctx)


async def test_settings_read_each_familys_variables(make_settings: SettingsFactory) -> None:
    s = make_settings(DASHSCOPE_API_KEY="d-unit", KLINGAI_ACCESS_KEY="a-unit", XAI_BASE_URL="https://x.test/v1/",
                      STILLMOTION_MAX_RUNNING_ALIBABA="3", STILLMOTION_MAX_RUNNING_GATEWAY="2")
    assert s.has_direct_key("alibaba") and s.keys["ALIBABA_API_KEY"].reveal() == "d-unit"
    assert not s.has_direct_key("klingai")  # the access key alone is not enough
    assert not s.has_direct_key("xai") and not s.has_direct_key("google") and s.gateway_api_key is None
    assert s.base_urls["xai"] == "https://x.test/v1" and s.base_urls["klingai"] == "https://api-singapore.klingai.com"
    assert s.max_running == {"alibaba": 3, "gateway": 2}
    jwt_settings = make_settings(KLINGAI_ACCESS_KEY="a-unit", KLINGAI_SECRET_KEY="s-unit-0123456789abcdef0123456789abcdef")
    assert jwt_settings.has_direct_key("klingai")
    async with httpx.AsyncClient() as client:
        token = KlingProvider(client, jwt_settings)._headers()["Authorization"].removeprefix("Bearer ")
        claims = jwt.decode(token, "s-unit-0123456789abcdef0123456789abcdef", algorithms=["HS256"])
        assert claims["iss"] == "a-unit"
        with pytest.raises(MissingCredentials, match=r"Alibaba Wan needs ALIBABA_API_KEY \(or DASHSCOPE_API_KEY\)"):
            WanProvider(client, jwt_settings).create_request(job("alibaba/wan-v2.6-i2v", Path(__file__)))
