"""MP4 writing, probing and frame reading (media/video.py) and pictures (contact_sheet.py)."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from stillmotion.media.contact_sheet import (
    CAPTION_HEIGHT,
    caption_strip,
    contact_sheet_png,
    last_frame_png,
    time_label,
)
from stillmotion.media.video import (
    encode_frames,
    first_and_last_frames,
    iter_frames,
    probe_video,
    read_frame,
    rgb_to_yuv420,
    yuv420_to_rgb,
)
from stillmotion.render import camera_frames, camera_frames_yuv
from tests.render.measure import psnr, psnr_quarter, textured_image

W, H = 320, 240


def _moving(n: int, w: int = W, h: int = H) -> Iterator[np.ndarray]:
    base = textured_image(w, h)
    for i in range(n):
        yield np.ascontiguousarray(np.roll(base, 2 * i, axis=1))


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    assert encode_frames(_moving(24), path) == 24
    return path


def test_probe_roundtrip(clip: Path) -> None:
    info = probe_video(clip)
    assert (info.width, info.height) == (W, H)
    assert info.fps == pytest.approx(24.0)
    assert info.frame_count == 24
    assert info.duration_s == pytest.approx(1.0, abs=1e-3)
    assert info.has_audio is False
    assert info.codec == "h264"


def test_stream_tags_and_faststart(clip: Path) -> None:
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        cc = stream.codec_context
        assert cc.pix_fmt == "yuv420p"
        assert int(cc.colorspace) == 1  # BT.709
        assert int(cc.color_primaries) == 1
        assert int(cc.color_trc) == 1
        assert int(cc.color_range) == 1  # MPEG / tv
        assert str(cc.profile) == "High"
    data = clip.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat"), "+faststart puts moov before mdat"


def test_frames_decode_close_to_source(clip: Path) -> None:
    frames = list(iter_frames(clip))
    source = list(_moving(24))
    assert len(frames) == 24
    for i in (0, 11, 23):
        assert frames[i].shape == (H, W, 3) and frames[i].dtype == np.uint8
        assert psnr_quarter(frames[i], source[i]) >= 30
    assert psnr_quarter(frames[0], textured_image(W, H, seed=7)) < 20


def test_read_frame_and_first_last(clip: Path) -> None:
    frames = list(iter_frames(clip))
    assert np.array_equal(read_frame(clip, 0), frames[0])
    assert np.array_equal(read_frame(clip, 5), frames[5])
    assert np.array_equal(read_frame(clip, -1), frames[-1])
    assert np.array_equal(read_frame(clip, -3), frames[-3])
    first, last = first_and_last_frames(clip)
    assert np.array_equal(first, frames[0]) and np.array_equal(last, frames[-1])
    with pytest.raises(IndexError):
        read_frame(clip, 24)
    with pytest.raises(IndexError):
        read_frame(clip, -25)


def test_colours_bt709_roundtrip(tmp_path: Path) -> None:
    colours = [
        (255, 0, 0),
        (0, 255, 0),
        (0, 0, 255),
        (255, 255, 0),
        (0, 255, 255),
        (128, 64, 200),
        (16, 16, 16),
    ]
    img = np.zeros((H, W, 3), np.uint8)
    pw = W // len(colours)
    for k, c in enumerate(colours):
        img[:, k * pw : (k + 1) * pw] = c
    path = tmp_path / "colours.mp4"
    encode_frames([img] * 3, path, crf=10)
    out = read_frame(path, 0)
    for k, c in enumerate(colours):
        patch = out[H // 4 : 3 * H // 4, k * pw + 8 : (k + 1) * pw - 8].reshape(-1, 3).mean(axis=0)
        assert np.abs(patch - np.array(c)).max() <= 4, (c, patch)
    # the stored luma uses the BT.709 matrix in limited range: pure red has
    # Y = 16 + 219 * 0.2126 = 62.6 (BT.601 would give 81.5), white would be 235
    with av.open(str(path)) as container:
        yuv = next(container.decode(video=0)).to_ndarray(format="yuv420p")
    assert abs(float(yuv[H // 2, pw // 2]) - 62.6) <= 2
    assert abs(float(yuv[H // 2, 3 * pw + pw // 2]) - (16 + 219 * (0.2126 + 0.7152))) <= 2


def test_silent_audio_track(tmp_path: Path) -> None:
    path = tmp_path / "audio.mp4"
    encode_frames(_moving(24), path, silent_audio=True)
    info = probe_video(path)
    assert info.has_audio is True
    assert info.frame_count == 24
    assert info.duration_s == pytest.approx(1.0, abs=1e-3)
    with av.open(str(path)) as container:
        a = container.streams.audio[0]
        assert a.codec_context.name == "aac" and a.rate == 48000 and a.channels == 2
        samples = sum(f.samples for f in container.decode(a))
    assert samples >= 48000


def test_encoding_is_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    encode_frames(_moving(12), a)
    encode_frames(_moving(12), b)
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("size", [(321, 240), (320, 241), (1, 1)])
def test_odd_sizes_rejected(tmp_path: Path, size: tuple[int, int]) -> None:
    path = tmp_path / "odd.mp4"
    with pytest.raises(ValueError, match="even"):
        encode_frames([np.zeros((size[1], size[0], 3), np.uint8)], path)
    assert not path.exists()


def test_bad_frames_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.mp4"
    with pytest.raises(ValueError, match="inconsistent"):
        encode_frames([np.zeros((H, W, 3), np.uint8), np.zeros((H, W + 2, 3), np.uint8)], path)
    with pytest.raises(ValueError, match="RGB uint8"):
        encode_frames([np.zeros((H, W, 3), np.float32)], path)
    with pytest.raises(ValueError, match="RGB uint8"):
        encode_frames([np.zeros((H, W), np.uint8)], path)
    with pytest.raises(ValueError, match="no frames"):
        encode_frames([], path)
    with pytest.raises(ValueError):
        encode_frames(_moving(2), path, fps=0)


def test_generator_error_propagates_and_stops_encoder(tmp_path: Path) -> None:
    before = threading.active_count()

    def failing() -> Iterator[np.ndarray]:
        yield from _moving(5)
        raise RuntimeError("render failed")

    with pytest.raises(RuntimeError, match="render failed"):
        encode_frames(failing(), tmp_path / "partial.mp4")
    assert threading.active_count() == before


def test_frames_are_pulled_on_the_calling_thread(tmp_path: Path) -> None:
    seen: set[int] = set()

    def frames() -> Iterator[np.ndarray]:
        for f in _moving(6):
            seen.add(threading.get_ident())
            yield f

    encode_frames(frames(), tmp_path / "t.mp4")
    assert seen == {threading.get_ident()}


def test_probe_rejects_truncated_file(clip: Path, tmp_path: Path) -> None:
    data = clip.read_bytes()
    half = tmp_path / "half.mp4"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a decodable MP4"):
        probe_video(half)
    tail_cut = tmp_path / "tail.mp4"
    tail_cut.write_bytes(data[: len(data) - 200])
    with pytest.raises(ValueError, match="not a decodable MP4"):
        probe_video(tail_cut)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8)),
        b"<html>not found</html>",
    ],
)
def test_probe_rejects_garbage(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.mp4"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a decodable MP4"):
        probe_video(path)


def test_probe_rejects_non_mp4_image(tmp_path: Path) -> None:
    path = tmp_path / "image.png"
    Image.fromarray(textured_image(64, 64)).save(path)
    with pytest.raises(ValueError, match="not a decodable MP4"):
        probe_video(path)


def test_contact_sheet_720p(tmp_path: Path) -> None:
    path = tmp_path / "hd.mp4"
    encode_frames(_moving(13, 1280, 720), path)
    data = contact_sheet_png(path)
    assert len(data) < 100_000
    sheet = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    tw, th = 200, round(200 * 720 / 1280)
    cell = th + CAPTION_HEIGHT
    assert sheet.shape == (2 * cell + 2, 3 * tw + 4, 3)
    first, last = first_and_last_frames(path)
    small_first = cv2.resize(first, (tw, th), interpolation=cv2.INTER_AREA)
    small_last = cv2.resize(last, (tw, th), interpolation=cv2.INTER_AREA)
    tile0 = sheet[:th, :tw]
    tile5 = sheet[cell + 2 : cell + 2 + th, 2 * (tw + 2) :]
    # each tile is captioned with its time (13 frames at 24 fps: frames 0, 2, 5, 7, 10, 12)
    labels = [time_label(i / 24) for i in (0, 2, 5, 7, 10, 12)]
    for k, label in enumerate(labels):
        r, c = divmod(k, 3)
        y, x = r * (cell + 2) + th, c * (tw + 2)
        caption = sheet[y : y + CAPTION_HEIGHT, x : x + 60].astype(int)  # the text's end of the strip
        diffs = {other: float(np.abs(caption - caption_strip(other, tw)[:, :60].astype(int)).mean()) for other in labels}
        assert diffs[label] < 2.5 and min(diffs, key=lambda o: diffs[o]) == label, (label, diffs)
    assert time_label(12 / 24) == "0.50 s"
    assert psnr(tile0, small_first) > 20
    assert psnr(tile5, small_last) > 20
    assert psnr(tile5, small_last) > psnr(tile5, small_first) + 3


def test_last_frame_png(clip: Path) -> None:
    data = last_frame_png(clip)
    img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.array_equal(img, read_frame(clip, -1))


def test_yuv420_frames_encode_like_rgb(tmp_path: Path) -> None:
    """I420 frames (the encoder's own format) go in without conversion and decode to the
    same picture as the RGB frames they were converted from; the two conversions agree."""
    rgb = list(_moving(6))
    yuv = [rgb_to_yuv420(f) for f in rgb]
    assert yuv[0].shape == (H * 3 // 2, W)
    back = yuv420_to_rgb(yuv[0], W, H)
    assert psnr_quarter(back, rgb[0]) > 34
    a, b = tmp_path / "rgb.mp4", tmp_path / "yuv.mp4"
    encode_frames(iter(rgb), a)
    encode_frames(iter(yuv), b, frame_format="yuv420p")
    assert probe_video(b).frame_count == 6
    for src, fa, fb in zip(rgb, iter_frames(a), iter_frames(b), strict=True):
        assert psnr_quarter(fa, fb) > 34
        assert psnr_quarter(fb, src) > psnr_quarter(fa, src) - 1.0
    with pytest.raises(ValueError, match="I420"):
        encode_frames(iter(rgb), b, frame_format="yuv420p")
    with pytest.raises(ValueError, match="frame_format"):
        encode_frames(iter(yuv), b, frame_format="nv12")


def test_camera_frames_yuv_match_rgb() -> None:
    img = textured_image(W, H, seed=4)
    for camera in ({"type": "simple", "config": {"zoom": -4}}, {"type": "down_back"}):
        for f_rgb, f_yuv in zip(camera_frames(img, camera, 5), camera_frames_yuv(img, camera, 5), strict=True):
            assert psnr_quarter(yuv420_to_rgb(f_yuv, W, H), f_rgb) > 30


def test_failure_while_closing_stays_off_the_encoder_thread(tmp_path: Path) -> None:
    """A render that stops (here: its generator fails) after its file's folder was removed:
    closing the file then fails too (the trailer cannot be written). The caller sees the
    render's own error, and nothing escapes the encoder thread (pytest turns an unhandled
    thread exception into a failure)."""
    folder = tmp_path / "job"
    folder.mkdir()

    def frames() -> Iterator[np.ndarray]:
        yield from _moving(40)
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
        raise RuntimeError("render stopped")

    with pytest.raises(RuntimeError, match="render stopped"):
        encode_frames(frames(), folder / "clip.mp4")
