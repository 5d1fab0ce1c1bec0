"""Pictures of a video: a small contact sheet (poster) and the last frame, as PNG bytes.

Each contact-sheet tile carries its time (`1.25 s`) on a caption strip under the frame, so that
small moves can be read from the sheet and the frames are left untouched.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import cv2
import numpy as np
from PIL import Image

from .video import Frame, _decode, _rgb, probe_header, probe_video, read_frame, stream_header

logger = logging.getLogger(__name__)

MAX_SHEET_BYTES = 95_000
_GAP = 2
_BACKGROUND = (24, 24, 24)
CAPTION_HEIGHT = 13
_CAPTION_TEXT = (235, 235, 235)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_FONT_SCALE = 0.38


def time_label(seconds: float) -> str:
    return f"{seconds:.2f} s"


def caption_strip(text: str, width: int) -> Frame:
    """The caption under a tile: the text in light grey on the sheet's background."""
    strip = np.empty((CAPTION_HEIGHT, width, 3), np.uint8)
    strip[:] = _BACKGROUND
    cv2.putText(strip, text, (3, CAPTION_HEIGHT - 3), _FONT, _FONT_SCALE, _CAPTION_TEXT, 1, cv2.LINE_AA)
    return strip


def pick_indices(n_frames: int, count: int = 6) -> list[int]:
    """``count`` evenly spaced frame indices, first and last included."""
    if count <= 1 or n_frames <= 1:
        return [0] * max(1, count)
    return [round(i * (n_frames - 1) / (count - 1)) for i in range(count)]


def _tiles(path: Path, indices: list[int], size: tuple[int, int]) -> list[Frame]:
    """Decode once, keeping only the wanted frames, shrunk to ``size`` (W, H)."""
    wanted: dict[int, list[int]] = {}
    for slot, index in enumerate(indices):
        wanted.setdefault(index, []).append(slot)
    tiles: list[Frame | None] = [None] * len(indices)
    last = None
    for i, frame in enumerate(_decode(path)):
        last = frame
        for slot in wanted.get(i, ()):
            tiles[slot] = cast(Frame, cv2.resize(_rgb(frame), size, interpolation=cv2.INTER_AREA))
    if last is None:
        raise ValueError(f"not a decodable MP4: {path.name}: no frame decodes")
    # A header that overstated the frame count: fill from the last frame.
    fallback: Frame | None = None
    out: list[Frame] = []
    for tile in tiles:
        if tile is None:
            if fallback is None:
                fallback = cast(Frame, cv2.resize(_rgb(last), size, interpolation=cv2.INTER_AREA))
            tile = fallback
        out.append(tile)
    return out


def _sheet(
    tiles: list[Frame], columns: int, rows: int, size: tuple[int, int], labels: Sequence[str] | None = None
) -> Frame:
    tw, th = size
    cell_h = th + (CAPTION_HEIGHT if labels is not None else 0)
    width = columns * tw + (columns - 1) * _GAP
    height = rows * cell_h + (rows - 1) * _GAP
    sheet = np.empty((height, width, 3), np.uint8)
    sheet[:] = _BACKGROUND
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        y, x = r * (cell_h + _GAP), c * (tw + _GAP)
        sheet[y : y + th, x : x + tw] = tile
        if labels is not None:
            sheet[y + th : y + cell_h, x : x + tw] = caption_strip(labels[k], tw)
    return sheet


def _png(img: Frame, colors: int | None) -> bytes:
    pil = Image.fromarray(img, "RGB")
    if colors is not None:
        # fast octree: ~15x quicker than median cut on a sheet, and the files come out smaller
        pil = pil.quantize(colors=colors, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    if colors is None:
        pil.save(buf, format="PNG", compress_level=6)
    else:
        # zlib level 6, not optimize=True (level 9): the same pixels, ~2 % more bytes, 3x less CPU
        # (every provider job publishes one sheet; see docs/decisions.md)
        pil.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def contact_sheet_png(path: Path, *, columns: int = 3, rows: int = 2, tile_width: int = 200) -> bytes:
    """Evenly spaced frames (first and last included) tiled into one small palette PNG.

    Reads the frame count from the header (decoding to count only when it is missing),
    then decodes once, streaming. The PNG is kept under ~95 KB by reducing the palette
    and, if that is not enough, the tile size.
    """
    path = Path(path)
    if columns < 1 or rows < 1 or tile_width < 8:
        raise ValueError("columns and rows must be >= 1 and tile_width >= 8")
    declared, w, h = stream_header(path)
    n = declared or probe_video(path).frame_count
    if w <= 0 or h <= 0:
        raise ValueError(f"not a decodable MP4: {path.name}: no frame size")
    indices = pick_indices(n, columns * rows)
    size = (tile_width, max(2, round(tile_width * h / w)))
    fps = probe_header(path).fps
    times = [i / fps for i in indices] if fps > 0 else None
    return contact_sheet_from_frames(
        _tiles(path, indices, size), columns=columns, rows=rows, tile_width=tile_width, times=times
    )


def contact_sheet_from_frames(
    frames: Sequence[Frame],
    *,
    columns: int = 3,
    rows: int = 2,
    tile_width: int = 200,
    times: Sequence[float] | None = None,
) -> bytes:
    """The contact sheet of frames already in hand (any size, all the same): no decoding.

    `times` (seconds, one per frame) label the tiles. Kept under ~95 KB by reducing the palette
    and, if that is not enough, the tile size.
    """
    if not frames:
        raise ValueError("no frames for a contact sheet")
    if times is not None and len(times) != len(frames):
        raise ValueError(f"{len(times)} times for {len(frames)} frames")
    labels = [time_label(t) for t in times] if times is not None else None
    h, w = frames[0].shape[:2]
    tw = tile_width
    data = b""
    while True:
        size = (tw, max(2, round(tw * h / w)))
        tiles = [f if f.shape[1::-1] == size else cast(Frame, cv2.resize(f, size, interpolation=cv2.INTER_AREA)) for f in frames]
        sheet = _sheet(tiles, columns, rows, size, labels)
        for colors in (256, 128, 64, 32):
            data = _png(sheet, colors)
            if len(data) <= MAX_SHEET_BYTES:
                return data
        if tw <= 48:
            logger.warning("contact sheet is %d bytes", len(data))
            return data
        tw = max(48, int(tw * 0.8))


_FRAME_PNG = [cv2.IMWRITE_PNG_COMPRESSION, 3, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]


def frame_png(frame: Frame) -> bytes:
    """One full-resolution frame as PNG (the last-frame picture); OpenCV's encoder at level 3 is
    about 2.5x faster than Pillow's default for a 720p frame, and zlib's RLE strategy ~1.5x faster
    again (a provider's 320x240 result: 8 -> 4.5 ms; a 720p photo: 89 -> 55 ms, up to ~20 % more
    bytes on photos, fewer on synthetic frames; the same pixels)."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), _FRAME_PNG)
    if not ok:
        raise ValueError("PNG encoding failed")
    return bytes(buf.tobytes())


def last_frame_png(path: Path) -> bytes:
    """The final frame at full resolution, as PNG."""
    return frame_png(read_frame(Path(path), -1))
