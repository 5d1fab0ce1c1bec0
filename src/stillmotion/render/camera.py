"""Camera moves over a still image, rendered as homographies (OpenCV, CPU).

A camera spec is a mapping, either ``{"type": "simple", "config": {axis: strength}}`` with
axes ``horizontal``, ``vertical``, ``pan``, ``tilt``, ``roll``, ``zoom`` (strengths in
[-10, 10], missing axes are 0), or ``{"type": PRESET}`` with PRESET one of ``down_back``,
``forward_up``, ``right_turn_forward``, ``left_turn_forward``.

Signs follow the seed (they describe the CAMERA; the content moves the opposite way).
Image coordinates are pixels, x to the right, y down, origin top-left:

============  =======================================  ====================================
axis          +10 / -10 means                          content motion on screen
============  =======================================  ====================================
horizontal    camera moves right / left by W/4         -10: content shifts right by W/4
vertical      camera moves up / down by H/4            -10: content shifts up by H/4
pan           camera turns right / left by 15 deg      -10: content slides right
              (rotation about the vertical y axis)
tilt          camera tilts up / down by 15 deg         -10: content slides up
              (rotation about the horizontal x axis)
roll          camera rolls clockwise / counter-        -10: content turns 30 deg clockwise
              clockwise by 30 deg
zoom          wider / narrower field of view, 2x       -10: content grows 2x (scale 2.0);
                                                       +10: shrinks (scale 0.5)
============  =======================================  ====================================

Pan and tilt are rotation homographies ``K R K^-1`` with focal length f = 0.9 W about the
image centre; roll and zoom act about the image centre; zoom's content scale is
``2 ** (-zoom / 10)``. Every strength is linear in between (5 = half the amplitude).

Timing: the move is eased with smoothstep over the clip (zoom is interpolated
geometrically, i.e. on its exponent). Frame 0 is the input image exactly.

Presets (strengths on the same scale, each phase eased with its own smoothstep over the
given fraction of the clip):

* ``down_back``: vertical -5 and zoom +5 over the whole clip (descend while pulling back:
  content rises by H/8 and shrinks to 0.707).
* ``forward_up``: zoom -5 and tilt +5 over the whole clip (push in to 1.414x while tilting
  up 7.5 deg: content grows and slides down).
* ``right_turn_forward``: pan +6 (9 deg right) over t in [0, 0.55], then zoom -5 over
  t in [0.45, 1] (the phases overlap slightly so the camera never stops).
* ``left_turn_forward``: the mirror, pan -6 then zoom -5.

Framing (nothing false on screen): a move that turns or shifts the camera would reveal
what lies beyond the picture. Where it can, the camera also scales in about the frame
centre, just enough that the picture covers the frame in every frame: the extra scale is
``1 + k * e(t)`` with ``e(t)`` the move's own progress (the largest of its phases' eased
progress, so it is 0 on frame 0 and eased like the move) and ``k`` the smallest value that
covers every frame, at most ``MAX_EXTRA_SCALE - 1`` (1.25x, so the units above keep their
meaning). Moves that pull back (zoom > 0 at any time) get no extra scale, since scaling in
would undo them. Where the picture cannot cover the frame (pull back, or a move beyond what
1.25x covers) the rest is filled with a blurred, darkened, scaled-up copy of the picture
that moves with the camera (``fill.BlurFillWarper``); the picture fades into it inside its
own edge over a feather, and the fill darkens (to 40 % darker), both growing with the depth
of the revealed area so that nothing jumps between frames: never a mirror, never a hard seam.
``camera_homography`` includes the extra scale: it is what is rendered.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .fill import BlurFillWarper, cover_scale, scale_about_centre
from .frames import Frame, as_rgb_frame, check_n_frames, clip_time, smoothstep

logger = logging.getLogger(__name__)

CameraSpec = Mapping[str, Any]

AXES: tuple[str, ...] = ("horizontal", "vertical", "pan", "tilt", "roll", "zoom")

PAN_TILT_DEG_PER_UNIT = 1.5
ROLL_DEG_PER_UNIT = 3.0
TRANSLATION_FRACTION_PER_UNIT = 0.025
FOCAL_FRACTION = 0.9
MAX_EXTRA_SCALE = 1.25
FEATHER_FRACTION = 0.06
FILL_DARKEN = 0.4
# The fill is scaled up until it covers the frame, at most this much beyond the move.
MAX_FILL_SCALE = 4.0
_PLAN_SAMPLES = 129

# (axis, strength, phase start, phase end) in normalised clip time.
Phase = tuple[str, float, float, float]
PRESETS: dict[str, tuple[Phase, ...]] = {
    "down_back": (("vertical", -5.0, 0.0, 1.0), ("zoom", 5.0, 0.0, 1.0)),
    "forward_up": (("zoom", -5.0, 0.0, 1.0), ("tilt", 5.0, 0.0, 1.0)),
    "right_turn_forward": (("pan", 6.0, 0.0, 0.55), ("zoom", -5.0, 0.45, 1.0)),
    "left_turn_forward": (("pan", -6.0, 0.0, 0.55), ("zoom", -5.0, 0.45, 1.0)),
}
CAMERA_TYPES: tuple[str, ...] = ("simple", *PRESETS)


def camera_phases(camera: CameraSpec) -> tuple[Phase, ...]:
    """Validate ``camera`` and return its phases (a simple move is one phase per axis)."""
    if not isinstance(camera, Mapping):
        raise ValueError("camera must be a mapping with a 'type'")
    kind = camera.get("type")
    if kind == "simple":
        config = camera.get("config") or {}
        if not isinstance(config, Mapping):
            raise ValueError("camera.config must be a mapping of axis -> strength")
        unknown = sorted(set(config) - set(AXES))
        if unknown:
            raise ValueError(f"unknown camera axes {unknown}; allowed: {list(AXES)}")
        phases: list[Phase] = []
        for axis in AXES:
            raw = config.get(axis, 0) or 0
            if isinstance(raw, bool) or not isinstance(raw, (int, float)):
                raise ValueError(f"camera.config.{axis} must be a number, got {raw!r}")
            value = float(raw)
            if not math.isfinite(value) or not -10.0 <= value <= 10.0:
                raise ValueError(f"camera.config.{axis} must be in [-10, 10], got {raw!r}")
            if value != 0.0:
                phases.append((axis, value, 0.0, 1.0))
        return tuple(phases)
    if isinstance(kind, str) and kind in PRESETS:
        return PRESETS[kind]
    raise ValueError(f"camera.type must be one of {list(CAMERA_TYPES)}, got {kind!r}")


def axis_strengths(phases: tuple[Phase, ...], t: float) -> dict[str, float]:
    """Eased strength of every axis at normalised clip time ``t``."""
    values = dict.fromkeys(AXES, 0.0)
    for axis, strength, t0, t1 in phases:
        local = 1.0 if t1 <= t0 else (t - t0) / (t1 - t0)
        values[axis] += strength * smoothstep(local)
    return values


def homography_from_strengths(values: Mapping[str, float], width: int, height: int) -> NDArray[np.float64]:
    """3x3 homography (input pixel -> output pixel) for the given axis strengths."""
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    f = FOCAL_FRACTION * width
    h: NDArray[np.float64] = np.eye(3)
    pan, tilt = values.get("pan", 0.0), values.get("tilt", 0.0)
    if pan or tilt:
        # Camera turning left (pan < 0) moves content right: +phi about y shifts x by +f tan(phi).
        phi = math.radians(-PAN_TILT_DEG_PER_UNIT * pan)
        # Camera tilting down (tilt < 0) moves content up: +psi about x shifts y by -f tan(psi).
        psi = math.radians(-PAN_TILT_DEG_PER_UNIT * tilt)
        ry = np.array(
            [[math.cos(phi), 0.0, math.sin(phi)], [0.0, 1.0, 0.0], [-math.sin(phi), 0.0, math.cos(phi)]]
        )
        rx = np.array(
            [[1.0, 0.0, 0.0], [0.0, math.cos(psi), -math.sin(psi)], [0.0, math.sin(psi), math.cos(psi)]]
        )
        k = np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])
        h = k @ ry @ rx @ np.linalg.inv(k)
    roll, zoom = values.get("roll", 0.0), values.get("zoom", 0.0)
    if roll or zoom:
        # Content angle, counter-clockwise on screen: camera rolling counter-clockwise
        # (roll < 0) turns the content clockwise (negative angle).
        angle = math.radians(ROLL_DEG_PER_UNIT * roll)
        scale = 2.0 ** (-zoom / 10.0)
        # y points down, so a counter-clockwise on-screen rotation is [[c, s], [-s, c]].
        c, s = scale * math.cos(angle), scale * math.sin(angle)
        a = np.array([[c, s, cx - c * cx - s * cy], [-s, c, cy + s * cx - c * cy], [0.0, 0.0, 1.0]])
        h = a @ h
    horizontal, vertical = values.get("horizontal", 0.0), values.get("vertical", 0.0)
    if horizontal or vertical:
        dx = -TRANSLATION_FRACTION_PER_UNIT * width * horizontal
        dy = TRANSLATION_FRACTION_PER_UNIT * height * vertical
        h = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]]) @ h
    return h


def move_progress(phases: tuple[Phase, ...], t: float) -> float:
    """The move's eased progress at ``t``: the largest of its phases' smoothsteps (0 when still)."""
    best = 0.0
    for _axis, _strength, t0, t1 in phases:
        local = 1.0 if t1 <= t0 else (t - t0) / (t1 - t0)
        best = max(best, smoothstep(local))
    return best


def _pulls_back(phases: tuple[Phase, ...]) -> bool:
    return any(axis == "zoom" and strength > 0 for axis, strength, _t0, _t1 in phases)


class _Plan:
    """Per clip: the extra scale ``1 + k e(t)`` and the fill's scale ``1 + k_fill e(t)``."""

    def __init__(self, phases: tuple[Phase, ...], width: int, height: int) -> None:
        self.phases, self.width, self.height = phases, width, height
        if all(axis == "zoom" and strength < 0 for axis, strength, _t0, _t1 in phases):
            # a push in about the centre never reveals anything
            self.k, self.covers, self.k_fill = 0.0, True, 0.0
            return
        ts = np.linspace(0.0, 1.0, _PLAN_SAMPLES)
        base = [self.base(float(t)) for t in ts]
        prog = [move_progress(phases, float(t)) for t in ts]
        k_need = 0.0
        for h, e in zip(base, prog, strict=True):
            if e > 1e-4:
                k_need = max(k_need, (cover_scale(h, width, height) - 1.0) / e)
        cap = 0.0 if _pulls_back(phases) else MAX_EXTRA_SCALE - 1.0
        self.covers = k_need <= cap + 1e-6
        # A hair more than the samples need, so frames between samples stay covered too.
        self.k = k_need * 1.001 if self.covers else cap
        k_fill = 0.0
        if not self.covers:
            for h, e in zip(base, prog, strict=True):
                if e > 1e-4:
                    s = cover_scale(scale_about_centre(h, 1.0 + self.k * e, width, height), width, height)
                    k_fill = max(k_fill, (min(s, MAX_FILL_SCALE) - 1.0) / e)
        self.k_fill = k_fill * 1.01

    def base(self, t: float) -> NDArray[np.float64]:
        return homography_from_strengths(axis_strengths(self.phases, t), self.width, self.height)

    def at(self, t: float) -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
        """(picture homography, fill homography, progress) at clip time ``t``."""
        e = move_progress(self.phases, t)
        h = scale_about_centre(self.base(t), 1.0 + self.k * e, self.width, self.height)
        return h, scale_about_centre(h, 1.0 + self.k_fill * e, self.width, self.height), e


