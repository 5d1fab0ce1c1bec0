"""Smoothness of a zoom clip: the zoom centre and scale measured on every decoded frame.

Method (as in the local-engine prototype notes, section 5): for each frame i, a similarity
transform from frame 0 to frame i is estimated with ORB features + RANSAC
(``tests/render/measure.estimate_similarity``; log-polar phase correlation as fallback). From
it we take the content scale s_i and the displacement of the image centre's content c_i (a
zoom about the centre keeps it at (0, 0)). Both are compared with the intended curve (scale
``2 ** (0.5 * smoothstep(t))`` for zoom -5, centre fixed), and the jitter is the
frame-to-frame change of the error:

* centre jitter: RMS and max over i of |c_i - c_(i-1)| in pixels (ideal 0);
* scale jitter: RMS and max over i of |e_i - e_(i-1)| where e_i = s_i / s_ideal(i) - 1, in %.

Smooth motion gives errors that drift slowly (small frame-to-frame change); zoompan rounds
its crop window to whole input pixels every frame, which shows up as jumps. The floor of the
method (codec noise + feature noise) is what a perfect clip measures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Smoothness:
    frames: int
    centre_jitter_rms_px: float
    centre_jitter_max_px: float
    scale_jitter_rms_pct: float
    scale_jitter_max_pct: float
    final_scale: float
    final_intended: float
    centre_drift_max_px: float


def intended_scale(i: int, n: int, zoom: float = -5.0) -> float:
    t = 0.0 if n <= 1 else i / (n - 1)
    s = t * t * (3.0 - 2.0 * t)
    return float(2.0 ** (-zoom / 10.0 * s))


class _Reference:
    """ORB features of frame 0, computed once (the same matcher settings as tests/render/measure)."""

    def __init__(self, first: np.ndarray) -> None:
        import cv2
        from tests.render.measure import gray

        self.h, self.w = first.shape[:2]
        self.first = first
        self.orb = cv2.ORB_create(nfeatures=3000)  # type: ignore[attr-defined]
        self.kp, self.des = self.orb.detectAndCompute(gray(first), None)
        self.matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)

    def similarity(self, frame: np.ndarray) -> tuple[float, tuple[float, float]]:
        """(content scale, displacement of the image centre's content) from frame 0 to ``frame``."""
        import cv2
        from tests.render.measure import _similarity, estimate_similarity, gray

        cv2.setRNGSeed(12345)
        kb, db = self.orb.detectAndCompute(gray(frame), None)
        if db is not None and self.des is not None and len(kb) >= 30:
            matches = self.matcher.match(self.des, db)
            pa = np.array([self.kp[m.queryIdx].pt for m in matches], np.float32).reshape(-1, 2)
            pb = np.array([kb[m.trainIdx].pt for m in matches], np.float32).reshape(-1, 2)
            if len(pa) >= 30:
                m, inl = cv2.estimateAffinePartial2D(pa, pb, method=cv2.RANSAC, ransacReprojThreshold=2.0)
                if m is not None and inl is not None and int(inl.sum()) >= 30:
                    sim = _similarity(m.astype(np.float64), self.w, self.h, int(inl.sum()), "orb")
                    return sim.scale, sim.shift
        sim = estimate_similarity(self.first, frame)  # log-polar fallback
        return sim.scale, sim.shift


def measure_zoom(path: Path, *, zoom: float = -5.0, max_frames: int | None = None) -> Smoothness:
    """Per-frame zoom measurement of the clip at ``path`` (frames 1..max_frames-1 measured)."""
    from stillmotion.media.video import iter_frames

    ref: _Reference | None = None
    scales: list[float] = []
    centres: list[tuple[float, float]] = []
    idx: list[int] = []
    n_total = 0
    for i, frame in enumerate(iter_frames(path)):
        n_total += 1
        if ref is None:
            ref = _Reference(frame)
            continue
        if max_frames is not None and i >= max_frames:
            continue
        scale, shift = ref.similarity(frame)
        scales.append(scale)
        centres.append(shift)
        idx.append(i)
    if len(idx) < 3:
        raise ValueError(f"{path.name}: too few frames to measure")
    err = np.array([scales[k] / intended_scale(i, n_total, zoom) - 1.0 for k, i in enumerate(idx)])
    c = np.array(centres)
    dc = np.hypot(np.diff(c[:, 0]), np.diff(c[:, 1]))
    de = np.abs(np.diff(err)) * 100.0
    return Smoothness(
        frames=len(idx),
        centre_jitter_rms_px=float(math.sqrt(float(np.mean(dc**2)))),
        centre_jitter_max_px=float(dc.max()),
        scale_jitter_rms_pct=float(math.sqrt(float(np.mean(de**2)))),
        scale_jitter_max_pct=float(de.max()),
        final_scale=float(scales[-1]),
        final_intended=intended_scale(idx[-1], n_total, zoom),
        centre_drift_max_px=float(np.hypot(c[:, 0], c[:, 1]).max()),
    )
