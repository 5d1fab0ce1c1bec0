"""H.264 MP4 writing and reading with PyAV, streaming (never all frames in memory).

Frames are ``uint8`` RGB numpy arrays of shape (H, W, 3), or frames already in the
encoder's pixel format: ``uint8`` arrays of shape (H * 3 / 2, W) holding planar I420
(yuv420p: the Y plane, then U, then V, each contiguous), limited range, BT.709 (see
``rgb_to_yuv420``); those are handed to the encoder without conversion or copy. Files are written as libx264
High profile, yuv420p, limited ("tv"/MPEG) range, converted with and tagged as BT.709,
``+faststart`` (moov first) and ``+bitexact``. With the fixed encoder thread count the
bytes are reproducible on one machine; across machines compare pixels, not hashes.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import av
import av.error
import cv2
import numpy as np
from av.video.frame import VideoFrame
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

Frame = NDArray[np.uint8]

ENCODER_THREADS = 1
"""x264 with frame threads made a different file for the same frames once under heavy CPU load
(README: `local/preview` is deterministic); one thread costs about 0.4 s of wall time on a 4 s 720p
clip and no CPU."""
DEFAULT_CRF = 23.0
# I420 frames from the renderer carry 2x2 box-averaged chroma, which x264 codes in fewer bits
# than swscale's conversion of RGB frames (at CRF 23 the clip came out 7 % smaller at 0.0001
# lower luma SSIM). They are also encoded without x264's inter 8x8 partitions, which cost 10-15 %
# of x264's time and, on these smooth synthetic moves, buy little. At CRF 22.5 the bench clip
# keeps the RGB path's quality: size -3 %, SSIM against the ideal warp +0.0013 (bench/quality.py).
I420_CRF = 22.5
I420_X264_PARAMS = "partitions=i8x8,i4x4"
AUDIO_RATE = 48000
AUDIO_FRAME_SAMPLES = 1024
_QUEUE_DEPTH = 3

# AVCOL_* values (libavutil/pixfmt.h).
_BT709 = 1
_RANGE_MPEG = 1
_RANGE_JPEG = 2
_SPC_BT470BG = 5
_SPC_SMPTE170M = 6


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    frame_count: int
    duration_s: float
    has_audio: bool
    codec: str


# BT.709, limited range, 8 bit: Y = 16 + 219 Y', Cb = 128 + 224 (B - Y') / 1.8556, ...
_KR, _KB = 0.2126, 0.0722
_KG = 1.0 - _KR - _KB
_LUMA = np.array([[_KR * 219 / 255, _KG * 219 / 255, _KB * 219 / 255, 16.0]], np.float32)
_CHROMA = np.array(
    [
        [-_KR / 1.8556 * 224 / 255, -_KG / 1.8556 * 224 / 255, (1 - _KB) / 1.8556 * 224 / 255, 128.0],
        [(1 - _KR) / 1.5748 * 224 / 255, -_KG / 1.5748 * 224 / 255, -_KB / 1.5748 * 224 / 255, 128.0],
    ],
    np.float32,
)


def yuv420_planes(buf: np.ndarray, width: int, height: int) -> tuple[Frame, Frame, Frame]:
    """Views of the Y (H, W), U and V (H/2, W/2) planes of an I420 buffer (H * 3 / 2, W)."""
    flat = buf.reshape(-1)
    n = width * height
    q = n // 4
    return (
        flat[:n].reshape(height, width),
        flat[n : n + q].reshape(height // 2, width // 2),
        flat[n + q : n + 2 * q].reshape(height // 2, width // 2),
    )


def rgb_to_yuv420(rgb: np.ndarray, out: np.ndarray | None = None) -> Frame:
    """RGB uint8 (H, W, 3), even sides -> I420 (H * 3 / 2, W), BT.709 limited range.

    Chroma is the mean of each 2x2 block (centred siting); written into ``out`` if given.
    """
    h, w = int(rgb.shape[0]), int(rgb.shape[1])
    buf = np.empty((h * 3 // 2, w), np.uint8) if out is None else out
    y, u, v = yuv420_planes(buf, w, h)
    cv2.transform(rgb, _LUMA, dst=y)
    half = cv2.resize(rgb, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    uv = cv2.transform(half, _CHROMA)
    cv2.extractChannel(uv, 0, u)
    cv2.extractChannel(uv, 1, v)
    return buf


# The inverse, on (Y, Cb, Cr) with chroma upsampled: R = 1.164 (Y - 16) + 1.793 (Cr - 128), ...
_TO_RGB = np.linalg.inv(np.vstack([_LUMA[:, :3], _CHROMA[:, :3]]).astype(np.float64))
_TO_RGB_M = np.hstack([_TO_RGB, -_TO_RGB @ np.array([[16.0], [128.0], [128.0]])]).astype(np.float32)


def yuv420_to_rgb(buf: np.ndarray, width: int, height: int) -> Frame:
    """I420 (H * 3 / 2, W), BT.709 limited range -> RGB uint8 (H, W, 3); chroma upsampled bilinearly."""
    y, u, v = yuv420_planes(buf, width, height)
    size = (width, height)
    ycc = cv2.merge(
        [y, cv2.resize(u, size, interpolation=cv2.INTER_LINEAR), cv2.resize(v, size, interpolation=cv2.INTER_LINEAR)]
    )
    return cast(Frame, cv2.transform(ycc, _TO_RGB_M))


def is_yuv420(frame: np.ndarray) -> bool:
    """True for an I420 frame (a 2-D uint8 array (H * 3 / 2, W)), False for RGB (H, W, 3)."""
    return isinstance(frame, np.ndarray) and frame.ndim == 2


def frame_size(frame: np.ndarray) -> tuple[int, int]:
    """(W, H) of an RGB or an I420 frame."""
    if frame.ndim == 2:
        return int(frame.shape[1]), int(frame.shape[0]) * 2 // 3
    return int(frame.shape[1]), int(frame.shape[0])


def _check_frame(frame: np.ndarray, size: tuple[int, int] | None, yuv420: bool = False) -> tuple[int, int]:
    ok = isinstance(frame, np.ndarray) and frame.dtype == np.uint8
    if yuv420 and not (ok and frame.ndim == 2 and frame.shape[0] % 3 == 0):
        shape = getattr(frame, "shape", None)
        dtype = getattr(frame, "dtype", type(frame).__name__)
        raise ValueError(f"yuv420p frames must be I420 uint8 (H*3/2, W) arrays, got {dtype} {shape}")
    if not yuv420 and not (ok and frame.ndim == 3 and frame.shape[2] == 3):
        shape = getattr(frame, "shape", None)
        dtype = getattr(frame, "dtype", type(frame).__name__)
        raise ValueError(f"frames must be RGB uint8 (H, W, 3) arrays, got {dtype} {shape}")
    w, h = frame_size(frame)
    if size is None:
        if w % 2 or h % 2:
            raise ValueError(f"H.264 yuv420p needs even width and height, got {w}x{h}")
        if w < 2 or h < 2:
            raise ValueError(f"frame too small: {w}x{h}")
    elif (w, h) != size:
        raise ValueError(f"inconsistent frame size: {w}x{h}, expected {size[0]}x{size[1]}")
    return w, h


def _to_yuv(frame: np.ndarray) -> VideoFrame:
    if frame.ndim == 2:  # already I420: wrapped, not copied (x264 copies it on encode)
        return VideoFrame.from_numpy_buffer(np.ascontiguousarray(frame), format="yuv420p")
    rgb = VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
    out = rgb.reformat(
        format="yuv420p",
        src_colorspace="itu709",
        dst_colorspace="itu709",
        dst_color_range="MPEG",
        threads=1,
    )
    return out


class _Writer:
    """Owns the PyAV container; every method runs on the encoder thread."""

    def __init__(
        self, path: Path, fps: int, crf: float, preset: str, silent_audio: bool, x264_params: str = ""
    ) -> None:
        self.path, self.fps, self.crf, self.preset, self.silent_audio = path, fps, crf, preset, silent_audio
        self.x264_params = x264_params
        self.container: Any = None
        self.vstream: Any = None
        self.astream: Any = None
        self.count = 0
        self.audio_samples = 0

    def _open(self, w: int, h: int) -> None:
        self.container = av.open(
            str(self.path), "w", format="mp4", options={"movflags": "+faststart", "fflags": "+bitexact"}
        )
        v = self.container.add_stream("libx264", rate=Fraction(self.fps))
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        v.time_base = Fraction(1, self.fps)
        cc = v.codec_context
        cc.thread_count = ENCODER_THREADS
        cc.colorspace = _BT709
        cc.color_primaries = _BT709
        cc.color_trc = _BT709
        cc.color_range = _RANGE_MPEG
        v.options = {"crf": f"{self.crf:g}", "preset": self.preset, "profile": "high"}
        if self.x264_params:
            v.options = {**v.options, "x264-params": self.x264_params}
        self.vstream = v
        if self.silent_audio:
            a = self.container.add_stream("aac", rate=AUDIO_RATE)
            a.layout = "stereo"
            a.format = "fltp"
            self.astream = a

    def write(self, frame: np.ndarray) -> None:
        if self.container is None:
            self._open(*frame_size(frame))
        yuv = _to_yuv(frame)
        yuv.pts = self.count
        yuv.time_base = Fraction(1, self.fps)
        for packet in self.vstream.encode(yuv):
            self.container.mux(packet)
        self.count += 1
        if self.astream is not None:
            self._silence(self.count * AUDIO_RATE / self.fps)

    def _silence(self, until: float) -> None:
        """Encode silent AAC frames until ``until`` samples are covered."""
        while self.audio_samples < until:
            af = av.AudioFrame.from_ndarray(
                np.zeros((2, AUDIO_FRAME_SAMPLES), np.float32), format="fltp", layout="stereo"
            )
            af.sample_rate = AUDIO_RATE
            af.pts = self.audio_samples
            af.time_base = Fraction(1, AUDIO_RATE)
            for packet in self.astream.encode(af):
                self.container.mux(packet)
            self.audio_samples += AUDIO_FRAME_SAMPLES

    def finish(self) -> None:
        for packet in self.vstream.encode(None):
            self.container.mux(packet)
        if self.astream is not None:
            self._silence(self.count * AUDIO_RATE / self.fps)
            for packet in self.astream.encode(None):
                self.container.mux(packet)

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None


_FINISH = object()
_ABORT = object()


def encode_frames(
    frames: Iterable[np.ndarray],
    path: Path,
    *,
    fps: int = 24,
    crf: float | None = None,
    preset: str = "veryfast",
    silent_audio: bool = False,
    frame_format: str = "rgb24",
) -> int:
    """Stream ``frames`` into an H.264 MP4 at ``path``; return the number of frames.

    ``frame_format`` is ``"rgb24"`` (RGB uint8 (H, W, 3)) or ``"yuv420p"`` (I420 uint8
    (H * 3 / 2, W), BT.709 limited range, e.g. from ``render.camera_frames_yuv``), which is
    handed to x264 as it is: no colour conversion, no copy. ``crf`` defaults to 23 for RGB
    frames; I420 frames are encoded with ``I420_X264_PARAMS`` at ``I420_CRF`` (22.5), the same
    quality at less x264 time.

    ``frames`` is consumed on the calling thread (so a generator may call back into
    thread-bound code); colour conversion and x264 run on one helper thread with a queue
    of a few frames, so rendering overlaps encoding (OpenCV, swscale and x264 release the
    GIL). The output does not depend on this: frames are encoded in order. Because a
    frame is encoded a little later than it is yielded, a producer must not reuse or
    mutate an array after yielding it (every generator in ``stillmotion.render`` yields
    fresh arrays).

    Raises ValueError for odd sizes, inconsistent sizes, non-RGB-uint8 frames, or no
    frames at all (a partly written file is left for the caller to remove).
    ``silent_audio`` adds a silent AAC stereo 48 kHz track covering the video.
    """
    if not isinstance(fps, int) or fps <= 0:
        raise ValueError(f"fps must be a positive integer, got {fps!r}")
    if frame_format not in ("rgb24", "yuv420p"):
        raise ValueError(f"frame_format must be 'rgb24' or 'yuv420p', got {frame_format!r}")
    yuv420 = frame_format == "yuv420p"
    if crf is None:
        crf = I420_CRF if yuv420 else DEFAULT_CRF
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be in [0, 51], got {crf}")
    writer = _Writer(Path(path), fps, crf, preset, silent_audio, I420_X264_PARAMS if yuv420 else "")
    q: queue.Queue[Any] = queue.Queue(maxsize=_QUEUE_DEPTH)
    failure: list[BaseException] = []

    def work() -> None:
        try:
            while True:
                item = q.get()
                if item is _ABORT:
                    return
                if item is _FINISH:
                    writer.finish()
                    return
                writer.write(item)
        except BaseException as exc:  # re-raised on the calling thread
            failure.append(exc)
        finally:
            # Closing writes the trailer (and, with faststart, rewrites the file): it can fail
            # too, e.g. when the file's folder was removed meanwhile. Never out of this thread.
            try:
                writer.close()
            except BaseException as exc:  # e.g. an abandoned render whose .part file was removed
                if not failure:
                    failure.append(exc)

    def put(item: object) -> None:
        while True:
            if failure:
                raise failure[0]
            try:
                q.put(item, timeout=0.05)
                return
            except queue.Full:
                if not worker.is_alive():
                    raise RuntimeError("encoder thread stopped") from (failure[0] if failure else None)

    worker = threading.Thread(target=work, name="stillmotion-encoder", daemon=True)
    size: tuple[int, int] | None = None
    count = 0
    finished = False
    try:
        for frame in frames:
            size = _check_frame(frame, size, yuv420)
            if count == 0:
                worker.start()
            put(frame)
            count += 1
        if count == 0:
            raise ValueError("no frames to encode")
        put(_FINISH)
        finished = True
    finally:
        if worker.is_alive() and not finished:
            # Drop queued frames, then tell the encoder to stop.
            while True:
                try:
                    q.get_nowait()
                except queue.Empty:
                    break
            q.put(_ABORT)
        if worker.ident is not None:
            worker.join()
    if failure:
        raise failure[0]
    logger.debug("encoded %d frames to %s", count, path)
    return count


def _open_input(path: Path) -> Any:
    try:
        container = av.open(str(path), "r")
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a decodable MP4: {path.name}: {exc}") from exc
    fmt = str(getattr(container.format, "name", ""))
    if "mp4" not in fmt and "mov" not in fmt:
        container.close()
        raise ValueError(f"not a decodable MP4: {path.name}: container format is {fmt!r}")
    if not container.streams.video:
        container.close()
        raise ValueError(f"not a decodable MP4: {path.name}: no video stream")
    return container


def to_rgb(frame: VideoFrame, size: tuple[int, int] | None = None) -> Frame:
    """A decoded frame as RGB uint8 (the same conversion iter_frames uses); with `size`
    (width, height), scaled down in the same pass (area averaging), without a full-size copy."""
    return _rgb(frame, size)


def _rgb(frame: VideoFrame, size: tuple[int, int] | None = None) -> Frame:
    """RGB conversion honouring the stream's matrix and range (BT.709 unless tagged 601)."""
    spc = int(frame.colorspace)
    if spc in (_SPC_BT470BG, _SPC_SMPTE170M) or (spc != _BT709 and frame.height < 720):
        src_space = "itu601"
    else:
        src_space = "itu709"
    src_range = "JPEG" if int(frame.color_range) == _RANGE_JPEG else "MPEG"
    width, height, interpolation = None, None, None
    if size is not None and size != (frame.width, frame.height):
        width, height, interpolation = size[0], size[1], "AREA"
    out = frame.reformat(
        width=width, height=height, format="rgb24", src_colorspace=src_space, src_color_range=src_range,
        dst_color_range="JPEG", interpolation=interpolation, threads=1,
    )
    return cast(Frame, out.to_ndarray())


