"""extend_video: on local/preview from a job id and from a file (one MP4, the source then its
continuation; the seam continuous), on xAI through the chain (the create's image is the source's
exact last frame) and natively (xAI's documented extension body), and refused cases with 0 requests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from stillmotion.media.video import iter_frames
from tests.conftest import SettingsFactory, connect, error_text, structured, wait_done, write_image
from tests.render.measure import psnr

pytestmark = pytest.mark.anyio


async def test_local_preview_from_a_job_id_and_from_a_file(make_settings: SettingsFactory, tmp_path: Path) -> None:
    img = write_image(tmp_path / "in" / "scene.png", 640, 480, seed=21)
    async with connect(make_settings()) as client:
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
    async with connect(make_settings(STILLMOTION_TEST_HOLD_FILE=str(hold))) as client:
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
        listed = structured(await client.call_tool("list_jobs", {}))
    assert [j["tool"] for j in listed["jobs"]] == ["animate_image"]
