"""Shared helpers for the offline engine: working size, resizing, easing, warping.

All frames are ``uint8`` RGB arrays of shape (H, W, 3). Sizes are given as (W, H), the
OpenCV order.
"""

from __future__ import annotations

import math
from typing import Literal, cast

import cv2
import numpy as np
from numpy.typing import NDArray

Frame = NDArray[np.uint8]
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
