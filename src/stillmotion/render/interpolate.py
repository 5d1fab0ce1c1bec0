"""First/last-frame interpolation by optical flow (DIS, OpenCV, CPU).

DIS flows A->B and B->A (MEDIUM preset) are computed once on half-resolution grey images.
For each intermediate time t, the flows to A and to B are approximated the Super-SloMo
way (``F_t->A = -(1-t) t F_AB + t^2 F_BA``, ``F_t->B = (1-t)^2 F_AB - t (1-t) F_BA``),
both images are backward-warped to t with ``cv2.remap`` and blended (``cv2.blendLinear``)
with weights ``(1-t) c_A`` and ``t c_B``, where ``c`` is a forward/backward consistency
confidence ``exp(-|F_AB(p) + F_BA(p + F_AB(p))|^2 / 4)`` carried as an 8-bit alpha
channel, so that a single remap warps each image together with its confidence. Where the flow cannot follow (large
motion of a large object) this degrades to a cross-fade, never to garbage.

Borders: the confidence also falls to 0 over the outermost ``EDGE_RAMP_PX`` pixels of each
image, and the remap replicates the edge (confidence included) beyond them. So where the
flow points outside one image (content entering at a border) that image's replicated edge
gets no weight and the other image, which has that content, fills the strip: no streaks.
And where a flow points outside the other image (content with no match there), it is
replaced by a smooth extension of the matched flow around it (``_extend_at_borders``):
DIS's own guess there is often a pixel off. (Estimating the flow on padded frames was
tried and measured worse: the padding looks static and pulls the border flow towards 0.)

Frame 0 is the start image exactly and the last frame the end image exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import cast

import cv2
import numpy as np
from numpy.typing import NDArray

from .frames import Frame, as_rgb_frame, check_n_frames, clip_time

logger = logging.getLogger(__name__)

FLOW_SCALE = 0.5
EDGE_RAMP_PX = 3.0

Flow = NDArray[np.float32]


def _flows(a: Frame, b: Frame) -> tuple[Flow, Flow]:
    """Full-resolution flows A->B and B->A, computed at FLOW_SCALE."""
    h, w = a.shape[:2]
    sw, sh = max(8, round(w * FLOW_SCALE)), max(8, round(h * FLOW_SCALE))
    ga = cv2.resize(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), (sw, sh), interpolation=cv2.INTER_AREA)
    gb = cv2.resize(cv2.cvtColor(b, cv2.COLOR_RGB2GRAY), (sw, sh), interpolation=cv2.INTER_AREA)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)  # type: ignore[attr-defined]
    fab = dis.calc(ga, gb, None)
    fba = dis.calc(gb, ga, None)
    out: list[Flow] = []
    for f in (_extend_at_borders(fab), _extend_at_borders(fba)):
        up = cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR)
        up[..., 0] *= w / sw
        up[..., 1] *= h / sh
        out.append(np.ascontiguousarray(up, dtype=np.float32))
    return out[0], out[1]


def _extend_at_borders(flow: Flow) -> Flow:
    """Flow where it points outside the other image, replaced by a smooth extension of the rest.

    Content that enters or leaves at a border has no match in the other image, so the flow
    there is DIS's guess (often a pixel off, which shows as a smear in the strip that only one
    image can fill). It is replaced by a normalised Gaussian average of the flow of the pixels
    that do have a match nearby.
    """
    h, w = flow.shape[:2]
    tx = flow[..., 0] + np.arange(w, dtype=np.float32)[None, :]
    ty = flow[..., 1] + np.arange(h, dtype=np.float32)[:, None]
    valid = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    if valid.all() or not valid.any():
        return flow
    weight = valid.astype(np.float32)
    sigma = max(2.0, 0.04 * min(w, h))
    num = cv2.GaussianBlur(flow * weight[..., None], (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    den = cv2.GaussianBlur(weight, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    fill = ~valid & (den > 1e-3)
    out = flow.copy()
    out[fill] = num[fill] / den[fill][:, None]
    return out


def _confidence(f1: Flow, f2: Flow, grid: Flow) -> NDArray[np.float32]:
    """exp(-|f1(p) + f2(p + f1(p))|^2 / 4): 1 where the two flows agree."""
    f2_at = cv2.remap(f2, grid + f1, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)  # type: ignore[call-overload, unused-ignore]
    err = f1 + f2_at
    sq = err[..., 0] * err[..., 0] + err[..., 1] * err[..., 1]
    conf: NDArray[np.float32] = np.exp(-sq / np.float32(4.0)).astype(np.float32)
    return conf


def interpolate_frames(start: np.ndarray, end: np.ndarray, n_frames: int) -> Iterator[Frame]:
    """Stream ``n_frames`` frames morphing ``start`` into ``end`` (same size, RGB uint8)."""
    a = as_rgb_frame(start)
    b = as_rgb_frame(end)
    if a.shape != b.shape:
        raise ValueError(f"start and end must have the same size, got {a.shape} and {b.shape}")
    check_n_frames(n_frames)
    return _interpolate(a, b, n_frames)


def _edge_ramp(h: int, w: int) -> NDArray[np.float32]:
    """0 on the outermost pixel ring, rising linearly to 1 at EDGE_RAMP_PX from the border."""
    x = np.minimum(np.arange(w, dtype=np.float32), np.arange(w, dtype=np.float32)[::-1])
    y = np.minimum(np.arange(h, dtype=np.float32), np.arange(h, dtype=np.float32)[::-1])
    d = np.minimum(x[None, :], y[:, None])
    return np.asarray(np.clip(d / np.float32(EDGE_RAMP_PX), 0.0, 1.0), dtype=np.float32)


def _with_confidence(img: Frame, conf: NDArray[np.float32]) -> NDArray[np.uint8]:
    """RGBA: the image with its confidence (0..1) as an 8-bit alpha, so one remap moves both."""
    conf = conf * _edge_ramp(*conf.shape)
    alpha = np.clip(conf * np.float32(255.0) + np.float32(0.5), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.dstack([img, alpha]))


def _interpolate(a: Frame, b: Frame, n_frames: int) -> Iterator[Frame]:
    if n_frames == 1:
        yield a.copy()
        return
    yield a.copy()
    if n_frames == 2:
        yield b.copy()
        return
    h, w = a.shape[:2]
    # Pre-allocated buffers: sampling grid and maps, warped RGBA images, weights.
    grid = np.empty((h, w, 2), np.float32)
    grid[..., 0] = np.arange(w, dtype=np.float32)[None, :]
    grid[..., 1] = np.arange(h, dtype=np.float32)[:, None]
    fab, fba = _flows(a, b)
    a4 = _with_confidence(a, _confidence(fab, fba, grid))
    b4 = _with_confidence(b, _confidence(fba, fab, grid))
    map_a = np.empty_like(grid)
    map_b = np.empty_like(grid)
    warped_a4 = np.empty_like(a4)
    warped_b4 = np.empty_like(b4)
    warped_a = np.empty_like(a)
    warped_b = np.empty_like(b)
    conf8 = np.empty((h, w), np.uint8)
    ka = np.empty((h, w), np.float32)
    kb = np.empty((h, w), np.float32)
    total = np.empty((h, w), np.float32)
    for i in range(1, n_frames - 1):
        t = clip_time(i, n_frames)
        # map_a = grid + F_t->A, map_b = grid + F_t->B.
        cv2.addWeighted(fab, -(1.0 - t) * t, fba, t * t, 0.0, dst=map_a)
        cv2.add(map_a, grid, dst=map_a)
        cv2.addWeighted(fab, (1.0 - t) ** 2, fba, -t * (1.0 - t), 0.0, dst=map_b)
        cv2.add(map_b, grid, dst=map_b)
        cv2.remap(a4, map_a, None, cv2.INTER_LINEAR, dst=warped_a4, borderMode=cv2.BORDER_REPLICATE)  # type: ignore[call-overload, unused-ignore]
        cv2.remap(b4, map_b, None, cv2.INTER_LINEAR, dst=warped_b4, borderMode=cv2.BORDER_REPLICATE)  # type: ignore[call-overload, unused-ignore]
        # Weights (1-t)(c_A + eps) and t(c_B + eps), normalised; eps keeps a plain
        # cross-fade where both confidences vanish.
        cv2.extractChannel(warped_a4, 3, conf8)
        np.multiply(conf8, np.float32((1.0 - t) / 255.0), out=ka, casting="unsafe")
        ka += np.float32(1e-4 * (1.0 - t))
        cv2.extractChannel(warped_b4, 3, conf8)
        np.multiply(conf8, np.float32(t / 255.0), out=kb, casting="unsafe")
        kb += np.float32(1e-4 * t)
        cv2.add(ka, kb, dst=total)
        cv2.divide(ka, total, dst=ka)
        np.subtract(np.float32(1.0), ka, out=kb)
        cv2.cvtColor(warped_a4, cv2.COLOR_RGBA2RGB, dst=warped_a)
        cv2.cvtColor(warped_b4, cv2.COLOR_RGBA2RGB, dst=warped_b)
        yield cast(Frame, cv2.blendLinear(warped_a, warped_b, ka, kb))
    yield b.copy()
