"""Self-tests of the strict fake providers in tests/fakes (plain httpx, real loopback HTTP)."""

from __future__ import annotations

import base64
import io
import json
import re
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import av
import httpx
import jwt
import numpy as np
import pytest

from tests.fakes import GatewayFake, KlingFake, WanFake, XaiFake
from tests.fakes.base import FakeServer
from tests.fakes.media import image_size, sample_jpeg, sample_mp4, sample_png

KLING = "/v1/videos/image2video"
WAN_CREATE = "/api/v1/services/aigc/video-generation/video-synthesis"
XAI_CREATE = "/v1/videos/generations"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def decode_frames(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data), mode="r") as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


_TLS = ssl.create_default_context()  # built once: httpx.Client() would load the CA bundle per test


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0, verify=_TLS) as c:
        yield c


# ---------------------------------------------------------------------------------------------
# media and the shared server machinery
# ---------------------------------------------------------------------------------------------


def test_sample_mp4_is_a_decodable_moving_h264_clip() -> None:
    data = sample_mp4()
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.codec_context.width, stream.codec_context.height) == (320, 240)
    frames = decode_frames(data)
    assert len(frames) == 24
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 10  # it moves
    assert sample_mp4() is data  # cached


def test_sample_images_have_readable_sizes() -> None:
    assert image_size(sample_png(640, 480)) == (640, 480)
    assert image_size(sample_jpeg(300, 720)) == (300, 720)


def test_requests_are_recorded_and_unknown_endpoints_are_violations(client: httpx.Client) -> None:
    with KlingFake() as fake:
        r = client.get(fake.url("/nope?a=1&b=two"), headers={"X-Thing": "Yes"})
        assert r.status_code == 404
        assert r.json()["code"] == 1202
        (rec,) = fake.requests
        assert (rec.method, rec.path, rec.query) == ("GET", "/nope", {"a": "1", "b": "two"})
        assert rec.headers["x-thing"] == "Yes"
        assert fake.violations == ["unknown endpoint GET /nope"]
        fake.clear()
        assert fake.requests == [] and fake.violations == []


def test_files_are_served_in_chunks_with_ranges(client: httpx.Client) -> None:
    payload = bytes(range(256)) * 1000
    with XaiFake() as fake:
        url = fake.add_file("clip.mp4", payload)
        assert url == fake.base_url + "/files/clip.mp4"
        r = client.get(url)
        assert r.status_code == 200 and r.content == payload
        assert r.headers["content-type"] == "video/mp4"
        assert r.headers["content-length"] == str(len(payload))
        r = client.get(url, headers={"Range": "bytes=10-19"})
        assert r.status_code == 206 and r.content == payload[10:20]
        assert r.headers["content-range"] == f"bytes 10-19/{len(payload)}"
        big = fake.add_large_file("big.bin", 5 * 1024 * 1024 + 7)
        with client.stream("GET", big) as resp:
            total = sum(len(chunk) for chunk in resp.iter_bytes())
        assert total == 5 * 1024 * 1024 + 7
        assert client.get(fake.url("/files/missing.mp4")).status_code == 404
        assert [r.path for r in fake.api_calls()] == []
        assert fake.violations == []


def test_truncated_and_expired_files(client: httpx.Client) -> None:
    with WanFake() as fake:
        url = fake.add_file("a.mp4", sample_mp4())
        fake.truncate_file("a.mp4", times=1)
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(url)
        assert client.get(url).content == sample_mp4()  # only once
        fake.expire_file("*")
        r = client.get(url)
        assert r.status_code == 403
        assert "Request has expired" in r.text and r.headers["content-type"] == "application/xml"
        fake.clear_file_faults()
        fake.expire_file("a.mp4", status=404, times=1)
        assert client.get(url).status_code == 404
        assert client.get(url).status_code == 200


def test_inject_answers_then_returns_to_normal(client: httpx.Client) -> None:
    with KlingFake() as fake:
        fake.inject_code(1302, times=2)
        auth = {"Authorization": "Bearer kling-test-key"}
        for _ in range(2):
            r = client.post(fake.url(KLING), json=kling_body(), headers=auth)
            assert r.status_code == 429 and r.json()["code"] == 1302
        assert fake.tasks == {}
        r = client.post(fake.url(KLING), json=kling_body(), headers=auth)
        assert r.status_code == 200 and r.json()["code"] == 0
        fake.inject("GET /v1/videos/image2video/", status=500, json=fake.error_body(5000), delay_s=0.05)
        t0 = time.monotonic()
        r = client.get(fake.url(f"{KLING}/{r.json()['data']['task_id']}"), headers=auth)
        assert r.status_code == 500 and r.json()["code"] == 5000 and time.monotonic() - t0 >= 0.05
        assert fake.pending_injections() == 0
        assert fake.violations == []


def test_injected_requests_are_still_validated(client: httpx.Client) -> None:
    with KlingFake() as fake:
        fake.inject_code(1303)
        r = client.post(
            fake.url(KLING), json=kling_body(duration=5), headers={"Authorization": "Bearer kling-test-key"}
        )
        assert r.status_code == 429
        assert fake.violations == ["image2video: field 'duration' must be a string, got int"]


def test_hang_makes_the_client_time_out_but_the_task_exists() -> None:
    with KlingFake() as fake, httpx.Client(timeout=0.3, verify=_TLS) as client:
        fake.inject_hang(f"POST {KLING}", seconds=2.0)
        t0 = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            client.post(
                fake.url(KLING), json=kling_body(), headers={"Authorization": "Bearer kling-test-key"}
            )
        assert time.monotonic() - t0 < 1.5
        assert fake.task_for_external("job-42") is not None
    assert not fake.running


def test_drop_after_effect_creates_the_task_then_loses_the_answer(client: httpx.Client) -> None:
    auth = {"Authorization": "Bearer kling-test-key"}
    with KlingFake() as fake:
        fake.inject_drop(f"POST {KLING}")
        with pytest.raises(httpx.RemoteProtocolError):
            client.post(fake.url(KLING), json=kling_body(), headers=auth)
        task = fake.task_for_external("job-42")
        assert task is not None
        # a retry with the same external_task_id is refused as a duplicate (a normal answer)
        r = client.post(fake.url(KLING), json=kling_body(), headers=auth)
        assert r.status_code == 400 and r.json()["code"] == 1201 and "duplicated" in r.json()["message"]
        # ... and the task is found by external_task_id, in the path or the query
        r = client.get(fake.url(f"{KLING}/job-42"), headers=auth)
        assert r.json()["data"]["task_id"] == task.id
        r = client.get(fake.url(KLING), params={"external_task_id": "job-42"}, headers=auth)
        assert r.json()["data"]["task_id"] == task.id
        fake.inject_drop(f"POST {KLING}", after_effect=False)
        with pytest.raises(httpx.RemoteProtocolError):
            client.post(fake.url(KLING), json=kling_body(external_task_id="job-43"), headers=auth)
        assert fake.task_for_external("job-43") is None
        r = client.get(fake.url(f"{KLING}/job-43"), headers=auth)
        assert r.status_code == 404 and r.json()["code"] == 1203
        assert fake.violations == []


