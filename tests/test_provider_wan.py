"""Alibaba Wan direct (DashScope) against the strict fake: exact wire bodies, headers, task statuses,
request-level errors, a lost create answer (never resubmitted), and an end-to-end stdio run."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from stillmotion.media.video import probe_video
from tests.conftest import SettingsFactory, connect, error_text, structured, wait_done, write_image
from tests.fakes import WanFake
from tests.fakes.base import Recorded, parse_data_uri
from tests.stdio_client import StdioServer

pytestmark = pytest.mark.anyio
CREATE = "/api/v1/services/aigc/video-generation/video-synthesis"
TASKS = "/api/v1/tasks/"
KEY = "sk-wan-test-0123456789"
WAN = "alibaba/wan-v2.6-i2v"
FLASH = "alibaba/wan-v2.6-i2v-flash"


@pytest.fixture
def fake() -> Iterator[WanFake]:
    with WanFake(api_key=KEY) as f:
        yield f
        assert f.violations == []


@pytest.fixture
def env(fake: WanFake) -> dict[str, str]:
    return {"ALIBABA_API_KEY": KEY, "ALIBABA_BASE_URL": fake.base_url}


@pytest.fixture
def img(tmp_path: Path) -> Path:
    return write_image(tmp_path / "in" / "photo.png", 640, 480, seed=7)


def creates(fake: WanFake) -> list[Recorded]:
    return fake.calls("POST", CREATE)


def polls(fake: WanFake) -> list[Recorded]:
    return fake.calls("GET", TASKS)


def decoded(body: Any) -> Any:
    """The body with its data: URI replaced by (mime, raw bytes), so images compare by content."""
    out = dict(body)
    inp = dict(out["input"])
    if isinstance(inp.get("img_url"), str) and inp["img_url"].startswith("data:"):
        parsed = parse_data_uri(inp["img_url"])
        assert parsed is not None, "img_url is not a valid base64 data: URI"
        inp["img_url"] = parsed
    out["input"] = inp
    return out


async def run_job(settings: Any, args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    async with connect(settings) as client:
        job = structured(await client.call_tool("animate_image", args))
        done = await wait_done(client, job["job_id"])
    return job, done


# -- wire bodies -------------------------------------------------------------------------------


async def test_local_file_defaults_exact_body_and_headers(
    fake: WanFake, env: dict[str, str], make_settings: SettingsFactory, img: Path
) -> None:
    _, done = await run_job(
        make_settings(**env), {"model": WAN, "image": str(img), "prompt": "the leaves rustle"}
    )
    assert done["status"] == "succeeded", done
    assert done["route"] == "direct" and done["provider_task_id"] == fake.last_task().id
    (create,) = creates(fake)
    assert decoded(create.json) == {
        "model": "wan2.6-i2v",
        "input": {"prompt": "the leaves rustle", "img_url": ("image/png", await anyio.Path(img).read_bytes())},
        "parameters": {"resolution": "720P", "duration": 5},
    }
    assert create.header("authorization") == f"Bearer {KEY}"
    assert create.header("x-dashscope-async") == "enable"
    assert create.header("content-type") == "application/json"
    task_polls = polls(fake)
    assert len(task_polls) == 2
    for p in task_polls:
        assert p.path == TASKS + done["provider_task_id"]
        assert p.header("authorization") == f"Bearer {KEY}"
    video = done["video"]
    assert probe_video(Path(video["path"])).frame_count > 0
    assert video["provider_url"].startswith(fake.base_url + "/files/")
    assert abs(video["provider_url_expires_at"] - (time.time() + 24 * 3600)) < 120
    assert KEY not in str(done)


async def test_url_input_passed_through_with_every_option(
    fake: WanFake, env: dict[str, str], make_settings: SettingsFactory, img: Path
) -> None:
    url = fake.add_file("still.png", await anyio.Path(img).read_bytes(), "image/png")
    settings = make_settings(STILLMOTION_ALLOW_PRIVATE_NETWORK="1", **env)
    args = {
        "model": WAN,
        "image": url,
        "prompt": "a slow pan across the harbour",
        "negative_prompt": "blurry, extra fingers",
        "duration": 10,
        "wan": {"resolution": "1080P", "prompt_extend": False, "seed": 12345, "watermark": True},
    }
    _, done = await run_job(settings, args)
    assert done["status"] == "succeeded", done
    (create,) = creates(fake)
    assert create.json == {
        "model": "wan2.6-i2v",
        "input": {
            "prompt": "a slow pan across the harbour",
            "img_url": url,
            "negative_prompt": "blurry, extra fingers",
        },
        "parameters": {
            "resolution": "1080P",
            "duration": 10,
            "prompt_extend": False,
            "seed": 12345,
            "watermark": True,
        },
    }
    assert len(fake.calls("GET", "/files/still.png")) >= 1  # our server fetched it to check it


@pytest.mark.parametrize(
    ("wan", "audio"), [(None, False), ({"audio": True}, True), ({"audio": False}, False)]
)
async def test_flash_always_sends_audio(
    fake: WanFake,
    env: dict[str, str],
    make_settings: SettingsFactory,
    img: Path,
    wan: dict[str, Any] | None,
    audio: bool,
) -> None:
    args: dict[str, Any] = {"model": FLASH, "image": str(img), "prompt": "she sings", "duration": 3}
    if wan is not None:
        args["wan"] = wan
    _, done = await run_job(make_settings(**env), args)
    assert done["status"] == "succeeded", done
    (create,) = creates(fake)
    assert decoded(create.json) == {
        "model": "wan2.6-i2v-flash",
        "input": {"prompt": "she sings", "img_url": ("image/png", await anyio.Path(img).read_bytes())},
        "parameters": {"resolution": "720P", "duration": 3, "audio": audio},
    }


async def test_non_flash_model_refuses_audio_before_any_request(
    fake: WanFake, env: dict[str, str], make_settings: SettingsFactory, img: Path
) -> None:
    async with connect(make_settings(**env)) as client:
        text = error_text(
            await client.call_tool(
                "animate_image", {"model": WAN, "image": str(img), "prompt": "x", "wan": {"audio": True}}
            )
        )
    assert "wan.audio" in text and FLASH in text
    assert fake.api_calls() == []


# -- task statuses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "code", "message", "kind", "needle"),
    [
        ("failed", "DataInspectionFailed", "Output data may contain inappropriate content.", "content_filtered",
         "Output data may contain inappropriate content."),
        ("failed", "IPInfringementSuspect", None, "content_filtered", "IP infringement"),
        ("failed", "InvalidParameter", "The size is not match xxxxxx", "provider_error", "The size is not match"),
        ("canceled", None, None, "provider_error", "canceled"),
        ("unknown", None, None, "expired", "24 hours"),
    ],
)  # fmt: skip
async def test_task_endings(
    fake: WanFake, env: dict[str, str], make_settings: SettingsFactory, img: Path,
    outcome: str, code: str | None, message: str | None, kind: str, needle: str,
) -> None:  # fmt: skip
    fake.script_outcome(outcome, message, code=code)
    _, done = await run_job(make_settings(**env), {"model": WAN, "image": str(img), "prompt": "x"})
    assert done["status"] == "failed", done
    assert done["error"]["kind"] == kind
    assert needle in done["error"]["message"]
    if code is not None:
        assert done["error"]["provider_code"] == code
    assert len(creates(fake)) == 1
    if kind == "content_filtered":
        assert "change the prompt" in done["next_step"]


# -- request-level errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("InvalidApiKey", "auth"),
        ("AccessDenied.Unpurchased", "auth"),
        ("Model.AccessDenied", "auth"),
        ("Arrearage", "quota"),
        ("Throttling.AllocationQuota", "quota"),
        ("DataInspectionFailed", "content_filtered"),
        ("InvalidParameter", "invalid_input"),
        ("ModelNotFound", "provider_error"),
    ],
)
async def test_create_errors_end_the_job_at_once(
    fake: WanFake, env: dict[str, str], make_settings: SettingsFactory, img: Path, code: str, kind: str
) -> None:
    fake.inject_code(code)
    _, done = await run_job(make_settings(**env), {"model": WAN, "image": str(img), "prompt": "x"})
    assert done["status"] == "failed" and done["error"]["kind"] == kind, done
    assert done["error"]["provider_code"] == code
    assert done["error"]["retryable"] is False
    assert len(creates(fake)) == 1 and fake.tasks == {}
    assert KEY not in str(done)


async def test_wrong_key_is_auth_and_never_echoed(make_settings: SettingsFactory, img: Path) -> None:
    with WanFake(api_key="sk-the-right-key") as f:
        settings = make_settings(ALIBABA_API_KEY="sk-a-wrong-key-987", ALIBABA_BASE_URL=f.base_url)
        _, done = await run_job(settings, {"model": WAN, "image": str(img), "prompt": "x"})
        assert f.violations == [] and len(f.auth_failures) == 1
    assert done["error"]["kind"] == "auth" and done["error"]["provider_code"] == "InvalidApiKey"
    assert "sk-a-wrong-key-987" not in str(done)


async def test_rate_quota_retried_then_succeeds(
    fake: WanFake, env: dict[str, str], make_settings: SettingsFactory, img: Path
) -> None:
    fake.inject_code("Throttling.RateQuota", times=2, headers={"Retry-After": "0"})
    fake.inject_code("Throttling", match=f"GET {TASKS}", headers={"Retry-After": "0"})
    _, done = await run_job(make_settings(**env), {"model": WAN, "image": str(img), "prompt": "x"})
    assert done["status"] == "succeeded", done
    assert len(creates(fake)) == 3 and len(fake.tasks) == 1


async def test_rate_quota_honours_retry_after(
    fake: WanFake, env: dict[str, str], make_settings: SettingsFactory, img: Path
) -> None:
    fake.inject_code("Throttling.RateQuota", headers={"Retry-After": "1"})
    _, done = await run_job(make_settings(**env), {"model": WAN, "image": str(img), "prompt": "x"})
    assert done["status"] == "succeeded", done
    first, second = creates(fake)
    assert second.at - first.at >= 0.9


async def test_server_errors_retried_on_create_and_poll(
    fake: WanFake, env: dict[str, str], make_settings: SettingsFactory, img: Path
) -> None:
    fake.inject_code("InternalError")
    fake.inject_code("ModelUnavailable", match=f"GET {TASKS}", times=2)
    _, done = await run_job(make_settings(**env), {"model": WAN, "image": str(img), "prompt": "x"})
    assert done["status"] == "succeeded", done
    assert len(creates(fake)) == 2 and len(fake.tasks) == 1
    assert len(polls(fake)) == 4


async def test_lost_create_answer_is_interrupted_never_resubmitted(
    fake: WanFake, env: dict[str, str], make_settings: SettingsFactory, img: Path
) -> None:
    fake.inject_drop(f"POST {CREATE}", after_effect=True)
    async with connect(make_settings(**env)) as client:
        job = structured(
            await client.call_tool("animate_image", {"model": WAN, "image": str(img), "prompt": "x"})
        )
        done = await wait_done(client, job["job_id"])
        await anyio.sleep(0.3)  # nothing else may happen afterwards
    assert done["status"] == "failed" and done["error"]["kind"] == "interrupted", done
    assert "may have started" in done["error"]["message"]
    assert len(creates(fake)) == 1 and len(fake.tasks) == 1  # DashScope did create (and may bill) it
    assert polls(fake) == []


def test_kill9_during_create_then_restart_is_interrupted(
    fake: WanFake, home: Path, img: Path, make_settings: SettingsFactory
) -> None:
    fake.inject_hang(f"POST {CREATE}", seconds=20)
    srv = StdioServer({"STILLMOTION_HOME": str(home), "ALIBABA_API_KEY": KEY, "ALIBABA_BASE_URL": fake.base_url,
                       "STILLMOTION_POLL_INTERVAL_MS": "50"})  # fmt: skip
    try:
        srv.initialize()
        res = srv.call_tool("animate_image", {"model": WAN, "image": str(img), "prompt": "x"})["result"]
        job_id = res["structuredContent"]["job_id"]
        fake.wait_for_calls(1, "POST", CREATE, timeout=20)
    finally:
        srv.kill()

    async def restart() -> dict[str, Any]:
        async with connect(
            make_settings(**{"ALIBABA_API_KEY": KEY, "ALIBABA_BASE_URL": fake.base_url})
        ) as client:
            done = await wait_done(client, job_id)
            await anyio.sleep(0.3)
            return done

    done = anyio.run(restart)
    assert done["status"] == "failed" and done["error"]["kind"] == "interrupted", done
    assert "may have started" in done["error"]["message"]
    assert len(creates(fake)) == 1


# -- end to end ---------------------------------------------------------------------------------


def test_end_to_end_stdio(fake: WanFake, home: Path, img: Path) -> None:
    srv = StdioServer({"STILLMOTION_HOME": str(home), "ALIBABA_API_KEY": KEY, "ALIBABA_BASE_URL": fake.base_url,
                       "STILLMOTION_POLL_INTERVAL_MS": "50"})  # fmt: skip
    try:
        srv.initialize()
        res = srv.call_tool(
            "animate_image",
            {"model": FLASH, "image": str(img), "prompt": "waves roll in", "duration": 4, "wan": {"audio": True},
             "wait_seconds": 30},
        )["result"]  # fmt: skip
    finally:
        srv.close()
    sc = res["structuredContent"]
    assert sc["status"] == "succeeded", sc
    assert probe_video(Path(sc["video"]["path"])).frame_count > 0
    (create,) = creates(fake)
    assert decoded(create.json) == {
        "model": "wan2.6-i2v-flash",
        "input": {"prompt": "waves roll in", "img_url": ("image/png", img.read_bytes())},
        "parameters": {"resolution": "720P", "duration": 4, "audio": True},
    }
    assert KEY.encode() not in srv.stderr
    assert base64.b64encode(img.read_bytes())[:64] not in srv.stderr
