"""extend_video: on local/preview from a job id and from a file (one MP4, the source then its
continuation; the seam continuous), on xAI through the chain (the create's image is the source's
exact last frame) and natively (xAI's documented extension body), and refused cases with 0 requests."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stillmotion.media.video import iter_frames, read_frame
from tests.conftest import SettingsFactory, connect, error_text, running, structured, wait_done, write_image
from tests.fakes import XaiFake
from tests.fakes.base import parse_data_uri
from tests.fakes.media import sample_mp4
from tests.render.measure import psnr

pytestmark = pytest.mark.anyio


async def test_local_preview_from_a_job_id_and_from_a_file(make_settings: SettingsFactory, tmp_path: Path) -> None:
    img = write_image(tmp_path / "in" / "scene.png", 640, 480, seed=21)
    settings = make_settings()
    async with connect(settings) as client:
        src = structured(
            await client.call_tool(
                "animate_image", {"image": str(img), "prompt": "slow zoom in", "duration": 2, "local": {"resolution": "480p"}}
            )
        )
        src = await wait_done(client, src["job_id"])
        assert src["status"] == "succeeded", src
        by_id = structured(await client.call_tool("extend_video", {"video": src["job_id"], "prompt": "pan left", "duration": 1}))
        assert (by_id["tool"], by_id["model"], by_id["route"]) == ("extend_video", "local/preview", "local")
        by_id = await wait_done(client, by_id["job_id"])
        assert (settings.inputs_dir / by_id["job_id"] / "source.mp4").is_file()  # kept with the job's inputs
        copy = tmp_path / "in" / "source.mp4"
        shutil.copyfile(src["video"]["path"], copy)
        by_file = structured(await client.call_tool("extend_video", {"video": str(copy), "prompt": "pan right", "duration": 2}))
        by_file = await wait_done(client, by_file["job_id"])
    source = list(iter_frames(Path(src["video"]["path"])))
    for done, added in ((by_id, 1), (by_file, 2)):
        assert done["status"] == "succeeded", done
        v = done["video"]
        assert v["duration_s"] == pytest.approx(src["video"]["duration_s"] + added, abs=1 / 24)
        assert (v["width"], v["height"], v["fps"]) == (src["video"]["width"], src["video"]["height"], 24.0)
        out = list(iter_frames(Path(v["path"])))
        assert len(out) == len(source) + added * 24
        # the source comes first, unchanged (stream copy: the same decoded pixels)
        assert psnr(out[len(source) - 1], source[-1]) > 60
        # the seam: the continuation's first frame is the source's last frame
        assert psnr(out[len(source)], source[-1]) >= 35


async def test_refused_with_no_job(make_settings: SettingsFactory, tmp_path: Path) -> None:
    not_video = write_image(tmp_path / "in" / "still.png", 64, 64, seed=3)
    img = write_image(tmp_path / "in" / "scene.png", 640, 480, seed=4)
    hold = tmp_path / "hold"
    hold.write_text("hold")
    settings = make_settings(STILLMOTION_TEST_HOLD_FILE=str(hold))
    async with connect(settings) as client:
        running = structured(await client.call_tool("animate_image", {"image": str(img), "duration": 3}))
        err = await client.call_tool("extend_video", {"video": running["job_id"], "prompt": "go on"})
        assert err.is_error and "video" in error_text(err) and "only a succeeded job's video" in error_text(err)
        err = await client.call_tool("extend_video", {"video": str(not_video), "prompt": "go on"})
        assert err.is_error and "video" in error_text(err)
        hold.unlink()
        src = await wait_done(client, running["job_id"])
        err = await client.call_tool("extend_video", {"video": src["job_id"], "duration": 30})
        assert err.is_error and "duration" in error_text(err)
        err = await client.call_tool("extend_video", {"video": src["job_id"], "duration": 1, "crossfade_s": 1.5})
        assert err.is_error and "crossfade_s" in error_text(err)
        dry = structured(await client.call_tool("extend_video", {"video": src["job_id"], "duration": 1, "dry_run": True}))
        assert dry["request"]["note"].startswith("local/preview renders")
        listed = structured(await client.call_tool("list_jobs", {}))
    assert [j["tool"] for j in listed["jobs"]] == ["animate_image"]
    # nothing kept for the refused calls and the dry run: only the one job's inputs
    assert sorted(p.name for p in settings.inputs_dir.iterdir()) == [src["job_id"]]


# -- xAI: through the chain and natively ---------------------------------------------------------

KEY = "xai-test-key-0123456789abcdef"


@pytest.fixture
def xai() -> Iterator[XaiFake]:
    with running(XaiFake(api_key=KEY)) as f:
        yield f


def _source(tmp_path: Path, seconds: float, name: str = "source.mp4") -> Path:
    path = tmp_path / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(sample_mp4(seconds, 320, 240, 24))
    return path


async def test_xai_chain_sends_the_exact_last_frame(xai: XaiFake, make_settings: SettingsFactory, tmp_path: Path) -> None:
    src = _source(tmp_path, 2.0)
    settings = make_settings(XAI_API_KEY=KEY, XAI_BASE_URL=xai.api_base)
    async with connect(settings) as client:
        job = structured(await client.call_tool(
            "extend_video", {"video": str(src), "model": "xai/grok-imagine-video", "prompt": "the camera rises", "duration": 3}
        ))  # fmt: skip
        done = await wait_done(client, job["job_id"])
    assert done["status"] == "succeeded", done
    (create,) = xai.calls("POST", "/v1/videos/generations")
    body = dict(create.obj)
    mime, png = parse_data_uri(body.pop("image")["url"])  # type: ignore[misc]
    assert body == {"model": "grok-imagine-video", "prompt": "the camera rises", "duration": 3, "resolution": "480p"}
    assert mime == "image/png"
    sent = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert np.array_equal(sent, read_frame(src, -1))  # lossless: the decoder's last frame, pixel for pixel
    # the result: the 2 s source, then the fake's 1 s clip (retimed to the source's rate and size)
    v = done["video"]
    assert (v["width"], v["height"]) == (320, 240)
    assert v["duration_s"] == pytest.approx(2.0 + 1.0, abs=1 / 24)


async def test_xai_native_sends_the_documented_body(xai: XaiFake, make_settings: SettingsFactory, tmp_path: Path) -> None:
    src = _source(tmp_path, 3.0)
    xai.result_video = sample_mp4(9.0, 320, 240, 24)  # xAI answers with the whole video
    settings = make_settings(XAI_API_KEY=KEY, XAI_BASE_URL=xai.api_base)
    async with connect(settings) as client:
        args = {"video": str(src), "model": "xai/grok-imagine-video", "prompt": "the door opens", "xai": {"native": True}}
        dry = structured(await client.call_tool("extend_video", {**args, "dry_run": True}))
        assert dry["request"]["url"].endswith("/videos/extensions") and dry["request"]["body"]["duration"] == 6
        job = structured(await client.call_tool("extend_video", args))
        done = await wait_done(client, job["job_id"])
    assert done["status"] == "succeeded", done
    assert xai.calls("POST", "/v1/videos/generations") == []
    (ext,) = xai.calls("POST", "/v1/videos/extensions")
    body = dict(ext.obj)
    video = body.pop("video")
    assert body == {"model": "grok-imagine-video", "prompt": "the door opens", "duration": 6}
    assert parse_data_uri(video["url"]) == ("video/mp4", src.read_bytes())
    assert done["video"]["duration_s"] == pytest.approx(9.0, abs=1 / 24)  # the answer as it came, not joined again


async def test_xai_native_rules_refused_with_no_request(xai: XaiFake, make_settings: SettingsFactory, tmp_path: Path) -> None:
    short = _source(tmp_path, 1.0, "short.mp4")
    ok = _source(tmp_path, 3.0, "ok.mp4")
    settings = make_settings(XAI_API_KEY=KEY, XAI_BASE_URL=xai.api_base)
    base = {"model": "xai/grok-imagine-video", "prompt": "go on", "xai": {"native": True}}
    cases = [
        ({**base, "video": str(short)}, "2-15 s"),
        ({**base, "video": str(ok), "duration": 12}, "duration"),
        ({**base, "video": str(ok), "xai": {"native": True, "resolution": "720p"}}, "xai.resolution"),
        ({**base, "video": str(ok), "model": "xai/grok-imagine-video-1.5"}, "xai.native"),
        ({**base, "video": str(ok), "crossfade_s": 0.5}, "crossfade_s"),
    ]
    async with connect(settings) as client:
        for args, word in cases:
            err = await client.call_tool("extend_video", args)
            assert err.is_error and word in error_text(err), (args, error_text(err))
        err = await client.call_tool("animate_image", {"image": str(write_image(tmp_path / "i.png", 320, 240)), **base})
        assert err.is_error and "xai.native" in error_text(err)
    assert xai.api_calls() == []


async def test_cost_is_the_continuations_and_the_budget_and_confirmation_apply(
    xai: XaiFake, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    src = _source(tmp_path, 2.0)
    args = {"video": str(src), "model": "xai/grok-imagine-video", "prompt": "go on", "duration": 4}
    base = {"XAI_API_KEY": KEY, "XAI_BASE_URL": xai.api_base}
    async with connect(make_settings(**base)) as client:
        dry = structured(await client.call_tool("extend_video", {**args, "dry_run": True}))
    assert dry["cost"]["estimated_usd"] == pytest.approx(0.05 * 4)  # Grok 480p, the 4 s added, not the source
    async with connect(make_settings(**base, STILLMOTION_BUDGET_USD="0.10", STILLMOTION_BUDGET_PERIOD="total")) as client:
        err = await client.call_tool("extend_video", args)
        assert err.is_error and "budget" in error_text(err)
    async with connect(make_settings(**base, STILLMOTION_CONFIRM_ABOVE_USD="0.10")) as client:
        err = await client.call_tool("extend_video", args)
        assert err.is_error and "confirm_cost_usd" in error_text(err), error_text(err)
        job = structured(await client.call_tool("extend_video", {**args, "confirm_cost_usd": 0.2}))
        done = await wait_done(client, job["job_id"])
    assert done["status"] == "succeeded" and done["cost"]["estimated_usd"] == pytest.approx(0.2)
    assert len(xai.calls("POST", "/v1/videos/generations")) == 1


async def test_a_continuation_that_does_not_decode_fails_the_job_clearly(
    xai: XaiFake, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    src = _source(tmp_path, 2.0)
    xai.result_video = b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100
    async with connect(make_settings(XAI_API_KEY=KEY, XAI_BASE_URL=xai.api_base)) as client:
        job = structured(await client.call_tool(
            "extend_video", {"video": str(src), "model": "xai/grok-imagine-video", "prompt": "go on", "duration": 2}
        ))  # fmt: skip
        done = await wait_done(client, job["job_id"])
    assert done["status"] == "failed", done
    assert "could not be joined" in done["error"]["message"], done["error"]