def test_script_outcome_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="moderated"):
        WanFake().script_outcome("moderated")


# ---------------------------------------------------------------------------------------------
# Kling
# ---------------------------------------------------------------------------------------------


def kling_body(**over: Any) -> dict[str, Any]:
    """provider-apis.md 1.6 create example, minus callback_url."""
    body: dict[str, Any] = {
        "model_name": "kling-v2-6",
        "mode": "pro",
        "duration": "5",
        "image": "https://example.com/first.png",
        "prompt": "Camera zooms out, the girl smiles",
        "negative_prompt": "blurry",
        "sound": "on",
        "watermark_info": {"enabled": False},
        "external_task_id": "job-42",
    }
    for k, v in over.items():
        if v is None:
            body.pop(k, None)
        else:
            body[k] = v
    return body


def test_kling_reference_example_progresses_to_a_downloadable_video(client: httpx.Client) -> None:
    with KlingFake() as fake:
        fake.polls_until_done = 3
        auth = {"Authorization": "Bearer kling-test-key"}
        ref = kling_body()
        ref["callback_url"] = "https://example.com/cb/kling"
        r = client.post(fake.url(KLING), json=ref, headers=auth)
        assert r.status_code == 200, r.text
        env = r.json()
        assert set(env) == {"code", "message", "request_id", "data"} and env["code"] == 0
        data = env["data"]
        assert data["task_status"] == "submitted" and data["task_id"].isdigit()
        assert data["task_info"] == {"external_task_id": "job-42"}
        assert isinstance(data["created_at"], int) and data["created_at"] > 1_700_000_000_000
        tid = data["task_id"]
        statuses = []
        for _ in range(3):
            statuses.append(client.get(fake.url(f"{KLING}/{tid}"), headers=auth).json()["data"])
        assert [s["task_status"] for s in statuses] == ["processing", "processing", "succeed"]
        done = statuses[-1]
        video = done["task_result"]["videos"][0]
        assert video["duration"] == "5" and video["url"].startswith(fake.base_url + "/files/")
        assert done["final_unit_deduction"] == "5" and done["watermark_info"] == {"enabled": False}
        assert fake.task_done_at[tid] >= fake.tasks[tid].created_at
        assert len(decode_frames(client.get(video["url"]).content)) == 24
        listing = client.get(fake.url(KLING), params={"pageNum": 1, "pageSize": 30}, headers=auth).json()
        assert [t["task_id"] for t in listing["data"]] == [tid]
        assert len(fake.api_calls()) == 5 and len(fake.requests) == 6
        assert fake.violations == []


def test_kling_failed_outcome(client: httpx.Client) -> None:
    with KlingFake() as fake:
        fake.polls_until_done = 1
        fake.script_outcome("failed")
        auth = {"Authorization": "Bearer kling-test-key"}
        tid = client.post(fake.url(KLING), json=kling_body(), headers=auth).json()["data"]["task_id"]
        r = client.get(fake.url(f"{KLING}/{tid}"), headers=auth)
        assert r.status_code == 200 and r.json()["code"] == 0
        d = r.json()["data"]
        assert (
            d["task_status"] == "failed" and d["task_status_msg"] == "Failure to pass the risk control system"
        )
        assert "task_result" not in d


PNG = b64(sample_png(640, 480))
SMALL_PNG = b64(sample_png(100, 100))


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"image": "data:image/png;base64," + PNG}, "without a 'data:' prefix"),
        ({"duration": 5}, "field 'duration' must be a string, got int"),
        ({"duration": "20"}, "field 'duration' must be one of"),
        ({"duration": "7"}, 'supports duration "5" or "10"'),
        ({"aspect_ratio": "16:9"}, "unknown field 'aspect_ratio'"),
        ({"model": "kling-v1"}, "unknown field 'model'"),
        ({"model_name": "kling-v9"}, "field 'model_name' must be one of"),
        ({"mode": "turbo"}, "field 'mode'"),
        ({"sound": True}, "field 'sound'"),
        ({"cfg_scale": 1.5}, "cfg_scale' must be in [0, 1]"),
        ({"image": None}, "at least one of 'image' and 'image_tail'"),
        ({"image": "not base64!!"}, "must be an http(s) URL or valid base64"),
        ({"image": b64(b"hello world!")}, "must decode to one of image/png, image/jpeg"),
        ({"image": SMALL_PNG}, "each side must be >= 300 px"),
        ({"image": b64(sample_png(1000, 300))}, "aspect ratio"),
        ({"prompt": ""}, "field 'prompt' must not be empty"),
        ({"prompt": "x" * 2501}, "more than 2500"),
        ({"watermark_info": {"enabled": "no"}}, "watermark_info"),
        ({"voice_list": [{"voice_id": "a"}, {"voice_id": "b"}, {"voice_id": "c"}]}, "voice_list"),
        ({"voice_list": [{"voiceId": "a"}]}, "voice_list[0] must be exactly"),
        ({"prompt": "say <<<voice_2>>>", "voice_list": [{"voice_id": "a"}]}, "<<<voice_2>>>"),
        ({"external_task_id": 42}, "external_task_id"),
        ({"callback_url": "ftp://x"}, "callback_url"),
        ({"sound": "on", "mode": "std"}, "sound needs mode 'pro'"),
        (
            {
                "image_tail": "https://example.com/end.png",
                "camera_control": {"type": "down_back"},
                "sound": "off",
            },
            "mutually exclusive",
        ),
        (
            {"camera_control": {"type": "simple", "config": {"zoom": 5, "pan": 1}}},
            "exactly one non-zero axis",
        ),
        ({"camera_control": {"type": "down_back", "config": {"zoom": 5}}}, "must be left out"),
        ({"camera_control": {"type": "orbit"}}, "camera_control.type must be one of"),
        ({"camera_control": {"type": "simple", "config": {"zoom": 11}}}, "[-10, 10]"),
        ({"camera_control": {"type": "simple", "config": {"zoom": 5}}}, "no image-to-video camera control"),
        (
            {"dynamic_masks": [{"mask": "https://e.com/m.png", "trajectories": [{"x": 1, "y": 1}]}]},
            "2-77 points",
        ),
        (
            {
                "dynamic_masks": [
                    {"mask": "https://e.com/m.png", "trajectories": [{"x": 1.5, "y": 1}, {"x": 2, "y": 2}]}
                ]
            },
            "must be exactly {'x': int, 'y': int}",
        ),
        ({"multi_shot": True, "shot_type": None}, "shot_type' is required"),
    ],
)
def test_kling_rejects_wrong_bodies(client: httpx.Client, change: dict[str, Any], fragment: str) -> None:
    with KlingFake() as fake:
        r = client.post(
            fake.url(KLING), json=kling_body(**change), headers={"Authorization": "Bearer kling-test-key"}
        )
        assert r.status_code == 400, r.text
        assert r.json()["code"] == 1201 and set(r.json()) == {"code", "message", "request_id"}
        assert fake.violations, "a violation must be recorded"
        assert any(fragment in v for v in fake.violations), fake.violations
        assert fake.tasks == {}


