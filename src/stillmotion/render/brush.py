"""Motion brush: masked regions slide along trajectories, a static mask holds still.

Coordinates: trajectory points are pixels of the working frame with the origin at the
BOTTOM-LEFT corner, y up; image row = H - 1 - y. The first point is the region's anchor:
the region is translated by (point(t) - first point), whether or not the anchor lies inside
the mask. The path is resampled by arc length, so the region moves at constant speed (no
easing): frame 0 at the first point, the last frame at the last point.

Rendering: the union of the moving regions is filled once by TELEA inpainting at half
resolution (the vacated area); each frame pastes every region (in the given order, later
on top) with a feathered alpha that is 1 on the mask and fades out over a few pixels
around it, only inside the region's bounding box; then the static mask (True = hold still)
is re-blended from the input inside those boxes, so static pixels never change.
Frame 0 is the input image exactly.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import cast

import cv2
import numpy as np
from numpy.typing import NDArray

from .frames import Frame, as_rgb_frame, check_n_frames, clip_time

logger = logging.getLogger(__name__)

Mask = NDArray[np.bool_]


@dataclass
class BrushRegion:
    """A moving region: a boolean (H, W) mask at the working size and its path.

    ``trajectory`` holds (x, y) pixel points of the working frame, origin bottom-left.
    """

    mask: np.ndarray
    trajectory: list[tuple[float, float]] = field(default_factory=list)


def to_image_coords(points: Sequence[tuple[float, float]], height: int) -> list[tuple[float, float]]:
    """Bottom-left-origin points -> image (top-left origin) points: row = H - 1 - y."""
    return [(float(x), float(height - 1) - float(y)) for x, y in points]


def resample_path(points: Sequence[tuple[float, float]], n_frames: int) -> list[tuple[float, float]]:
    """``n_frames`` points along the polyline, equally spaced by arc length (constant speed)."""
    if not points:
        raise ValueError("a trajectory needs at least one point")
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if not np.all(np.isfinite(pts)):
        raise ValueError("trajectory points must be finite numbers")
    seg = np.hypot(np.diff(pts[:, 0]), np.diff(pts[:, 1])) if len(pts) > 1 else np.zeros(0)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    total = float(cum[-1])
    out: list[tuple[float, float]] = []
    for i in range(n_frames):
        if total <= 0.0:
            out.append((float(pts[0, 0]), float(pts[0, 1])))
            continue
        s = total * clip_time(i, n_frames)
        k = int(np.searchsorted(cum, s, side="right")) - 1
        k = min(max(k, 0), len(seg) - 1)
        while k < len(seg) - 1 and seg[k] == 0.0:
            k += 1
        u = 0.0 if seg[k] == 0.0 else (s - cum[k]) / seg[k]
        u = min(1.0, max(0.0, u))
        p = pts[k] + u * (pts[k + 1] - pts[k])
        out.append((float(p[0]), float(p[1])))
    return out


def _check_mask(mask: np.ndarray, shape: tuple[int, int], name: str) -> Mask:
    arr = np.asarray(mask)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape} (the working size), got {arr.shape}")
    return arr.astype(bool)


def _feather_px(width: int, height: int) -> int:
    return max(2, round(min(width, height) / 120))


def _outward_alpha(mask: Mask, feather: int) -> NDArray[np.float32]:
    """1 on the mask, fading to 0 over about ``feather`` pixels outside it."""
    m = mask.astype(np.uint8)
    d = max(1, feather // 2)
    grown = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * d + 1, 2 * d + 1)))
    soft = cv2.GaussianBlur(grown.astype(np.float32), (0, 0), max(0.5, feather / 3.0))
    alpha: NDArray[np.float32] = np.maximum(soft, m.astype(np.float32))
    alpha[alpha < 1.0 / 512.0] = 0.0
    return alpha


def _bbox(alpha: NDArray[np.float32], pad: int) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(alpha > 0)
    if len(xs) == 0:
        return None
    h, w = alpha.shape
    return (
        max(0, int(xs.min()) - pad),
        max(0, int(ys.min()) - pad),
        min(w, int(xs.max()) + 1 + pad),
        min(h, int(ys.max()) + 1 + pad),
    )


def _inpaint_background(img: Frame, hole: Mask) -> Frame:
    """``img`` with ``hole`` filled by TELEA inpainting computed at half resolution."""
    if not hole.any():
        return img.copy()
    h, w = img.shape[:2]
    sw, sh = max(2, w // 2), max(2, h // 2)
    small = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA)
    small_hole = cv2.resize(hole.astype(np.uint8) * 255, (sw, sh), interpolation=cv2.INTER_LINEAR)
    small_hole = cv2.dilate((small_hole > 0).astype(np.uint8) * 255, np.ones((3, 3), np.uint8))
    filled = cv2.inpaint(small, small_hole, 3, cv2.INPAINT_TELEA)
    # Soften TELEA's radial streaks; only the hole is taken from this.
    filled = cv2.GaussianBlur(filled, (0, 0), max(1.0, min(sw, sh) / 180.0))
    up = cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR)
    bg = img.copy()
    bg[hole] = up[hole]
    return bg


@dataclass
class _Sprite:
    rgb: Frame
    alpha: NDArray[np.float32]
    x0: int
    y0: int
    path: list[tuple[float, float]]


def brush_frames(
    img: np.ndarray,
    regions: Sequence[BrushRegion],
    static_mask: np.ndarray | None,
    n_frames: int,
) -> Iterator[Frame]:
    """Stream ``n_frames`` frames in which each region follows its trajectory."""
    src = as_rgb_frame(img)
    check_n_frames(n_frames)
    h, w = src.shape[:2]
    masks = [_check_mask(r.mask, (h, w), f"regions[{i}].mask") for i, r in enumerate(regions)]
    paths = [resample_path(to_image_coords(r.trajectory, h), n_frames) for r in regions]
    static = None if static_mask is None else _check_mask(static_mask, (h, w), "static_mask")
    return _brush(src, masks, paths, static, n_frames)


def _brush(
    src: Frame, masks: list[Mask], paths: list[list[tuple[float, float]]], static: Mask | None, n_frames: int
) -> Iterator[Frame]:
    yield src.copy()
    if n_frames == 1:
        return
    h, w = src.shape[:2]
    feather = _feather_px(w, h)
    moving = [(m, p) for m, p in zip(masks, paths, strict=True) if m.any()]
    hole = np.zeros((h, w), bool)
    for m, path in moving:
        if len(set(path)) > 1:
            hole |= m
    bg = _inpaint_background(src, hole)
    static_alpha: NDArray[np.float32] | None = None
    if static is not None and static.any():
        static_alpha = np.minimum(_outward_alpha(static, max(2, feather // 2)), np.float32(1.0))
        bg = cast(Frame, cv2.blendLinear(src, bg, static_alpha, np.float32(1.0) - static_alpha))
    sprites: list[_Sprite] = []
    for m, path in moving:
        alpha = _outward_alpha(m, feather)
        box = _bbox(alpha, 1)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        sprites.append(
            _Sprite(
                np.ascontiguousarray(src[y0:y1, x0:x1]),
                np.ascontiguousarray(alpha[y0:y1, x0:x1]),
                x0,
                y0,
                path,
            )
        )
    for i in range(1, n_frames):
        out = bg.copy()
        touched: list[tuple[int, int, int, int]] = []
        for sp in sprites:
            dx = sp.path[i][0] - sp.path[0][0]
            dy = sp.path[i][1] - sp.path[0][1]
            box = _paste(out, sp, dx, dy)
            if box is not None:
                touched.append(box)
        if static_alpha is not None:
            for x0, y0, x1, y1 in touched:
                a = static_alpha[y0:y1, x0:x1]
                out[y0:y1, x0:x1] = cv2.blendLinear(
                    np.ascontiguousarray(src[y0:y1, x0:x1]),
                    np.ascontiguousarray(out[y0:y1, x0:x1]),
                    np.ascontiguousarray(a),
                    np.float32(1.0) - a,
                )
        yield out


def _paste(out: Frame, sp: _Sprite, dx: float, dy: float) -> tuple[int, int, int, int] | None:
    """Alpha-composite the sprite translated by (dx, dy); return the touched box."""
    h, w = out.shape[:2]
    ix, iy = math.floor(dx), math.floor(dy)
    fx, fy = dx - ix, dy - iy
    sh, sw = sp.alpha.shape
    if fx or fy:
        m = np.array([[1.0, 0.0, fx], [0.0, 1.0, fy]])
        size = (sw + 1, sh + 1)
        rgb = cv2.warpAffine(sp.rgb, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(sp.alpha, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    else:
        rgb, alpha = sp.rgb, sp.alpha
    ah, aw = alpha.shape
    x0, y0 = sp.x0 + ix, sp.y0 + iy
    cx0, cy0 = max(0, x0), max(0, y0)
    cx1, cy1 = min(w, x0 + aw), min(h, y0 + ah)
    if cx0 >= cx1 or cy0 >= cy1:
        return None
    sx0, sy0 = cx0 - x0, cy0 - y0
    sx1, sy1 = sx0 + (cx1 - cx0), sy0 + (cy1 - cy0)
    a = np.ascontiguousarray(alpha[sy0:sy1, sx0:sx1])
    out[cy0:cy1, cx0:cx1] = cv2.blendLinear(
        np.ascontiguousarray(rgb[sy0:sy1, sx0:sx1]),
        np.ascontiguousarray(out[cy0:cy1, cx0:cx1]),
        a,
        np.float32(1.0) - a,
    )
    return cx0, cy0, cx1, cy1
