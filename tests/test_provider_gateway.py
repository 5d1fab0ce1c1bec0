"""Vercel AI Gateway route against the strict fake Gateway: exact headers and bodies for each provider,
both flows (start/status and the SSE fallback), routing, error mapping, lost answers and kill -9."""

from __future__ import annotations

import base64
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from stillmotion.errors import (
    AuthError,
    ContentFiltered,
    ProviderError,
    ProviderRejectedInput,
    QuotaError,
    RateLimited,
    StillmotionError,
)
from stillmotion.jobs.store import SqliteStore
from stillmotion.media.video import probe_video
from stillmotion.plan.requests import GenerationRequest, StoredImage
from stillmotion.providers.base import JobContext
from stillmotion.providers.gateway import GatewayProvider, map_error
from tests.conftest import SettingsFactory, connect, error_text, structured, until, wait_done, write_image
from tests.fakes import BlobFake, GatewayFake, KlingFake
from tests.fakes.base import Recorded
from tests.stdio_client import StdioServer

pytestmark = pytest.mark.anyio

KEY = "gw-test-key"
SSE = "/v4/ai/video-model"
START = "/v4/ai/video-model/start"
STATUS = "/v4/ai/video-model/status"


@pytest.fixture
def fake() -> Iterator[GatewayFake]:
    with GatewayFake(api_key=KEY) as f:
        yield f


@pytest.fixture
def sse_fake() -> Iterator[GatewayFake]:
    with GatewayFake(api_key=KEY, start_status_supported=False) as f:
        f.heartbeats = 3
        f.heartbeat_interval_s = 0.02
        yield f


BLOB_ENV: dict[str, str] = {}


@pytest.fixture(autouse=True)
def blob() -> Iterator[BlobFake]:
    """Wan through the Gateway takes image URLs only: local images go through this fake Blob store."""
    with BlobFake() as b:
        BLOB_ENV.update({"BLOB_READ_WRITE_TOKEN": b.token, "VERCEL_BLOB_API_URL": b.base_url})
        yield b
        BLOB_ENV.clear()
        b.assert_clean()


def env_for(fake: GatewayFake, **extra: str) -> dict[str, str]:
    return {"AI_GATEWAY_API_KEY": KEY, "AI_GATEWAY_BASE_URL": fake.base_url + "/v4/ai", **BLOB_ENV, **extra}


@pytest.fixture
def img(tmp_path: Path) -> Path:
    return write_image(tmp_path / "in" / "photo.png", 640, 480, seed=5)


def headers(model_id: str, *, stream: bool = False, key: str | None = None) -> dict[str, str]:
    h = {
        "authorization": f"Bearer {KEY}",
        "ai-gateway-protocol-version": "0.0.1",
        "ai-gateway-auth-method": "api-key",
        "ai-video-model-specification-version": "4",
        "ai-model-id": model_id,
        "content-type": "application/json",
    }
    if stream:
        h["accept"] = "text/event-stream"
    if key is not None:
        h["idempotency-key"] = key
    return h


def assert_headers(call: Recorded, want: dict[str, str]) -> None:
    got = {k: call.headers.get(k) for k in want}
    assert got == want
    if "accept" not in want:
        assert call.headers.get("accept") != "text/event-stream"
    if "idempotency-key" not in want:
        assert "idempotency-key" not in call.headers


def decoded(body: dict[str, Any]) -> dict[str, Any]:
    """The body with every base64 image (image.data, imageTail, masks) decoded to bytes."""
    out = copy.deepcopy(body)

    def dec(s: Any) -> Any:
        return s if not isinstance(s, str) or s.startswith("http") else base64.b64decode(s, validate=True)

    if out.get("image", {}).get("type") == "file":
        out["image"]["data"] = dec(out["image"]["data"])
    kl = out.get("providerOptions", {}).get("klingai", {})
    for k in ("imageTail", "staticMask"):
        if k in kl:
            kl[k] = dec(kl[k])
    for m in kl.get("dynamicMasks", []):
        m["mask"] = dec(m["mask"])
    return out


def sse_calls(f: GatewayFake) -> list[Recorded]:
    return [c for c in f.calls("POST") if c.path == SSE]


def file_of(path: Path, media: str = "image/png") -> dict[str, Any]:
    return {"type": "file", "mediaType": media, "data": path.read_bytes()}


