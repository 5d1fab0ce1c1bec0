"""Motion brush: regions follow trajectories (bottom-left origin), static mask holds still."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from stillmotion.media.video import encode_frames, iter_frames
from stillmotion.render import BrushRegion, brush_frames
from stillmotion.render.brush import resample_path, to_image_coords
from tests.render.measure import mask_centroid, psnr, psnr_quarter, textured_image, track_region

W, H = 480, 272
N = 24


def disc(cx: int, cy: int, r: int) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    cv2.circle(m, (cx, cy), r, 1, -1)
    return m.astype(bool)


def test_to_image_coords() -> None:
    assert to_image_coords([(0, 0), (10, H - 1), (3.5, 7.25)], H) == [
        (0.0, H - 1.0),
        (10.0, 0.0),
        (3.5, H - 1 - 7.25),
    ]


def test_resample_path_constant_speed() -> None:
    pts = resample_path([(0, 0), (30, 0), (30, 10)], 5)  # length 40 -> steps of 10
    assert pts == [(0.0, 0.0), (10.0, 0.0), (20.0, 0.0), (30.0, 0.0), (30.0, 10.0)]
    # uneven point spacing does not change the speed
    pts = resample_path([(0, 0), (1, 0), (2, 0), (40, 0)], 5)
    assert [p[0] for p in pts] == pytest.approx([0, 10, 20, 30, 40])
    assert resample_path([(5, 5)], 3) == [(5.0, 5.0)] * 3
    assert resample_path([(5, 5), (5, 5)], 2) == [(5.0, 5.0)] * 2
    assert resample_path([(1, 2), (1, 2), (4, 6)], 2) == [(1.0, 2.0), (4.0, 6.0)]
    with pytest.raises(ValueError):
        resample_path([], 3)
    with pytest.raises(ValueError):
        resample_path([(0, float("nan"))], 3)


def test_frame0_is_input_and_validation() -> None:
    img = textured_image(W, H)
    region = BrushRegion(disc(100, 100, 20), [(100, H - 1 - 100), (200, H - 1 - 100)])
    frames = list(brush_frames(img, [region], None, 6))
    assert len(frames) == 6 and np.array_equal(frames[0], img)
    with pytest.raises(ValueError, match="shape"):
        brush_frames(img, [BrushRegion(np.zeros((H, W + 2), bool), [(0, 0)])], None, 6)
    with pytest.raises(ValueError, match="static_mask"):
        brush_frames(img, [region], np.zeros((10, 10), bool), 6)
    with pytest.raises(ValueError):
        brush_frames(img, [BrushRegion(disc(100, 100, 20), [])], None, 6)


def test_region_follows_trajectory_in_mp4(tmp_path: Path) -> None:
    img = textured_image(W, H, seed=5)
    mask = disc(120, 110, 28)
    # bottom-left origin: starts at the disc centre, goes right and down, then up
    traj = [(120.0, H - 1 - 110.0), (260.0, H - 1 - 150.0), (300.0, H - 1 - 80.0)]
    static = np.zeros((H, W), bool)
    static[:, 400:] = True
    path = tmp_path / "brush.mp4"
    encode_frames(brush_frames(img, [BrushRegion(mask, traj)], static, N), path)
    frames = list(iter_frames(path))
    assert len(frames) == N
    assert psnr_quarter(frames[0], img) >= 30
    expected = resample_path(to_image_coords(traj, H), N)
    mx, my = mask_centroid(mask)
    for i in (0, 5, 12, 18, N - 1):
        cx, cy = track_region(frames[i], img, mask)
        ex, ey = mx + expected[i][0] - expected[0][0], my + expected[i][1] - expected[0][1]
        assert abs(cx - ex) < 3.0 and abs(cy - ey) < 3.0, (i, (cx, cy), (ex, ey))
    # the last point is (300, H-1-80) with the origin bottom-left: image column 300, row 80
    cx, cy = track_region(frames[-1], img, mask)
    assert abs(cx - 300) < 3.0 and abs(cy - 80) < 3.0
    # the static strip holds still
    assert psnr_quarter(frames[-1][:, 400:], img[:, 400:]) > 35
    assert psnr_quarter(frames[-1][:, 400:], frames[0][:, 400:]) > 35
    # the vacated place no longer shows the region
    y0, y1, x0, x1 = 110 - 20, 110 + 20, 120 - 20, 120 + 20
    assert psnr(frames[-1][y0:y1, x0:x1], img[y0:y1, x0:x1]) < 22


def test_static_mask_wins_over_moving_region() -> None:
    img = textured_image(W, H, seed=6)
    static = np.zeros((H, W), bool)
    static[:, 300:] = True
    # the region slides into the static area
    region = BrushRegion(disc(250, 136, 30), [(250, 135), (400, 135)])
    frames = list(brush_frames(img, [region], static, 8))
    inner = np.zeros((H, W), bool)
    inner[:, 306:] = True  # away from the static mask's feathered edge
    for f in frames:
        assert np.array_equal(f[inner], img[inner])


def test_several_regions_and_no_motion() -> None:
    img = textured_image(W, H, seed=7)
    a = BrushRegion(disc(100, 80, 20), [(100, H - 1 - 80), (100, H - 1 - 180)])  # moves down 100 px
    b = BrushRegion(disc(350, 200, 20), [(350, H - 1 - 200), (250, H - 1 - 200)])  # moves left 100 px
    still = BrushRegion(disc(240, 60, 15), [(240, H - 1 - 60)])
    frames = list(brush_frames(img, [a, b, still], None, 11))
    last = frames[-1]
    ax, ay = track_region(last, img, a.mask)
    bx, by = track_region(last, img, b.mask)
    # (the mask's edge is feathered inwards, so the match may sit a fraction of a pixel off)
    assert abs(ax - 100) <= 1.0 and abs(ay - 180) <= 1.0
    assert abs(bx - 250) <= 1.0 and abs(by - 200) <= 1.0
    y0, y1, x0, x1 = 60 - 12, 60 + 12, 240 - 12, 240 + 12
    assert np.array_equal(last[y0:y1, x0:x1], img[y0:y1, x0:x1])


def test_deterministic() -> None:
    img = textured_image(W, H, seed=8)
    region = BrushRegion(disc(200, 120, 25), [(200, 150), (260.5, 170.25), (300, 120)])
    x = list(brush_frames(img, [region], None, 7))
    y = list(brush_frames(img, [region], None, 7))
    assert all(np.array_equal(p, q) for p, q in zip(x, y, strict=True))