def test_kling_accepts_base64_and_the_capability_maps_own_features(client: httpx.Client) -> None:
    auth = {"Authorization": "Bearer kling-test-key"}
    mask = b64(sample_png(320, 240))
    bodies: list[dict[str, Any]] = [
        {"model_name": "kling-v2-5-turbo", "image": PNG, "prompt": "go"},
        {
            "model_name": "kling-v3",
            "image": b64(sample_jpeg(640, 480)),
            "prompt": "go",
            "duration": "12",
            "sound": "on",
        },
        {
            "model_name": "kling-v1-5",
            "mode": "pro",
            "duration": "5",
            "image": PNG,
            "prompt": "push in",
            "camera_control": {
                "type": "simple",
                "config": {"horizontal": 0, "vertical": 0, "pan": 0, "tilt": 0, "roll": 0, "zoom": -5},
            },
        },
        {
            "model_name": "kling-v1",
            "mode": "std",
            "duration": "5",
            "image": PNG,
            "prompt": "the car drives left",
            "static_mask": mask,
            "dynamic_masks": [{"mask": mask, "trajectories": [{"x": 600, "y": 10}, {"x": 20, "y": 400}]}],
        },
        {"model_name": "kling-v2-1", "mode": "pro", "image": PNG, "image_tail": PNG, "prompt": "morph"},
        {
            "model_name": "kling-v2-6",
            "mode": "pro",
            "sound": "on",
            "image": PNG,
            "prompt": "she says <<<voice_1>>>",
            "voice_list": [{"voice_id": "v-1"}],
        },
    ]
    with KlingFake() as fake:
        for body in bodies:
            r = client.post(fake.url(KLING), json=body, headers=auth)
            assert r.status_code == 200, (body["model_name"], fake.violations)
        assert fake.violations == []
        # outside the published map: refused by default, accepted with enforce_capabilities=False
        wild = {"model_name": "kling-v2-6", "mode": "std", "image": PNG, "prompt": "orbit",
                "camera_control": {"type": "left_turn_forward"}}  # fmt: skip
        assert client.post(fake.url(KLING), json=wild, headers=auth).status_code == 400
        fake.enforce_capabilities = False
        fake.clear()
        assert client.post(fake.url(KLING), json=wild, headers=auth).status_code == 200
        assert fake.violations == []


def test_kling_trajectory_points_must_lie_inside_the_image(client: httpx.Client) -> None:
    mask = b64(sample_png(320, 240))
    body = {
        "model_name": "kling-v1",
        "image": PNG,
        "prompt": "p",
        "dynamic_masks": [{"mask": mask, "trajectories": [{"x": 640, "y": 0}, {"x": 1, "y": 1}]}],
    }
    with KlingFake() as fake:
        r = client.post(fake.url(KLING), json=body, headers={"Authorization": "Bearer kling-test-key"})
        assert r.status_code == 400
        assert any("outside the 640x480 image" in v for v in fake.violations)


def test_kling_wants_json(client: httpx.Client) -> None:
    with KlingFake() as fake:
        r = client.post(fake.url(KLING), data={"a": "b"}, headers={"Authorization": "Bearer kling-test-key"})
        assert r.status_code == 400 and r.json()["code"] == 1200
        assert "Content-Type must be application/json" in fake.violations[0]


def test_kling_auth_api_key_and_missing_header(client: httpx.Client) -> None:
    with KlingFake(api_key="k-123") as fake:
        r = client.post(fake.url(KLING), json=kling_body())
        assert (r.status_code, r.json()["code"]) == (401, 1001)
        assert fake.violations == [f"POST {KLING}: missing Authorization header"]
        fake.clear()
        r = client.post(fake.url(KLING), json=kling_body(), headers={"Authorization": "Bearer nope"})
        assert (r.status_code, r.json()["code"]) == (401, 1002)
        assert fake.violations == [] and len(fake.auth_failures) == 1
        r = client.post(fake.url(KLING), json=kling_body(), headers={"Authorization": "Bearer k-123"})
        assert r.status_code == 200


def test_kling_jwt_auth(client: httpx.Client) -> None:
    with KlingFake(access_key="AK", secret_key="SK") as fake:

        def call(token: str) -> httpx.Response:
            return client.get(
                fake.url(KLING),
                params={"pageNum": 1, "pageSize": 5},
                headers={"Authorization": f"Bearer {token}"},
            )

        assert call(fake.make_jwt()).status_code == 200
        assert call(fake.make_jwt(nbf_ago=6)).status_code == 200
        assert len(fake.jwt_payloads) == 2 and fake.jwt_payloads[0]["iss"] == "AK"
        assert fake.jwt_tokens[0] != fake.jwt_tokens[1]
        assert set(fake.jwt_payloads[0]) == {"iss", "exp", "nbf"}
        assert fake.violations == []

        r = call(fake.make_jwt(secret="wrong"))
        assert (r.status_code, r.json()["code"]) == (401, 1002)
        assert fake.violations == [] and "signature" in fake.auth_failures[-1]
        assert call("garbage").json()["code"] == 1002

        r = call(fake.make_jwt(exp_in=-10))
        assert (r.status_code, r.json()["code"]) == (401, 1004)
        assert "expired" in fake.violations[-1]
        r = call(fake.make_jwt(nbf_ago=-60))
        assert (r.status_code, r.json()["code"]) == (401, 1003)
        assert "not yet valid" in fake.violations[-1]

        now = time.time()
        assert call(fake.make_jwt(claims={"exp": now + 1800.5})).json()["code"] == 1002
        assert "integer seconds" in fake.violations[-1]
        hs512 = jwt.encode(
            {"iss": "AK", "exp": int(now) + 1800, "nbf": int(now) - 5}, "SK" * 40, algorithm="HS512"
        )
        assert call(hs512).json()["code"] == 1002
        assert "HS256" in fake.violations[-1]
        assert len(fake.violations) == 4


