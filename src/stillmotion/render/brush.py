"""Motion brush: masked regions slide along trajectories, a static mask holds still.

Coordinates: trajectory points are pixels of the working frame with the origin at the
BOTTOM-LEFT corner, y up; image row = H - 1 - y. The first point is the region's anchor:
the region is translated by (point(t) - first point), whether or not the anchor lies inside
the mask. The path is resampled by arc length, so the region moves at constant speed (no
easing): frame 0 at the first point, the last frame at the last point.

Rendering: the area the moving regions leave (their union, grown by a pixel or two for
anti-aliased edges) is filled once, before the first frame, with a smooth membrane
(harmonic) interpolation of its surroundings, solved coarse-to-fine on the area's bounding
box: no X-shaped or square smear, no seam. Each frame pastes every region (in the given
order, later on top) with an alpha that is 1 inside the mask and fades to 0 at the mask's
edge (a feather INSIDE the mask, so no pixel of the surroundings travels with the region
and no outline follows it), only inside the region's bounding box; then the static mask
(True = hold still) is re-blended from the input inside those boxes, so static pixels never
change. Frame 0 is the input image exactly.
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
    """1 on the mask, fading to 0 over about ``feather`` pixels outside it (the static mask)."""
    m = mask.astype(np.uint8)
    d = max(1, feather // 2)
    grown = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * d + 1, 2 * d + 1)))
    soft = cv2.GaussianBlur(grown.astype(np.float32), (0, 0), max(0.5, feather / 3.0))
    alpha: NDArray[np.float32] = np.maximum(soft, m.astype(np.float32))
    alpha[alpha < 1.0 / 512.0] = 0.0
    return alpha


def _inward_alpha(mask: Mask, feather: int) -> NDArray[np.float32]:
    """0 outside the mask, rising (smoothstep) to 1 at ``feather`` pixels inside its edge.

    Distances are measured to the nearest pixel outside the mask, so the fade never reaches
    past the mask: nothing around the region moves with it. A pixel just inside the edge is
    about half transparent.
    """
    m = np.pad(mask.astype(np.uint8), 1)  # the frame's border counts as an edge too
    dist = cv2.distanceTransform(m, cv2.DIST_L2, 5)[1:-1, 1:-1]
    a = np.clip((dist - 0.5) / max(1.0, float(feather)), 0.0, 1.0).astype(np.float32)
    out: NDArray[np.float32] = a * a * (np.float32(3.0) - np.float32(2.0) * a)
    return out


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


_JACOBI_STEPS = 24


def _membrane(img: NDArray[np.float32], hole: Mask) -> NDArray[np.float32]:
    """``img`` with ``hole`` replaced by the harmonic interpolation of the pixels around it.

    Coarse-to-fine: the known pixels are averaged down (weighted by how much of each coarse
    pixel is known) until the hole is small, filled there, then each finer level starts from
    the upsampled coarser solution and relaxes it with a few Jacobi steps (3x3 means, known
    pixels held fixed). Smooth everywhere inside, continuous with the surroundings.
    """
    h, w = hole.shape
    known = (~hole).astype(np.float32)
    if not hole.any():
        return img
    if min(h, w) <= 4 or not known.any():
        fill = img[~hole].mean(axis=0) if known.any() else img.reshape(-1, img.shape[2]).mean(axis=0)
        out = img.copy()
        out[hole] = fill
        return out
    sw, sh = max(1, w // 2), max(1, h // 2)
    wsum = cv2.resize(known, (sw, sh), interpolation=cv2.INTER_AREA)
    vsum = cv2.resize(img * known[..., None], (sw, sh), interpolation=cv2.INTER_AREA)
    if vsum.ndim == 2:
        vsum = vsum[..., None]
    coarse_hole = wsum < 1e-3
    averaged = np.ascontiguousarray(vsum / np.maximum(wsum, 1e-3)[..., None], dtype=np.float32)
    coarse = _membrane(averaged, coarse_hole)
    up = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)
    if up.ndim == 2:
        up = up[..., None]
    out = img.copy()
    out[hole] = up[hole]
    hole8 = hole.astype(np.uint8)
    for _ in range(_JACOBI_STEPS):
        smooth = cv2.blur(out, (3, 3), borderType=cv2.BORDER_REPLICATE)
        if smooth.ndim == 2:
            smooth = smooth[..., None]
        cv2.copyTo(smooth, hole8, out)
    return out


def _inpaint_background(img: Frame, hole: Mask) -> Frame:
    """``img`` with ``hole`` filled by a membrane interpolation of its surroundings.

    Solved on the hole's bounding box plus a margin (the rest of the image is untouched).
    """
    if not hole.any():
        return img.copy()
    h, w = img.shape[:2]
    ys, xs = np.nonzero(hole)
    margin = max(8, (int(xs.max() - xs.min()) + int(ys.max() - ys.min())) // 8)
    x0, x1 = max(0, int(xs.min()) - margin), min(w, int(xs.max()) + 1 + margin)
    y0, y1 = max(0, int(ys.min()) - margin), min(h, int(ys.max()) + 1 + margin)
    crop = img[y0:y1, x0:x1].astype(np.float32)
    filled = _membrane(np.ascontiguousarray(crop), np.ascontiguousarray(hole[y0:y1, x0:x1]))
    bg = img.copy()
    sub = hole[y0:y1, x0:x1]
    bg[y0:y1, x0:x1][sub] = np.clip(filled[sub] + 0.5, 0, 255).astype(np.uint8)
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
    # Anti-aliased object edges lie a pixel or two outside a mask drawn on them.
    grow = max(1, feather // 3)
    hole = cv2.dilate(hole.astype(np.uint8), np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)).astype(bool)
    bg = _inpaint_background(src, hole)
    static_alpha: NDArray[np.float32] | None = None
    if static is not None and static.any():
        static_alpha = np.minimum(_outward_alpha(static, max(2, feather // 2)), np.float32(1.0))
        bg = cast(Frame, cv2.blendLinear(src, bg, static_alpha, np.float32(1.0) - static_alpha))
    sprites: list[_Sprite] = []
    for m, path in moving:
        alpha = _inward_alpha(m, feather)
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