async def run_job(
    env: dict[str, str], make_settings: SettingsFactory, tool: str, args: dict[str, Any], blob: BlobFake | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One job to its end; with `blob`, also until the janitor (it runs beside the job's end, not
    before it) has deleted every upload, while the server still runs."""
    async with connect(make_settings(**env)) as client:
        job = structured(await client.call_tool(tool, args))
        done = await wait_done(client, job["job_id"])
        if blob is not None:
            await until(lambda: not blob.stored and blob.deleted)
    return job, done


def assert_video(done: dict[str, Any]) -> None:
    assert done["status"] == "succeeded", done
    info = probe_video(Path(done["video"]["path"]))
    assert info.frame_count > 0 and info.width == 320


# -- exact wire format ---------------------------------------------------------------------------


async def test_kling_v26_headers_body_and_status_flow(fake: GatewayFake, make_settings: SettingsFactory, img: Path) -> None:
    args = {
        "model": "klingai/kling-v2.6-i2v",
        "image": str(img),
        "prompt": "The person<<<voice_1>>> says hello",
        "negative_prompt": "blurry, low quality",
        "duration": 10,
        "kling": {"mode": "pro", "sound": "on", "voices": ["voice-abc"], "watermark": False},
    }
    job, done = await run_job(env_for(fake), make_settings, "animate_image", args)
    assert_video(done)
    assert done["route"] == "gateway" and done["model"] == "klingai/kling-v2.6-i2v"
    (start,) = fake.calls("POST", START)
    assert_headers(start, headers("klingai/kling-v2.6-i2v", key=f"stillmotion_{job['job_id']}"))
    assert decoded(start.obj) == {
        "prompt": "The person<<<voice_1>>> says hello",
        "n": 1,
        "duration": 10,
        "providerOptions": {
            "klingai": {
                "mode": "pro",
                "negativePrompt": "blurry, low quality",
                "sound": "on",
                "voiceList": [{"voice_id": "voice-abc", "voiceId": "voice-abc"}],
                "watermarkEnabled": False,
            }
        },
        "image": file_of(img),
    }
    polls = fake.calls("POST", STATUS)
    assert len(polls) == 2
    for p in polls:
        assert_headers(p, headers("klingai/kling-v2.6-i2v"))
        assert p.obj == {"operation": {"gatewayJobId": "job_1"}}
    assert sse_calls(fake) == [] and fake.streams == 0
    assert done["provider_task_id"] == "job_1"
    assert done["video"]["provider_url"].startswith(fake.base_url + "/files/")
    fake.assert_clean()


async def test_kling_first_last_frame_image_tail(
    fake: GatewayFake, make_settings: SettingsFactory, img: Path, tmp_path: Path
) -> None:
    url = fake.add_file("start.png", await anyio.Path(img).read_bytes(), "image/png")
    end = write_image(tmp_path / "end.jpg", 640, 480, seed=9, fmt="JPEG")
    args = {
        "model": "klingai/kling-v2.6-i2v",
        "start_image": url,
        "end_image": str(end),
        "prompt": "day turns to night",
        "kling": {"mode": "pro"},
    }
    _, done = await run_job(
        env_for(fake, STILLMOTION_ALLOW_PRIVATE_NETWORK="1"), make_settings, "interpolate_frames", args
    )
    assert_video(done)
    (start,) = fake.calls("POST", START)
    assert_headers(start, headers("klingai/kling-v2.6-i2v", key=f"stillmotion_{done['job_id']}"))
    assert decoded(start.obj) == {
        "prompt": "day turns to night",
        "n": 1,
        "duration": 5,
        "providerOptions": {"klingai": {"mode": "pro", "imageTail": end.read_bytes()}},
        "image": {"type": "url", "url": url},
    }
    fake.assert_clean()


async def test_wan_flash_audio_body_and_base64_result(
    fake: GatewayFake, make_settings: SettingsFactory, img: Path, blob: BlobFake
) -> None:
    fake.result_as_base64 = True
    args = {
        "model": "alibaba/wan-v2.6-i2v-flash",
        "image": str(img),
        "prompt": "The cat waves hello",
        "negative_prompt": "text overlays",
        "duration": 7,
        "wan": {"audio": True, "resolution": "1080P", "prompt_extend": False, "seed": 42, "watermark": True},
    }
    job, done = await run_job(env_for(fake), make_settings, "animate_image", args, blob)
    assert_video(done)
    assert done["video"]["provider_url"] is None
    assert await anyio.Path(done["video"]["path"]).read_bytes() == fake.result_bytes()
    (start,) = fake.calls("POST", START)
    assert_headers(start, headers("alibaba/wan-v2.6-i2v-flash", key=f"stillmotion_{job['job_id']}"))
    assert decoded(start.obj) == {
        "prompt": "The cat waves hello",
        "n": 1,
        "duration": 7,
        "seed": 42,
        "resolution": "1920x1080",
        "providerOptions": {
            "alibaba": {"negativePrompt": "text overlays", "audio": True, "promptExtend": False, "watermark": True}
        },
        "image": {"type": "url", "url": blob.deleted[0]},  # hosted on Vercel Blob, deleted after the job
    }
    assert len(blob.calls("PUT")) == 1 and blob.stored == {}
    assert blob.calls("PUT")[0].body == await anyio.Path(img).read_bytes()
    fake.assert_clean()


async def test_xai_spacexai_model_id_and_aspect_ratio(fake: GatewayFake, make_settings: SettingsFactory, img: Path) -> None:
    async with connect(make_settings(**env_for(fake))) as client:
        a = structured(
            await client.call_tool(
                "animate_image",
                {
                    "model": "spacexai/grok-imagine-video",
                    "image": str(img),
                    "prompt": "The cat slowly turns its head",
                    "negative_prompt": "blur",
                    "duration": 6,
                    "xai": {"resolution": "720p", "aspect_ratio": "16:9"},
                },
            )
        )
        b = structured(
            await client.call_tool(
                "animate_image", {"model": "xai/grok-imagine-video", "image": str(img), "prompt": "The cat blinks"}
            )
        )
        done_a = await wait_done(client, a["job_id"])
        done_b = await wait_done(client, b["job_id"])
    for done in (done_a, done_b):
        assert_video(done)
        assert done["model"] == "xai/grok-imagine-video" and done["route"] == "gateway"
    assert any("stretches" in w for w in done_a["warnings"])
    assert any("negative_prompt is ignored" in w for w in done_a["warnings"])
    starts = {c.header("idempotency-key"): c for c in fake.calls("POST", START)}
    sa, sb = starts[f"stillmotion_{a['job_id']}"], starts[f"stillmotion_{b['job_id']}"]
    assert_headers(sa, headers("spacexai/grok-imagine-video", key=f"stillmotion_{a['job_id']}"))
    assert decoded(sa.obj) == {
        "prompt": "The cat slowly turns its head",
        "n": 1,
        "duration": 6,
        "aspectRatio": "16:9",
        "providerOptions": {"xai": {"resolution": "720p"}},
        "image": file_of(img),
    }
    assert decoded(sb.obj) == {
        "prompt": "The cat blinks",
        "n": 1,
        "duration": 5,
        "providerOptions": {"xai": {"resolution": "480p"}},
        "image": file_of(img),
    }
    assert all(c.header("ai-model-id") == "spacexai/grok-imagine-video" for c in fake.api_calls())
    fake.assert_clean()


async def test_camera_and_motion_brush_options_when_not_strict(
    fake: GatewayFake, make_settings: SettingsFactory, img: Path
) -> None:
    fake.enforce_capabilities = False
    env = env_for(fake, STILLMOTION_STRICT_CAPABILITIES="0")
    async with connect(make_settings(**env)) as client:
        cam = structured(
            await client.call_tool(
                "camera_move",
                {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "pan",
                 "camera": {"type": "simple", "config": {"pan": 3}}, "kling": {"mode": "pro"}},
            )
        )  # fmt: skip
        brush = structured(
            await client.call_tool(
                "motion_brush",
                {
                    "model": "klingai/kling-v2.6-i2v",
                    "image": str(img),
                    "prompt": "the ball rolls",
                    "dynamic_masks": [
                        {"mask": {"box": [100, 100, 200, 200]},
                         "trajectory": [{"x": 150, "y": 150}, {"x": 250.4, "y": 180.6}]}
                    ],
                    "static_mask": {"polygon": [[0, 0], [640, 0], [640, 60], [0, 60]]},
                },
            )
        )  # fmt: skip
        for j in (cam, brush):
            assert_video(await wait_done(client, j["job_id"]))
    bodies = {c.header("idempotency-key"): decoded(c.obj) for c in fake.calls("POST", START)}
    axes = {"horizontal": 0.0, "vertical": 0.0, "pan": 3.0, "tilt": 0.0, "roll": 0.0, "zoom": 0.0}
    assert bodies[f"stillmotion_{cam['job_id']}"]["providerOptions"] == {
        "klingai": {"mode": "pro", "cameraControl": {"type": "simple", "config": axes}}
    }
    b = bodies[f"stillmotion_{brush['job_id']}"]
    opts = b["providerOptions"]["klingai"]
    assert set(opts) == {"mode", "staticMask", "dynamicMasks"} and opts["mode"] == "std"
    (dm,) = opts["dynamicMasks"]
    assert dm["trajectories"] == [{"x": 150, "y": 150}, {"x": 250, "y": 181}]
    assert dm["mask"][:8] == b"\x89PNG\r\n\x1a\n" and opts["staticMask"][:8] == b"\x89PNG\r\n\x1a\n"
    fake.assert_clean()


# -- routing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["auto", "gateway"])
async def test_model_the_gateway_cannot_serve_is_a_tool_error(
    fake: GatewayFake, make_settings: SettingsFactory, img: Path, route: str
) -> None:
    async with connect(make_settings(**env_for(fake, STILLMOTION_ROUTE=route))) as client:
        text = error_text(
            await client.call_tool(
                "camera_move",
                {"model": "klingai/kling-v1.5-i2v", "image": str(img), "prompt": "zoom",
                 "camera": {"type": "simple", "config": {"zoom": 4}}, "kling": {"mode": "pro"}},
            )
        )  # fmt: skip
    assert "not served by the Vercel AI Gateway" in text
    assert "direct" in text and "KLINGAI_API_KEY" in text
    assert fake.requests == []


async def test_auto_route_gateway_for_all_then_kling_direct_with_its_key(
    fake: GatewayFake, make_settings: SettingsFactory, img: Path
) -> None:
    models = ["klingai/kling-v3.0-i2v", "alibaba/wan-v2.6-i2v", "xai/grok-imagine-video"]
    async with connect(make_settings(**env_for(fake))) as client:
        jobs = [structured(await client.call_tool("animate_image", {"model": m, "image": str(img), "prompt": "go"})) for m in models]
        assert [j["route"] for j in jobs] == ["gateway"] * 3
        for j in jobs:
            assert_video(await wait_done(client, j["job_id"]))
    assert sorted(str(c.header("ai-model-id")) for c in fake.calls("POST", START)) == sorted(
        ["klingai/kling-v3.0-i2v", "alibaba/wan-v2.6-i2v", "spacexai/grok-imagine-video"]
    )
    fake.clear()
    with KlingFake(api_key="kling-key") as kf:
        env = env_for(fake, KLINGAI_API_KEY="kling-key", KLINGAI_BASE_URL=kf.base_url)
        async with connect(make_settings(**env)) as client:
            k = structured(await client.call_tool("animate_image", {"model": models[0], "image": str(img), "prompt": "go"}))
            w = structured(await client.call_tool("animate_image", {"model": models[1], "image": str(img), "prompt": "go"}))
            assert (k["route"], w["route"]) == ("direct", "gateway")
            assert_video(await wait_done(client, k["job_id"]))
            assert_video(await wait_done(client, w["job_id"]))
        assert len(kf.calls("POST", "/v1/videos/image2video")) == 1
        kf.assert_clean()
    assert {c.header("ai-model-id") for c in fake.api_calls()} == {"alibaba/wan-v2.6-i2v"}
    (wan_start,) = fake.calls("POST", START)
    assert wan_start.obj["providerOptions"] == {}  # plain Wan: no audio option; resolution is top-level
    assert wan_start.obj["resolution"] == "1280x720"
    fake.assert_clean()


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("etype", "message", "status", "cls", "retryable"),
    [
        ("authentication_error", "Invalid API key", 401, AuthError, False),
        ("forbidden", "Video models need a paid plan", 403, AuthError, False),
        ("invalid_request_error", "duration must be 5 or 10", 400, ProviderRejectedInput, False),
        ("invalid_request_error", "Prompt rejected by content moderation", 400, ContentFiltered, False),
        ("rate_limit_exceeded", "Too many requests", 429, RateLimited, True),
        ("rate_limit_exceeded", "Insufficient credits: top up your balance", 429, QuotaError, False),
        ("model_not_found", "Model x not found", 404, ProviderError, False),
        ("not_found", "Not Found", 404, ProviderError, False),
        ("internal_server_error", "boom", 500, ProviderError, True),
        ("failed_dependency", "Upstream provider error", 424, ProviderError, True),
        (None, "Bad Gateway", 502, ProviderError, True),
    ],
)
def test_error_types_map_to_kinds(
    etype: str | None, message: str, status: int, cls: type[StillmotionError], retryable: bool
) -> None:
    err = map_error(message, etype, status, retry_after=1.5)
    assert type(err) is cls and err.retryable is retryable
    assert message in err.message and err.provider_code == (etype or str(status))
    if cls is RateLimited:
        assert err.retry_after == 1.5


async def test_gateway_warnings_become_job_warnings(make_settings: SettingsFactory, img: Path) -> None:
    answer = {
        "operation": {"gatewayJobId": "job_9"},
        "warnings": [
            {"type": "unsupported", "feature": "aspectRatio", "details": "KlingAI image-to-video does not support it."},
            {"type": "other", "message": "queued"},
        ],
    }
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=answer)

    data = await anyio.Path(img).read_bytes()
    image = StoredImage(path=str(img), mime="image/png", width=640, height=480, bytes=len(data), sha256="-")
    req = GenerationRequest(
        tool="animate_image", model="klingai/kling-v2.6-i2v", route="gateway", prompt="x", duration=5, image=image
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        started = await GatewayProvider(client, make_settings(AI_GATEWAY_API_KEY=KEY)).start(JobContext("job_12345678", req))
    assert started.warnings == [
        "Vercel AI Gateway: aspectRatio is not supported: KlingAI image-to-video does not support it.",
        "Vercel AI Gateway: queued",
    ]
    assert started.operation == {"flow": "start", "operation": {"gatewayJobId": "job_9"}}
    assert started.provider_task_id == "job_9" and started.completed is None
    (request,) = seen
    assert str(request.url) == "https://ai-gateway.vercel.sh/v4/ai/video-model/start"
    assert request.headers["idempotency-key"] == "stillmotion_job_12345678"


async def test_wrong_key_is_auth_and_never_echoed(make_settings: SettingsFactory, img: Path) -> None:
    with GatewayFake(api_key="the-right-key") as f:
        _, done = await run_job(
            env_for(f, AI_GATEWAY_API_KEY="a-wrong-key"), make_settings, "animate_image",
            {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "x"},
        )  # fmt: skip
        assert len(f.calls("POST", START)) == 1
    assert done["status"] == "failed" and done["error"]["kind"] == "auth"
    assert done["error"]["provider_code"] == "authentication_error"
    assert "a-wrong-key" not in str(done)


async def test_rate_limit_retried_quota_not(fake: GatewayFake, make_settings: SettingsFactory, img: Path) -> None:
    args = {"model": "alibaba/wan-v2.6-i2v", "image": str(img), "prompt": "x"}
    fake.inject_error("rate_limit_exceeded", headers={"Retry-After": "0"}, times=2)
    _, done = await run_job(env_for(fake), make_settings, "animate_image", args)
    assert_video(done)
    assert len(fake.calls("POST", START)) == 3 and fake.starts == 1
    fake.clear()
    fake.inject_error("rate_limit_exceeded", message="Insufficient credits. Add funds to continue.")
    _, done = await run_job(env_for(fake), make_settings, "animate_image", {**args, "prompt": "y"})
    assert done["status"] == "failed" and done["error"]["kind"] == "quota"
    assert len(fake.calls("POST", START)) == 1


async def test_status_errors(fake: GatewayFake, make_settings: SettingsFactory, img: Path) -> None:
    args = {"model": "klingai/kling-v2.5-turbo-i2v", "image": str(img), "prompt": "x"}
    fake.script_outcome("failed", "Kling task failed: image too dark", code="failed_dependency")
    fake.script_outcome("failed", "Failed content policy check", code="invalid_request_error")
    fake.script_outcome("cancelled")
    fake.inject_error("internal_server_error", match=f"POST {STATUS}")  # one transient 500, retried
    async with connect(make_settings(**env_for(fake))) as client:
        done = []
        for p in ("a", "b", "c"):  # one at a time: scripted outcomes go to tasks in creation order
            job = structured(await client.call_tool("animate_image", {**args, "prompt": p}))
            done.append(await wait_done(client, job["job_id"]))
    assert [d["status"] for d in done] == ["failed"] * 3
    assert done[0]["error"]["kind"] == "provider_error"
    assert "Kling task failed: image too dark" in done[0]["error"]["message"]
    assert done[1]["error"]["kind"] == "content_filtered"
    assert done[2]["error"]["kind"] == "provider_error" and "cancelled" in done[2]["error"]["message"]
    assert fake.starts == 3 and fake.streams == 0


async def test_model_not_found_is_not_mistaken_for_missing_start(
    fake: GatewayFake, make_settings: SettingsFactory, img: Path
) -> None:
    del fake.model_ids["klingai/kling-v3.0-i2v"]
    _, done = await run_job(
        env_for(fake), make_settings, "animate_image", {"model": "klingai/kling-v3.0-i2v", "image": str(img), "prompt": "x"}
    )
    assert done["status"] == "failed" and done["error"]["provider_code"] == "model_not_found"
    assert fake.streams == 0 and len(fake.calls("POST", START)) == 1
    fake.clear()  # the fake flags the unknown id as a violation on purpose


# -- lost answers and restarts -------------------------------------------------------------------


async def test_lost_start_answer_recovered_by_idempotency_key(
    fake: GatewayFake, make_settings: SettingsFactory, img: Path
) -> None:
    fake.inject_drop(f"POST {START}$", after_effect=True)
    job, done = await run_job(
        env_for(fake), make_settings, "animate_image", {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "x"}
    )
    assert_video(done)
    starts = fake.calls("POST", START)
    assert len(starts) == 2 and fake.starts == 1 and len(fake.tasks) == 1
    assert {s.header("idempotency-key") for s in starts} == {f"stillmotion_{job['job_id']}"}
    assert starts[0].body == starts[1].body
    fake.assert_clean()


async def test_recovery_start_retried_after_5xx(fake: GatewayFake, make_settings: SettingsFactory, img: Path) -> None:
    fake.inject_drop(f"POST {START}$", after_effect=True)
    fake.inject_error("internal_server_error", match=f"POST {START}$")
    job, done = await run_job(
        env_for(fake), make_settings, "animate_image", {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "x"}
    )
    assert_video(done)
    assert len(fake.calls("POST", START)) == 3 and fake.starts == 1
    assert {s.header("idempotency-key") for s in fake.calls("POST", START)} == {f"stillmotion_{job['job_id']}"}


def _stdio(home: Path, fake: GatewayFake) -> StdioServer:
    srv = StdioServer({"STILLMOTION_HOME": str(home), "STILLMOTION_POLL_INTERVAL_MS": "50", **env_for(fake)})
    srv.initialize()
    return srv


@pytest.mark.parametrize("when", ["during_start", "while_polling"])
def test_kill9_then_restart_resumes_same_operation(
    fake: GatewayFake, home: Path, img: Path, make_settings: SettingsFactory, when: str
) -> None:
    if when == "during_start":
        fake.inject_hang(f"POST {START}$", seconds=30)  # the job is created, the answer never arrives
    else:
        fake.polls_until_done = None  # held until release()
    srv = _stdio(home, fake)
    try:
        res = srv.call_tool("animate_image", {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "x"})
        job_id = res["result"]["structuredContent"]["job_id"]
        fake.wait_for_calls(1, "POST", START if when == "during_start" else STATUS, timeout=20)
    finally:
        srv.kill()
    assert fake.starts == 1
    fake.release()

    async def finish() -> dict[str, Any]:
        async with connect(make_settings(**env_for(fake))) as client:
            return await wait_done(client, job_id)

    done = anyio.run(finish)
    assert_video(done)
    assert fake.starts == 1 and len(fake.tasks) == 1
    assert len(fake.calls("POST", START)) == (2 if when == "during_start" else 1)
    assert {c.header("idempotency-key") for c in fake.calls("POST", START)} == {f"stillmotion_{job_id}"}
    assert all(c.obj == {"operation": {"gatewayJobId": "job_1"}} for c in fake.calls("POST", STATUS))
    fake.assert_clean()


# -- flow A: the SSE fallback --------------------------------------------------------------------


@pytest.mark.parametrize("as_base64", [False, True])
async def test_sse_fallback_succeeds_with_warning(
    sse_fake: GatewayFake, make_settings: SettingsFactory, img: Path, as_base64: bool
) -> None:
    sse_fake.result_as_base64 = as_base64
    _, done = await run_job(
        env_for(sse_fake), make_settings, "animate_image",
        {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "x", "kling": {"mode": "pro"}},
    )  # fmt: skip
    assert_video(done)
    assert any("cannot be resumed" in w for w in done["warnings"])
    (start,) = sse_fake.calls("POST", START)
    (stream,) = sse_calls(sse_fake)
    assert_headers(stream, headers("klingai/kling-v2.6-i2v", stream=True))
    assert stream.body == start.body
    assert decoded(stream.obj) == {
        "prompt": "x", "n": 1, "duration": 5, "providerOptions": {"klingai": {"mode": "pro"}}, "image": file_of(img),
    }  # fmt: skip
    assert sse_fake.streams == 1 and sse_fake.starts == 0
    assert (done["video"]["provider_url"] is None) is as_base64
    sse_fake.assert_clean()


async def test_sse_error_events_map_and_rate_limit_retries(
    sse_fake: GatewayFake, make_settings: SettingsFactory, img: Path
) -> None:
    args = {"model": "alibaba/wan-v2.6-i2v", "image": str(img)}
    sse_fake.script_outcome("failed", "Image rejected by the safety system", code="invalid_request_error")
    sse_fake.script_outcome("failed", "duration 7 is not available", code="invalid_request_error")
    sse_fake.script_outcome("failed", "Rate limit exceeded", code="rate_limit_exceeded")
    async with connect(make_settings(**env_for(sse_fake))) as client:
        a = await wait_done(client, structured(await client.call_tool("animate_image", {**args, "prompt": "a"}))["job_id"])
        b = await wait_done(client, structured(await client.call_tool("animate_image", {**args, "prompt": "b"}))["job_id"])
        c = await wait_done(client, structured(await client.call_tool("animate_image", {**args, "prompt": "c"}))["job_id"])
    assert a["error"]["kind"] == "content_filtered" and "safety system" in a["error"]["message"]
    assert b["error"]["kind"] == "invalid_input" and b["error"]["provider_code"] == "invalid_request_error"
    assert_video(c)  # the rate-limited stream is retried once
    assert sse_fake.streams == 4


async def test_sse_stream_cut_is_interrupted_never_resubmitted(
    sse_fake: GatewayFake, make_settings: SettingsFactory, img: Path
) -> None:
    sse_fake.cut_stream()
    _, done = await run_job(
        env_for(sse_fake), make_settings, "animate_image", {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "x"}
    )
    assert done["status"] == "failed" and done["error"]["kind"] == "interrupted"
    assert sse_fake.streams == 1


async def test_sse_job_found_polling_after_restart_is_interrupted(
    sse_fake: GatewayFake, make_settings: SettingsFactory, img: Path
) -> None:
    env = env_for(sse_fake)
    job, done = await run_job(env, make_settings, "animate_image", {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "x"})
    assert_video(done)
    settings = make_settings(**env)
    store = SqliteStore(settings.db_path)
    try:  # as if the server died right after the stream's result was stored
        store.update(job["job_id"], status="running", stage="polling", operation={"flow": "sse"}, result=None)
    finally:
        store.close()
    sse_fake.clear()
    async with connect(settings) as client:
        again = await wait_done(client, job["job_id"])
    assert again["status"] == "failed" and again["error"]["kind"] == "interrupted"
    assert "streamed" in again["error"]["message"]
    assert sse_fake.api_calls() == [] and sse_fake.streams == 1


def test_kill9_mid_stream_then_restart_is_interrupted(
    sse_fake: GatewayFake, home: Path, img: Path, make_settings: SettingsFactory
) -> None:
    sse_fake.polls_until_done = None  # the stream heartbeats until release()
    srv = _stdio(home, sse_fake)
    try:
        res = srv.call_tool("animate_image", {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "x"})
        job_id = res["result"]["structuredContent"]["job_id"]
        sse_fake.wait_for_calls(2, "POST", SSE, timeout=20)  # the 404 start, then the stream
    finally:
        srv.kill()

    async def finish() -> dict[str, Any]:
        async with connect(make_settings(**env_for(sse_fake))) as client:
            return await wait_done(client, job_id)

    done = anyio.run(finish)
    assert done["status"] == "failed" and done["error"]["kind"] == "interrupted"
    assert "not resubmitted" in done["error"]["message"]
    assert sse_fake.streams == 1