def test_kling_concurrency_limit(client: httpx.Client) -> None:
    auth = {"Authorization": "Bearer kling-test-key"}
    with KlingFake(max_concurrent=1) as fake:
        fake.polls_until_done = 1
        first = client.post(fake.url(KLING), json=kling_body(external_task_id="a"), headers=auth).json()
        r = client.post(fake.url(KLING), json=kling_body(external_task_id="b"), headers=auth)
        assert r.status_code == 429
        assert r.json()["code"] == 1303 and r.json()["message"] == "parallel task over resource pack limit"
        client.get(fake.url(f"{KLING}/{first['data']['task_id']}"), headers=auth)  # finishes it
        assert (
            client.post(fake.url(KLING), json=kling_body(external_task_id="b"), headers=auth).status_code
            == 200
        )
        assert fake.concurrency_rejections == 1 and fake.violations == []


def test_kling_list_query_is_checked(client: httpx.Client) -> None:
    with KlingFake() as fake:
        r = client.get(
            fake.url(KLING), params={"pageNum": 0}, headers={"Authorization": "Bearer kling-test-key"}
        )
        assert r.status_code == 400 and "pageNum" in fake.violations[0]


def test_generation_seconds_finishes_by_wall_time(client: httpx.Client) -> None:
    auth = {"Authorization": "Bearer kling-test-key"}
    with KlingFake() as fake:
        fake.generation_seconds = 0.3
        tid = client.post(fake.url(KLING), json=kling_body(), headers=auth).json()["data"]["task_id"]
        task = fake.tasks[tid]
        answers: list[str] = []
        deadline = time.monotonic() + 30
        while not answers or answers[-1] != "succeed":  # poll until done, as a client does
            assert time.monotonic() < deadline, answers
            answers.append(client.get(fake.url(f"{KLING}/{tid}"), headers=auth).json()["data"]["task_status"])
            time.sleep(0.02)
        # each answer follows the clock at the fake's receipt: processing before 0.3 s, done after
        received = [r.at for r in fake.calls("GET", f"{KLING}/{tid}")]
        assert answers == ["processing" if at < task.created_at + 0.3 else "succeed" for at in received], answers
        assert answers[0] == "processing" and answers[-1] == "succeed", answers
        assert fake.task_done_at[tid] == pytest.approx(task.created_at + 0.3)


# ---------------------------------------------------------------------------------------------
# Wan (DashScope)
# ---------------------------------------------------------------------------------------------

WAN_HEADERS = {"Authorization": "Bearer sk-wan", "X-DashScope-Async": "enable"}


def wan_body(**params: Any) -> dict[str, Any]:
    """provider-apis.md 2.3 create example."""
    body: dict[str, Any] = {
        "model": "wan2.6-i2v-flash",
        "input": {
            "prompt": "A graffiti boy raps under a railway bridge at night",
            "img_url": "https://example.com/rap.png",
            "audio_url": "https://example.com/rap.mp3",
            "negative_prompt": "low resolution, extra fingers",
        },
        "parameters": {
            "resolution": "720P",
            "duration": 10,
            "prompt_extend": True,
            "shot_type": "multi",
            "audio": True,
            "watermark": False,
            "seed": 12345,
        },
    }
    for k, v in params.items():
        if v is None:
            body["parameters"].pop(k, None)
        else:
            body["parameters"][k] = v
    return body


TS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$")


def test_wan_reference_example_progresses(client: httpx.Client) -> None:
    with WanFake("sk-wan") as fake:
        r = client.post(fake.url(WAN_CREATE), json=wan_body(), headers=WAN_HEADERS)
        assert r.status_code == 200, fake.violations
        out = r.json()["output"]
        assert out["task_status"] == "PENDING" and uuid.UUID(out["task_id"]) and r.json()["request_id"]
        q = fake.url(f"/api/v1/tasks/{out['task_id']}")
        running = client.get(q, headers={"Authorization": "Bearer sk-wan"}).json()
        assert running["output"]["task_status"] == "RUNNING" and TS.match(running["output"]["submit_time"])
        done = client.get(q, headers={"Authorization": "Bearer sk-wan"}).json()
        o = done["output"]
        assert o["task_status"] == "SUCCEEDED" and TS.match(o["end_time"])
        assert o["video_url"].startswith(fake.base_url + "/files/") and "?Expires=" in o["video_url"]
        assert done["usage"]["duration"] == 10 and done["usage"]["SR"] == 720
        assert len(decode_frames(client.get(o["video_url"]).content)) == 24
        assert fake.violations == []


