"""Join clips into one MP4 (the `join_clips` engine). CPU work: run it on a worker thread.

Two paths:

* **stream copy** when `crossfade_s` is 0 and every clip shares its codec parameters (video codec,
  size, pixel format, frame rate, profile and extradata; audio alike, or no audio anywhere): the
  packets are remuxed one clip after another with shifted timestamps. No decoding, no quality loss.
* **re-encode** otherwise: every clip is decoded, scaled to fit the first clip's size (aspect kept,
  padded with black), converted to the first clip's frame rate (a time mapping that keeps each
  clip's own first and last frame), crossfaded, and encoded as H.264 (CRF 18) + AAC 48 kHz stereo.
  Audio is kept where a clip has it and is silence where it has none; with no audio anywhere the
  output has no audio track.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import cv2
import numpy as np
from av.video.frame import VideoFrame

from .video import iter_frames

log = logging.getLogger(__name__)

AUDIO_RATE = 48_000
CRF = 18
PRESET = "veryfast"
_BT709 = 1
_RANGE_MPEG = 1


@dataclass(frozen=True)
class ClipFacts:
    path: Path
    width: int
    height: int
    fps: Fraction
    frame_count: int
    has_audio: bool
    rotation: int = 0
    """Display rotation applied when joining (0, 90, 180 or 270 degrees counterclockwise); width and
    height are the displayed (rotated) size."""

    @property
    def duration(self) -> Fraction:
        return self.frame_count / self.fps


@dataclass
class JoinReport:
    stream_copy: bool
    frames: int
    fps: Fraction
    width: int
    height: int
    duration_s: float
    warnings: list[str]


def clip_facts(path: Path) -> ClipFacts:
    """Size, exact frame rate and frame count (by counting packets, not the header's count: no decoding)."""
    with av.open(str(path), "r") as c:
        if not c.streams.video:
            raise ValueError(f"{path.name} has no video stream")
        v = c.streams.video[0]
        rate = v.average_rate or v.guessed_rate or v.base_rate
        if not rate:
            raise ValueError(f"{path.name} has no frame rate")
        count = sum(1 for p in c.demux(v) if p.size > 0)
        return ClipFacts(
            Path(path), int(v.codec_context.width), int(v.codec_context.height),
            Fraction(rate).limit_denominator(1001 * 1000), count, bool(c.streams.audio),
        )  # fmt: skip


MIN_FPS, MAX_FPS = 1, 120
"""The frame rates a clip may have, declared and as its packets' timestamps measure it."""
CROSSFADE_MEMORY_BYTES = 384 * 1024 * 1024
"""A crossfade holds `crossfade_s x fps` output frames (RGB) of the first clip's size at once."""


class ClipRefused(ValueError):
    """A clip that cannot be joined safely; the message says why (for `invalid_input`)."""


def measure_clip(path: Path, *, max_pixels: int, decode: bool = True) -> ClipFacts:
    """A clip measured, not believed (CPU: a worker thread). Checked in this order, each failure a
    ClipRefused: an MP4/MOV container with a video stream; the frame size from the stream header
    against `max_pixels`, before any decode; the declared frame rate within MIN_FPS-MAX_FPS; the
    packets counted and their timestamps' span giving a measured rate in that range too. With
    `decode`, every frame is then decoded (one at a time): each must fit `max_pixels`, none may be
    missing, and the count and the display rotation come from the decoded frames. Without it (a video
    this server made), the count is the packets'."""
    try:
        c = _open_capped(path, max_pixels)
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise ClipRefused(f"not a video file ({str(exc)[:120]})") from None
    try:
        fmt = str(getattr(c.format, "name", ""))
        if "mp4" not in fmt and "mov" not in fmt:
            raise ClipRefused(f"not an MP4/MOV video (its content is {fmt or 'unknown'})")
        if not c.streams.video:
            raise ClipRefused("has no video stream")
        v = c.streams.video[0]
        w, h = int(v.codec_context.width), int(v.codec_context.height)
        if w <= 0 or h <= 0:
            raise ClipRefused(
                f"has no frame size that can be read within {max_pixels / 1e6:.1f} megapixels (larger frames, or none)"
            )
        if w * h > max_pixels:
            raise ClipRefused(
                f"is {w}x{h} ({w * h / 1e6:.1f} megapixels) by its header; at most {max_pixels / 1e6:.1f} megapixels "
                "can be joined (checked before decoding)"
            )
        rate = v.average_rate or v.guessed_rate or v.base_rate
        if not rate or not MIN_FPS <= float(rate) <= MAX_FPS:
            shown = f"{float(rate):.6g} fps" if rate else "no frame rate"
            raise ClipRefused(f"declares {shown}; clips of {MIN_FPS}-{MAX_FPS} fps can be joined")
        fps = Fraction(rate).limit_denominator(1001 * 1000)
        count, first, last = _count_packets(c, v)
        if count == 0:
            raise ClipRefused("has no video frames")
        if count >= 2 and v.time_base is not None:
            span = float((last - first) * v.time_base)
            measured = (count - 1) / span if span > 0 else math.inf
            if not MIN_FPS * 0.99 <= measured <= MAX_FPS * 1.01:
                raise ClipRefused(
                    f"has {count} frames whose timestamps span {span:.6g} s ({measured:.6g} fps); "
                    f"clips of {MIN_FPS}-{MAX_FPS} fps can be joined"
                )
        has_audio = bool(c.streams.audio)
    finally:
        c.close()
    facts = ClipFacts(Path(path), w, h, fps, count, has_audio)
    return decoded(facts, max_pixels) if decode else facts


def decoded(facts: ClipFacts, max_pixels: int) -> ClipFacts:
    """`facts` after decoding every frame (one at a time): the count is the decoded frames', the
    display rotation the first frame's (width and height turned to match). ClipRefused when a frame
    is over `max_pixels`, fails to decode, or is missing."""
    count, rotation = _decode_all(facts.path, max_pixels, facts.frame_count)
    w, h = (facts.height, facts.width) if rotation in (90, 270) else (facts.width, facts.height)
    return ClipFacts(facts.path, w, h, facts.fps, count, facts.has_audio, rotation)


def _open_capped(path: Path, max_pixels: int) -> Any:
    """Open with FFmpeg's own `max_pixels`: probing the stream (which may decode a frame to learn its
    size) refuses a bigger frame instead of allocating it."""
    return av.open(str(path), "r", options={"max_pixels": str(max_pixels)})


def _count_packets(c: Any, v: Any) -> tuple[int, int, int]:
    count, first, last = 0, 0, 0
    try:
        for p in c.demux(v):
            if p.size <= 0:
                continue
            if p.pts is not None:
                first, last = (p.pts, p.pts) if count == 0 else (min(first, p.pts), max(last, p.pts))
            count += 1
    except av.error.FFmpegError as exc:
        raise ClipRefused(f"cannot be read to the end ({str(exc)[:120]})") from None
    return count, first, last


def _decode_all(path: Path, max_pixels: int, packets: int) -> tuple[int, int]:
    """(frames decoded, display rotation), one frame at a time."""
    count, rotation = 0, 0
    with _open_capped(path, max_pixels) as c:
        v = c.streams.video[0]
        v.codec_context.options = {"max_pixels": str(max_pixels)}  # the decoder refuses bigger frames
        try:
            for frame in c.decode(v):
                if frame.width * frame.height > max_pixels:
                    raise ClipRefused(f"has a {frame.width}x{frame.height} frame, over {max_pixels / 1e6:.1f} megapixels")
                if count == 0:
                    rotation = _rotation(frame)
                count += 1
        except av.error.FFmpegError as exc:
            raise ClipRefused(f"does not decode ({str(exc)[:120]})") from None
    if count == 0:
        raise ClipRefused("no frame decodes")
    if count < packets:
        raise ClipRefused(f"is truncated or corrupt ({count} of {packets} frames decode)")
    _check_audio(path)
    return count, rotation


def _check_audio(path: Path) -> None:
    """The audio track, when there is one, decodes (the join reads it later), frame by frame."""
    with av.open(str(path), "r") as c:
        if not c.streams.audio:
            return
        try:
            for _ in c.decode(audio=0):
                pass
        except av.error.FFmpegError as exc:
            raise ClipRefused(f"has an audio track that does not decode ({str(exc)[:120]})") from None


def _rotation(frame: VideoFrame) -> int:
    raw = float(getattr(frame, "rotation", 0) or 0)
    quarter = round(raw / 90)
    if abs(raw - quarter * 90) > 0.5:
        raise ClipRefused(
            f"has a display rotation of {raw:g} degrees; only multiples of 90 can be applied (re-export it upright)"
        )
    return (quarter * 90) % 360


def crossfade_problem(clips: list[ClipFacts], crossfade_s: float) -> str | None:
    """Why the re-encode path would refuse `crossfade_s` for these clips (None when it will not):
    the overlap, in output frames, must be shorter than every clip's section, and the frames it holds
    must fit CROSSFADE_MEMORY_BYTES."""
    if crossfade_s <= 0 or not clips:
        return None
    fps = clips[0].fps
    overlap = round(crossfade_s * fps)
    lengths = [_section_length(c, fps) for c in clips]
    shortest = min(range(len(clips)), key=lambda i: lengths[i])
    if overlap >= lengths[shortest]:
        return (
            f"is {crossfade_s:g} s, {overlap} frames at {float(fps):g} fps, not shorter than clip {shortest + 1} "
            f"({lengths[shortest]} frames, {float(lengths[shortest] / fps):.3f} s)"
        )
    frame_bytes = clips[0].width * clips[0].height * 3
    if overlap * frame_bytes > CROSSFADE_MEMORY_BYTES:
        most = CROSSFADE_MEMORY_BYTES // frame_bytes
        return (
            f"is {crossfade_s:g} s, {overlap} frames of {clips[0].width}x{clips[0].height} held at once; at most "
            f"{most} frames ({most / float(fps):.2f} s) fit the join's memory"
        )
    return None


def planned_seconds(clips: list[ClipFacts], crossfade_s: float) -> float:
    """The joined video's length in seconds (either path)."""
    if can_stream_copy(clips, crossfade_s):
        return float(sum(c.duration for c in clips))
    return float(planned_frames(clips, crossfade_s) / clips[0].fps)


def _signature(path: Path) -> tuple[Any, ...]:
    """What must match for packets of different files to follow each other in one stream."""
    with av.open(str(path), "r") as c:
        v = c.streams.video[0]
        vc = v.codec_context
        rate = v.average_rate or v.guessed_rate
        sig: tuple[Any, ...] = (
            vc.name, vc.width, vc.height, vc.pix_fmt, vc.profile, bytes(vc.extradata or b""), rate, v.time_base,
        )  # fmt: skip
        if c.streams.audio:
            a = c.streams.audio[0].codec_context
            sig += (a.name, a.sample_rate, a.channels, bytes(a.extradata or b""), c.streams.audio[0].time_base)
        else:
            sig += (None,)
        return sig


def can_stream_copy(clips: list[ClipFacts], crossfade_s: float) -> bool:
    if crossfade_s > 0 or any(c.rotation for c in clips):
        return False  # a rotated clip is turned upright by the re-encode
    try:
        first = _signature(clips[0].path)
        return all(_signature(c.path) == first for c in clips[1:])
    except (av.error.FFmpegError, IndexError, ValueError):
        return False


def planned_frames(clips: list[ClipFacts], crossfade_s: float) -> int:
    """Frames the re-encode path writes: each clip retimed to the first's rate, minus the overlaps."""
    fps = clips[0].fps
    return sum(_section_length(c, fps) for c in clips) - round(crossfade_s * fps) * (len(clips) - 1)


def join(
    clips: list[ClipFacts],
    out: Path,
    crossfade_s: float = 0.0,
    progress: Callable[[float], None] | None = None,
    on_frame: Callable[[int, np.ndarray], None] | None = None,
) -> JoinReport:
    """Join `clips` in order into `out`. `on_frame(index, rgb)` sees each output frame (re-encode path)."""
    if len(clips) < 2:
        raise ValueError("join needs at least two clips")
    if can_stream_copy(clips, crossfade_s):
        _stream_copy(clips, out, progress)
        first = clips[0]
        total = sum(c.frame_count for c in clips)
        return JoinReport(True, total, first.fps, first.width, first.height, float(total / first.fps), [])
    return _reencode(clips, out, crossfade_s, progress, on_frame)


# -- stream copy -----------------------------------------------------------------------------


def _stream_copy(clips: list[ClipFacts], out: Path, progress: Callable[[float], None] | None) -> None:
    with av.open(str(clips[0].path), "r") as first, av.open(
        str(out), "w", format="mp4", options={"movflags": "+faststart"}
    ) as dst:
        vout = dst.add_stream_from_template(first.streams.video[0])
        aout = dst.add_stream_from_template(first.streams.audio[0]) if first.streams.audio else None
        offset = Fraction(0)
        for i, clip in enumerate(clips):
            with av.open(str(clip.path), "r") as src:
                streams = [src.streams.video[0], *([src.streams.audio[0]] if aout is not None else [])]
                packets = [p for p in src.demux(*streams) if p.dts is not None and p.size > 0]
                starts: dict[int, int] = {}
                for p in packets:
                    if p.pts is not None:
                        starts[p.stream.index] = min(starts.get(p.stream.index, p.pts), p.pts)
                end = offset
                for p in packets:
                    tb = p.time_base
                    assert tb is not None
                    shift = round(offset / tb) - starts.get(p.stream.index, 0)
                    if p.pts is not None:
                        p.pts += shift
                    p.dts = (p.dts or 0) + shift
                    if p.stream.type == "video":
                        end = max(end, Fraction((p.pts or 0) + (p.duration or 0)) * tb)
                    target = vout if p.stream.type == "video" else aout
                    assert target is not None
                    p.stream = target
                    dst.mux(p)
                offset = max(end, offset + clip.duration)
            if progress is not None:
                progress((i + 1) / len(clips))


# -- re-encode -------------------------------------------------------------------------------


def fit_pad(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale to fit inside width x height keeping the aspect ratio, centred on black."""
    h, w = frame.shape[:2]
    if (w, h) == (width, height):
        return frame
    scale = min(width / w, height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(frame, (nw, nh), interpolation=interp)
    canvas = np.zeros((height, width, 3), np.uint8)
    x, y = (width - nw) // 2, (height - nh) // 2
    canvas[y : y + nh, x : x + nw] = resized
    return canvas


def _section_length(clip: ClipFacts, fps: Fraction) -> int:
    return max(1, round(clip.duration * fps))


def _retimed(clip: ClipFacts, m: int, width: int, height: int) -> Iterator[np.ndarray]:
    """`m` output frames from the clip: output k shows source round(k (n-1)/(m-1)), so the first and
    last frames are the clip's own first and last."""
    n = clip.frame_count
    src = iter_frames(clip.path)
    quarter = clip.rotation // 90
    idx = -1
    current: np.ndarray | None = None
    for k in range(m):
        want = 0 if m == 1 else round(k * (n - 1) / (m - 1))
        while idx < want:
            try:
                current = next(src)
            except StopIteration:
                break  # fewer frames than declared: hold the last
            if quarter:  # counterclockwise by the display rotation, as a player shows it
                current = np.ascontiguousarray(np.rot90(current, quarter))
            idx += 1
        assert current is not None
        yield fit_pad(current, width, height)


def _audio_of(clip: ClipFacts, seconds: float) -> np.ndarray:
    """(2, samples) float32 at 48 kHz covering exactly `seconds`: the clip's audio, or silence."""
    want = round(seconds * AUDIO_RATE)
    out = np.zeros((2, want), np.float32)
    if not clip.has_audio:
        return out
    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)
    chunks: list[np.ndarray] = []
    got = 0
    with av.open(str(clip.path), "r") as c:
        for frame in c.decode(audio=0):
            for rf in resampler.resample(frame):
                chunks.append(rf.to_ndarray())
                got += chunks[-1].shape[1]
            if got >= want:
                break  # an audio track longer than the video is not read (nor held) past what is used
        else:
            for rf in resampler.resample(None):
                chunks.append(rf.to_ndarray())
    if chunks:
        data = np.concatenate(chunks, axis=1)[:, :want]
        out[:, : data.shape[1]] = data
    return out


def _reencode(
    clips: list[ClipFacts],
    out: Path,
    crossfade_s: float,
    progress: Callable[[float], None] | None,
    on_frame: Callable[[int, np.ndarray], None] | None,
) -> JoinReport:
    first = clips[0]
    fps = first.fps
    width, height = first.width - first.width % 2, first.height - first.height % 2
    lengths = [_section_length(c, fps) for c in clips]
    overlap = round(crossfade_s * fps)
    if overlap >= min(lengths):
        raise ValueError(
            f"crossfade_s {crossfade_s} is {overlap} frames, not shorter than the shortest clip ({min(lengths)} frames)"
        )
    warnings = [
        f"clip {i + 1} is {c.width}x{c.height} at {float(c.fps):g} fps; it was scaled to fit {width}x{height} "
        f"(padded) and converted to {float(fps):g} fps."
        for i, c in enumerate(clips)
        if (c.width, c.height) != (first.width, first.height) or c.fps != fps
    ]
    total = sum(lengths) - overlap * (len(clips) - 1)
    with_audio = any(c.has_audio for c in clips)

    with av.open(str(out), "w", format="mp4", options={"movflags": "+faststart"}) as dst:
        v = dst.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        v.time_base = 1 / fps
        cc = v.codec_context
        cc.colorspace = cc.color_primaries = cc.color_trc = _BT709
        cc.color_range = _RANGE_MPEG
        v.options = {"crf": str(CRF), "preset": PRESET}
        a = None
        if with_audio:
            a = dst.add_stream("aac", rate=AUDIO_RATE)
            a.layout = "stereo"
            a.format = "fltp"
        count = 0

        def emit(rgb: np.ndarray) -> None:
            nonlocal count
            if on_frame is not None:
                on_frame(count, rgb)
            frame = VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(
                format="yuv420p", src_colorspace="itu709", dst_colorspace="itu709", dst_color_range="MPEG"
            )
            frame.pts = count
            frame.time_base = 1 / fps
            for packet in v.encode(frame):
                dst.mux(packet)
            count += 1
            if progress is not None and count % 8 == 0:
                progress(min(0.99, count / total))

        tail: deque[np.ndarray] = deque()
        for i, (clip, m) in enumerate(zip(clips, lengths, strict=True)):
            head_blend = overlap if i > 0 else 0
            keep_tail = overlap if i < len(clips) - 1 else 0
            pending: deque[np.ndarray] = deque()
            for k, frame in enumerate(_retimed(clip, m, width, height)):
                if k < head_blend:
                    alpha = (k + 1) / (overlap + 1)
                    prev = tail.popleft()
                    emit(cv2.addWeighted(prev, 1 - alpha, frame, alpha, 0))
                    continue
                pending.append(frame)
                if len(pending) > keep_tail:
                    emit(pending.popleft())
            tail = pending
        for packet in v.encode(None):
            dst.mux(packet)

        if a is not None:
            _encode_audio(dst, a, clips, lengths, overlap, fps)

    if progress is not None:
        progress(1.0)
    return JoinReport(False, count, fps, width, height, float(count / fps), warnings)


def _encode_audio(
    dst: Any, a: Any, clips: list[ClipFacts], lengths: list[int], overlap: int, fps: Fraction
) -> None:
    fade = round(overlap / fps * AUDIO_RATE)
    track: np.ndarray | None = None
    for clip, m in zip(clips, lengths, strict=True):
        part = _audio_of(clip, float(m / fps))
        if track is None:
            track = part
            continue
        if fade:
            ramp = np.linspace(0, 1, fade, dtype=np.float32)
            mixed = track[:, -fade:] * (1 - ramp) + part[:, :fade] * ramp
            track = np.concatenate([track[:, :-fade], mixed, part[:, fade:]], axis=1)
        else:
            track = np.concatenate([track, part], axis=1)
    assert track is not None
    step = 1024
    for start in range(0, track.shape[1], step):
        chunk = np.ascontiguousarray(track[:, start : start + step])
        af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
        af.sample_rate = AUDIO_RATE
        af.pts = start
        af.time_base = Fraction(1, AUDIO_RATE)
        for packet in a.encode(af):
            dst.mux(packet)
    for packet in a.encode(None):
        dst.mux(packet)
