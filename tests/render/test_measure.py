"""The measurement helpers themselves, on known synthetic motion (no video)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from tests.render.measure import (
    estimate_homography,
    estimate_similarity,
    map_point,
    phase_shift,
    psnr,
    psnr_quarter,
    textured_image,
    track_region,
)

W, H = 480, 270


def _rotate_scale(img: np.ndarray, ccw_deg: float, scale: float) -> np.ndarray:
    m = cv2.getRotationMatrix2D(((W - 1) / 2, (H - 1) / 2), ccw_deg, scale)
    return np.asarray(
        cv2.warpAffine(img, m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    )


def test_textured_image_is_deterministic_and_textured() -> None:
    a, b, c = textured_image(W, H), textured_image(W, H), textured_image(W, H, seed=1)
    assert a.shape == (H, W, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert psnr(a, c) < 20
    assert float(a.std()) > 30


def test_psnr_controls() -> None:
    a = textured_image(W, H)
    assert psnr(a, a) == math.inf
    assert psnr_quarter(a, textured_image(W, H, seed=3)) < 20


@pytest.mark.parametrize(("ccw", "scale"), [(0.0, 1.0), (10.0, 1.0), (-7.0, 1.3), (0.0, 0.75)])
def test_similarity_recovers_known_transform(ccw: float, scale: float) -> None:
    a = textured_image(W, H)
    b = _rotate_scale(a, ccw, scale)
    sim = estimate_similarity(a, b)
    assert sim.method == "orb"
    assert sim.scale == pytest.approx(scale, rel=0.01)
    assert sim.rotation_deg == pytest.approx(ccw, abs=0.3)
    assert abs(sim.shift[0]) < 1.0 and abs(sim.shift[1]) < 1.0


def test_similarity_fallback_logpolar() -> None:
    a = textured_image(W, H)
    b = _rotate_scale(a, 12.0, 1.2)
    sim = estimate_similarity(a, b, min_inliers=10**9)  # force the fallback
    assert sim.method == "logpolar"
    assert sim.scale == pytest.approx(1.2, rel=0.02)
    assert sim.rotation_deg == pytest.approx(12.0, abs=1.0)


def test_phase_shift_and_homography() -> None:
    a = textured_image(W, H)
    m = np.array([[1, 0, 7.5], [0, 1, -4.0]], np.float32)
    b = np.asarray(cv2.warpAffine(a, m, (W, H), borderMode=cv2.BORDER_REFLECT101))
    dx, dy = phase_shift(a, b)
    assert dx == pytest.approx(7.5, abs=0.3) and dy == pytest.approx(-4.0, abs=0.3)
    hm = estimate_homography(a, b)
    assert hm is not None
    x, y = map_point(hm, W / 2, H / 2)
    assert x == pytest.approx(W / 2 + 7.5, abs=0.5) and y == pytest.approx(H / 2 - 4.0, abs=0.5)


def test_track_region_finds_moved_patch() -> None:
    a = textured_image(W, H)
    mask = np.zeros((H, W), bool)
    cv2.circle(mask.view(np.uint8), (150, 120), 30, 1, -1)
    b = np.asarray(cv2.warpAffine(a, np.array([[1, 0, 40.3], [0, 1, 12.6]], np.float32), (W, H)))
    cx, cy = track_region(b, a, mask)
    ys, xs = np.nonzero(mask)
    assert cx == pytest.approx(xs.mean() + 40.3, abs=0.5)
    assert cy == pytest.approx(ys.mean() + 12.6, abs=0.5)