def test_wan_accepts_a_data_uri_and_minimal_parameters(client: httpx.Client) -> None:
    body = {
        "model": "wan2.6-i2v",
        "input": {"prompt": "p", "img_url": "data:image/png;base64," + PNG},
        "parameters": {"resolution": "1080P", "duration": 5},
    }
    with WanFake("sk-wan") as fake:
        assert client.post(fake.url(WAN_CREATE), json=body, headers=WAN_HEADERS).status_code == 200
        assert fake.violations == []


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (
            lambda b: b["parameters"].update(duration="5"),
            "'parameters.duration' must be an integer, got string",
        ),
        (lambda b: b["parameters"].update(duration=5.0), "must be an integer, got float"),
        (lambda b: b["parameters"].update(duration=16), "2..15"),
        (lambda b: b["input"].update(img_url=PNG), "raw base64"),
        (lambda b: b["input"].update(img_url="data:image/png;base64,@@@"), "not a valid data:"),
        (lambda b: b.update(model="wan2.6-i2v"), "only supported by wan2.6-i2v-flash"),
        (lambda b: b["parameters"].update(size="1280*720"), "unknown field 'parameters.size'"),
        (lambda b: b["parameters"].update(resolution="480P"), "'720P' or '1080P'"),
        (lambda b: b["parameters"].update(seed=-1), "seed"),
        (lambda b: b["parameters"].update(audio="false"), "must be a bool"),
        (lambda b: b["input"].update(prompt="x" * 1501), "more than 1500"),
        (lambda b: b["input"].update(negative_prompt="x" * 501), "more than 500"),
        (lambda b: b["input"].pop("img_url"), "'input.img_url' is required"),
        (lambda b: b.update(extra=1), "unknown field 'extra'"),
    ],
)
def test_wan_rejects_wrong_bodies(
    client: httpx.Client, mutate: Callable[[dict[str, Any]], Any], fragment: str
) -> None:
    body = wan_body()
    mutate(body)
    with WanFake("sk-wan") as fake:
        r = client.post(fake.url(WAN_CREATE), json=body, headers=WAN_HEADERS)
        assert r.status_code == 400, r.text
        assert r.json()["code"] == "InvalidParameter" and set(r.json()) == {"code", "message", "request_id"}
        assert any(fragment in v for v in fake.violations), fake.violations


def test_wan_unknown_model_is_model_not_found(client: httpx.Client) -> None:
    body = wan_body()
    body["model"] = "wan2.2-i2v-flash"
    with WanFake("sk-wan") as fake:
        r = client.post(fake.url(WAN_CREATE), json=body, headers=WAN_HEADERS)
        assert (r.status_code, r.json()["code"]) == (404, "ModelNotFound")
        assert fake.violations


def test_wan_headers_and_auth(client: httpx.Client) -> None:
    with WanFake("sk-wan") as fake:
        r = client.post(fake.url(WAN_CREATE), json=wan_body(), headers={"Authorization": "Bearer sk-wan"})
        assert r.status_code == 403
        assert r.json()["code"] == "AccessDenied"
        assert r.json()["message"] == "current user api does not support synchronous calls"
        assert "X-DashScope-Async" in fake.violations[0]
        fake.clear()
        r = client.post(
            fake.url(WAN_CREATE), json=wan_body(), headers={**WAN_HEADERS, "Authorization": "Bearer bad"}
        )
        assert (r.status_code, r.json()["code"]) == (401, "InvalidApiKey")
        assert fake.violations == [] and fake.auth_failures
        r = client.get(fake.url("/api/v1/tasks/x"))
        assert (r.status_code, r.json()["message"]) == (401, "No API-key provided.")
        assert fake.violations == ["GET /api/v1/tasks/x: missing Authorization header"]


def test_wan_outcomes_and_unknown_ids(client: httpx.Client) -> None:
    auth = {"Authorization": "Bearer sk-wan"}
    with WanFake("sk-wan") as fake:
        fake.polls_until_done = 1
        fake.script_outcome("failed")
        fake.script_outcome("canceled")
        fake.script_outcome("unknown")
        fake.script_outcome("failed", "The size is not match", code="InvalidParameter")
        ids = [client.post(fake.url(WAN_CREATE), json=wan_body(), headers=WAN_HEADERS).json()["output"]["task_id"]
               for _ in range(5)]  # fmt: skip
        outs = [client.get(fake.url(f"/api/v1/tasks/{i}"), headers=auth).json()["output"] for i in ids]
        assert [o["task_status"] for o in outs] == ["FAILED", "CANCELED", "UNKNOWN", "FAILED", "SUCCEEDED"]
        assert outs[0]["code"] == "DataInspectionFailed"
        assert (outs[3]["code"], outs[3]["message"]) == ("InvalidParameter", "The size is not match")
        r = client.get(fake.url("/api/v1/tasks/does-not-exist"), headers=auth)
        assert r.status_code == 200 and r.json()["output"]["task_status"] == "UNKNOWN"
        fake.expire_task(ids[4])
        assert (
            client.get(fake.url(f"/api/v1/tasks/{ids[4]}"), headers=auth).json()["output"]["task_status"]
            == "UNKNOWN"
        )
        fake.inject_code("Throttling.RateQuota")
        r = client.post(fake.url(WAN_CREATE), json=wan_body(), headers=WAN_HEADERS)
        assert (r.status_code, r.json()["code"]) == (429, "Throttling.RateQuota")
        assert fake.violations == []


# ---------------------------------------------------------------------------------------------
# xAI
# ---------------------------------------------------------------------------------------------

XAI_AUTH = {"Authorization": "Bearer xai-key"}


def xai_body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "grok-imagine-video",
        "prompt": "Animate the clouds drifting; trees sway gently",
        "image": {"url": "https://example.com/still.jpg"},
        "duration": 8,
        "aspect_ratio": "16:9",
        "resolution": "720p",
    }
    for k, v in over.items():
        if v is None:
            body.pop(k, None)
        else:
            body[k] = v
    return body


def test_xai_reference_example_pending_then_done(client: httpx.Client) -> None:
    with XaiFake("xai-key") as fake:
        fake.polls_until_done = 4
        assert fake.api_base == fake.base_url + "/v1"
        r = client.post(fake.api_base + "/videos/generations", json=xai_body(), headers=XAI_AUTH)
        assert r.status_code == 200 and set(r.json()) == {"request_id"}
        rid = r.json()["request_id"]
        assert uuid.UUID(rid).version == 4
        polls = [client.get(fake.url(f"/v1/videos/{rid}"), headers=XAI_AUTH) for _ in range(4)]
        assert [p.status_code for p in polls] == [202, 202, 202, 200]
        assert [p.json()["progress"] for p in polls[:3]] == [0, 35, 70]
        done = polls[-1].json()
        assert done["status"] == "done" and done["model"] == "grok-imagine-video" and done["progress"] == 100
        assert done["video"]["respect_moderation"] is True and done["video"]["duration"] == 8
        assert len(decode_frames(client.get(done["video"]["url"]).content)) == 24
        # image as a data URI is fine too
        r = client.post(
            fake.url(XAI_CREATE),
            json=xai_body(image={"url": "data:image/png;base64," + PNG}),
            headers=XAI_AUTH,
        )
        assert r.status_code == 200
        assert fake.violations == []


