"""KlingAI direct against the strict fake Kling server: exact wire bodies, auth, statuses, errors,
recovery of a lost create by external_task_id, and an end-to-end stdio run."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import jwt
import numpy as np
import pytest
from PIL import Image

from stillmotion.media.video import probe_video
from tests.conftest import SettingsFactory, connect, error_text, structured, wait_done, write_image
from tests.fakes import KlingFake
from tests.stdio_client import StdioServer

pytestmark = pytest.mark.anyio
PATH = "/v1/videos/image2video"
KEY = "kling-test-key"


@pytest.fixture
def fake() -> Iterator[KlingFake]:
    with KlingFake(api_key=KEY) as f:
        yield f


@pytest.fixture
def kling_env(fake: KlingFake) -> dict[str, str]:
    return {"KLINGAI_API_KEY": KEY, "KLINGAI_BASE_URL": fake.base_url}


@pytest.fixture
def img(tmp_path: Path) -> Path:
    return write_image(tmp_path / "in" / "photo.png", 640, 480, seed=5)


def creates(fake: KlingFake) -> list[Any]:
    return fake.calls("POST", PATH)


def b64_of(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


async def test_animate_image_v26_exact_body_local_file(
    fake: KlingFake, kling_env: dict[str, str], make_settings: SettingsFactory, img: Path
) -> None:
    args = {
        "model": "klingai/kling-v2.6-i2v",
        "image": str(img),
        "prompt": "The person<<<voice_1>>> says hello",
        "negative_prompt": "blurry",
        "kling": {"mode": "pro", "sound": "on", "voices": ["voice-abc"], "watermark": False},
    }
    async with connect(make_settings(**kling_env)) as client:
        job = structured(await client.call_tool("animate_image", args))
        done = await wait_done(client, job["job_id"])
    assert done["status"] == "succeeded", done
    assert done["route"] == "direct" and done["provider_task_id"]
    (create,) = creates(fake)
    assert create.json == {
        "model_name": "kling-v2-6",
        "prompt": "The person<<<voice_1>>> says hello",
        "image": b64_of(img),
        "negative_prompt": "blurry",
        "sound": "on",
        "mode": "pro",
        "voice_list": [{"voice_id": "voice-abc"}],
        "watermark_info": {"enabled": False},
        "duration": "5",
        "external_task_id": job["job_id"],
    }
    assert create.header("authorization") == f"Bearer {KEY}"
    assert create.header("content-type") == "application/json"
    polls = fake.calls("GET", PATH)
    assert len(polls) == 2 and all(p.path == f"{PATH}/{done['provider_task_id']}" for p in polls)
    info = probe_video(Path(done["video"]["path"]))
    assert info.frame_count > 0 and done["video"]["provider_url"].startswith(fake.base_url)
    fake.assert_clean()


async def test_url_image_passed_through_and_interpolation_body(
    fake: KlingFake, kling_env: dict[str, str], make_settings: SettingsFactory, img: Path, tmp_path: Path
) -> None:
    url = fake.add_file("start.png", await anyio.Path(img).read_bytes(), "image/png")
    end = write_image(tmp_path / "end.jpg", 640, 480, seed=9, fmt="JPEG")
    env = {**kling_env, "STILLMOTION_ALLOW_PRIVATE_NETWORK": "1"}
    async with connect(make_settings(**env)) as client:
        job = structured(
            await client.call_tool(
                "interpolate_frames",
                {
                    "model": "klingai/kling-v1.6-i2v",
                    "start_image": url,
                    "end_image": str(end),
                    "prompt": "day turns to night",
                    "duration": 10,
                    "kling": {"mode": "pro", "cfg_scale": 0.7},
                },
            )
        )
        done = await wait_done(client, job["job_id"])
    assert done["status"] == "succeeded"
    (create,) = creates(fake)
    assert create.json == {
        "model_name": "kling-v1-6",
        "prompt": "day turns to night",
        "image": url,
        "image_tail": b64_of(end),
        "cfg_scale": 0.7,
        "mode": "pro",
        "duration": "10",
        "external_task_id": job["job_id"],
    }
    fake.assert_clean()


async def test_camera_control_body(fake: KlingFake, kling_env: dict[str, str], make_settings: SettingsFactory, img: Path) -> None:
    async with connect(make_settings(**kling_env)) as client:
        job = structured(
            await client.call_tool(
                "camera_move",
                {
                    "model": "klingai/kling-v1.5-i2v",
                    "image": str(img),
                    "prompt": "a slow push",
                    "camera": {"type": "simple", "config": {"zoom": -5}},
                    "kling": {"mode": "pro"},
                },
            )
        )
        assert (await wait_done(client, job["job_id"]))["status"] == "succeeded"
    (create,) = creates(fake)
    assert create.json == {
        "model_name": "kling-v1-5",
        "prompt": "a slow push",
        "image": b64_of(img),
        "mode": "pro",
        "camera_control": {
            "type": "simple",
            "config": {"horizontal": 0.0, "vertical": 0.0, "pan": 0.0, "tilt": 0.0, "roll": 0.0, "zoom": -5.0},
        },
        "duration": "5",
        "external_task_id": job["job_id"],
    }
    fake.assert_clean()


def _png_mask(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("L")) > 127


async def test_motion_brush_body_with_shapes(
    fake: KlingFake, kling_env: dict[str, str], make_settings: SettingsFactory, img: Path
) -> None:
    async with connect(make_settings(**kling_env)) as client:
        job = structured(
            await client.call_tool(
                "motion_brush",
                {
                    "model": "klingai/kling-v1-i2v",
                    "image": str(img),
                    "prompt": "the ball rolls",
                    "dynamic_masks": [
                        {
                            "mask": {"box": [100, 100, 200, 200]},
                            "trajectory": [{"x": 150, "y": 150}, {"x": 250.4, "y": 180.6}, {"x": 400, "y": 150}],
                        }
                    ],
                    "static_mask": {"polygon": [[0, 0], [640, 0], [640, 60], [0, 60]]},
                },
            )
        )
        assert (await wait_done(client, job["job_id"]))["status"] == "succeeded"
    (create,) = creates(fake)
    body = dict(create.json)
    dyn = body.pop("dynamic_masks")
    static = body.pop("static_mask")
    assert body == {
        "model_name": "kling-v1",
        "prompt": "the ball rolls",
        "image": b64_of(img),
        "mode": "std",
        "duration": "5",
        "external_task_id": job["job_id"],
    }
    assert len(dyn) == 1 and dyn[0]["trajectories"] == [{"x": 150, "y": 150}, {"x": 250, "y": 181}, {"x": 400, "y": 150}]
    box = _png_mask(dyn[0]["mask"])
    assert box.shape == (480, 640)
    ys, xs = np.nonzero(box)
    # box [100,100,200,200] bottom-left -> rows 280..380, cols 100..200
    assert (xs.min(), xs.max()) == (100, 200) and (ys.min(), ys.max()) == (280, 380)
    ground = _png_mask(static)
    assert ground.shape == (480, 640) and ground[-1].all() and not ground[0].any()
    fake.assert_clean()


async def test_jwt_auth_fresh_token_per_request(fake: KlingFake, make_settings: SettingsFactory, img: Path) -> None:
    with KlingFake(access_key="ak-test", secret_key="sk-test-secret-0123456789abcdef0123") as jf:
        env = {"KLINGAI_ACCESS_KEY": "ak-test", "KLINGAI_SECRET_KEY": "sk-test-secret-0123456789abcdef0123",
               "KLINGAI_BASE_URL": jf.base_url}
        async with connect(make_settings(**env)) as client:
            job = structured(await client.call_tool("animate_image", {"model": "klingai/kling-v2.5-turbo-i2v", "image": str(img), "prompt": "go"}))
            done = await wait_done(client, job["job_id"])
        assert done["status"] == "succeeded"
        api = [c for c in jf.api_calls()]
        assert len(api) == 3 and len(jf.jwt_payloads) == 3
        for call, payload in zip(api, jf.jwt_payloads, strict=True):
            token = call.header("authorization").removeprefix("Bearer ")  # type: ignore[union-attr]
            assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
            assert payload["iss"] == "ak-test"
            assert payload["exp"] - payload["nbf"] == 1805
            assert abs(payload["nbf"] - (time.time() - 5)) < 30
        jf.assert_clean()


async def test_content_safety_failure_keeps_message(
    fake: KlingFake, kling_env: dict[str, str], make_settings: SettingsFactory, img: Path
) -> None:
    fake.script_outcome("failed", "Failure to pass the risk control system")
    async with connect(make_settings(**kling_env)) as client:
        job = structured(await client.call_tool("animate_image", {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "x"}))
        done = await wait_done(client, job["job_id"])
    assert done["status"] == "failed"
    assert done["error"]["kind"] == "content_filtered"
    assert "Failure to pass the risk control system" in done["error"]["message"]
    assert "change the prompt" in done["next_step"]


@pytest.mark.parametrize(
    ("code", "kind", "n_creates"),
    [(1301, "content_filtered", 1), (1102, "quota", 1), (1101, "quota", 1), (1103, "auth", 1)],
)
async def test_create_errors_map_without_retry(
    fake: KlingFake, kling_env: dict[str, str], make_settings: SettingsFactory, img: Path, code: int, kind: str, n_creates: int
) -> None:
    fake.inject_code(code)
    async with connect(make_settings(**kling_env)) as client:
        job = structured(await client.call_tool("animate_image", {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "x"}))
        done = await wait_done(client, job["job_id"])
    assert done["status"] == "failed" and done["error"]["kind"] == kind
    assert done["error"]["provider_code"] == str(code)
    assert len(creates(fake)) == n_creates
    assert KEY not in done["error"]["message"]


async def test_concurrency_limit_queues_then_succeeds(
    fake: KlingFake, kling_env: dict[str, str], make_settings: SettingsFactory, img: Path
) -> None:
    fake.inject_code(1303, times=2, headers={"Retry-After": "0"})
    async with connect(make_settings(**kling_env)) as client:
        job = structured(await client.call_tool("animate_image", {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "x"}))
        done = await wait_done(client, job["job_id"])
    assert done["status"] == "succeeded"
    assert len(creates(fake)) == 3 and len(fake.tasks) == 1


async def test_rate_limit_and_5xx_retried(fake: KlingFake, kling_env: dict[str, str], make_settings: SettingsFactory, img: Path) -> None:
    fake.inject_code(1302, headers={"Retry-After": "0"})
    fake.inject_code(5000, match=f"GET {PATH}/", times=2)
    async with connect(make_settings(**kling_env)) as client:
        job = structured(await client.call_tool("animate_image", {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "x"}))
        done = await wait_done(client, job["job_id"])
    assert done["status"] == "succeeded"
    assert len(fake.tasks) == 1


async def test_bad_key_is_auth(make_settings: SettingsFactory, img: Path) -> None:
    with KlingFake(api_key="the-right-key") as f:
        async with connect(make_settings(KLINGAI_API_KEY="a-wrong-key", KLINGAI_BASE_URL=f.base_url)) as client:
            job = structured(await client.call_tool("animate_image", {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "x"}))
            done = await wait_done(client, job["job_id"])
    assert done["error"]["kind"] == "auth" and "a-wrong-key" not in str(done)


async def test_expired_jwt_secret_mismatch_is_auth(make_settings: SettingsFactory, img: Path) -> None:
    with KlingFake(access_key="ak", secret_key="right-secret-right-secret-right-secret") as f:
        env = {"KLINGAI_ACCESS_KEY": "ak", "KLINGAI_SECRET_KEY": "wrong-secret-wrong-secret-wrong-secret", "KLINGAI_BASE_URL": f.base_url}
        async with connect(make_settings(**env)) as client:
            job = structured(await client.call_tool("animate_image", {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "x"}))
            done = await wait_done(client, job["job_id"])
    assert done["error"]["kind"] == "auth"
    assert "wrong-secret" not in str(done)


async def test_lost_create_answer_recovered_by_external_task_id(
    fake: KlingFake, kling_env: dict[str, str], make_settings: SettingsFactory, img: Path
) -> None:
    fake.inject_drop(f"POST {PATH}", after_effect=True)
    async with connect(make_settings(**kling_env)) as client:
        job = structured(await client.call_tool("animate_image", {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "x"}))
        done = await wait_done(client, job["job_id"])
    assert done["status"] == "succeeded", done
    assert len(creates(fake)) == 1 and len(fake.tasks) == 1
    lookups = [c for c in fake.calls("GET", PATH) if c.path.endswith(job["job_id"])]
    assert lookups, "the task must be found by its external_task_id"
    fake.assert_clean()


async def test_truncated_download_retried_and_expired_url_fails(
    fake: KlingFake, kling_env: dict[str, str], make_settings: SettingsFactory, img: Path
) -> None:
    fake.truncate_file("*", times=1)
    async with connect(make_settings(**kling_env)) as client:
        job = structured(await client.call_tool("animate_image", {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "x"}))
        done = await wait_done(client, job["job_id"])
        assert done["status"] == "succeeded"
        assert len(fake.calls("GET", "/files/")) == 2
        fake.expire_file("*")
        job2 = structured(await client.call_tool("animate_image", {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "y"}))
        done2 = await wait_done(client, job2["job_id"])
    assert done2["status"] == "failed" and done2["error"]["kind"] == "expired"


async def test_expired_result_url_is_refreshed_once(
    fake: KlingFake, kling_env: dict[str, str], make_settings: SettingsFactory, img: Path
) -> None:
    """A result URL that has expired by the time it is fetched: the runner asks Kling for the task
    again (a fresh URL) and downloads that, instead of failing a paid job."""
    fake.expire_file("*", times=1)
    async with connect(make_settings(**kling_env)) as client:
        job = structured(await client.call_tool("animate_image", {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "x"}))
        done = await wait_done(client, job["job_id"])
    assert done["status"] == "succeeded", done
    assert len(fake.calls("GET", "/files/")) == 2  # the expired answer, then the refreshed URL
    task_id = next(iter(fake.tasks))
    polls = [c for c in fake.calls("GET", PATH) if c.path.endswith(task_id)]
    assert len(polls) >= 2  # at least one poll that saw it succeed, then the refresh
    fake.assert_clean()


async def test_capability_map_strict_and_relaxed(
    fake: KlingFake, kling_env: dict[str, str], make_settings: SettingsFactory, img: Path
) -> None:
    args = {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "x",
            "camera": {"type": "simple", "config": {"pan": 3}}, "kling": {"mode": "pro"}}
    async with connect(make_settings(**kling_env)) as client:
        text = error_text(await client.call_tool("camera_move", args))
    assert "model" in text and "klingai/kling-v1.5-i2v" in text
    assert fake.api_calls() == []
    fake.enforce_capabilities = False
    async with connect(make_settings(STILLMOTION_STRICT_CAPABILITIES="0", **kling_env)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert "klingai/kling-v2.6-i2v" in str(tools["camera_move"].input_schema["properties"]["model"])
        job = structured(await client.call_tool("camera_move", args))
        assert any("capability map" in w for w in job["warnings"])
        done = await wait_done(client, job["job_id"])
    assert done["status"] == "succeeded"
    assert creates(fake)[0].json["camera_control"]["config"]["pan"] == 3.0


def test_end_to_end_stdio(fake: KlingFake, home: Path, img: Path) -> None:
    srv = StdioServer({"STILLMOTION_HOME": str(home), "KLINGAI_API_KEY": KEY, "KLINGAI_BASE_URL": fake.base_url,
                       "STILLMOTION_POLL_INTERVAL_MS": "50"})
    try:
        srv.initialize()
        res = srv.call_tool(
            "animate_image",
            {"model": "klingai/kling-v3.0-i2v", "image": str(img), "prompt": "go", "duration": 7, "wait_seconds": 30},
        )["result"]
    finally:
        srv.close()
    sc = res["structuredContent"]
    assert sc["status"] == "succeeded", sc
    assert probe_video(Path(sc["video"]["path"])).frame_count > 0
    (create,) = creates(fake)
    assert create.json["model_name"] == "kling-v3" and create.json["duration"] == "7"
    fake.assert_clean()


def test_kill9_during_create_then_restart_finds_task(fake: KlingFake, home: Path, img: Path, make_settings: SettingsFactory) -> None:
    fake.inject_hang(f"POST {PATH}", seconds=20)
    srv = StdioServer({"STILLMOTION_HOME": str(home), "KLINGAI_API_KEY": KEY, "KLINGAI_BASE_URL": fake.base_url,
                       "STILLMOTION_POLL_INTERVAL_MS": "50"})
    try:
        srv.initialize()
        job_id = srv.call_tool("animate_image", {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "x"})["result"]["structuredContent"]["job_id"]
        fake.wait_for_calls(1, "POST", PATH, timeout=20)
        for _ in range(200):  # the request is recorded before the fake creates the task
            if fake.tasks:
                break
            time.sleep(0.02)
    finally:
        srv.kill()
    assert len(fake.tasks) == 1  # Kling created it; we never stored the answer

    async def finish() -> dict[str, Any]:
        async with connect(make_settings(KLINGAI_API_KEY=KEY, KLINGAI_BASE_URL=fake.base_url)) as client:
            return await wait_done(client, job_id)

    import anyio

    done = anyio.run(finish)
    assert done["status"] == "succeeded", done
    assert len(creates(fake)) == 1 and len(fake.tasks) == 1


async def test_poll_timeout_ends_job_timeout(fake: KlingFake, kling_env: dict[str, str], make_settings: SettingsFactory, img: Path) -> None:
    fake.polls_until_done = None  # never finishes
    async with connect(make_settings(**kling_env)) as client:
        job = structured(await client.call_tool(
            "animate_image",
            {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "x", "kling": {"poll_interval_ms": 100, "poll_timeout_ms": 1000}},
        ))
        done = await wait_done(client, job["job_id"])
    assert done["status"] == "failed" and done["error"]["kind"] == "timeout"
    assert "poll_timeout_ms=1000" in done["error"]["message"]
    assert 5 <= len(fake.calls("GET", PATH)) <= 11


async def test_cancel_stops_polling_and_says_it_may_bill(
    fake: KlingFake, kling_env: dict[str, str], make_settings: SettingsFactory, img: Path
) -> None:
    fake.polls_until_done = None
    async with connect(make_settings(**kling_env)) as client:
        job = structured(await client.call_tool("animate_image", {"model": "klingai/kling-v2.6-i2v", "image": str(img), "prompt": "x"}))
        with anyio.fail_after(10):
            while not fake.calls("GET", PATH):
                await anyio.sleep(0.02)
        cancelled = structured(await client.call_tool("cancel_job", {"job_id": job["job_id"]}))
        assert cancelled["status"] == "cancelled"
        assert "may still finish and bill" in cancelled["error"]["message"]
        polls = len(fake.calls("GET", PATH))
        await anyio.sleep(0.4)
        assert len(fake.calls("GET", PATH)) <= polls + 1
        fake.release()
        again = structured(await client.call_tool("check_job", {"job_id": job["job_id"], "wait_seconds": 0.5}))
        assert again["status"] == "cancelled"
