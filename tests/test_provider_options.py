"""Provider knowledge in one place: the registry, pure option checks, typed options in stored requests."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from stillmotion.catalog import MODELS
from stillmotion.errors import InvalidInput
from stillmotion.plan.requests import GenerationRequest, KlingOptions, KlingShot, WanOptions
from stillmotion.providers import gateway, kling, wan, xai
from stillmotion.providers.registry import REGISTRY, make_provider
from stillmotion.providers.rules import OptionContext
from stillmotion.settings import Settings


def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({"STILLMOTION_HOME": str(tmp_path)})


def ctx(tmp_path: Path, model: str, **kw: object) -> OptionContext:
    base: dict[str, object] = {
        "tool": "animate_image", "spec": MODELS[model], "route": "direct", "prompt": "go", "duration": None,
        "has_end_image": False, "settings": settings(tmp_path),
    }  # fmt: skip
    base.update(kw)
    return OptionContext(**base)  # type: ignore[arg-type]


def test_registry_routes(tmp_path: Path) -> None:
    client = httpx.AsyncClient()
    s = settings(tmp_path)
    assert isinstance(make_provider(client, s, "klingai", "direct"), kling.KlingProvider)
    assert isinstance(make_provider(client, s, "alibaba", "direct"), wan.WanProvider)
    assert isinstance(make_provider(client, s, "xai", "direct"), xai.XaiProvider)
    assert isinstance(make_provider(client, s, "alibaba", "gateway"), gateway.GatewayProvider)
    with pytest.raises(ValueError):
        make_provider(client, s, "local", "direct")
    assert {e.field for e in REGISTRY.values()} == {"kling", "wan", "xai", "veo", "seedance", "local"}


def test_kling_check_is_pure_and_resolves(tmp_path: Path) -> None:
    shots = [KlingShot(prompt="a", duration=4), KlingShot(prompt="b", duration=6)]
    checked = kling.check_options(KlingOptions(shots=shots, poll_interval_ms=900), ctx(tmp_path, "klingai/kling-v3.0-i2v"))
    assert checked.duration == 10 and checked.prompt_used is False
    assert checked.options.mode == "std" and checked.options.shot_type == "customize"
    assert checked.options.poll_interval_ms is None and checked.poll_interval_ms == 900
    assert any("prompt is ignored" in w for w in checked.warnings)
    with pytest.raises(InvalidInput) as err:
        kling.check_options(KlingOptions(shots=shots), ctx(tmp_path, "klingai/kling-v3.0-i2v", duration=8))
    assert err.value.argument == "kling.shots"


def test_wan_check_audio_rules(tmp_path: Path) -> None:
    flash = "alibaba/wan-v2.6-i2v-flash"
    assert wan.check_options(WanOptions(audio_url="https://x/a.mp3"), ctx(tmp_path, flash)).options.audio is True
    assert wan.check_options(None, ctx(tmp_path, flash)).options.audio is False
    with pytest.raises(InvalidInput) as err:
        wan.check_options(WanOptions(audio_url="https://x/a.mp3", audio=False), ctx(tmp_path, flash))
    assert err.value.argument == "wan.audio"
    multi = WanOptions(shot_type="multi")
    assert wan.check_options(multi, ctx(tmp_path, "alibaba/wan-v2.6-i2v")).options.shot_type == "multi"
    with pytest.raises(InvalidInput):
        wan.check_options(multi.model_copy(update={"prompt_extend": False}), ctx(tmp_path, "alibaba/wan-v2.6-i2v"))


def test_rows_stored_before_typed_options_still_load() -> None:
    image = {"path": "/x.png", "mime": "image/png", "width": 640, "height": 480, "bytes": 1, "sha256": "0"}
    legacy = {
        "tool": "animate_image", "model": "klingai/kling-v2.6-i2v", "route": "direct", "duration": 5,
        "image": image, "options": {"mode": "pro", "sound": "on", "voices": ["v"]},
    }  # fmt: skip
    req = GenerationRequest.model_validate(legacy)
    assert req.kling == KlingOptions(mode="pro", sound="on", voices=["v"])
    assert req.options == {"mode": "pro", "sound": "on", "voices": ["v"]}
    again = GenerationRequest.model_validate(req.model_dump(mode="json"))
    assert again == req and "options" not in req.model_dump()