def _decode(path: Path) -> Iterator[VideoFrame]:
    """Decode every video frame, turning any FFmpeg error into ValueError."""
    container = _open_input(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            yield from container.decode(stream)
        except av.error.FFmpegError as exc:
            raise ValueError(f"not a decodable MP4: {path.name}: {exc}") from exc
    finally:
        container.close()


def probe_video(path: Path, on_frame: Callable[[int, VideoFrame], None] | None = None) -> VideoInfo:
    """Measure a video by decoding every frame (streaming).

    Raises ``ValueError("not a decodable MP4: ...")`` for anything that is not an MP4/MOV
    with a decodable video stream, including truncated files: every frame the container
    declares must decode. ``on_frame(index, frame)`` sees each decoded frame, so a caller can
    sample frames in the same pass.
    """
    path = Path(path)
    container = _open_input(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        declared = int(stream.frames or 0)
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
        codec = str(stream.codec_context.name)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        has_audio = bool(container.streams.audio)
        count = 0
        first_pts: int | None = None
        last_pts: int | None = None
        try:
            for frame in container.decode(stream):
                if on_frame is not None:
                    on_frame(count, frame)
                count += 1
                if frame.pts is not None:
                    first_pts = frame.pts if first_pts is None else min(first_pts, frame.pts)
                    last_pts = frame.pts if last_pts is None else max(last_pts, frame.pts)
                width, height = frame.width, frame.height
        except av.error.FFmpegError as exc:
            raise ValueError(f"not a decodable MP4: {path.name}: {exc}") from exc
        if count == 0:
            raise ValueError(f"not a decodable MP4: {path.name}: no frame decodes")
        if declared and count < declared:
            raise ValueError(
                f"not a decodable MP4: {path.name}: truncated ({count} of {declared} frames decode)"
            )
        fps = float(rate) if rate else 0.0
        duration = 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif first_pts is not None and last_pts is not None and stream.time_base is not None and fps > 0:
            duration = float((last_pts - first_pts) * stream.time_base) + 1.0 / fps
        if duration <= 0.0 and fps > 0:
            duration = count / fps
        if fps <= 0.0 and duration > 0:
            fps = count / duration
        return VideoInfo(
            width=width,
            height=height,
            fps=round(fps, 6),
            frame_count=count,
            duration_s=round(duration, 6) if math.isfinite(duration) else 0.0,
            has_audio=has_audio,
            codec=codec,
        )
    finally:
        container.close()


def probe_header(path: Path) -> VideoInfo:
    """Facts from the container header alone (no decoding): for files this process just encoded."""
    path = Path(path)
    container = _open_input(path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        count = int(stream.frames or 0)
        duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else 0.0
        if duration <= 0.0 and fps > 0:
            duration = count / fps
        return VideoInfo(
            width=int(stream.codec_context.width),
            height=int(stream.codec_context.height),
            fps=round(fps, 6),
            frame_count=count,
            duration_s=round(duration, 6),
            has_audio=bool(container.streams.audio),
            codec=str(stream.codec_context.name),
        )
    finally:
        container.close()


def stream_header(path: Path) -> tuple[int, int, int]:
    """(declared frame count or 0, width, height) of the first video stream; no decoding."""
    container = _open_input(Path(path))
    try:
        stream = container.streams.video[0]
        return int(stream.frames or 0), int(stream.codec_context.width), int(stream.codec_context.height)
    finally:
        container.close()


def iter_frames(path: Path) -> Iterator[Frame]:
    """Decode frames one by one as RGB uint8 (BT.709 unless the stream is tagged 601)."""
    for frame in _decode(Path(path)):
        yield _rgb(frame)


def read_frame(path: Path, index: int) -> Frame:
    """Frame ``index`` (negative counts from the end, -1 = last), decoded streaming."""
    if index >= 0:
        for i, frame in enumerate(_decode(Path(path))):
            if i == index:
                return _rgb(frame)
        raise IndexError(f"frame {index} out of range")
    tail: deque[VideoFrame] = deque(maxlen=-index)
    for frame in _decode(Path(path)):
        tail.append(frame)
    if len(tail) < -index:
        raise IndexError(f"frame {index} out of range")
    return _rgb(tail[0])


def first_and_last_frames(path: Path) -> tuple[Frame, Frame]:
    """The first and the last frame, decoding once and holding only those two."""
    first: Frame | None = None
    last: VideoFrame | None = None
    for frame in _decode(Path(path)):
        if first is None:
            first = _rgb(frame)
        last = frame
    if first is None or last is None:
        raise ValueError(f"not a decodable MP4: {Path(path).name}: no frame decodes")
    return first, _rgb(last)
