"""Wan multi-shot (`wan.shot_type`) and a driving audio track (`wan.audio_url`): whole wire bodies
direct and through the Gateway, and every rule refused before any request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import SettingsFactory, connect, error_text, structured, wait_done, write_image
from tests.fakes import GatewayFake, WanFake, sample_wav

pytestmark = pytest.mark.anyio
CREATE = "/api/v1/services/aigc/video-generation/video-synthesis"
START = "/v4/ai/video-model/start"
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
    return {"ALIBABA_API_KEY": KEY, "ALIBABA_BASE_URL": fake.base_url, "STILLMOTION_ALLOW_PRIVATE_NETWORK": "1"}


@pytest.fixture
def img(tmp_path: Path) -> Path:
    return write_image(tmp_path / "in" / "photo.png", 640, 480, seed=7)


async def run(env: dict[str, str], make_settings: SettingsFactory, args: dict[str, Any]) -> dict[str, Any]:
    async with connect(make_settings(**env)) as client:
        job = structured(await client.call_tool("animate_image", args))
        done = await wait_done(client, job["job_id"])
    assert done["status"] == "succeeded", done
    return job


async def test_direct_multi_shot_and_audio_url(fake: WanFake, env: dict[str, str], make_settings: SettingsFactory) -> None:
    audio = fake.add_file("voice.wav", sample_wav(4.0), "audio/wav")
    image = fake.add_file("photo.png", _png(), "image/png")
    args = {
        "model": WAN, "image": image, "prompt": "A singer on a rooftop", "duration": 10,
        "wan": {"shot_type": "multi", "prompt_extend": True, "audio_url": audio},
    }  # fmt: skip
    await run(env, make_settings, args)
    (create,) = fake.calls("POST", CREATE)
    assert create.json == {
        "model": "wan2.6-i2v",
        "input": {"prompt": "A singer on a rooftop", "img_url": image, "audio_url": audio},
        "parameters": {"duration": 10, "resolution": "720P", "prompt_extend": True, "shot_type": "multi"},
    }


async def test_flash_audio_url_turns_audio_on(fake: WanFake, env: dict[str, str], make_settings: SettingsFactory) -> None:
    audio = fake.add_file("voice.wav", sample_wav(3.5), "audio/wav")
    image = fake.add_file("photo.png", _png(), "image/png")
    args = {"model": FLASH, "image": image, "prompt": "She sings", "wan": {"audio_url": audio, "shot_type": "multi"}}
    await run(env, make_settings, args)
    (create,) = fake.calls("POST", CREATE)
    assert create.json == {
        "model": "wan2.6-i2v-flash",
        "input": {"prompt": "She sings", "img_url": image, "audio_url": audio},
        "parameters": {"duration": 5, "resolution": "720P", "audio": True, "shot_type": "multi"},
    }


async def test_gateway_multi_shot_and_audio_url(make_settings: SettingsFactory) -> None:
    with GatewayFake(api_key="gw") as gw:
        audio = gw.add_file("voice.wav", sample_wav(5.0), "audio/wav")
        image = gw.add_file("photo.png", _png(), "image/png")
        env = {"AI_GATEWAY_API_KEY": "gw", "AI_GATEWAY_BASE_URL": gw.base_url + "/v4/ai", "STILLMOTION_ALLOW_PRIVATE_NETWORK": "1"}
        args = {"model": FLASH, "image": image, "prompt": "She sings", "wan": {"audio_url": audio, "shot_type": "multi", "seed": 3}}
        await run(env, make_settings, args)
        (start,) = gw.calls("POST", START)
        assert start.obj == {
            "prompt": "She sings",
            "n": 1,
            "duration": 5,
            "seed": 3,
            "resolution": "1280x720",
            "providerOptions": {"alibaba": {"audioUrl": audio, "audio": True, "shotType": "multi"}},
            "image": {"type": "url", "url": image},
        }
        gw.assert_clean()


def _png() -> bytes:
    import io

    from PIL import Image

    from tests.render.measure import textured_image

    buf = io.BytesIO()
    Image.fromarray(textured_image(640, 480, 3)).save(buf, format="PNG")
    return buf.getvalue()


async def test_rules_refused_before_any_request(
    fake: WanFake, env: dict[str, str], make_settings: SettingsFactory, img: Path, tmp_path: Path
) -> None:
    short = tmp_path / "in" / "short.wav"
    short.write_bytes(sample_wav(2.0))
    long = tmp_path / "in" / "long.wav"
    long.write_bytes(sample_wav(31.0))
    huge = tmp_path / "in" / "huge.wav"
    huge.write_bytes(sample_wav(29.0, rate=48000) + b"\0" * (13 << 20))  # over 15 MB
    notaudio = tmp_path / "in" / "fake.mp3"
    await anyio.Path(notaudio).write_bytes(await anyio.Path(img).read_bytes())
    cases: list[tuple[str, dict[str, Any], str]] = [
        (WAN, {"shot_type": "multi", "prompt_extend": False}, "wan.shot_type"),
        (FLASH, {"audio": False, "audio_url": str(short)}, "wan.audio"),
        (WAN, {"audio_url": str(short)}, "wan.audio_url"),
        (WAN, {"audio_url": str(long)}, "wan.audio_url"),
        (WAN, {"audio_url": str(huge)}, "wan.audio_url"),
        (WAN, {"audio_url": str(notaudio)}, "wan.audio_url"),
        (WAN, {"audio": True}, "wan.audio"),
    ]
    async with connect(make_settings(**env)) as client:
        for model, wan, argument in cases:
            text = error_text(await client.call_tool("animate_image", {"model": model, "image": str(img), "prompt": "go", "wan": wan}))
            assert f"Invalid argument '{argument}'" in text, (wan, text)
    assert fake.requests == []