def test_xai_auth(client: httpx.Client) -> None:
    with XaiFake("xai-secretXy") as fake:
        r = client.post(
            fake.url(XAI_CREATE), json=xai_body(), headers={"Authorization": "Bearer xai-wrongXy"}
        )
        assert r.status_code == 400
        assert r.json() == {
            "code": "Client specified an invalid argument",
            "error": "Incorrect API key provided: xa***Xy. You can obtain an API key from https://console.x.ai.",
        }
        assert fake.violations == [] and fake.auth_failures
        assert client.post(fake.url(XAI_CREATE), json=xai_body()).status_code == 400
        assert fake.violations == [f"POST {XAI_CREATE}: missing Authorization header"]


@pytest.mark.parametrize(
    ("change", "status", "fragment"),
    [
        ({"image": "https://example.com/still.jpg"}, 422, "field 'image' must be an object"),
        ({"image_url": "https://example.com/still.jpg"}, 422, "unknown field 'image_url'"),
        ({"prompt": None}, 422, "missing field `prompt`"),
        ({"duration": "8"}, 422, "field 'duration' must be an integer"),
        ({"seed": 1}, 422, "unknown field 'seed'"),
        ({"duration": 20}, 400, "1..15"),
        ({"resolution": "1080p"}, 400, "'480p' or '720p'"),
        ({"aspect_ratio": "21:9"}, 400, "aspect_ratio"),
        ({"model": "grok-2"}, 400, "field 'model'"),
        ({"image": {"url": PNG}}, 400, "image.url"),
        ({"image": {"url": "data:image/png;base64," + b64(b"nope")}}, 400, "must decode to"),
    ],
)
def test_xai_rejects_wrong_bodies(
    client: httpx.Client, change: dict[str, Any], status: int, fragment: str
) -> None:
    with XaiFake("xai-key") as fake:
        r = client.post(fake.url(XAI_CREATE), json=xai_body(**change), headers=XAI_AUTH)
        assert r.status_code == status, r.text
        assert set(r.json()) == {"code", "error"}
        assert any(fragment in v for v in fake.violations), fake.violations


def test_xai_outcomes_and_errors(client: httpx.Client) -> None:
    with XaiFake("xai-key") as fake:
        fake.polls_until_done = 1
        fake.pending_status = 200
        for kind in ("moderated", "failed", "expired"):
            fake.script_outcome(kind)
        ids = [
            client.post(fake.url(XAI_CREATE), json=xai_body(), headers=XAI_AUTH).json()["request_id"]
            for _ in range(3)
        ]
        got = [client.get(fake.url(f"/v1/videos/{i}"), headers=XAI_AUTH) for i in ids]
        assert all(g.status_code == 200 for g in got)
        mod, failed, expired = (g.json() for g in got)
        assert mod["status"] == "done" and mod["video"] == {
            "url": "",
            "duration": 8,
            "respect_moderation": False,
        }
        assert failed["status"] == "failed" and failed["error"]["code"] == "internal_error"
        assert expired == {"status": "expired"}
        assert client.get(fake.url(f"/v1/videos/{uuid.uuid4()}"), headers=XAI_AUTH).status_code == 404

        fake.credits_exhausted()
        r = client.post(fake.url(XAI_CREATE), json=xai_body(), headers=XAI_AUTH)
        assert (r.status_code, r.json()) == (429, {"code": 429, "error": "You ran out of credits."})
        fake.rate_limited(retry_after=2)
        r = client.post(fake.url(XAI_CREATE), json=xai_body(), headers=XAI_AUTH)
        assert r.status_code == 429 and r.headers["retry-after"] == "2" and "rate limit" in r.json()["error"]
        fake.inject(f"POST {XAI_CREATE}", status=400, json=fake.error_body("bad", "nested"))
        r = client.post(fake.url(XAI_CREATE), json=xai_body(), headers=XAI_AUTH)
        assert r.json() == {
            "error": {"message": "bad", "type": "invalid_request_error", "param": None, "code": None}
        }
        assert fake.violations == []


# ---------------------------------------------------------------------------------------------
# Gateway
# ---------------------------------------------------------------------------------------------


def gw_headers(model: str = "klingai/kling-v2.6-i2v", **extra: str) -> dict[str, str]:
    h = {
        "authorization": "Bearer gw-key",
        "ai-gateway-protocol-version": "0.0.1",
        "ai-gateway-auth-method": "api-key",
        "ai-video-model-specification-version": "4",
        "ai-model-id": model,
    }
    h.update(extra)
    return h


def gw_body(**over: Any) -> dict[str, Any]:
    """ai-sdk-video-providers.md 5 [captured] SSE example body."""
    body: dict[str, Any] = {
        "prompt": "The cat blinks",
        "n": 1,
        "aspectRatio": "16:9",
        "duration": 5,
        "providerOptions": {"klingai": {"mode": "pro"}},
        "image": {"type": "file", "mediaType": "image/png", "data": PNG},
    }
    for k, v in over.items():
        if v is None:
            body.pop(k, None)
        else:
            body[k] = v
    return body


def test_gateway_start_status_flow(client: httpx.Client) -> None:
    with GatewayFake("gw-key") as fake:
        base = fake.api_base
        h = gw_headers(**{"idempotency-key": "aisdk_vid_abc"})
        r = client.post(base + "/video-model/start", json=gw_body(), headers=h)
        assert r.status_code == 200, fake.violations
        op = r.json()["operation"]
        assert op == {"gatewayJobId": "job_1"} and r.json()["warnings"] == []
        again = client.post(base + "/video-model/start", json=gw_body(), headers=h)
        assert again.json()["operation"] == op and fake.starts == 1
        st = [client.post(base + "/video-model/status", json={"operation": op}, headers=gw_headers()).json()
              for _ in range(2)]  # fmt: skip
        assert st[0] == {"status": "pending"}
        assert st[1]["status"] == "completed"
        (video,) = st[1]["videos"]
        assert video["type"] == "url" and video["mediaType"] == "video/mp4"
        assert len(decode_frames(client.get(video["url"]).content)) == 24
        # base64 results
        fake.result_as_base64 = True
        fake.polls_until_done = 1
        op2 = client.post(
            base + "/video-model/start", json=gw_body(), headers=gw_headers(**{"idempotency-key": "k2"})
        )
        res = client.post(
            base + "/video-model/status", json={"operation": op2.json()["operation"]}, headers=gw_headers()
        )
        res = res.json()
        assert res["videos"][0]["type"] == "base64"
        assert base64.b64decode(res["videos"][0]["data"]) == sample_mp4()
        assert fake.starts == 2 and fake.violations == []


