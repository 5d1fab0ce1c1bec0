"""Shared helpers for the offline engine: working size, resizing, easing, border fill.

All frames are ``uint8`` RGB arrays of shape (H, W, 3). Sizes are given as (W, H), the
OpenCV order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal, cast

import cv2
import numpy as np
from numpy.typing import NDArray

Frame = NDArray[np.uint8]
_FULL_COVERAGE = 0.999
_BAND_ROWS = 12
FloatImage = NDArray[np.float32]
Resolution = Literal["480p", "720p", "1080p"]

SHORT_SIDE: dict[str, int] = {"480p": 480, "720p": 720, "1080p": 1080}


def _even(value: float) -> int:
    return max(2, 2 * math.floor(value / 2.0 + 0.5))


def working_size(width: int, height: int, resolution: Resolution) -> tuple[int, int]:
    """(W, H) whose short side is 480/720/1080 px, keeping the aspect, both sides even."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    try:
        short = SHORT_SIDE[resolution]
    except KeyError:
        raise ValueError(f"resolution must be one of {sorted(SHORT_SIDE)}, got {resolution!r}") from None
    scale = short / min(width, height)
    if width <= height:
        return short, _even(height * scale)
    return _even(width * scale), short


def as_rgb_frame(img: np.ndarray) -> Frame:
    """Check that ``img`` is a (H, W, 3) uint8 array and return it C-contiguous."""
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) array, got {img.dtype} {img.shape}")
    return np.ascontiguousarray(img)


def fit_image(img: np.ndarray, size: tuple[int, int]) -> Frame:
    """Resize to exactly ``size`` = (W, H): INTER_AREA when shrinking, INTER_CUBIC when growing.

    The aspect is not preserved: callers pass a size from :func:`working_size`.
    """
    src = as_rgb_frame(img)
    w, h = size
    if w <= 0 or h <= 0:
        raise ValueError(f"target size must be positive, got {w}x{h}")
    sh, sw = src.shape[:2]
    if (sw, sh) == (w, h):
        return src.copy()
    shrinking = w * h < sw * sh
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cast(Frame, cv2.resize(src, (w, h), interpolation=interp))


def smoothstep(t: float) -> float:
    """Ease in and out: 3t^2 - 2t^3 on t clamped to [0, 1]."""
    t = min(1.0, max(0.0, t))
    return t * t * (3.0 - 2.0 * t)


def clip_time(i: int, n_frames: int) -> float:
    """Normalised time of frame ``i`` in a clip of ``n_frames``: 0 first, 1 last."""
    return 0.0 if n_frames <= 1 else i / (n_frames - 1)


def check_n_frames(n_frames: int) -> None:
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")


def _scaled_homography(h: NDArray[np.float64], fx: float, fy: float) -> NDArray[np.float64]:
    """The homography ``h`` expressed on images scaled by (fx, fy), pixel centres kept.

    Pixel centre mapping: x_small = (x + 0.5) * fx - 0.5.
    """
    s = np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5], [0.0, 0.0, 1.0]])
    out: NDArray[np.float64] = s @ h @ np.linalg.inv(s)
    return out


def is_affine(h: NDArray[np.float64], tol: float = 1e-12) -> bool:
    return bool(abs(h[2, 0]) < tol and abs(h[2, 1]) < tol)


def warp(
    img: np.ndarray,
    h: NDArray[np.float64],
    size: tuple[int, int],
    *,
    border: int = cv2.BORDER_REFLECT101,
    border_value: float = 0.0,
    dst: np.ndarray | None = None,
) -> np.ndarray:
    """Warp ``img`` by homography ``h`` (input coords -> output coords), bilinear."""
    if is_affine(h):
        m = (h[:2] / h[2, 2]).astype(np.float64)
        return cv2.warpAffine(
            img, m, size, dst=dst, flags=cv2.INTER_LINEAR, borderMode=border, borderValue=border_value
        )
    return cv2.warpPerspective(
        img, h, size, dst=dst, flags=cv2.INTER_LINEAR, borderMode=border, borderValue=border_value
    )


