"""join_clips measures every clip instead of believing it (issue #22): lying timestamps, absurd
frame rates, huge frames (refused from the header, before any decode), over-long joins, crossfades
the engine would refuse, pictures and NUL bytes, display rotation, streamed clip URLs, and the
input copies deleted when the job ends. Every refusal is `invalid_input` naming the clip, made at
submit (no job), with the server's RSS bounded throughout."""

from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from fractions import Fraction
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import av
import numpy as np
import pytest
from mcp import Client

from stillmotion.media.join import ClipRefused, measure_clip
from stillmotion.media.video import iter_frames
from tests.conftest import SettingsFactory, connect, error_text, structured, wait_done

if TYPE_CHECKING:
    from tests.test_bounded_fetch import Host

pytestmark = pytest.mark.anyio
RSS_CAP_MB = 800
MAX_PIXELS = 8192 * 8192


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def write_clip(
    path: Path,
    n: int,
    size: tuple[int, int] = (64, 48),
    rate: int = 24,
    *,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    rotation: float | None = None,
    band: bool = False,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as c:
        v = c.add_stream("libx264", rate=rate)
        v.width, v.height, v.pix_fmt = size[0], size[1], "yuv420p"
        if time_base is not None:
            v.time_base = time_base
        if rotation is not None:
            v.set_display_rotation(rotation)
        for i in range(n):
            img = np.full((size[1], size[0], 3), 60, np.uint8)
            if band:
                img[:, : size[0] // 8] = 255  # a white band on the left edge, as encoded
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = pts[i] if pts else i
            if time_base is not None:
                f.time_base = time_base
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
    return path


def write_huge_mov(path: Path, side: int = 16000) -> Path:
    """Two side x side PNG frames in a MOV, under 0.5 MB on disk (the issue's 1.5 MB bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    co = zlib.compressobj(9)
    row = b"\x00" * (side + 1)
    idat = b"".join(co.compress(row) for _ in range(side)) + co.flush()
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
    png += chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    with av.open(str(path), "w", format="mov") as c:
        v = c.add_stream("png", rate=1)
        v.width, v.height, v.pix_fmt = side, side, "gray"
        v.time_base = Fraction(1, 1)
        for i in range(2):
            p = av.Packet(png)
            p.stream, p.pts, p.dts, p.duration, p.time_base = v, i, i, 1, Fraction(1, 1)
            c.mux(p)
    return path


async def local_job(client: Client, image: Path) -> dict[str, Any]:
    args = {"image": str(image), "prompt": "zoom in", "duration": 1, "local": {"resolution": "480p"}}
    done = await wait_done(client, structured(await client.call_tool("animate_image", args))["job_id"])
    assert done["status"] == "succeeded", done
    return done


async def job_count(client: Client) -> int:
    return len(structured(await client.call_tool("list_jobs", {"limit": 100}))["jobs"])


def refused(text: str, argument: str, *words: str) -> None:
    assert "invalid_input" in text and f"'{argument}'" in text, text
    for w in words:
        assert w in text, (w, text)


# -- the engine's measurement --------------------------------------------------------------


def test_measure_refuses_lies_from_the_header(tmp_path: Path) -> None:
    lie = write_clip(tmp_path / "lie.mp4", 2, pts=[0, 18_000 * 24])  # 2 frames 18,000 s apart
    fast = write_clip(tmp_path / "fast.mp4", 3, rate=1_000_000, time_base=Fraction(1, 1_000_000))
    huge = write_huge_mov(tmp_path / "huge.mov")
    before = current_rss_mb()
    with pytest.raises(ClipRefused, match=r"fps; clips of 1-120 fps"):
        measure_clip(lie, max_pixels=MAX_PIXELS)
    with pytest.raises(ClipRefused, match=r"declares 1e\+06 fps"):
        measure_clip(fast, max_pixels=MAX_PIXELS)
    with pytest.raises(ClipRefused, match=r"67.1 megapixels"):
        measure_clip(huge, max_pixels=MAX_PIXELS)
    # the 16000x16000 frames (256 MB each) were never decoded
    assert current_rss_mb() - before < 100
    good = measure_clip(write_clip(tmp_path / "ok.mp4", 12, (64, 48), 24), max_pixels=MAX_PIXELS)
    assert (good.width, good.height, good.fps, good.frame_count, good.rotation) == (64, 48, 24, 12, 0)


# -- through the tool ------------------------------------------------------------------------


async def test_hostile_clips_refused_at_submit(make_settings: SettingsFactory, tmp_path: Path, image_480: Path) -> None:
    lie = write_clip(tmp_path / "c" / "lie.mp4", 2, pts=[0, 18_000 * 24])
    fast = write_clip(tmp_path / "c" / "fast.mp4", 3, rate=1_000_000, time_base=Fraction(1, 1_000_000))
    huge = write_huge_mov(tmp_path / "c" / "huge.mov")
    picture = tmp_path / "c" / "still.mp4"
    await anyio.Path(picture).write_bytes(await anyio.Path(image_480).read_bytes())  # a PNG named .mp4: judged by content
    async with connect(make_settings()) as client:
        good = await local_job(client, image_480)
        jid = good["job_id"]
        jobs = await job_count(client)
        cases: list[tuple[list[str], float, str, tuple[str, ...]]] = [
            ([jid, str(lie)], 0, "clips[1]", ("1-120 fps",)),
            ([jid, str(fast)], 0, "clips[1]", ("1e+06 fps",)),
            ([jid, str(huge)], 0, "clips[1]", ("megapixels",)),
            ([str(huge), jid], 0, "clips[0]", ("megapixels",)),
            ([jid, f"stillmotion://jobs/{jid}/poster.png"], 0, "clips[1]", ("not a file this argument takes",)),
            ([jid, f"stillmotion://jobs/{jid}/last-frame.png"], 0, "clips[1]", ("not a file this argument takes",)),
            ([jid, str(picture)], 0, "clips[1]", ("not an MP4/MOV",)),
            ([jid, str(tmp_path / "c" / "ok\x00.mp4")], 0, "clips[1]", ("NUL byte",)),
            ([jid, "job_\x00"], 0, "clips[1]", ("NUL byte",)),
            # 1 s clips at 24 fps: 0.99 s is 24 frames, as long as a clip (accepted, then failed, before)
            ([jid, jid], 0.99, "crossfade_s", ("24 frames", "clip 1")),
        ]
        for clips, crossfade, argument, words in cases:
            t0 = time.monotonic()
            text = error_text(await client.call_tool("join_clips", {"clips": clips, "crossfade_s": crossfade}))
            refused(text, argument, *words)
            assert time.monotonic() - t0 < 5, (clips, time.monotonic() - t0)
        assert await job_count(client) == jobs  # nothing was created
        assert [f.name for f in make_settings().inputs_dir.iterdir()] == [jid]  # no clip copy left behind
    assert peak_rss_mb() < RSS_CAP_MB


async def test_join_length_capped_and_copies_deleted(make_settings: SettingsFactory, image_480: Path) -> None:
    settings = make_settings(STILLMOTION_MAX_JOIN_SECONDS="2.5")
    async with connect(settings) as client:
        good = await local_job(client, image_480)
        jid = good["job_id"]
        text = error_text(await client.call_tool("join_clips", {"clips": [jid, jid, jid]}))
        refused(text, "clips[2]", "3.00 s", "at most 2.5 s", "STILLMOTION_MAX_JOIN_SECONDS")
        ok = structured(await client.call_tool("join_clips", {"clips": [jid, jid], "wait_seconds": 30}))
        assert ok["status"] == "succeeded", ok
        assert ok["video"]["duration_s"] == pytest.approx(2.0, abs=1 / 24)
        # the copies were hard links of the job's video (no disk), and are gone now the job ended
        assert not (settings.inputs_dir / ok["job_id"]).exists()
        assert os.stat(good["video"]["path"]).st_nlink == 1


async def test_rotated_clip_is_joined_upright(make_settings: SettingsFactory, tmp_path: Path) -> None:
    # encoded 128x64 with a white band on the left; displayed rotated 90 degrees clockwise (-90)
    rotated = write_clip(tmp_path / "r" / "rot.mp4", 24, (128, 64), rotation=-90, band=True)
    plain = write_clip(tmp_path / "r" / "plain.mp4", 24, (64, 128))
    async with connect(make_settings()) as client:
        done = structured(
            await client.call_tool("join_clips", {"clips": [str(rotated), str(plain)], "wait_seconds": 30})
        )
    assert done["status"] == "succeeded", done
    assert (done["video"]["width"], done["video"]["height"]) == (64, 128)
    first = next(iter(iter_frames(Path(done["video"]["path"]))))
    top, bottom = first[:12].mean(), first[-12:].mean()
    assert top > 200 and bottom < 100, (top, bottom)  # the left band is now along the top


async def test_odd_rotation_refused_with_reason(make_settings: SettingsFactory, tmp_path: Path, image_480: Path) -> None:
    skew = write_clip(tmp_path / "r" / "skew.mp4", 4, rotation=45)
    async with connect(make_settings()) as client:
        jid = (await local_job(client, image_480))["job_id"]
        text = error_text(await client.call_tool("join_clips", {"clips": [jid, str(skew)]}))
    refused(text, "clips[1]", "45 degrees", "multiples of 90")


def endless_route(size: int) -> Callable[[BaseHTTPRequestHandler], None]:
    """Sends `size` bytes without Content-Length (HTTP/1.0: the body ends when the connection closes)."""

    def route(h: BaseHTTPRequestHandler) -> None:
        h.protocol_version = "HTTP/1.0"
        h.send_response(200)
        h.send_header("Content-Type", "video/mp4")
        h.end_headers()
        block = b"\0" * (1 << 20)
        for _ in range(size // len(block)):
            h.wfile.write(block)
        h.close_connection = True

    return route


@pytest.fixture
def endless() -> Iterator[Host]:
    from tests.test_bounded_fetch import Host

    host = Host({"/clip.mp4": endless_route(300 << 20)})
    try:
        yield host
    finally:
        host.close()


async def test_clip_url_without_length_is_streamed_to_disk(
    make_settings: SettingsFactory, image_480: Path, endless: Host
) -> None:
    settings = make_settings(STILLMOTION_ALLOW_PRIVATE_NETWORK="1", STILLMOTION_MAX_RESULT_BYTES=str(200 << 20))
    async with connect(settings) as client:
        jid = (await local_job(client, image_480))["job_id"]
        peak = [current_rss_mb()]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.02):
                peak.append(current_rss_mb())

        sampler = threading.Thread(target=sample, daemon=True)
        base = current_rss_mb()
        sampler.start()
        try:
            text = error_text(await client.call_tool("join_clips", {"clips": [jid, f"{endless.base}/clip.mp4"]}))
        finally:
            stop.set()
            sampler.join(5)
    refused(text, "clips[1]", "over the 209715200-byte cap")
    assert max(peak) - base < 60, (base, max(peak))  # 200 MB arrived; none of it stayed in memory
    assert [f.name for f in settings.inputs_dir.iterdir()] == [jid]


async def test_copies_of_a_join_cancelled_before_it_ran_are_deleted(
    make_settings: SettingsFactory, tmp_path: Path, image_480: Path
) -> None:
    hold = tmp_path / "hold"
    settings = make_settings(STILLMOTION_TEST_HOLD_FILE=str(hold))
    async with connect(settings) as client:
        jid = (await local_job(client, image_480))["job_id"]
        hold.touch()  # the next render pauses after its first frames, keeping the one local slot
        args = {"image": str(image_480), "prompt": "x", "duration": 1, "local": {"resolution": "480p"}}
        busy = structured(await client.call_tool("animate_image", args))["job_id"]
        join = structured(await client.call_tool("join_clips", {"clips": [jid, jid]}))["job_id"]
        folder = settings.inputs_dir / join
        assert (folder / "clip_0.mp4").is_file()
        assert structured(await client.call_tool("check_job", {"job_id": join}))["status"] == "queued"
        assert structured(await client.call_tool("cancel_job", {"job_id": join}))["status"] == "cancelled"
        with anyio.fail_after(10):
            while folder.exists():  # deleted by the job's change callback, off the event loop
                await anyio.sleep(0.01)
        hold.unlink()
        assert (await wait_done(client, busy))["status"] == "succeeded"
        assert await anyio.Path(structured(await client.call_tool("check_job", {"job_id": jid}))["video"]["path"]).is_file()


def test_an_audio_track_longer_than_its_video_is_not_held(tmp_path: Path) -> None:
    """1 s of video over 300 s of audio: the join reads the audio it uses (1 s), not all of it."""
    import tracemalloc

    from stillmotion.media.join import AUDIO_RATE, _audio_of

    path = tmp_path / "long-audio.mp4"
    with av.open(str(path), "w", format="mp4") as c:
        v = c.add_stream("libx264", rate=24)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = c.add_stream("aac", rate=48000)
        a.layout, a.format = "mono", "fltp"
        for i in range(24):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 90, np.uint8), format="rgb24")
            f.pts = i
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
        block = np.zeros((1, 48000), np.float32)
        for s in range(300):
            af = av.AudioFrame.from_ndarray(block, format="fltp", layout="mono")
            af.sample_rate, af.pts, af.time_base = 48000, s * 48000, Fraction(1, 48000)
            for p in a.encode(af):
                c.mux(p)
        for p in a.encode(None):
            c.mux(p)
    facts = measure_clip(path, max_pixels=MAX_PIXELS)
    assert facts.has_audio and facts.frame_count == 24
    tracemalloc.start()
    try:
        track = _audio_of(facts, 1.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert track.shape == (2, AUDIO_RATE)
    assert peak < 20 * 2**20, peak  # all 300 s resampled to stereo float would be 110 MB
