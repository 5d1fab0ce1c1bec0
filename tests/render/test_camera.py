"""Camera moves: exact directions from the homography, and motion measured in the MP4."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stillmotion.media.video import encode_frames, first_and_last_frames, probe_video
from stillmotion.render import PRESETS, camera_frames, camera_homography
from stillmotion.render.camera import MAX_EXTRA_SCALE, framing_scale, move_homography
from tests.render.measure import (
    estimate_homography,
    estimate_similarity,
    map_point,
    psnr_quarter,
    textured_image,
)

W, H = 480, 270
CX, CY = (W - 1) / 2, (H - 1) / 2
N = 24


def simple(**config: Any) -> dict[str, Any]:
    return {"type": "simple", "config": config}


def content_motion(camera: dict[str, Any], x: float = CX, y: float = CY) -> tuple[float, float]:
    """Where the content at (x, y) appears at the end of the move (units only, no framing)."""
    px, py = map_point(move_homography(camera, 1.0, W, H), x, y)
    return px - x, py - y


@pytest.mark.parametrize(
    "camera",
    [
        simple(zoom=-5),
        simple(pan=3, tilt=-2, roll=4, zoom=2, horizontal=1, vertical=-1),
        *({"type": p} for p in PRESETS),
    ],
)
def test_identity_at_t0(camera: dict[str, Any]) -> None:
    assert np.allclose(camera_homography(camera, 0.0, W, H), np.eye(3), atol=1e-12)
    assert framing_scale(camera, 0.0, W, H) == 1.0


@pytest.mark.parametrize(
    "camera", [simple(horizontal=-10), simple(pan=4), simple(roll=2), simple(zoom=5), *({"type": p} for p in PRESETS)]
)
def test_framing_scale_is_the_rendered_extra_scale(camera: dict[str, Any]) -> None:
    """camera_homography = the move followed by the framing scale about the frame centre,
    eased like the move (monotonic here), never above 1.25x, and none for a pull back."""
    previous = 1.0
    for t in np.linspace(0.0, 1.0, 11):
        s = framing_scale(camera, float(t), W, H)
        assert 1.0 <= s <= MAX_EXTRA_SCALE + 1e-9
        assert s >= previous - 1e-12
        previous = s
        x, y = map_point(camera_homography(camera, float(t), W, H), CX + 50, CY + 30)
        mx, my = map_point(move_homography(camera, float(t), W, H), CX + 50, CY + 30)
        assert (x - CX, y - CY) == pytest.approx((s * (mx - CX), s * (my - CY)))
    pulls_back = camera.get("config", {}).get("zoom", 0) > 0 or camera["type"] == "down_back"
    assert (previous == 1.0) == pulls_back


def test_seed_signs_on_the_homography() -> None:
    # horizontal: camera left (-) -> content shifts right by W/4 at 10
    dx, dy = content_motion(simple(horizontal=-10))
    assert dx == pytest.approx(W / 4) and dy == pytest.approx(0)
    # vertical: camera down (-) -> content shifts up by H/4 at 10
    dx, dy = content_motion(simple(vertical=-10))
    assert dx == pytest.approx(0) and dy == pytest.approx(-H / 4)
    # pan: about the vertical axis, camera turns left (-) -> content moves right by f*tan(15 deg)
    dx, dy = content_motion(simple(pan=-10))
    assert dx == pytest.approx(0.9 * W * np.tan(np.radians(15)), rel=1e-6) and dy == pytest.approx(
        0, abs=1e-9
    )
    assert content_motion(simple(pan=10))[0] < 0
    # tilt: about the horizontal axis, camera tilts down (-) -> content moves up
    dx, dy = content_motion(simple(tilt=-10))
    assert dy == pytest.approx(-0.9 * W * np.tan(np.radians(15)), rel=1e-6) and dx == pytest.approx(
        0, abs=1e-9
    )
    assert content_motion(simple(tilt=10))[1] > 0
    # roll: camera counter-clockwise (-) -> content turns clockwise on screen: a point right
    # of the centre moves down (y grows), by 30 degrees at 10
    x, y = map_point(camera_homography(simple(roll=-10), 1.0, W, H), CX + 100, CY)
    assert np.degrees(np.arctan2(y - CY, x - CX)) == pytest.approx(30.0)
    # zoom: narrower field of view (-) -> content grows, 2x at 10, 2**0.5 at 5
    for zoom, scale in [(-10, 2.0), (-5, 2**0.5), (5, 2**-0.5), (10, 0.5)]:
        x, y = map_point(camera_homography(simple(zoom=zoom), 1.0, W, H), CX + 100, CY)
        assert (x - CX) / 100 == pytest.approx(scale) and y == pytest.approx(CY)


def test_easing_and_linear_strength() -> None:
    half = content_motion({"type": "simple", "config": {"horizontal": -10}})[0] / 2
    assert content_motion(simple(horizontal=-5))[0] == pytest.approx(half)
    # smoothstep: slow start, half-way at t = 0.5
    h = move_homography(simple(horizontal=-10), 0.1, W, H)
    assert h[0, 2] == pytest.approx(W / 4 * (3 * 0.01 - 2 * 0.001))
    h = move_homography(simple(horizontal=-10), 0.5, W, H)
    assert h[0, 2] == pytest.approx(W / 8)


def test_preset_directions() -> None:
    # down_back: descend (content up) and pull back (content shrinks)
    h = move_homography({"type": "down_back"}, 1.0, W, H)
    assert map_point(h, CX, CY)[1] < CY - 10
    assert np.linalg.det(h[:2, :2]) < 0.6
    # forward_up: push in (content grows) while tilting up (content moves down)
    h = move_homography({"type": "forward_up"}, 1.0, W, H)
    assert map_point(h, CX, CY)[1] > CY + 10
    assert np.linalg.det(h[:2, :2]) > 1.5
    # turn right then push in: content moves left, then grows; left is the mirror
    for kind, sign in [("right_turn_forward", -1), ("left_turn_forward", 1)]:
        mid = map_point(move_homography({"type": kind}, 0.5, W, H), CX, CY)
        end_h = move_homography({"type": kind}, 1.0, W, H)
        assert sign * (mid[0] - CX) > 20
        assert sign * (map_point(end_h, CX, CY)[0] - CX) > 20
        grown = map_point(end_h, CX + 50, CY)[0] - map_point(end_h, CX - 50, CY)[0]
        early = move_homography({"type": kind}, 0.3, W, H)
        early_w = map_point(early, CX + 50, CY)[0] - map_point(early, CX - 50, CY)[0]
        assert grown > 1.3 * early_w


@pytest.mark.parametrize(
    "camera",
    [
        {"type": "spin"},
        {},
        simple(zoom=11),
        simple(zoom=-10.5),
        simple(wobble=1),
        simple(zoom="5"),
        simple(zoom=True),
        simple(zoom=float("nan")),
    ],
)
def test_invalid_camera_rejected(camera: dict[str, Any]) -> None:
    img = textured_image(64, 48)
    with pytest.raises(ValueError):
        camera_frames(img, camera, 5)


def test_frame0_is_input_and_deterministic() -> None:
    img = textured_image(W, H)
    frames = list(camera_frames(img, simple(roll=-6), 8))
    assert len(frames) == 8
    assert np.array_equal(frames[0], img)
    again = list(camera_frames(img, simple(roll=-6), 8))
    assert all(np.array_equal(a, b) for a, b in zip(frames, again, strict=True))
    assert all(f.shape == (H, W, 3) and f.dtype == np.uint8 for f in frames)
    assert len(list(camera_frames(img, simple(zoom=-5), 1))) == 1


def _render(tmp_path: Path, camera: dict[str, Any], image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    path = tmp_path / "cam.mp4"
    assert encode_frames(camera_frames(image, camera, N), path) == N
    info = probe_video(path)
    assert (info.width, info.height, info.frame_count) == (W, H, N)
    assert info.duration_s == pytest.approx(N / 24, abs=1e-3)
    first, last = first_and_last_frames(path)
    assert psnr_quarter(first, image) >= 30, "frame 0 is the input image"
    assert psnr_quarter(first, image) >= psnr_quarter(first, textured_image(W, H, seed=9)) + 10
    return first, last


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return textured_image(W, H)


@pytest.mark.parametrize(
    ("camera", "scale", "ccw_deg", "shift"),
    [
        (simple(zoom=-5), 2**0.5, 0.0, (0.0, 0.0)),
        (simple(zoom=5), 2**-0.5, 0.0, (0.0, 0.0)),
        (simple(roll=-5), 1.0, -15.0, (0.0, 0.0)),  # content turns clockwise
        (simple(roll=5), 1.0, 15.0, (0.0, 0.0)),
        (simple(horizontal=-5), 1.0, 0.0, (W / 8, 0.0)),  # camera left -> content right
        (simple(horizontal=4), 1.0, 0.0, (-W / 10, 0.0)),
        (simple(vertical=-5), 1.0, 0.0, (0.0, -H / 8)),  # camera down -> content up
        (simple(vertical=5), 1.0, 0.0, (0.0, H / 8)),
    ],
)
def test_measured_similarity_moves(
    tmp_path: Path,
    image: np.ndarray,
    camera: dict[str, Any],
    scale: float,
    ccw_deg: float,
    shift: tuple[float, float],
) -> None:
    first, last = _render(tmp_path, camera, image)
    sim = estimate_similarity(first, last)
    extra = framing_scale(camera, 1.0, W, H)  # the framing scales about the centre too
    assert sim.scale == pytest.approx(scale * extra, rel=0.02)
    assert sim.rotation_deg == pytest.approx(ccw_deg, abs=1.0)
    assert sim.shift[0] == pytest.approx(shift[0] * extra, abs=3.0)
    assert sim.shift[1] == pytest.approx(shift[1] * extra, abs=3.0)


@pytest.mark.parametrize(
    "camera",
    [simple(pan=-5), simple(pan=5), simple(tilt=-5), simple(tilt=5), *({"type": p} for p in PRESETS)],
)
def test_measured_perspective_moves(tmp_path: Path, image: np.ndarray, camera: dict[str, Any]) -> None:
    first, last = _render(tmp_path, camera, image)
    measured = estimate_homography(first, last)
    assert measured is not None
    expected = camera_homography(camera, 1.0, W, H)
    # points whose content stays in the frame (the framing scale pushes far ones out)
    for x, y in [(CX, CY), (W * 0.38, H * 0.42), (W * 0.62, H * 0.58)]:
        ex, ey = map_point(expected, x, y)
        mx, my = map_point(measured, x, y)
        assert abs(mx - ex) < 3.0 and abs(my - ey) < 3.0, (camera, (x, y), (mx, my), (ex, ey))
    # direction of the content at the centre, per the seed's signs
    cfg = camera.get("config", {})
    mx, my = map_point(measured, CX, CY)
    if cfg.get("pan"):
        assert np.sign(mx - CX) == -np.sign(cfg["pan"])
    if cfg.get("tilt"):
        assert np.sign(my - CY) == np.sign(cfg["tilt"])


@pytest.mark.parametrize("camera", [simple(zoom=8), simple(roll=8), simple(pan=-8), {"type": "down_back"}])
def test_no_black_bars(image: np.ndarray, camera: dict[str, Any]) -> None:
    last = list(camera_frames(image, camera, 6))[-1]

    def dark_fraction(img: np.ndarray) -> float:
        return float(np.mean(img.max(axis=2) < 20))

    assert dark_fraction(last) <= dark_fraction(image) + 0.01
    # the revealed border is filled with the image's colours, not a constant
    border = np.concatenate([last[:8].reshape(-1, 3), last[-8:].reshape(-1, 3)])
    assert float(border.std()) > 10