@functools.lru_cache(maxsize=64)
def _plan(phases: tuple[Phase, ...], width: int, height: int) -> _Plan:
    return _Plan(phases, width, height)


def camera_homography(camera: CameraSpec, t: float, width: int, height: int) -> NDArray[np.float64]:
    """3x3 homography mapping input pixel coords to output coords at clip time ``t``.

    ``t`` is the normalised clip time in [0, 1] (0 = first frame, 1 = last frame); the
    smoothstep easing (per preset phase) is applied here, so t=0 is the identity and t=1
    the full move. It includes the extra scale that keeps the frame inside the picture.
    """
    phases = camera_phases(camera)
    return _plan(phases, width, height).at(min(1.0, max(0.0, t)))[0]


def move_homography(camera: CameraSpec, t: float, width: int, height: int) -> NDArray[np.float64]:
    """The move alone (the units of the table above), without the framing's extra scale."""
    return homography_from_strengths(axis_strengths(camera_phases(camera), min(1.0, max(0.0, t))), width, height)


def framing_scale(camera: CameraSpec, t: float, width: int, height: int) -> float:
    """The extra scale about the frame centre at clip time ``t``: 1 on frame 0, at most 1.25."""
    phases = camera_phases(camera)
    return 1.0 + _plan(phases, width, height).k * move_progress(phases, min(1.0, max(0.0, t)))