def test_gateway_wan_inline_image_and_large_body_refused(client: httpx.Client) -> None:
    with GatewayFake("gw-key") as fake:
        h = gw_headers("alibaba/wan-v2.6-i2v", **{"idempotency-key": "w1"})
        r = client.post(fake.url("/v4/ai/video-model/start"), json=gw_body(providerOptions={}), headers=h)
        assert r.status_code == 400 and "URL" in r.json()["error"]["message"]
        assert any("image URLs only" in v for v in fake.violations)
        fake.clear()
        fake.max_body_bytes = 1000
        r = client.post(fake.url("/v4/ai/video-model/start"), json=gw_body(), headers=gw_headers(**{"idempotency-key": "w2"}))
        assert r.status_code == 413 and fake.starts == 0


def test_gateway_error_and_cancelled_statuses(client: httpx.Client) -> None:
    with GatewayFake("gw-key") as fake:
        fake.polls_until_done = 1
        fake.script_outcome("failed", "Content policy violation", code="invalid_request_error")
        fake.script_outcome("cancelled")
        for i, want in enumerate(
            [{"status": "error", "error": {"message": "Content policy violation", "type": "invalid_request_error"}},
             {"status": "cancelled"}]
        ):  # fmt: skip
            h = gw_headers("alibaba/wan-v2.6-i2v-flash", **{"idempotency-key": f"k{i}"})
            body = gw_body(
                providerOptions={"alibaba": {"audio": False, "negativePrompt": "blur"}},
                image={"type": "url", "url": "https://example.com/cat.png"},  # Wan takes image URLs only
            )
            op = client.post(fake.url("/v4/ai/video-model/start"), json=body, headers=h).json()["operation"]
            r = client.post(
                fake.url("/v4/ai/video-model/status"),
                json={"operation": op},
                headers=gw_headers("alibaba/wan-v2.6-i2v-flash"),
            )
            assert r.json() == want
        assert fake.violations == []


@pytest.mark.parametrize(
    ("headers", "body", "status", "etype", "fragment"),
    [
        ({}, gw_body(providerOptions={"klingai": {"negative_prompt": "x"}}), 400, "invalid_request_error", "camelCase"),
        ({}, gw_body(providerOptions={"klingai": {"imageTail": "https://e.com/a.png", "image_tail": "x"}}), 400,
         "invalid_request_error", "image_tail is not camelCase"),
        ({}, gw_body(providerOptions={"alibaba": {"audio": False}}), 400, "invalid_request_error", "does not match"),
        ({}, gw_body(providerOptions={"klingai": {"aspect": 1}}), 400, "invalid_request_error", "unknown option"),
        ({}, gw_body(n=None), 400, "invalid_request_error", "field 'n' is required"),
        ({}, gw_body(n=2), 400, "invalid_request_error", "field 'n' must be 1"),
        ({}, gw_body(duration="5"), 400, "invalid_request_error", "field 'duration' must be a number"),
        ({}, gw_body(image={"type": "file", "mediaType": "image/png", "data": "data:image/png;base64," + PNG}), 400,
         "invalid_request_error", "without a 'data:' prefix"),
        ({}, gw_body(image={"type": "file", "mediaType": "image/gif", "data": PNG}), 400, "invalid_request_error",
         "mediaType"),
        ({}, gw_body(image={"type": "url", "url": "ftp://x"}), 400, "invalid_request_error", "http(s) URL"),
        ({}, gw_body(image=None), 400, "invalid_request_error", "needs 'image'"),
        ({}, gw_body(negativePrompt="x"), 400, "invalid_request_error", "unknown field 'negativePrompt'"),
        ({}, gw_body(providerOptions={"klingai": {"mode": "pro", "cameraControl": {"type": "simple", "config": {"zoom": 3}}}}),
         400, "invalid_request_error", "camera control"),
        ({"ai-video-model-specification-version": "3"}, gw_body(), 400, "invalid_request_error",
         "ai-video-model-specification-version"),
        ({"ai-gateway-protocol-version": None}, gw_body(), 400, "invalid_request_error", "protocol-version"),
        ({"ai-model-id": "xai/grok-imagine-video"}, gw_body(), 404, "model_not_found", "not a gateway video model"),
        ({"authorization": None}, gw_body(), 401, "authentication_error", "missing authorization"),
        ({"idempotency-key": None}, gw_body(), 400, "invalid_request_error", "idempotency-key"),
    ],
)  # fmt: skip
def test_gateway_rejects_wrong_requests(
    client: httpx.Client,
    headers: dict[str, str | None],
    body: dict[str, Any],
    status: int,
    etype: str,
    fragment: str,
) -> None:
    h: dict[str, str] = {**gw_headers(), "idempotency-key": "k"}
    for k, v in headers.items():
        if v is None:
            h.pop(k, None)
        else:
            h[k] = v
    with GatewayFake("gw-key") as fake:
        r = client.post(fake.url("/v4/ai/video-model/start"), json=body, headers=h)
        assert r.status_code == status, r.text
        assert r.json()["error"]["type"] == etype and isinstance(r.json()["error"]["message"], str)
        assert any(fragment in v for v in fake.violations), fake.violations
        assert fake.starts == 0


def test_gateway_wrong_key_is_not_a_violation(client: httpx.Client) -> None:
    with GatewayFake("gw-key") as fake:
        h = {**gw_headers(), "authorization": "Bearer other", "idempotency-key": "k"}
        r = client.post(fake.url("/v4/ai/video-model/start"), json=gw_body(), headers=h)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert fake.violations == [] and fake.auth_failures


def sse_events(resp: httpx.Response) -> tuple[int, list[dict[str, Any]]]:
    beats, events = 0, []
    for line in resp.iter_lines():
        if line == ":":
            beats += 1
        elif line.startswith("data: "):
            events.append(json.loads(line[6:]))
    return beats, events


def test_gateway_sse_flow_when_start_is_unsupported(client: httpx.Client) -> None:
    with GatewayFake("gw-key", start_status_supported=False) as fake:
        fake.heartbeats = 3
        fake.heartbeat_interval_s = 0.02
        r = client.post(
            fake.url("/v4/ai/video-model/start"),
            json=gw_body(),
            headers={**gw_headers(), "idempotency-key": "k"},
        )
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
        assert (
            client.post(
                fake.url("/v4/ai/video-model/status"), json={"operation": {}}, headers=gw_headers()
            ).status_code
            == 404
        )
        h = {**gw_headers("spacexai/grok-imagine-video"), "accept": "text/event-stream"}
        body = gw_body(providerOptions={"xai": {"resolution": "720p"}})
        with client.stream("POST", fake.url("/v4/ai/video-model"), json=body, headers=h) as resp:
            assert resp.status_code == 200 and resp.headers["content-type"] == "text/event-stream"
            beats, events = sse_events(resp)
        assert beats == 3
        (event,) = events
        assert event["type"] == "result" and event["warnings"] == []
        assert event["videos"][0]["mediaType"] == "video/mp4" and "xai" in event["providerMetadata"]
        assert len(decode_frames(client.get(event["videos"][0]["url"]).content)) == 24
        assert fake.streams == 1 and fake.violations == []


