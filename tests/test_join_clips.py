"""join_clips: three local jobs (one of another size and frame rate) joined into one video; the
stream-copy path for identically encoded clips; crossfades; audio kept or silence; bad clips."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import anyio
import av
import numpy as np
import pytest
from mcp import Client

from stillmotion.media.join import clip_facts, fit_pad, join
from stillmotion.media.video import iter_frames, probe_video
from tests.conftest import SettingsFactory, connect, error_text, structured, wait_done, write_image
from tests.render.measure import psnr

pytestmark = pytest.mark.anyio


async def local_job(client: Client, image: Path, prompt: str, **local: Any) -> dict[str, Any]:
    args = {"image": str(image), "prompt": prompt, "duration": 1, "local": {"resolution": "480p", **local}}
    job = structured(await client.call_tool("animate_image", args))
    done = await wait_done(client, job["job_id"])
    assert done["status"] == "succeeded", done
    return done


def frames(path: str | Path) -> list[np.ndarray]:
    return list(iter_frames(Path(path)))


async def test_three_local_jobs_one_of_another_size_and_rate(make_settings: SettingsFactory, tmp_path: Path) -> None:
    wide = write_image(tmp_path / "in" / "wide.png", 640, 480, seed=11)
    other = write_image(tmp_path / "in" / "other.png", 640, 480, seed=12)
    square = write_image(tmp_path / "in" / "square.png", 480, 480, seed=13)
    async with connect(make_settings()) as client:
        a = await local_job(client, wide, "slow zoom in")
        b = await local_job(client, other, "pan left")
        c = await local_job(client, square, "pan right", fps=30)
        assert (c["video"]["width"], c["video"]["fps"]) == (480, 30.0)
        joined = structured(
            await client.call_tool("join_clips", {"clips": [a["job_id"], b["job_id"], c["video"]["uri"]]})
        )
        assert (joined["tool"], joined["model"], joined["route"]) == ("join_clips", "local/preview", "local")
        done = await wait_done(client, joined["job_id"])
    assert done["status"] == "succeeded", done
    v = done["video"]
    assert (v["width"], v["height"], v["fps"]) == (a["video"]["width"], a["video"]["height"], 24.0)
    want_s = a["video"]["duration_s"] + b["video"]["duration_s"] + c["video"]["duration_s"]
    assert v["duration_s"] == pytest.approx(want_s, abs=1 / 24)
    assert v["frame_count"] == 24 + 24 + 24
    assert any("clip 3 is 480x480 at 30 fps" in w for w in done["warnings"]), done["warnings"]
    assert done["poster"] and await anyio.Path(done["last_frame"]["path"]).is_file()

    out = frames(v["path"])
    fa, fb, fc = frames(a["video"]["path"]), frames(b["video"]["path"]), frames(c["video"]["path"])
    w, h = v["width"], v["height"]
    seams = [
        (out[23], fa[-1]), (out[24], fb[0]),  # A | B
        (out[47], fb[-1]), (out[48], fit_pad(fc[0], w, h)),  # B | C (scaled and padded, 30 -> 24 fps)
        (out[-1], fit_pad(fc[-1], w, h)),
    ]  # fmt: skip
    for i, (got, want) in enumerate(seams):
        assert psnr(got, want) >= 35.0, (i, psnr(got, want))


async def test_same_encoding_is_stream_copied_and_crossfade_shortens(make_settings: SettingsFactory, tmp_path: Path) -> None:
    one = write_image(tmp_path / "in" / "one.png", 640, 480, seed=21)
    two = write_image(tmp_path / "in" / "two.png", 640, 480, seed=22)
    async with connect(make_settings()) as client:
        a = await local_job(client, one, "zoom in")
        b = await local_job(client, two, "zoom out")
        copied = structured(await client.call_tool("join_clips", {"clips": [a["job_id"], b["job_id"]], "wait_seconds": 30}))
        faded = structured(
            await client.call_tool(
                "join_clips", {"clips": [a["job_id"], b["job_id"], a["job_id"]], "crossfade_s": 0.5, "wait_seconds": 30}
            )
        )
    assert copied["status"] == "succeeded" and copied["warnings"] == []
    # stream copy: every frame decodes to exactly the clips' own frames (a re-encode could not)
    got = frames(copied["video"]["path"])
    want = frames(a["video"]["path"]) + frames(b["video"]["path"])
    assert len(got) == len(want) and all(np.array_equal(x, y) for x, y in zip(got, want, strict=True))
    assert faded["status"] == "succeeded"
    assert faded["video"]["duration_s"] == pytest.approx(3 * 1.0 - 2 * 0.5, abs=1 / 24)
    assert faded["video"]["frame_count"] == 3 * 24 - 2 * 12


def _clip_with_audio(path: Path, seconds: float, with_audio: bool, size: tuple[int, int] = (320, 240)) -> Path:
    fps = 24
    with av.open(str(path), "w", format="mp4") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = *size, "yuv420p"
        a = None
        if with_audio:
            a = c.add_stream("aac", rate=48000)
            a.layout, a.format = "stereo", "fltp"
        for i in range(round(seconds * fps)):
            img = np.full((size[1], size[0], 3), (i * 7) % 255, np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
        if a is not None:
            n = round(seconds * 48000)
            tone = (0.5 * np.sin(np.arange(n) * 2 * np.pi * 440 / 48000)).astype(np.float32)
            for s in range(0, n, 1024):
                chunk = np.ascontiguousarray(np.stack([tone[s : s + 1024]] * 2))
                af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                af.sample_rate, af.pts, af.time_base = 48000, s, Fraction(1, 48000)
                for p in a.encode(af):
                    c.mux(p)
            for p in a.encode(None):
                c.mux(p)
    return path


def _audio(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)


def test_audio_kept_where_present_silence_where_not(tmp_path: Path) -> None:
    loud = _clip_with_audio(tmp_path / "loud.mp4", 1.0, True)
    mute = _clip_with_audio(tmp_path / "mute.mp4", 1.0, False)
    out = tmp_path / "joined.mp4"
    report = join([clip_facts(loud), clip_facts(mute)], out)
    assert not report.stream_copy  # one has audio, one has not: the encodings differ
    info = probe_video(out)
    assert info.has_audio and info.duration_s == pytest.approx(2.0, abs=1 / 24)
    track = _audio(out)
    rms_first = float(np.sqrt(np.mean(track[:, 4800:43200] ** 2)))
    rms_second = float(np.sqrt(np.mean(track[:, 52800:91200] ** 2)))
    assert rms_first > 0.2 and rms_second < 0.01, (rms_first, rms_second)


async def test_bad_clips_refused(make_settings: SettingsFactory, tmp_path: Path, image_480: Path) -> None:
    async with connect(make_settings()) as client:
        good = await local_job(client, image_480, "zoom in")
        cases: list[tuple[dict[str, Any], str]] = [
            ({"clips": [good["job_id"]]}, "clips"),
            ({"clips": [good["job_id"], str(image_480)]}, "clips[1]"),
            ({"clips": [good["job_id"], "job_0000000000000000"]}, "clips[1]"),
            ({"clips": [good["job_id"], good["job_id"]], "crossfade_s": 1.0}, "crossfade_s"),
            ({"clips": [good["job_id"], good["job_id"]], "crossfade_s": 2.5}, "crossfade_s"),
        ]
        for args, argument in cases:
            text = error_text(await client.call_tool("join_clips", args))
            assert argument in text, (args, text)
