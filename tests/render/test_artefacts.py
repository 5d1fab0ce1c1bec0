"""The preview never shows what is not there (issue #16).

Camera moves: no mirrored copy of the scene in any frame and no hard seam. Motion brush: no
X-shaped or square smear over the vacated area, no outline travelling with the region.
Interpolation: no streak along a border. Small frames, few frames, deterministic.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

from stillmotion.render import BrushRegion, brush_frames, camera_frames, camera_homography, interpolate_frames
from stillmotion.render.frames import warp
from tests.render.measure import (
    gradient_magnitude,
    mirror_correlation,
    ring,
    scene_image,
    seam_ratio,
    textured_image,
)

W, H = 320, 180
N = 9


def simple(**config: Any) -> dict[str, Any]:
    return {"type": "simple", "config": config}


CAMERAS = [
    *(simple(**{axis: sign * 7}) for axis in ("horizontal", "vertical", "pan", "tilt", "roll", "zoom") for sign in (-1, 1)),
    simple(zoom=10),
    simple(pan=10, zoom=4),
    {"type": "down_back"},
    {"type": "forward_up"},
    {"type": "right_turn_forward"},
    {"type": "left_turn_forward"},
]


def _ids(camera: dict[str, Any]) -> str:
    if camera["type"] != "simple":
        return str(camera["type"])
    return ",".join(f"{k}{v:+d}" for k, v in camera["config"].items())


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    return scene_image(W, H)


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    return textured_image(W, H, seed=1)


@pytest.mark.parametrize("camera", CAMERAS, ids=_ids)
def test_camera_no_mirrored_copy(texture: np.ndarray, camera: dict[str, Any]) -> None:
    """The revealed area (more than 4 px beyond the picture's edge) does not correlate with a
    copy of frame 0 mirrored at that edge (see ``mirror_correlation``). A mirror fill scores
    0.4-0.9 per frame; a fill without a mirror scores about 0."""
    frames = list(camera_frames(texture, camera, N))
    assert np.array_equal(frames[0], texture)
    scores = []
    for i, frame in enumerate(frames[1:], start=1):
        corr = mirror_correlation(frame, texture, camera_homography(camera, i / (N - 1), W, H), min_depth=4.0)
        if corr is not None:
            scores.append(corr)
    assert not scores or float(np.mean(scores)) < 0.3, scores
    assert all(c < 0.75 for c in scores), scores


@pytest.mark.parametrize("camera", CAMERAS, ids=_ids)
def test_camera_no_seam(scene: np.ndarray, camera: dict[str, Any]) -> None:
    """No column or row steps far above the picture's own gradients (see ``seam_ratio``): the
    picture meets any fill through a feather, and the fill itself is smooth."""
    frames = list(camera_frames(scene, camera, N))
    base = seam_ratio(scene, np.eye(3))
    for i, frame in enumerate(frames[1:], start=1):
        ratio = seam_ratio(frame, camera_homography(camera, i / (N - 1), W, H))
        assert ratio < 1.6 * base, (i, ratio, base)


@pytest.mark.parametrize(
    "camera",
    [simple(horizontal=4), simple(vertical=-4), simple(pan=-3), simple(tilt=2), simple(roll=-2), simple(zoom=-6)],
    ids=_ids,
)
def test_small_moves_reveal_nothing(scene: np.ndarray, camera: dict[str, Any]) -> None:
    """Moves that an extra scale of at most 1.25x can cover stay inside the picture: every
    frame is the plain warp of the picture, nothing filled."""
    frames = list(camera_frames(scene, camera, N))
    for i in (2, 5, N - 1):
        hm = camera_homography(camera, i / (N - 1), W, H)
        assert np.array_equal(frames[i], warp(scene, hm, (W, H), border=cv2.BORDER_REPLICATE))
        inv = np.linalg.inv(hm)
        corners = inv @ np.array([[0, W - 1, 0, W - 1], [0, 0, H - 1, H - 1], [1, 1, 1, 1]], float)
        x, y = corners[0] / corners[2], corners[1] / corners[2]
        assert x.min() >= -0.5 and x.max() <= W - 0.5 and y.min() >= -0.5 and y.max() <= H - 0.5, (i, x, y)


# -- motion brush ------------------------------------------------------------------------------

BW, BH = 480, 272


def _brush_scene() -> tuple[np.ndarray, np.ndarray]:
    """A softly textured background with a steep horizontal gradient, and a busy square object."""
    bg = cv2.GaussianBlur(textured_image(BW, BH, seed=11), (0, 0), 5.0).astype(np.float32)
    bg[..., 0] += np.linspace(-60, 60, BW, dtype=np.float32)[None, :]
    img = np.clip(bg, 0, 255).astype(np.uint8)
    mask = np.zeros((BH, BW), bool)
    mask[100:170, 80:150] = True
    obj = textured_image(70, 70, seed=12)
    img[100:170, 80:150] = np.clip(obj.astype(np.int16) * 2 - 128, 0, 255).astype(np.uint8)
    return img, mask


def _line_band(mask: np.ndarray, p0: tuple[int, int], p1: tuple[int, int], width: int) -> np.ndarray:
    band = np.zeros(mask.shape, np.uint8)
    cv2.line(band, p0, p1, 1, width)
    return band.astype(bool) & mask


def test_brush_vacated_area_has_no_x_or_square() -> None:
    img, mask = _brush_scene()
    # the square moves 200 px right (bottom-left origin: y = H - 1 - row)
    traj = [(115.0, BH - 1 - 135.0), (315.0, BH - 1 - 135.0)]
    frames = list(brush_frames(img, [BrushRegion(mask, traj)], None, 5))
    grad0 = gradient_magnitude(img)
    background = ring(mask, 8, 30) & (np.abs(np.arange(BW) - 115)[None, :] < 100)
    reference = float(grad0[background].mean())
    inner = cv2.erode(mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    diagonals_all = _line_band(inner, (80, 100), (149, 169), 3) | _line_band(inner, (149, 100), (80, 169), 3)
    off_diagonals_all = inner & ~cv2.dilate(diagonals_all.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    edges_all = ring(~mask, 0, 3) | ring(mask, 0, 2)  # 3 px inside and 2 px outside the old square's edge
    for i, frame in enumerate(frames[1:], start=1):
        # only where the region has left (not where it is now)
        now = cv2.dilate(np.roll(mask, 50 * i, axis=1).astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
        diagonals, edges = diagonals_all & ~now, edges_all & ~now
        assert diagonals.sum() > 20 and edges.sum() > 50
        grad = gradient_magnitude(frame)
        # an X: the diagonals of the vacated square stand out from the rest of it
        off = float(grad[off_diagonals_all & ~now].mean())
        assert float(grad[diagonals].mean()) <= 1.5 * off + 1.0, (i, float(grad[diagonals].mean()), off)
        assert float(grad[diagonals].mean()) <= reference, (i, float(grad[diagonals].mean()), reference)
        assert float(grad[edges].mean()) <= reference, (i, float(grad[edges].mean()), reference)


def test_brush_no_outline_travels_with_the_region() -> None:
    img, mask = _brush_scene()
    traj = [(115.0, BH - 1 - 135.0), (315.0, BH - 1 - 135.0)]
    frames = list(brush_frames(img, [BrushRegion(mask, traj)], None, 5))
    grad0 = gradient_magnitude(img)
    for i, frame in enumerate(frames[1:], start=1):
        dx = round(200 * i / 4)
        moved = np.roll(mask, dx, axis=1)
        band = ring(moved, 1, 6) & ~ring(mask, -1, 8) & ~mask  # around the region, away from the vacated spot
        if i < 2:
            band &= ~cv2.dilate(mask.astype(np.uint8), np.ones((17, 17), np.uint8)).astype(bool)
        grad = gradient_magnitude(frame)
        assert float(grad[band].mean()) <= 1.15 * float(grad0[band].mean()) + 1.0, (
            i,
            float(grad[band].mean()),
            float(grad0[band].mean()),
        )


# -- interpolation -----------------------------------------------------------------------------


def _crop(big: np.ndarray, x: float, y: float) -> np.ndarray:
    m = np.array([[1.0, 0.0, -x], [0.0, 1.0, -y]])
    return np.asarray(cv2.warpAffine(big, m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101))


@pytest.mark.parametrize(("dx", "dy"), [(24.0, 0.0), (-24.0, 0.0), (0.0, 16.0), (0.0, -16.0), (20.0, -12.0)])
def test_interpolation_no_border_streak(dx: float, dy: float) -> None:
    """The camera moves by (dx, dy) between two views of a larger scene; new content enters
    at one border. Each border strip is as close to the true in-between view as the interior."""
    big = cv2.GaussianBlur(textured_image(W + 80, H + 60, seed=21), (0, 0), 0.8)
    x0, y0 = 40.0, 30.0
    a, b = _crop(big, x0, y0), _crop(big, x0 + dx, y0 + dy)
    n = 5
    frames = list(interpolate_frames(a, b, n))
    strip = 10
    for i in range(1, n - 1):
        t = i / (n - 1)
        truth = _crop(big, x0 + t * dx, y0 + t * dy).astype(np.float32)
        err = np.abs(frames[i].astype(np.float32) - truth).mean(axis=2)
        interior = float(err[2 * strip : -2 * strip, 2 * strip : -2 * strip].mean())
        borders = {
            "left": err[:, :strip],
            "right": err[:, -strip:],
            "top": err[:strip, :],
            "bottom": err[-strip:, :],
        }
        for name, e in borders.items():
            assert float(e.mean()) <= 1.5 * interior + 3.5, (i, name, float(e.mean()), interior)
