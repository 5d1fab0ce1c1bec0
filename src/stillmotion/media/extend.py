"""extend_video's media steps: the source's exact last frame (the continuation's start image,
lossless), and the source joined with its continuation by join_clips' engine (media/join.py:
stream copy where the encodings match, else a re-encode to the source's size and rate).
CPU work: run on a worker thread."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from ..plan.requests import GenerationRequest, StoredClip
from .join import ClipFacts, clip_facts, join
from .video import read_frame


def last_frame_png(path: Path, rotation: int = 0) -> bytes:
    """The last decoded frame of a video as PNG bytes (lossless: the pixels the decoder gave), turned
    by the video's display rotation (degrees counterclockwise) so that it is the frame a player shows."""
    frame = read_frame(path, -1)
    if rotation % 360:
        frame = np.ascontiguousarray(np.rot90(frame, k=(rotation % 360) // 90))
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


def facts_of(clip: StoredClip) -> ClipFacts:
    return ClipFacts(
        Path(clip.path), clip.width, clip.height, Fraction(clip.fps), clip.frame_count, clip.has_audio, clip.rotation
    )


def append_continuation(req: GenerationRequest, continuation: Path, *, native: bool) -> Path:
    """The source followed by `continuation`, written next to it; returns the new file (the input is removed).
    A provider's own extension (`native`: its answer already holds the source) is returned as it is."""
    if native or not req.clips:
        return continuation
    out = continuation.with_name(continuation.name.removesuffix(".mp4.part") + ".joined.mp4.part")
    try:
        join([facts_of(req.clips[0]), clip_facts(continuation)], out, req.crossfade_s)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    finally:
        continuation.unlink(missing_ok=True)
    return out
