"""Kling 3.0 multi-shot, elements and voices: whole wire bodies direct and through the Gateway
(strict fakes), and every rule refused before any request."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SettingsFactory, connect, error_text, structured, wait_done, write_image
from tests.fakes import GatewayFake, KlingFake

pytestmark = pytest.mark.anyio
PATH = "/v1/videos/image2video"
START = "/v4/ai/video-model/start"
V3 = "klingai/kling-v3.0-i2v"
SHOTS = [
    {"prompt": "Wide shot: the harbour at dawn", "duration": 2},
    {"prompt": "The person<<<voice_1>>> says: good morning", "duration": 3},
    {"prompt": "Close-up: gulls take off", "duration": 4},
]


@pytest.fixture
def kling() -> Iterator[KlingFake]:
    with KlingFake(api_key="kling-key") as f:
        yield f


@pytest.fixture
def gateway() -> Iterator[GatewayFake]:
    with GatewayFake(api_key="gw-key") as f:
        yield f


def kling_env(f: KlingFake) -> dict[str, str]:
    return {"KLINGAI_API_KEY": "kling-key", "KLINGAI_BASE_URL": f.base_url, "STILLMOTION_ROUTE": "direct"}


def gateway_env(f: GatewayFake) -> dict[str, str]:
    return {"AI_GATEWAY_API_KEY": "gw-key", "AI_GATEWAY_BASE_URL": f.base_url + "/v4/ai", "STILLMOTION_ROUTE": "gateway"}


@pytest.fixture
def img(tmp_path: Path) -> Path:
    return write_image(tmp_path / "in" / "photo.png", 640, 480, seed=5)


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


async def run(env: dict[str, str], make_settings: SettingsFactory, args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    async with connect(make_settings(**env)) as client:
        job = structured(await client.call_tool("animate_image", args))
        done = await wait_done(client, job["job_id"])
    assert done["status"] == "succeeded", done
    return job, done


async def test_direct_custom_shots_with_voices_duration_is_their_sum(
    kling: KlingFake, make_settings: SettingsFactory, img: Path
) -> None:
    args = {
        "model": V3, "image": str(img), "prompt": "ignored main prompt",
        "kling": {"mode": "pro", "sound": "on", "voices": ["v-1"], "shots": SHOTS},
    }  # fmt: skip
    job, _ = await run(kling_env(kling), make_settings, args)
    assert any("prompt is ignored" in w for w in job["warnings"]), job["warnings"]
    (create,) = kling.calls("POST", PATH)
    assert create.json == {
        "model_name": "kling-v3",
        "image": b64(img),
        "sound": "on",
        "mode": "pro",
        "multi_shot": True,
        "shot_type": "customize",
        "multi_prompt": [
            {"index": 1, "prompt": SHOTS[0]["prompt"], "duration": "2"},
            {"index": 2, "prompt": SHOTS[1]["prompt"], "duration": "3"},
            {"index": 3, "prompt": SHOTS[2]["prompt"], "duration": "4"},
        ],
        "voice_list": [{"voice_id": "v-1"}],
        "duration": "9",
        "external_task_id": job["job_id"],
    }
    kling.assert_clean()


async def test_direct_intelligence_with_elements(kling: KlingFake, make_settings: SettingsFactory, img: Path) -> None:
    args = {
        "model": V3, "image": str(img), "prompt": "A chef plates a dish, then serves it", "duration": 12,
        "kling": {"shot_type": "intelligence", "elements": [101, 202, 303]},
    }  # fmt: skip
    job, _ = await run(kling_env(kling), make_settings, args)
    (create,) = kling.calls("POST", PATH)
    assert create.json == {
        "model_name": "kling-v3",
        "prompt": "A chef plates a dish, then serves it",
        "image": b64(img),
        "mode": "std",
        "multi_shot": True,
        "shot_type": "intelligence",
        "element_list": [{"element_id": 101}, {"element_id": 202}, {"element_id": 303}],
        "duration": "12",
        "external_task_id": job["job_id"],
    }
    kling.assert_clean()


async def test_gateway_custom_shots_and_voices(gateway: GatewayFake, make_settings: SettingsFactory, img: Path) -> None:
    args = {
        "model": V3, "image": str(img), "duration": 9,
        "kling": {"mode": "pro", "sound": "on", "voices": ["v-1"], "shots": SHOTS, "watermark": True},
    }  # fmt: skip
    await run(gateway_env(gateway), make_settings, args)
    (start,) = gateway.calls("POST", START)
    assert start.obj == {
        "prompt": "",
        "n": 1,
        "duration": 9,
        "providerOptions": {
            "klingai": {
                "mode": "pro",
                "sound": "on",
                "multiShot": True,
                "shotType": "customize",
                "multiPrompt": [
                    {"index": 1, "prompt": SHOTS[0]["prompt"], "duration": "2"},
                    {"index": 2, "prompt": SHOTS[1]["prompt"], "duration": "3"},
                    {"index": 3, "prompt": SHOTS[2]["prompt"], "duration": "4"},
                ],
                "voiceList": [{"voice_id": "v-1", "voiceId": "v-1"}],
                "watermarkEnabled": True,
            }
        },
        "image": {"type": "file", "mediaType": "image/png", "data": b64(img)},
    }
    gateway.assert_clean()


async def test_gateway_intelligence_and_elements(gateway: GatewayFake, make_settings: SettingsFactory, img: Path) -> None:
    args = {
        "model": V3, "image": str(img), "prompt": "Two friends meet, talk, and part",
        "kling": {"shot_type": "intelligence", "elements": [7]},
    }  # fmt: skip
    await run(gateway_env(gateway), make_settings, args)
    (start,) = gateway.calls("POST", START)
    assert start.obj == {
        "prompt": "Two friends meet, talk, and part",
        "n": 1,
        "duration": 5,
        "providerOptions": {
            "klingai": {"mode": "std", "multiShot": True, "shotType": "intelligence", "elementList": [{"element_id": 7}]}
        },
        "image": {"type": "file", "mediaType": "image/png", "data": b64(img)},
    }
    gateway.assert_clean()


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("animate_image", {"model": "klingai/kling-v2.6-i2v", "kling": {"shots": SHOTS[:1]}}, "kling.shots"),
    ("animate_image", {"duration": 10, "kling": {"shots": [SHOTS[0], SHOTS[2]]}}, "kling.shots"),
    ("animate_image", {"kling": {"shots": [{"prompt": "a", "duration": 9}, {"prompt": "b", "duration": 7}]}}, "kling.shots"),
    ("interpolate_frames", {"kling": {"shots": [SHOTS[0], SHOTS[2]]}}, "kling.shots"),
    ("animate_image", {"kling": {"shot_type": "intelligence", "shots": SHOTS[:2]}}, "kling.shots"),
    ("animate_image", {"prompt": None, "kling": {"shot_type": "intelligence"}}, "prompt"),
    ("animate_image", {"kling": {"shot_type": "customize"}}, "kling.shots"),
    ("animate_image", {"model": "klingai/kling-v2.6-i2v", "kling": {"elements": [1]}}, "kling.elements"),
    ("animate_image", {"kling": {"elements": [1], "sound": "on", "voices": ["v"]}}, "kling.elements"),
    ("animate_image", {"kling": {"sound": "on", "voices": ["v"], "shots": [{"prompt": "<<<voice_2>>> hi", "duration": 5}]}},
     "kling.shots[0].prompt"),
    ("animate_image", {"kling": {"elements": [1, 2, 3, 4]}}, "elements"),
    ("animate_image", {"kling": {"shots": [{"prompt": "x", "duration": 1}] * 7}}, "shots"),
    ("animate_image", {"kling": {"shots": [{"prompt": "x" * 513, "duration": 5}]}}, "prompt"),
    ("animate_image", {"kling": {"shots": [{"prompt": "x", "duration": 0}, {"prompt": "y", "duration": 5}]}}, "duration"),
]


@pytest.mark.parametrize(("tool", "extra", "argument"), BAD)
async def test_rules_refused_before_any_request(
    kling: KlingFake, make_settings: SettingsFactory, img: Path, tmp_path: Path, tool: str, extra: dict[str, Any], argument: str
) -> None:
    args: dict[str, Any] = {"model": V3, "prompt": "go", "image": str(img)}
    if tool == "interpolate_frames":
        args = {"model": V3, "prompt": "go", "start_image": str(img), "end_image": str(img)}
    args.update(extra)
    args = {k: v for k, v in args.items() if v is not None}
    async with connect(make_settings(**kling_env(kling))) as client:
        text = error_text(await client.call_tool(tool, args))
    assert argument in text, text
    assert "invalid_input" in text or "validation error" in text.lower(), text
    assert kling.requests == []