def camera_frames(img: np.ndarray, camera: CameraSpec, n_frames: int) -> Iterator[Frame]:
    """Stream ``n_frames`` frames of the camera move over ``img`` (frame 0 == ``img``)."""
    src = as_rgb_frame(img)
    phases = camera_phases(camera)
    check_n_frames(n_frames)
    return _camera_frames(src, phases, n_frames)


def camera_frames_yuv(img: np.ndarray, camera: CameraSpec, n_frames: int) -> Iterator[Frame]:
    """The same clip as :func:`camera_frames`, rendered straight into the encoder's format.

    Frames are I420 buffers (H * 3 / 2, W), BT.709 limited range (see
    ``stillmotion.media.video``): the picture is converted once, then each frame warps the
    luma plane and the two half-size chroma planes directly, so no frame is ever converted
    from RGB. About half the pixels of an RGB warp. Sides must be even.
    """
    src = as_rgb_frame(img)
    phases = camera_phases(camera)
    check_n_frames(n_frames)
    height, width = src.shape[:2]
    if width % 2 or height % 2:
        raise ValueError(f"yuv420 frames need even sides, got {width}x{height}")
    return _camera_frames_yuv(src, phases, n_frames)


def _camera_frames_yuv(src: Frame, phases: tuple[Phase, ...], n_frames: int) -> Iterator[Frame]:
    from ..media.video import rgb_to_yuv420, yuv420_planes

    height, width = src.shape[:2]
    first = rgb_to_yuv420(src)
    y0, u0, v0 = yuv420_planes(first, width, height)
    plan = _plan(phases, width, height)
    opts: dict[str, Any] = {"feather_fraction": FEATHER_FRACTION, "darken": FILL_DARKEN}
    luma = BlurFillWarper(y0, neutral=16.0, **opts)
    chroma = (BlurFillWarper(u0, neutral=128.0, **opts), BlurFillWarper(v0, neutral=128.0, **opts))
    # The chroma plane's pixel centres sit between luma pairs: x_c = (x + 0.5) / 2 - 0.5.
    s = np.array([[0.5, 0.0, -0.25], [0.0, 0.5, -0.25], [0.0, 0.0, 1.0]])
    s_inv = np.linalg.inv(s)
    eye = np.eye(3)
    for i in range(n_frames):
        h, fill_h, _e = plan.at(clip_time(i, n_frames))
        if np.allclose(h, eye, rtol=0.0, atol=1e-9):
            yield first.copy()
            continue
        out = np.empty_like(first)
        planes = yuv420_planes(out, width, height)
        hc, fill_c = s @ h @ s_inv, s @ fill_h @ s_inv
        # each plane is warped straight into its place in the I420 buffer
        if plan.covers:
            luma.sharp(h, dst=planes[0])
            for warper, plane in zip(chroma, planes[1:], strict=True):
                warper.sharp(hc, dst=plane)
        else:
            luma(h, fill_h, dst=planes[0])
            for warper, plane in zip(chroma, planes[1:], strict=True):
                warper(hc, fill_c, dst=plane)
        yield out


def _camera_frames(src: Frame, phases: tuple[Phase, ...], n_frames: int) -> Iterator[Frame]:
    height, width = src.shape[:2]
    plan = _plan(phases, width, height)
    warper = BlurFillWarper(src, feather_fraction=FEATHER_FRACTION, darken=FILL_DARKEN)
    eye = np.eye(3)
    for i in range(n_frames):
        h, fill_h, _e = plan.at(clip_time(i, n_frames))
        if np.allclose(h, eye, rtol=0.0, atol=1e-9):
            yield src.copy()
        elif plan.covers:
            yield warper.sharp(h)
        else:
            yield warper(h, fill_h)
