"""Google Veo, ByteDance Seedance and Grok Imagine 1.5 through the strict fake Gateway (#24): the
whole body per family, Veo 3.1's first and last frame, Seedance's last frame, the spacexai/ ids,
every documented rule refused before any request, and list_models naming what is not published."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from stillmotion.catalog import MODELS
from tests.conftest import SettingsFactory, connect, error_text, structured, wait_done, write_image
from tests.fakes import GatewayFake
from tests.fakes.base import parse_data_uri
from tests.test_provider_gateway import KEY, START, assert_headers, assert_video, headers

pytestmark = pytest.mark.anyio


@pytest.fixture
def fake() -> Iterator[GatewayFake]:
    with GatewayFake(api_key=KEY) as f:
        yield f
        f.assert_clean()


def env(fake: GatewayFake) -> dict[str, str]:
    return {"AI_GATEWAY_API_KEY": KEY, "AI_GATEWAY_BASE_URL": fake.base_url + "/v4/ai"}


@pytest.fixture
def img(tmp_path: Path) -> Path:
    return write_image(tmp_path / "in" / "first.png", 640, 480, seed=7)


@pytest.fixture
def end(tmp_path: Path) -> Path:
    return write_image(tmp_path / "in" / "last.png", 640, 480, seed=8)


def inline(path: Path) -> dict[str, Any]:
    return {"type": "file", "mediaType": "image/png", "data": base64.b64encode(path.read_bytes()).decode()}


async def run(fake: GatewayFake, make_settings: SettingsFactory, tool: str, args: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    async with connect(make_settings(**env(fake))) as client:
        job = structured(await client.call_tool(tool, args))
        done = await wait_done(client, job["job_id"])
    assert_video(done)
    (start,) = fake.calls("POST", START)
    assert_headers(start, headers(args["model"], key=f"stillmotion_{job['job_id']}"))
    return done, start.obj


async def test_veo_31_interpolation_sends_both_frames(fake: GatewayFake, make_settings: SettingsFactory, img: Path, end: Path) -> None:
    args = {
        "model": "google/veo-3.1-generate-001", "start_image": str(img), "end_image": str(end), "prompt": "dawn breaks",
        "negative_prompt": "text", "duration": 6, "veo": {"resolution": "1080p", "aspect_ratio": "9:16", "audio": True, "seed": 7},
    }  # fmt: skip
    done, body = await run(fake, make_settings, "interpolate_frames", args)
    assert done["model"] == "google/veo-3.1-generate-001" and done["route"] == "gateway"
    assert body == {
        "prompt": "dawn breaks", "n": 1, "duration": 6, "aspectRatio": "9:16", "resolution": "1920x1080", "seed": 7,
        "generateAudio": True, "providerOptions": {"vertex": {"negativePrompt": "text"}}, "image": inline(img),
        "frameImages": [
            {"frameType": "first_frame", "image": inline(img)}, {"frameType": "last_frame", "image": inline(end)},
        ],
    }  # fmt: skip


async def test_veo_30_image_to_video_defaults(fake: GatewayFake, make_settings: SettingsFactory, img: Path) -> None:
    args = {"model": "google/veo-3.0-fast-generate-001", "image": str(img), "prompt": "waves roll in"}
    _done, body = await run(fake, make_settings, "animate_image", args)
    # 8 s (the fast model's only length), 720p, sound off unless asked: Google's own default never decides
    assert body == {
        "prompt": "waves roll in", "n": 1, "duration": 8, "resolution": "1280x720", "generateAudio": False,
        "providerOptions": {}, "image": inline(img),
    }  # fmt: skip


async def test_seedance_body_and_last_frame(fake: GatewayFake, make_settings: SettingsFactory, img: Path, end: Path) -> None:
    args = {
        "model": "bytedance/seedance-2.0", "start_image": str(img), "end_image": str(end), "prompt": "a bird lands",
        "duration": 10, "seedance": {"resolution": "480p", "aspect_ratio": "21:9", "audio": True, "seed": 42},
    }  # fmt: skip
    _done, body = await run(fake, make_settings, "interpolate_frames", args)
    last = body["providerOptions"]["bytedance"].pop("lastFrameImage")
    assert parse_data_uri(last) == ("image/png", await anyio.Path(end).read_bytes())
    assert body == {
        "prompt": "a bird lands", "n": 1, "duration": 10, "aspectRatio": "21:9", "resolution": "864x480", "seed": 42,
        "providerOptions": {"bytedance": {"generateAudio": True}}, "image": inline(img),
    }  # fmt: skip


async def test_seedance_silent_model_sends_no_audio(fake: GatewayFake, make_settings: SettingsFactory, img: Path) -> None:
    args = {"model": "bytedance/seedance-v1.0-pro-fast", "image": str(img), "prompt": "leaves fall", "duration": 3}
    _done, body = await run(fake, make_settings, "animate_image", args)
    assert body == {
        "prompt": "leaves fall", "n": 1, "duration": 3, "resolution": "1280x720", "providerOptions": {},
        "image": inline(img),
    }  # fmt: skip


async def test_grok_15_spacexai_routes_like_xai(fake: GatewayFake, make_settings: SettingsFactory, img: Path) -> None:
    async with connect(make_settings(**env(fake))) as client:
        a = structured(await client.call_tool("animate_image", {
            "model": "spacexai/grok-imagine-video-1.5", "image": str(img), "prompt": "rain", "xai": {"resolution": "1080p"},
        }))  # fmt: skip
        b = structured(await client.call_tool("animate_image", {"model": "xai/grok-imagine-video-1.5", "image": str(img), "prompt": "rain", "xai": {"resolution": "1080p"}}))
        da, db = await wait_done(client, a["job_id"]), await wait_done(client, b["job_id"])
    assert da["model"] == db["model"] == "xai/grok-imagine-video-1.5"
    bodies = [c.obj for c in fake.calls("POST", START)]
    assert bodies[0] == bodies[1] == {
        "prompt": "rain", "n": 1, "duration": 5, "providerOptions": {"xai": {"resolution": "1080p"}}, "image": inline(img),
    }  # fmt: skip
    assert {c.header("ai-model-id") for c in fake.api_calls()} == {"spacexai/grok-imagine-video-1.5"}


RULES: list[tuple[str, dict[str, Any], str]] = [
    ("animate_image", {"model": "google/veo-3.1-generate-001", "duration": 5}, "duration"),
    ("animate_image", {"model": "google/veo-3.0-fast-generate-001", "duration": 6}, "duration"),
    ("animate_image", {"model": "google/veo-3.0-generate-001", "veo": {"aspect_ratio": "1:1"}}, "veo.aspect_ratio"),
    ("interpolate_frames", {"model": "google/veo-3.0-generate-001"}, "model"),
    ("interpolate_frames", {"model": "bytedance/seedance-v1.0-pro-fast"}, "model"),
    ("animate_image", {"model": "bytedance/seedance-2.0-fast", "seedance": {"resolution": "1080p"}}, "seedance.resolution"),
    ("animate_image", {"model": "bytedance/seedance-v1.0-pro", "seedance": {"audio": True}}, "seedance.audio"),
    ("animate_image", {"model": "bytedance/seedance-v1.5-pro", "duration": 13}, "duration"),
    ("animate_image", {"model": "bytedance/seedance-2.0", "duration": 3}, "duration"),
    ("animate_image", {"model": "bytedance/seedance-2.0", "image": "small"}, "image"),
    ("animate_image", {"model": "bytedance/seedance-2.0", "image": "wide"}, "image"),
    ("animate_image", {"model": "google/veo-3.1-generate-001", "image": "webp"}, "image"),
    ("animate_image", {"model": "xai/grok-imagine-video", "xai": {"resolution": "1080p"}}, "xai.resolution"),
    ("animate_image", {"model": "google/veo-3.1-generate-001", "prompt": "x" * 2501}, "prompt"),
]


async def test_each_rule_refused_with_no_request(fake: GatewayFake, make_settings: SettingsFactory, tmp_path: Path, img: Path, end: Path) -> None:
    images = {
        "small": write_image(tmp_path / "in" / "small.png", 299, 400, seed=1),
        "wide": write_image(tmp_path / "in" / "wide.png", 1300, 500, seed=2),
        "webp": write_image(tmp_path / "in" / "x.webp", 640, 480, seed=3, fmt="WEBP"),
    }
    assert images["webp"].read_bytes()[8:12] == b"WEBP"
    async with connect(make_settings(**env(fake))) as client:
        for tool, extra, argument in RULES:
            args = {"prompt": "go", **extra}
            key = "start_image" if tool == "interpolate_frames" else "image"
            args[key] = str(images.get(str(extra.get("image")), img))
            if key != "image":
                args.pop("image", None)
            if tool == "interpolate_frames":
                args["end_image"] = str(end)
            for dry in (False, True):
                err = await client.call_tool(tool, {**args, "dry_run": dry})
                assert err.is_error, (tool, extra)
                text = error_text(err)
                assert argument in text, (extra, text)
    assert fake.api_calls() == []


async def test_list_models_shows_the_limits_and_what_is_unpublished(make_settings: SettingsFactory) -> None:
    async with connect(make_settings(AI_GATEWAY_API_KEY=KEY)) as client:
        listed = json.loads((await client.read_resource("stillmotion://models")).contents[0].text)  # type: ignore[union-attr]
    by_id = {m["id"]: m for m in listed["models"]}
    veo = by_id["google/veo-3.1-fast-generate-001"]
    assert veo["durations"] == [4, 6, 8] and veo["options"]["resolutions"] == ["720p", "1080p"]
    assert veo["options"]["aspect_ratios"] == ["16:9", "9:16"] and veo["routes"] == ["gateway"]
    assert "interpolate_frames" in veo["tools"] and veo["route_now"] == "gateway"
    assert any("prompt length" in u for u in veo["unpublished"])
    sd = by_id["bytedance/seedance-2.0-fast"]
    assert sd["durations"] == list(range(4, 16)) and sd["options"]["resolutions"] == ["480p", "720p"]
    assert sd["image"]["min_side_px"] == 300 and sd["image"]["aspect_ratio_range"] == [0.4, 2.5]
    assert "interpolate_frames" not in by_id["bytedance/seedance-v1.0-pro-fast"]["tools"]
    assert by_id["xai/grok-imagine-video-1.5"]["options"]["resolutions"] == ["480p", "720p", "1080p"]
    assert {m.id for m in MODELS.values()} == set(by_id)


def test_the_fake_refuses_what_the_real_api_refuses(img: Path) -> None:
    """The fake Gateway is strict for the new families: each wrong body is a 400 naming the rule."""
    import httpx

    from tests.test_fakes import gw_headers

    data = base64.b64encode(img.read_bytes()).decode()
    file = {"type": "file", "mediaType": "image/png", "data": data}
    url = {"type": "url", "url": "https://example.com/a.png"}
    veo = {"prompt": "p", "n": 1, "duration": 8, "generateAudio": False, "providerOptions": {}, "image": file}
    sd = {"prompt": "p", "n": 1, "duration": 5, "providerOptions": {}, "image": file}
    last = {"frameType": "last_frame", "image": file}
    cases = [
        ("google/veo-3.1-generate-001", {**veo, "duration": 5}, "duration"),
        ("google/veo-3.1-generate-001", {**veo, "image": url}, "no image URLs"),
        ("google/veo-3.1-generate-001", {k: v for k, v in veo.items() if k != "generateAudio"}, "generateAudio"),
        ("google/veo-3.0-generate-001", {**veo, "frameImages": [{"frameType": "first_frame", "image": file}, last]}, "last_frame"),
        ("google/veo-3.0-fast-generate-001", {**veo, "duration": 6}, "duration"),
        ("google/veo-3.1-generate-001", {**veo, "aspectRatio": "1:1"}, "aspectRatio"),
        ("bytedance/seedance-2.0-fast", {**sd, "resolution": "1920x1080"}, "resolution"),
        ("bytedance/seedance-2.0", {**sd, "frameImages": [{"frameType": "first_frame", "image": file}, last]}, "last_frame"),
        ("bytedance/seedance-v1.0-pro", {**sd, "providerOptions": {"bytedance": {"generateAudio": True}}}, "no audio"),
        ("bytedance/seedance-v1.0-pro-fast", {**sd, "providerOptions": {"bytedance": {"lastFrameImage": "https://e.com/a.png"}}}, "no last frame"),
        ("bytedance/seedance-2.0", {**sd, "generateAudio": True}, "providerOptions.bytedance.generateAudio"),
        ("bytedance/seedance-v1.5-pro", {**sd, "duration": 13}, "duration"),
        ("spacexai/grok-imagine-video", {**sd, "providerOptions": {"xai": {"resolution": "1080p"}}}, "resolution"),
    ]
    with GatewayFake("gw-key") as fake, httpx.Client() as client:
        for model, body, word in cases:
            r = client.post(fake.url("/v4/ai/video-model/start"), json=body, headers={**gw_headers(model), "idempotency-key": f"k{len(fake.violations)}"})
            assert r.status_code == 400 and word in r.json()["error"]["message"], (model, word, r.text[:300])
        ok = client.post(fake.url("/v4/ai/video-model/start"), json=veo, headers={**gw_headers("google/veo-3.1-generate-001"), "idempotency-key": "ok"})
        assert ok.status_code == 200, ok.text


async def test_extend_video_through_veo_sends_the_last_frame_inline(fake: GatewayFake, make_settings: SettingsFactory, tmp_path: Path) -> None:
    from stillmotion.media.video import read_frame
    from tests.fakes.media import sample_mp4

    src = tmp_path / "in" / "clip.mp4"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(sample_mp4(2.0, 320, 240, 24))
    args = {"model": "google/veo-3.1-fast-generate-001", "video": str(src), "prompt": "the sun sets", "duration": 4}
    async with connect(make_settings(**env(fake))) as client:
        job = structured(await client.call_tool("extend_video", args))
        done = await wait_done(client, job["job_id"])
    assert done["status"] == "succeeded", done
    (start,) = fake.calls("POST", START)
    body = dict(start.obj)
    image = body.pop("image")
    assert body == {"prompt": "the sun sets", "n": 1, "duration": 4, "resolution": "1280x720", "generateAudio": False, "providerOptions": {}}
    assert image["type"] == "file" and image["mediaType"] == "image/png"
    import io

    import numpy as np
    from PIL import Image

    sent = np.asarray(Image.open(io.BytesIO(base64.b64decode(image["data"]))).convert("RGB"))
    assert np.array_equal(sent, read_frame(src, -1))
    assert done["video"]["duration_s"] == pytest.approx(3.0, abs=1 / 24)  # 2 s source + the fake's 1 s clip


async def test_local_preview_takes_the_same_arguments(make_settings: SettingsFactory, img: Path, end: Path) -> None:
    """A Veo or Seedance call previews on local/preview with the same arguments (their objects ignored, said so)."""
    async with connect(make_settings()) as client:
        for tool, args in (
            ("animate_image", {"image": str(img), "duration": 8, "veo": {"resolution": "1080p", "audio": True}}),
            ("interpolate_frames", {"start_image": str(img), "end_image": str(end), "duration": 4, "seedance": {"resolution": "480p"}}),
        ):
            job = structured(await client.call_tool(tool, {**args, "model": "local/preview", "prompt": "go", "local": {"resolution": "480p"}}))
            assert any("options" in w and "ignored" in w for w in job["warnings"]), job["warnings"]
            done = await wait_done(client, job["job_id"])
            assert done["status"] == "succeeded" and done["video"]["duration_s"] == pytest.approx(args["duration"], abs=1 / 24)
