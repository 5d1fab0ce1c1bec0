"""Camera-move framing: how far to scale in so nothing is revealed, and the fill where it must be.

Coordinates: pixel centres, x right, y down; homographies map input pixels to output pixels.

* :func:`cover_scale` is the smallest extra scale about the output centre after which the
  warped picture covers the whole frame (``inf`` when no scale can: the centre is not over
  the picture, or part of it is behind the camera).
* :class:`BlurFillWarper` warps one picture repeatedly. Where the warped picture covers the
  frame it is a plain sharp warp. Where it does not, the frame is laid over a blurred,
  darkened, scaled-up copy of the picture (the fill of phone videos), the picture fading
  into it over a feather measured inside the picture's edge: never a mirror, never a seam.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import cast

import cv2
import numpy as np
from numpy.typing import NDArray

from .frames import warp

_BAND_ROWS = 12
# Output pixels whose source lies at most this far (input px) outside the picture are
# sampled with a replicated edge instead of the fill: bilinear's own half pixel.
SUBPIXEL_TOLERANCE = 0.5


def _scale_about(s: float, cx: float, cy: float) -> NDArray[np.float64]:
    return np.array([[s, 0.0, cx - s * cx], [0.0, s, cy - s * cy], [0.0, 0.0, 1.0]])


def scale_about_centre(h: NDArray[np.float64], s: float, width: int, height: int) -> NDArray[np.float64]:
    """``h`` followed by a scale of ``s`` about the output centre."""
    out: NDArray[np.float64] = _scale_about(s, (width - 1) / 2.0, (height - 1) / 2.0) @ h
    return out


def cover_scale(h: NDArray[np.float64], width: int, height: int) -> float:
    """Smallest s >= 1 such that ``scale_about_centre(h, s)`` leaves no output pixel uncovered.

    The warped picture is a convex quad Q (all corners in front of the camera). The frame is
    covered when its four corners, pulled towards the centre C by 1/s, lie in Q: along the ray
    C + r (corner - C), Q is left at the smallest r over Q's edges; s = 1 / min r.
    """
    w1, h1 = width - 1.0, height - 1.0
    src = np.array([[0.0, w1, w1, 0.0], [0.0, 0.0, h1, h1], [1.0, 1.0, 1.0, 1.0]])
    q = h @ src
    if np.any(q[2] <= 1e-9):
        return math.inf
    qx, qy = q[0] / q[2], q[1] / q[2]
    cx, cy = w1 / 2.0, h1 / 2.0
    ex, ey = np.roll(qx, -1) - qx, np.roll(qy, -1) - qy  # edges a -> b
    orient = 1.0 if float(np.sum(qx * np.roll(qy, -1) - np.roll(qx, -1) * qy)) > 0 else -1.0
    c0 = orient * (ex * (cy - qy) - ey * (cx - qx))  # > 0: C inside the edge's half-plane
    if np.any(c0 <= 1e-9):
        return math.inf
    r_min = 1.0
    for vx, vy in ((0.0, 0.0), (w1, 0.0), (w1, h1), (0.0, h1)):
        c1 = orient * (ex * (vy - cy) - ey * (vx - cx))
        leaving = c1 < 0
        if np.any(leaving):
            r_min = min(r_min, float(np.min(c0[leaving] / -c1[leaving])))
    return 1.0 / r_min if r_min > 0 else math.inf


class BlurFillWarper:
    """Warps one source image repeatedly; revealed areas get a blurred, darkened scaled copy.

    ``__call__(h, fill_h)``: ``h`` places the sharp picture, ``fill_h`` the fill (a
    homography that covers the frame). Both the feather (the width, inside the picture's
    edge, over which the picture fades into the fill) and the fill's darkening grow with how
    deep the revealed area is (``r``, input px): feather ``min(feather_max, r / 2)``, darkening
    ``darken * smoothstep(r / reveal_ref)``. So when a reveal begins, the fill is a thin,
    barely darkened strip of nearby colours, and nothing jumps from one frame to the next.
    When nothing is revealed the result is the plain sharp warp.
    """

    def __init__(
        self,
        img: np.ndarray,
        *,
        blur_fraction: float = 0.03,
        feather_fraction: float = 0.06,
        darken: float = 0.4,
        reveal_fraction: float = 0.1,
        neutral: float = 0.0,
    ) -> None:
        """``img``: uint8, (H, W) or (H, W, C): an RGB frame or one plane of a YUV frame.

        ``neutral`` is the value darkening moves towards: 0 for RGB, 16 for limited-range
        luma, 128 for chroma (darkening RGB by d scales Y - 16 and Cb/Cr - 128 by 1 - d).
        """
        if img.dtype != np.uint8 or img.ndim not in (2, 3):
            raise ValueError(f"expected a uint8 image or plane, got {img.dtype} {img.shape}")
        self.img = np.ascontiguousarray(img)
        self.neutral = neutral
        self.h, self.w = self.img.shape[:2]
        short = min(self.w, self.h)
        self.feather_max = feather_fraction * short
        self.darken = darken
        self.reveal_ref = max(1.0, reveal_fraction * short)
        self.size = (self.w, self.h)
        sw, sh = max(4, round(self.w / 8)), max(4, round(self.h / 8))
        small = cv2.resize(self.img, (sw, sh), interpolation=cv2.INTER_AREA)
        sigma = max(1.0, blur_fraction * min(self.w, self.h) / 8.0)
        self._small = cv2.GaussianBlur(small, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
        self._small_size = (sw, sh)
        qw, qh = max(4, round(self.w / 4)), max(4, round(self.h / 4))
        self._q_size = (qw, qh)
        # Distance (input px) from each quarter-resolution pixel centre to the picture's edge.
        xs = (np.arange(qw, dtype=np.float32) + 0.5) * (self.w / qw) - 0.5
        ys = (np.arange(qh, dtype=np.float32) + 0.5) * (self.h / qh) - 0.5
        dx = np.minimum(xs, (self.w - 1) - xs)
        dy = np.minimum(ys, (self.h - 1) - ys)
        self._dist = np.ascontiguousarray(np.minimum(dx[None, :], dy[:, None]), dtype=np.float32)
        self._fill = np.empty_like(self.img)
        self._alpha = np.empty((self.h, self.w), np.float32)
        self._inv = np.empty((self.h, self.w), np.float32)

    def _scaled(self, h: NDArray[np.float64], size: tuple[int, int]) -> NDArray[np.float64]:
        fx, fy = size[0] / self.w, size[1] / self.h
        s = np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5], [0.0, 0.0, 1.0]])
        out: NDArray[np.float64] = s @ h @ np.linalg.inv(s)
        return out

    def edge_distance(self, h: NDArray[np.float64]) -> float:
        """Smallest distance (input px, negative outside) from a frame corner's source to the edge.

        The distance to the edge is concave over the picture and the frame's preimage is a
        convex quad, so its minimum is at a corner: >= 0 means nothing is revealed.
        """
        inv = np.linalg.inv(h)
        w1, h1 = self.w - 1.0, self.h - 1.0
        p = inv @ np.array([[0.0, w1, 0.0, w1], [0.0, 0.0, h1, h1], [1.0, 1.0, 1.0, 1.0]])
        if np.any(p[2] <= 1e-9):
            return -math.inf
        x, y = p[0] / p[2], p[1] / p[2]
        return float(np.min(np.minimum(np.minimum(x, w1 - x), np.minimum(y, h1 - y))))

    def sharp(self, h: NDArray[np.float64], dst: np.ndarray | None = None) -> NDArray[np.uint8]:
        return cast(NDArray[np.uint8], warp(self.img, h, self.size, border=cv2.BORDER_REPLICATE, dst=dst))

    def __call__(
        self, h: NDArray[np.float64], fill_h: NDArray[np.float64], dst: np.ndarray | None = None
    ) -> NDArray[np.uint8]:
        """The frame, written into ``dst`` when given (else a fresh array callers may keep)."""
        reveal = -self.edge_distance(h)
        if reveal <= SUBPIXEL_TOLERANCE:
            return self.sharp(h, dst)
        # The feather is set in output pixels; the picture is scaled by about ``scale`` here.
        scale = math.sqrt(abs(float(np.linalg.det(h[:2, :2])))) / max(1e-6, abs(float(h[2, 2])))
        feather = min(self.feather_max, 0.5 * reveal * scale) / max(scale, 1e-3)
        u = min(1.0, reveal / self.reveal_ref)
        darken = self.darken * u * u * (3.0 - 2.0 * u)
        # Alpha: 1 deeper than ``feather`` inside the picture, smoothstep down to 0 at its edge.
        hq = self._scaled(h, self._q_size)
        dist = warp(self._dist, hq, self._q_size, border=cv2.BORDER_CONSTANT, border_value=-1.0)
        f = max(feather, 1e-3)
        a = np.clip(dist * np.float32(1.0 / f), 0.0, 1.0)
        a = a * a * (np.float32(3.0) - np.float32(2.0) * a)
        need = a < 1.0
        out = self.sharp(h, dst)
        if not need.any():
            return out
        hs = self._scaled(fill_h, self._small_size)
        small = warp(self._small, hs, self._small_size, border=cv2.BORDER_REPLICATE)
        if darken > 0.0:
            d = min(1.0, darken)
            small = cv2.convertScaleAbs(small, alpha=1.0 - d, beta=self.neutral * d)
        cv2.resize(small, self.size, dst=self._fill, interpolation=cv2.INTER_LINEAR)
        cv2.resize(a, self.size, dst=self._alpha, interpolation=cv2.INTER_LINEAR)
        np.subtract(np.float32(1.0), self._alpha, out=self._inv)
        for ys, xs in self._blend_rois(need):
            cv2.blendLinear(out[ys, xs], self._fill[ys, xs], self._alpha[ys, xs], self._inv[ys, xs], dst=out[ys, xs])
        return out

    def _blend_rois(self, need: NDArray[np.bool_]) -> Iterator[tuple[slice, slice]]:
        """Disjoint full-resolution boxes covering every pixel whose alpha is below 1.

        ``need`` is at 1/4 scale. The picture's interior is convex, so in each row the pixels
        to blend are a prefix and a suffix; bands of rows get a left and a right box.
        """
        ch, cw = need.shape
        fy, fx = self.h / ch, self.w / cw
        for r0 in range(0, ch, _BAND_ROWS):
            r1 = min(ch, r0 + _BAND_ROWS)
            # Bilinear upscaling reads one quarter-res row/column beyond each side.
            cols: NDArray[np.bool_] = np.asarray(need[max(0, r0 - 1) : min(ch, r1 + 1)].any(axis=0))
            if not cols.any():
                continue
            y0 = round(r0 * fy)
            y1 = self.h if r1 == ch else round(r1 * fy)
            if cols.all():
                yield slice(y0, y1), slice(0, self.w)
                continue
            left = int(np.argmin(cols))
            right = int(np.argmin(cols[::-1]))
            lx = min(self.w, int(np.ceil((left + 1) * fx)))
            rx = min(self.w, int(np.ceil((right + 1) * fx)))
            if lx + rx >= self.w:
                yield slice(y0, y1), slice(0, self.w)
                continue
            if lx > 0 and left > 0:
                yield slice(y0, y1), slice(0, lx)
            if rx > 0 and right > 0:
                yield slice(y0, y1), slice(self.w - rx, self.w)
