"""Hostile and unusual image inputs: special files, size and pixel caps, truncated files, 16-bit and
grayscale-with-alpha PNGs, animations and EXIF orientation (issue #11)."""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import numpy as np
import pytest
from PIL import Image

from stillmotion.errors import InvalidInput
from stillmotion.media.images import LoadedImage, decode_mask, decode_rgb, load_image
from stillmotion.media.net import UrlGuard
from stillmotion.media.video import first_and_last_frames, iter_frames
from tests.conftest import SettingsFactory, connect, error_text, structured, wait_done
from tests.fakes import KlingFake
from tests.render.measure import psnr_quarter, textured_image, track_region

pytestmark = pytest.mark.anyio
LOCAL = {"model": "local/preview", "local": {"resolution": "480p"}}


async def _load(value: str, *, max_bytes: int = 10_000_000, max_pixels: int | None = None) -> LoadedImage:
    async with httpx.AsyncClient() as client:
        return await load_image(
            value,
            argument="image",
            client=client,
            guard=UrlGuard(False, frozenset()),
            input_roots=None,
            resolve_resource=lambda job, name: None,
            max_bytes=max_bytes,
            max_pixels=max_pixels,
        )


@pytest.fixture
def special_files(tmp_path: Path) -> Iterator[dict[str, str]]:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.png"
    folder.mkdir()
    sock_path = tmp_path / "s.png"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(sock_path))
    sock.listen(1)
    try:
        yield {
            "/dev/zero": "character device",
            "/dev/urandom": "character device",
            str(fifo): "FIFO",
            str(folder): "directory",
            str(sock_path): "socket",
        }
    finally:
        sock.close()


async def test_special_files_are_refused_at_once(special_files: dict[str, str]) -> None:
    for path, kind in special_files.items():
        started = time.monotonic()
        with pytest.raises(InvalidInput) as info:
            await _load(path)
        assert time.monotonic() - started < 5  # a FIFO with no writer must not hang the read
        assert info.value.argument == "image"
        assert "not a regular file" in info.value.message and kind in info.value.message, info.value.message
        assert path in info.value.message


async def test_special_file_as_tool_argument_names_the_argument(make_settings: SettingsFactory, tmp_path: Path) -> None:
    fifo = tmp_path / "end.png"
    os.mkfifo(fifo)
    async with connect(make_settings()) as client:
        text = error_text(await client.call_tool("animate_image", {"image": "/dev/zero", **LOCAL}))
        assert "'image'" in text and "character device" in text and "invalid_input" in text
        start = tmp_path / "start.png"
        Image.fromarray(textured_image(640, 480, 2)).save(start)
        text = error_text(await client.call_tool(
            "interpolate_frames", {"start_image": str(start), "end_image": str(fifo), **LOCAL}))
        assert "'end_image'" in text and "FIFO" in text
        jobs = structured(await client.call_tool("list_jobs", {}))
    assert jobs["jobs"] == []


