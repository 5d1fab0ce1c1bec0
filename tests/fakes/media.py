"""Small, real media files for the fake providers and for tests.

``sample_mp4`` is a genuine H.264 MP4 (PyAV), so a client that downloads a fake's result can
decode and probe it. ``sample_png`` / ``sample_jpeg`` make input images that pass the cloud
models' image rules (Kling: each side >= 300 px, aspect between 1:2.5 and 2.5:1).
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from fractions import Fraction

import av
import numpy as np

__all__ = ["image_size", "sample_jpeg", "sample_mp4", "sample_png", "sample_wav", "sniff_image_type"]


def sample_wav(seconds: float, rate: int = 8000) -> bytes:
    """A mono 16-bit PCM WAV of a 440 Hz tone (a real file PyAV decodes)."""
    import wave

    n = int(seconds * rate)
    tone = (np.sin(np.arange(n) * (2 * np.pi * 440 / rate)) * 8000).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(tone.tobytes())
    return buf.getvalue()


def _gradient_rgb(width: int, height: int, phase: float) -> np.ndarray:
    """An RGB frame with a diagonal gradient that slides with ``phase`` (0..1)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    shift = phase * (width + height)
    r = ((xs + shift) / max(width, 1) * 255.0) % 256.0
    g = ((ys + shift * 0.5) / max(height, 1) * 255.0) % 256.0
    b = ((xs + ys) / max(width + height, 1) * 255.0 + phase * 128.0) % 256.0
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


@functools.lru_cache(maxsize=16)
def sample_mp4(seconds: float = 1.0, width: int = 320, height: int = 240, fps: int = 24) -> bytes:
    """A real H.264/yuv420p MP4 of a moving gradient, ``round(seconds * fps)`` frames."""
    if width % 2 or height % 2:
        raise ValueError("width and height must be even for yuv420p")
    frames = max(1, round(seconds * fps))
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(_gradient_rgb(width, height, i / frames), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


@functools.lru_cache(maxsize=16)
def sample_png(width: int = 640, height: int = 480) -> bytes:
    """An 8-bit RGB PNG (no alpha) with a gradient, written without Pillow."""
    rgb = _gradient_rgb(width, height, 0.25)
    raw = b"".join(b"\x00" + rgb[row].tobytes() for row in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw, 6))
        + _png_chunk(b"IEND", b"")
    )


@functools.lru_cache(maxsize=16)
def sample_jpeg(width: int = 640, height: int = 480) -> bytes:
    """A baseline JPEG with a gradient (encoded with PyAV's mjpeg encoder)."""
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width = width
    codec.height = height
    codec.pix_fmt = "yuvj420p"
    codec.time_base = Fraction(1, 25)
    frame = av.VideoFrame.from_ndarray(_gradient_rgb(width, height, 0.25), format="rgb24")
    frame = frame.reformat(format="yuvj420p")
    packets = list(codec.encode(frame)) + list(codec.encode(None))
    return b"".join(bytes(p) for p in packets)


def sniff_image_type(data: bytes) -> str | None:
    """The media type that the magic bytes say, or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"BM"):
        return "image/bmp"
    return None


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG or JPEG from its header, or None when it cannot be read."""
    kind = sniff_image_type(data)
    if kind == "image/png":
        if len(data) < 24 or data[12:16] != b"IHDR":
            return None
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    if kind == "image/jpeg":
        i = 2
        while i + 4 <= len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            (length,) = struct.unpack(">H", data[i + 2 : i + 4])
            if marker in _JPEG_SOF:
                if i + 9 > len(data):
                    return None
                h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                return int(w), int(h)
            i += 2 + length
        return None
    return None