class ReflectBlurWarper:
    """Warps one source image repeatedly with "reflect_blur" borders.

    Pixels that map inside the source are warped sharply; revealed pixels (outside the
    source) come from a blurred 1/8-scale copy warped with BORDER_REFLECT101 (a mirror
    of the image, so colours continue across the edge), and a feathered coverage mask
    computed at 1/4 scale blends the two across the seam, only in the boxes that hold
    the seam. When no pixel is revealed the frame is a plain sharp warp. There are never
    black bars.
    """

    def __init__(self, img: np.ndarray) -> None:
        self.img = as_rgb_frame(img)
        self.h, self.w = self.img.shape[:2]
        sw, sh = max(2, round(self.w / 8)), max(2, round(self.h / 8))
        small = cv2.resize(self.img, (sw, sh), interpolation=cv2.INTER_AREA)
        self._small = cv2.GaussianBlur(small, (0, 0), 1.5, borderType=cv2.BORDER_REFLECT101)
        self._small_size = (sw, sh)
        cw, ch = max(2, round(self.w / 4)), max(2, round(self.h / 4))
        self._cov_size = (cw, ch)
        self._ones = np.ones((ch, cw), np.float32)
        self._fill = np.empty_like(self.img)
        self._cov_full = np.empty((self.h, self.w), np.float32)
        self._inv_full = np.empty((self.h, self.w), np.float32)
        self._corners = np.array(
            [
                [0.0, 0.0, 1.0],
                [self.w - 1.0, 0.0, 1.0],
                [0.0, self.h - 1.0, 1.0],
                [self.w - 1.0, self.h - 1.0, 1.0],
            ]
        ).T

    def reveals_border(self, h: NDArray[np.float64]) -> bool:
        """True when some output pixel maps outside the source image."""
        src = np.linalg.inv(h) @ self._corners
        if np.any(src[2] <= 1e-9):
            return True
        x = src[0] / src[2]
        y = src[1] / src[2]
        tol = 1e-3
        return bool(
            np.any(x < -tol)
            or np.any(x > self.w - 1 + tol)
            or np.any(y < -tol)
            or np.any(y > self.h - 1 + tol)
        )

    def __call__(self, h: NDArray[np.float64]) -> Frame:
        """The warped frame; a fresh array each call (callers may keep it)."""
        size = (self.w, self.h)
        if not self.reveals_border(h):
            return warp(self.img, h, size, border=cv2.BORDER_REFLECT101)
        hs = _scaled_homography(h, self._small_size[0] / self.w, self._small_size[1] / self.h)
        small = warp(self._small, hs, self._small_size, border=cv2.BORDER_REFLECT101)
        cv2.resize(small, size, dst=self._fill, interpolation=cv2.INTER_LINEAR)
        # Sharp pixels over the blurred fill; BORDER_TRANSPARENT leaves revealed pixels alone
        # (and skips OpenCV's slow per-pixel border path).
        out: Frame = self._fill.copy()
        warp(self.img, h, size, border=cv2.BORDER_TRANSPARENT, dst=out)
        hc = _scaled_homography(h, self._cov_size[0] / self.w, self._cov_size[1] / self.h)
        cov = warp(self._ones, hc, self._cov_size, border=cv2.BORDER_CONSTANT, border_value=0.0)
        cov = cv2.GaussianBlur(cov, (0, 0), 1.0, borderType=cv2.BORDER_REPLICATE)
        cv2.resize(cov, size, dst=self._cov_full, interpolation=cv2.INTER_LINEAR)
        np.subtract(np.float32(1.0), self._cov_full, out=self._inv_full)
        for ys, xs in self._blend_rois(cov < _FULL_COVERAGE):
            cv2.blendLinear(
                out[ys, xs],
                self._fill[ys, xs],
                self._cov_full[ys, xs],
                self._inv_full[ys, xs],
                dst=out[ys, xs],
            )
        return out

    def _blend_rois(self, need: NDArray[np.bool_]) -> Iterator[tuple[slice, slice]]:
        """Disjoint full-resolution boxes covering every pixel whose coverage is below 1.

        ``need`` is at 1/4 scale. The valid area is convex, so in each row the pixels to
        blend are a prefix and a suffix; bands of rows get a left and a right box.
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