def test_gateway_sse_error_cut_and_accept_header(client: httpx.Client) -> None:
    with GatewayFake("gw-key") as fake:
        fake.heartbeats = 1
        fake.heartbeat_interval_s = 0.01
        h = {**gw_headers(), "accept": "text/event-stream"}
        fake.script_outcome("failed", "Rate limit exceeded", code="rate_limit_exceeded")
        with client.stream("POST", fake.url("/v4/ai/video-model"), json=gw_body(), headers=h) as resp:
            _, events = sse_events(resp)
        assert events == [
            {"type": "error", "message": "Rate limit exceeded", "errorType": "rate_limit_exceeded", "statusCode": 429,
             "param": None}
        ]  # fmt: skip
        fake.cut_stream()
        with pytest.raises(httpx.RemoteProtocolError):
            with client.stream("POST", fake.url("/v4/ai/video-model"), json=gw_body(), headers=h) as resp:
                sse_events(resp)
        assert fake.violations == []
        r = client.post(fake.url("/v4/ai/video-model"), json=gw_body(), headers=gw_headers())
        assert r.status_code == 400 and "accept must be text/event-stream" in fake.violations[0]


def test_gateway_status_checks_operation_and_model(client: httpx.Client) -> None:
    with GatewayFake("gw-key") as fake:
        start = client.post(
            fake.url("/v4/ai/video-model/start"),
            json=gw_body(),
            headers={**gw_headers(), "idempotency-key": "k"},
        )
        op = {"operation": start.json()["operation"]}
        r = client.post(
            fake.url("/v4/ai/video-model/status"),
            json={"operation": {"jobId": "job_1"}},
            headers=gw_headers(),
        )
        assert r.status_code == 400 and "operation" in fake.violations[-1]
        client.post(
            fake.url("/v4/ai/video-model/status"), json=op, headers=gw_headers("klingai/kling-v3.0-i2v")
        )
        assert "differs from the job's model" in fake.violations[-1]
        r = client.post(
            fake.url("/v4/ai/video-model/status"),
            json={"operation": {"gatewayJobId": "job_99"}},
            headers=gw_headers(),
        )
        assert r.status_code == 404 and len(fake.violations) == 2
        # same idempotency key with another body is a client bug
        client.post(
            fake.url("/v4/ai/video-model/start"),
            json=gw_body(prompt="other"),
            headers={**gw_headers(), "idempotency-key": "k"},
        )
        assert "reused with a different body" in fake.violations[-1] and fake.starts == 1


def test_every_fake_stops_cleanly_with_open_keepalive_connections() -> None:
    fakes: list[FakeServer] = [KlingFake(), WanFake(), XaiFake(), GatewayFake()]
    client = httpx.Client(timeout=2.0, verify=_TLS)
    try:
        for fake in fakes:
            fake.start()
            client.get(fake.url("/files/none"))  # leaves a pooled keep-alive connection open
        for fake in fakes:
            fake.stop()
            assert not fake.running
    finally:
        client.close()


def test_polls_until_done_none_holds_tasks_until_release(client: httpx.Client) -> None:
    auth = {"Authorization": "Bearer sk-wan"}
    with WanFake("sk-wan") as fake:
        fake.polls_until_done = None
        tid = client.post(fake.url(WAN_CREATE), json=wan_body(), headers=WAN_HEADERS).json()["output"][
            "task_id"
        ]
        for _ in range(5):
            assert (
                client.get(fake.url(f"/api/v1/tasks/{tid}"), headers=auth).json()["output"]["task_status"]
                == "RUNNING"
            )
        assert tid not in fake.task_done_at
        fake.release(tid)
        assert (
            client.get(fake.url(f"/api/v1/tasks/{tid}"), headers=auth).json()["output"]["task_status"]
            == "SUCCEEDED"
        )
        assert fake.tasks[tid].polls == 6 and tid in fake.task_done_at
        assert len(fake.wait_for_calls(6, "GET", "/api/v1/tasks/", timeout=0.1)) == 6
        with pytest.raises(TimeoutError):
            fake.wait_for_calls(99, timeout=0.05)


def test_gateway_sse_heartbeats_while_held(client: httpx.Client) -> None:
    with GatewayFake("gw-key") as fake:
        fake.polls_until_done = None
        fake.heartbeats = 1
        fake.heartbeat_interval_s = 0.02
        timer = threading.Timer(0.15, fake.release)
        timer.start()
        try:
            h = {**gw_headers(), "accept": "text/event-stream"}
            with client.stream("POST", fake.url("/v4/ai/video-model"), json=gw_body(), headers=h) as resp:
                beats, events = sse_events(resp)
        finally:
            timer.join()
        assert beats >= 4 and events[0]["type"] == "result"
        assert fake.violations == []


def test_blob_fake_is_strict(client: httpx.Client) -> None:
    from tests.fakes import BlobFake

    with BlobFake() as fake:
        auth = {"authorization": f"Bearer {fake.token}", "x-api-version": "12"}
        ok = {**auth, "x-vercel-blob-access": "public", "x-content-type": "image/png"}
        r = client.put(fake.url("/"), params={"pathname": "a/b.png"}, content=b"png", headers=ok)
        assert r.status_code == 200 and client.get(r.json()["url"]).content == b"png"
        url = r.json()["url"]
        r = client.put(fake.url("/"), params={"pathname": "a/c.png"}, content=b"png", headers=auth)
        assert r.status_code == 400 and any("x-vercel-blob-access" in v for v in fake.violations)
        r = client.post(fake.url("/delete"), json={"urls": [url]}, headers=auth)
        assert r.status_code == 200 and fake.stored == {} and client.get(url).status_code == 404
        r = client.put(fake.url("/"), params={"pathname": "x.png"}, content=b"p", headers={**ok, "authorization": "Bearer nope"})
        assert r.status_code == 403