async def test_read_cap_is_cap_plus_one_byte(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    Image.fromarray(textured_image(64, 64)).save(big)
    size = big.stat().st_size
    with pytest.raises(InvalidInput, match="read cap"):
        await _load(str(big), max_bytes=size - 1)
    assert (await _load(str(big), max_bytes=size)).width == 64


def _huge_png(path: Path, w: int, h: int) -> Path:
    """A valid grayscale PNG of w x h black pixels, written row by row (tiny on disk, never in memory)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\x00" * (w + 1)
    parts: list[bytes] = []
    for _ in range(h):
        parts.append(comp.compress(row))
    parts.append(comp.flush())
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)))
        fh.write(chunk(b"IDAT", b"".join(parts)))
        fh.write(chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def png_14k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _huge_png(tmp_path_factory.mktemp("huge") / "huge.png", 14000, 14000)


async def test_pixel_cap_checked_from_header(png_14k: Path) -> None:
    assert (await anyio.Path(png_14k).stat()).st_size < 1_000_000
    with pytest.raises(InvalidInput) as info:
        await _load(str(png_14k), max_pixels=64_000_000)
    assert "14000x14000" in info.value.message and "196.0 megapixels" in info.value.message
    assert "header" in info.value.message


async def test_14k_png_with_seven_box_masks_refused_on_kling(make_settings: SettingsFactory, png_14k: Path) -> None:
    boxes = [[100 * i, 100, 100 * i + 80, 300] for i in range(1, 7)]
    args = {
        "model": "klingai/kling-v1-i2v",
        "image": str(png_14k),
        "dynamic_masks": [{"mask": {"box": b}, "trajectory": [{"x": b[0] + 10, "y": 200}, {"x": b[0] + 40, "y": 220}]}
                          for b in boxes],
        "static_mask": {"box": [5000, 5000, 9000, 9000]},
        "prompt": "leaves move",
    }
    with KlingFake(api_key="k-key-123") as fake:
        async with connect(make_settings(KLINGAI_API_KEY="k-key-123", KLINGAI_BASE_URL=fake.base_url)) as client:
            text = error_text(await client.call_tool("motion_brush", args))
            catalog = await client.read_resource("stillmotion://models")
        assert fake.api_calls() == []
    assert "'image'" in text and "megapixels" in text and "64.0" in text
    text_block = catalog.contents[0]
    assert hasattr(text_block, "text")
    rules = {m["id"]: m["image"] for m in json.loads(text_block.text)["models"]}
    assert rules["klingai/kling-v1-i2v"]["max_pixels"] == 64_000_000
    assert rules["local/preview"]["max_pixels"] == 8192 * 8192


async def test_truncated_jpeg_refused(tmp_path: Path, make_settings: SettingsFactory) -> None:
    buf = io.BytesIO()
    Image.fromarray(textured_image(640, 480, 3)).save(buf, "JPEG", quality=90)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])
    with pytest.raises(InvalidInput, match="could not be decoded completely"):
        await _load(str(cut))
    with KlingFake(api_key="k-key-123") as fake:
        env = {"KLINGAI_API_KEY": "k-key-123", "KLINGAI_BASE_URL": fake.base_url}
        async with connect(make_settings(**env)) as client:
            text = error_text(await client.call_tool(
                "animate_image", {"model": "klingai/kling-v2.6-i2v", "image": str(cut), "prompt": "waves"}))
        assert fake.api_calls() == []
    assert "'image'" in text and "truncated" in text


def _psnr_vs_16bit(first: np.ndarray, gray16: np.ndarray) -> float:
    expect8 = np.round(gray16.astype(np.float64) / 257).astype(np.uint8)
    return psnr_quarter(first, np.repeat(expect8[:, :, None], 3, axis=2))


async def test_16bit_grayscale_png_renders_its_content(tmp_path: Path, make_settings: SettingsFactory) -> None:
    src8 = textured_image(640, 480, 7).mean(axis=2)
    gray16 = np.round(src8 * 257).astype(np.uint16)
    path = tmp_path / "gray16.png"
    Image.fromarray(gray16).save(path)
    with Image.open(path) as opened:
        assert opened.mode == "I;16"
    arr = decode_rgb(path.read_bytes())
    assert arr.dtype == np.uint8 and arr.mean() < 200  # not the 99.6 % white of a clipped convert
    async with connect(make_settings()) as client:
        job = structured(await client.call_tool("camera_move", {
            "image": str(path), "camera": {"type": "simple", "config": {"zoom": -2}}, "duration": 1, **LOCAL}))
        done = await wait_done(client, job["job_id"])
    assert done["status"] == "succeeded", done
    first, _ = first_and_last_frames(Path(done["video"]["path"]))
    assert _psnr_vs_16bit(first, gray16) >= 30


def test_grayscale_with_alpha_and_16bit_masks() -> None:
    la = np.dstack([np.full((8, 8), 100, np.uint8), np.full((8, 8), 200, np.uint8)])
    buf = io.BytesIO()
    Image.fromarray(la, "LA").save(buf, "PNG")
    assert (decode_rgb(buf.getvalue()) == 100).all()
    m16 = np.zeros((8, 8), np.uint16)
    m16[:4] = 65535
    m16[4:] = 20000  # dark in 16 bits: a clipped convert would call it white
    buf = io.BytesIO()
    Image.fromarray(m16).save(buf, "PNG")
    sel = decode_mask(buf.getvalue())
    assert sel[:4].all() and not sel[4:].any()


async def test_animated_webp_takes_first_frame_with_warning(tmp_path: Path, make_settings: SettingsFactory) -> None:
    frames = [Image.fromarray(textured_image(320, 240, s)) for s in (1, 2, 3)]
    path = tmp_path / "anim.webp"
    frames[0].save(path, "WEBP", save_all=True, append_images=frames[1:], lossless=True, duration=100)
    img = await _load(str(path))
    assert any("animated" in w and "3 frames" in w for w in img.warnings)
    with Image.open(io.BytesIO(img.data)) as still:
        assert getattr(still, "n_frames", 1) == 1
        assert np.array_equal(np.asarray(still.convert("RGB")), np.asarray(frames[0].convert("RGB")))
    async with connect(make_settings()) as client:
        job = structured(await client.call_tool("animate_image", {"image": str(path), "duration": 1, **LOCAL}))
    assert any("animated" in w and "first frame" in w for w in job["warnings"])


def _exif6_jpeg(path: Path, upright: np.ndarray) -> Path:
    """Stored rotated, with orientation 6 (rotate 90 degrees clockwise to view)."""
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, "JPEG", quality=95, exif=exif.tobytes())
    return path


async def test_exif_orientation_applied_once(tmp_path: Path, make_settings: SettingsFactory) -> None:
    upright = textured_image(640, 480, 11)
    path = _exif6_jpeg(tmp_path / "rot.jpg", upright)
    with Image.open(path) as raw:
        assert raw.size == (480, 640)  # stored portrait
    img = await _load(str(path))
    assert (img.width, img.height) == (640, 480)
    with Image.open(io.BytesIO(img.data)) as kept:
        assert kept.getexif().get(0x0112, 1) == 1  # orientation applied, not to be applied again
    assert psnr_quarter(decode_rgb(img.data), upright) >= 30

    # a box drawn in upright coordinates (outside the stored 480 px width) is accepted and moves
    traj = [{"x": 560, "y": 300}, {"x": 400, "y": 240}]
    args = {"image": str(path), "dynamic_masks": [{"mask": {"box": [520, 260, 600, 340]}, "trajectory": traj}],
            "duration": 1, **LOCAL}
    async with connect(make_settings()) as client:
        done = await wait_done(client, structured(await client.call_tool("motion_brush", args))["job_id"])
    assert done["status"] == "succeeded", done
    frames = list(iter_frames(Path(done["video"]["path"])))
    h = 480
    mask = np.zeros((480, 640), bool)
    mask[h - 340 : h - 260, 520:600] = True
    first = frames[0]
    assert psnr_quarter(first, upright) >= 30
    cx, cy = track_region(frames[-1], first, mask)
    assert abs(cx - 400.0) < 3.0 and abs(cy - (h - 1 - 240.0)) < 3.0, (cx, cy)


async def test_rotated_url_input_is_sent_upright(tmp_path: Path, make_settings: SettingsFactory) -> None:
    upright = textured_image(640, 480, 12)
    data = _exif6_jpeg(tmp_path / "rot.jpg", upright).read_bytes()
    with KlingFake(api_key="k-key-123") as fake:
        url = fake.add_file("rot.jpg", data, "image/jpeg")
        env = {"KLINGAI_API_KEY": "k-key-123", "KLINGAI_BASE_URL": fake.base_url,
               "STILLMOTION_ALLOW_PRIVATE_NETWORK": "1"}
        async with connect(make_settings(**env)) as client:
            job = structured(await client.call_tool(
                "animate_image", {"model": "klingai/kling-v2.6-i2v", "image": url, "prompt": "waves"}))
            await wait_done(client, job["job_id"])
        (create,) = fake.calls("POST", "/v1/videos/image2video")
    sent = create.json["image"]
    assert not sent.startswith("http"), "a rotated URL input must go as the upright bytes"
    import base64

    with Image.open(io.BytesIO(base64.b64decode(sent))) as im:
        assert im.size == (640, 480)
        assert psnr_quarter(np.asarray(im.convert("RGB")), upright) >= 30
