"""The whole product offline: every generation tool on local/preview through the in-memory MCP client,
checked on the decoded MP4 (frame count, fps, size, duration, first/last frames, measured motion)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import anyio
import numpy as np
import pytest
from mcp.types import ImageContent, ResourceLink

from stillmotion.media.video import first_and_last_frames, iter_frames, probe_video
from tests.conftest import SettingsFactory, connect, error_text, rgb, structured, wait_done, write_image
from tests.render.measure import estimate_similarity, psnr_quarter, track_region

pytestmark = pytest.mark.anyio

LOCAL = {"model": "local/preview", "local": {"resolution": "480p"}}


async def test_tools_listed_with_schemas_and_annotations(make_settings: SettingsFactory) -> None:
    async with connect(make_settings()) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == {
        "animate_image", "interpolate_frames", "camera_move", "motion_brush",
        "check_job", "list_jobs", "cancel_job", "list_models", "join_clips", "delete_job", "extend_video",
    }
    for name in ("animate_image", "interpolate_frames", "camera_move", "motion_brush", "join_clips"):
        t = tools[name]
        assert t.annotations is not None and t.annotations.open_world_hint is True
        assert t.annotations.destructive_hint is False
        assert t.output_schema is not None and t.output_schema["type"] == "object"
        if name != "join_clips":  # join_clips is local and free: it has no dry run
            arms = t.output_schema["anyOf"]
            assert ["job_id" in a["properties"] for a in arms] == [True, False]  # a job, or a dry run
            assert arms[1]["properties"]["dry_run"]["const"] is True
        assert t.input_schema.get("additionalProperties") is False
    for name in ("check_job", "list_jobs", "list_models"):
        assert tools[name].annotations.read_only_hint is True  # type: ignore[union-attr]
    props = tools["camera_move"].input_schema["properties"]
    model_enum = json.dumps(props["model"])
    assert "klingai/kling-v1.5-i2v" in model_enum and "klingai/kling-v2.6-i2v" not in model_enum


async def test_animate_image_end_to_end(make_settings: SettingsFactory, image_480: Path) -> None:
    async with connect(make_settings()) as client:
        res = structured(
            await client.call_tool(
                "animate_image", {"image": str(image_480), "prompt": "slowly zoom in", "duration": 2, **LOCAL}
            )
        )
        assert res["status"] in ("queued", "running")
        assert res["job_id"].startswith("job_")
        done = await wait_done(client, res["job_id"])
    assert done["status"] == "succeeded", done
    video = done["video"]
    info = probe_video(Path(video["path"]))
    assert (info.width, info.height, info.frame_count) == (640, 480, 48)
    assert info.fps == pytest.approx(24)
    assert info.duration_s == pytest.approx(2.0, abs=0.05)
    assert video["width"] == 640 and video["duration_s"] == pytest.approx(2.0, abs=0.05)
    first, last = first_and_last_frames(Path(video["path"]))
    src = rgb(image_480)
    assert psnr_quarter(first, src) >= 30
    sim = estimate_similarity(first, last)
    assert sim.scale > 1.05, "prompt 'zoom in' must make the content grow"
    assert any("camera motion" in w for w in done["warnings"])
    assert (await anyio.Path(done["poster"]["path"]).stat()).st_size < 100_000
    assert await anyio.Path(done["last_frame"]["path"]).is_file()


async def test_camera_move_zoom_measured(make_settings: SettingsFactory, image_480: Path) -> None:
    async with connect(make_settings()) as client:
        res = structured(
            await client.call_tool(
                "camera_move",
                {"image": str(image_480), "camera": {"type": "simple", "config": {"zoom": -5}}, "duration": 2, **LOCAL},
            )
        )
        done = await wait_done(client, res["job_id"])
    first, last = first_and_last_frames(Path(done["video"]["path"]))
    assert psnr_quarter(first, rgb(image_480)) >= 30
    sim = estimate_similarity(first, last)
    # zoom -5: narrower field of view, content grows by 2 ** 0.5
    assert sim.scale == pytest.approx(2**0.5, rel=0.02)
    assert abs(sim.rotation_deg) < 1.0


async def test_camera_move_preset_and_wait(make_settings: SettingsFactory, image_480: Path) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with connect(make_settings()) as client:
        res = await client.call_tool(
            "camera_move",
            {"image": str(image_480), "camera": {"type": "down_back"}, "duration": 1, "wait_seconds": 30, **LOCAL},
            progress_callback=on_progress,
        )
    sc = structured(res)
    assert sc["status"] == "succeeded"
    assert seen and seen == sorted(seen) and seen[-1] == 1.0
    assert any(isinstance(c, ResourceLink) and str(c.uri).endswith("/video.mp4") for c in res.content)
    pics = [c for c in res.content if isinstance(c, ImageContent)]
    assert pics and len(base64.b64decode(pics[0].data)) < 100_000


async def test_interpolate_frames_hits_both_ends(make_settings: SettingsFactory, tmp_path: Path) -> None:
    a = write_image(tmp_path / "a.png", 640, 480, seed=3)
    b_arr = np.roll(rgb(a), 30, axis=1)
    b = tmp_path / "b.png"
    from PIL import Image

    Image.fromarray(b_arr).save(b)
    async with connect(make_settings()) as client:
        res = structured(
            await client.call_tool(
                "interpolate_frames", {"start_image": str(a), "end_image": str(b), "duration": 1, **LOCAL}
            )
        )
        done = await wait_done(client, res["job_id"])
    path = Path(done["video"]["path"])
    assert probe_video(path).frame_count == 24
    first, last = first_and_last_frames(path)
    assert psnr_quarter(first, rgb(a)) >= 30
    assert psnr_quarter(last, b_arr) >= 30
    assert psnr_quarter(last, rgb(a)) < psnr_quarter(last, b_arr) - 5


async def test_motion_brush_region_follows_trajectory(make_settings: SettingsFactory, image_480: Path) -> None:
    # a box around (160, 300) in bottom-left pixels moves right by 200 px and down by 60 px
    traj = [{"x": 160, "y": 300}, {"x": 360, "y": 240}]
    args = {
        "image": str(image_480),
        "dynamic_masks": [{"mask": {"box": [120, 260, 200, 340]}, "trajectory": traj}],
        "static_mask": {"box": [400, 0, 640, 480]},
        "duration": 1,
        **LOCAL,
    }
    async with connect(make_settings()) as client:
        done = await wait_done(client, structured(await client.call_tool("motion_brush", args))["job_id"])
    path = Path(done["video"]["path"])
    frames = list(iter_frames(path))
    assert len(frames) == 24
    h = 480
    mask = np.zeros((480, 640), bool)
    mask[h - 340 : h - 260, 120:200] = True
    start = (160.0, h - 1 - 300.0)
    end = (360.0, h - 1 - 240.0)
    first = frames[0]
    for i in (0, 12, 23):
        t = i / 23
        cx, cy = track_region(frames[i], first, mask)
        ex = start[0] + (end[0] - start[0]) * t
        ey = start[1] + (end[1] - start[1]) * t
        # the region's centroid is the box centre; the anchor moves with it
        assert abs((cx - 160.0) - (ex - start[0])) < 3.0, (i, cx, ex)
        assert abs((cy - (h - 1 - 300.0)) - (ey - start[1])) < 3.0, (i, cy, ey)
    static_first = first[:, 420:]
    static_last = frames[-1][:, 420:]
    assert psnr_quarter(static_first, static_last) > 35


async def test_chain_from_last_frame_and_resources(make_settings: SettingsFactory, image_480: Path) -> None:
    async with connect(make_settings()) as client:
        one = await wait_done(
            client,
            structured(
                await client.call_tool(
                    "camera_move",
                    {"image": str(image_480), "camera": {"type": "simple", "config": {"pan": 4}}, "duration": 1, **LOCAL},
                )
            )["job_id"],
        )
        uri = one["last_frame"]["uri"]
        two = await wait_done(
            client,
            structured(await client.call_tool("animate_image", {"image": uri, "duration": 1, **LOCAL}))["job_id"],
        )
        assert two["status"] == "succeeded"
        first_two, _ = first_and_last_frames(Path(two["video"]["path"]))
        _, last_one = first_and_last_frames(Path(one["video"]["path"]))
        assert psnr_quarter(first_two, last_one) >= 30
        job_json = await client.read_resource(f"stillmotion://jobs/{one['job_id']}")
        assert json.loads(job_json.contents[0].text)["status"] == "succeeded"  # type: ignore[union-attr]
        poster = await client.read_resource(one["poster"]["uri"])
        assert base64.b64decode(poster.contents[0].blob)[:8] == b"\x89PNG\r\n\x1a\n"  # type: ignore[union-attr]
        models = await client.read_resource("stillmotion://models")
        ids = {m["id"] for m in json.loads(models.contents[0].text)["models"]}  # type: ignore[union-attr]
        assert "local/preview" in ids and "xai/grok-imagine-video" in ids
        listed = structured(await client.call_tool("list_jobs", {"status": "succeeded"}))
        assert {j["job_id"] for j in listed["jobs"]} == {one["job_id"], two["job_id"]}


async def test_idempotency_key(make_settings: SettingsFactory, image_480: Path) -> None:
    args = {"image": str(image_480), "duration": 1, "idempotency_key": "k-1", **LOCAL}
    async with connect(make_settings()) as client:
        a = structured(await client.call_tool("animate_image", args))
        b = structured(await client.call_tool("animate_image", args))
        assert a["job_id"] == b["job_id"]
        text = error_text(await client.call_tool("animate_image", {**args, "duration": 2}))
        assert "idempotency_key" in text and a["job_id"] in text
        listed = structured(await client.call_tool("list_jobs", {}))
        assert len(listed["jobs"]) == 1


async def test_cancel_job(make_settings: SettingsFactory, image_480: Path, tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    hold.touch()
    async with connect(make_settings(STILLMOTION_TEST_HOLD_FILE=str(hold))) as client:
        job = structured(await client.call_tool("animate_image", {"image": str(image_480), "duration": 1, **LOCAL}))
        cancelled = structured(await client.call_tool("cancel_job", {"job_id": job["job_id"]}))
        assert cancelled["status"] == "cancelled" and cancelled["error"]["kind"] == "cancelled"
        hold.unlink()
        again = structured(await client.call_tool("check_job", {"job_id": job["job_id"], "wait_seconds": 1}))
        assert again["status"] == "cancelled"
        twice = await client.call_tool("cancel_job", {"job_id": job["job_id"]})
        assert "already ended" in twice.content[0].text  # type: ignore[union-attr]


async def test_bad_job_ids_and_unknown_arguments(make_settings: SettingsFactory, image_480: Path) -> None:
    async with connect(make_settings()) as client:
        for bad in ("../etc/passwd", "short", "UPPERCASE123", ""):
            text = error_text(await client.call_tool("check_job", {"job_id": bad}))
            assert "job_id" in text
        text = error_text(await client.call_tool("check_job", {"job_id": "job_0000000000000000"}))
        assert "no job" in text
        text = error_text(
            await client.call_tool("camera_move", {"image": str(image_480), "camera": {"type": "down_back"}, "end_image": "x"})
        )
        assert "end_image" in text
