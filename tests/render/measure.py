"""Motion-measurement helpers for tests: plain functions on RGB uint8 numpy frames.

Conventions: image coordinates in pixels, x right, y down, origin top-left. Angles are
degrees, positive = counter-clockwise as seen on screen. A transform "from a to b" maps
pixel positions in frame ``a`` to the positions of the same content in frame ``b``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

Frame = NDArray[np.uint8]


def textured_image(w: int, h: int, seed: int = 0) -> Frame:
    """A deterministic RGB test image: gradients, noise at 3/12/48 px scales, shapes, text.

    Rich in features at every scale (good for ORB, optical flow and template matching),
    and without any symmetry that would make a motion ambiguous.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    img[..., 0] = 40 + 120 * xx / max(1, w - 1)
    img[..., 1] = 40 + 120 * yy / max(1, h - 1)
    img[..., 2] = 60 + 60 * np.sin(xx / max(1, w) * 5.0 + yy / max(1, h) * 3.0)
    for scale, amp in ((48, 50.0), (12, 35.0), (3, 20.0)):
        sw, sh = max(2, w // scale + 2), max(2, h // scale + 2)
        noise = rng.standard_normal((sh, sw, 3)).astype(np.float32)
        img += amp * cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    out = np.clip(img, 0, 255).astype(np.uint8)
    unit = min(w, h)
    for _ in range(14):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 3))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        size = int(rng.integers(max(2, unit // 30), max(3, unit // 7)))
        if kind == 0:
            cv2.circle(out, (x, y), size, colour, -1, cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(out, (x, y), (x + size, y + size // 2 + 1), colour, -1)
        else:
            x2, y2 = int(rng.integers(0, w)), int(rng.integers(0, h))
            cv2.line(out, (x, y), (x2, y2), colour, max(1, unit // 120), cv2.LINE_AA)
    scale_txt = max(0.4, unit / 400)
    cv2.putText(
        out, "stillmotion 42", (w // 10, h // 3), cv2.FONT_HERSHEY_SIMPLEX, scale_txt, (250, 250, 250), 2
    )
    cv2.putText(out, "R7", (w // 2, (4 * h) // 5), cv2.FONT_HERSHEY_DUPLEX, scale_txt * 1.5, (10, 10, 30), 2)
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two same-size uint8 images (inf when identical)."""
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def quarter(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    return np.asarray(cv2.resize(img, (max(1, w // 4), max(1, h // 4)), interpolation=cv2.INTER_AREA))


def psnr_quarter(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR at 1/4 scale (INTER_AREA): robust to codec noise, still sensitive to content."""
    return psnr(quarter(a), quarter(b))


def gray(img: np.ndarray) -> NDArray[np.uint8]:
    return np.asarray(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), dtype=np.uint8)


@dataclass(frozen=True)
class Similarity:
    """A similarity transform from frame a to frame b.

    ``matrix`` is 2x3 (a -> b). ``scale`` > 1 means the content grew. ``rotation_deg`` is
    the content's rotation, counter-clockwise on screen. ``shift`` is where the image
    centre's content moved (dx, dy). ``fixed_point`` is the point that stays put (the zoom
    or roll centre), None for a pure translation. ``inliers`` is 0 for the fallback.
    """

    matrix: NDArray[np.float64]
    scale: float
    rotation_deg: float
    shift: tuple[float, float]
    fixed_point: tuple[float, float] | None
    inliers: int
    method: str


def _similarity(m: NDArray[np.float64], w: int, h: int, inliers: int, method: str) -> Similarity:
    scale = math.hypot(m[0, 0], m[1, 0])
    rotation = -math.degrees(math.atan2(m[1, 0], m[0, 0]))
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    moved = m @ np.array([cx, cy, 1.0])
    shift = (float(moved[0] - cx), float(moved[1] - cy))
    fixed: tuple[float, float] | None = None
    a = m[:, :2] - np.eye(2)
    if abs(np.linalg.det(a)) > 1e-6:
        p = np.linalg.solve(a, -m[:, 2])
        fixed = (float(p[0]), float(p[1]))
    return Similarity(m, scale, rotation, shift, fixed, inliers, method)


def orb_matches(a: np.ndarray, b: np.ndarray, n_features: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Matched keypoint positions (N x 2 float32 each) between frames a and b."""
    orb = cv2.ORB_create(nfeatures=n_features)  # type: ignore[attr-defined]
    ka, da = orb.detectAndCompute(gray(a), None)
    kb, db = orb.detectAndCompute(gray(b), None)
    if da is None or db is None or len(ka) < 4 or len(kb) < 4:
        return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(da, db)
    pa = np.array([ka[m.queryIdx].pt for m in matches], np.float32).reshape(-1, 2)
    pb = np.array([kb[m.trainIdx].pt for m in matches], np.float32).reshape(-1, 2)
    return pa, pb


def estimate_similarity(a: np.ndarray, b: np.ndarray, min_inliers: int = 30) -> Similarity:
    """Scale, rotation and shift from a to b: ORB + RANSAC, else log-polar/phase correlation."""
    h, w = a.shape[:2]
    cv2.setRNGSeed(12345)
    pa, pb = orb_matches(a, b)
    if len(pa) >= min_inliers:
        m, inl = cv2.estimateAffinePartial2D(pa, pb, method=cv2.RANSAC, ransacReprojThreshold=2.0)
        n_inl = int(inl.sum()) if inl is not None else 0
        if m is not None and n_inl >= min_inliers:
            return _similarity(m.astype(np.float64), w, h, n_inl, "orb")
    return _similarity(_logpolar_similarity(a, b), w, h, 0, "logpolar")


def _hann(w: int, h: int) -> np.ndarray:
    return np.asarray(cv2.createHanningWindow((w, h), cv2.CV_32F))


def phase_shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Global translation (dx, dy) of the content from a to b by phase correlation."""
    ga, gb = gray(a).astype(np.float32), gray(b).astype(np.float32)
    h, w = ga.shape
    (dx, dy), _ = cv2.phaseCorrelate(ga, gb, _hann(w, h))
    return float(dx), float(dy)


def _logpolar_similarity(a: np.ndarray, b: np.ndarray) -> NDArray[np.float64]:
    """Similarity about the image centre from log-polar phase correlation, then the shift."""
    ga, gb = gray(a).astype(np.float32), gray(b).astype(np.float32)
    h, w = ga.shape
    centre = ((w - 1) / 2.0, (h - 1) / 2.0)
    radius = min(w, h) / 2.0
    flags = cv2.WARP_POLAR_LOG | cv2.INTER_LINEAR
    la = cv2.warpPolar(ga, (w, h), centre, radius, flags)
    lb = cv2.warpPolar(gb, (w, h), centre, radius, flags)
    (sx, sy), _ = cv2.phaseCorrelate(la, lb, _hann(w, h))
    scale = math.exp(sx / (w / math.log(radius)))
    # warpPolar's angle axis grows clockwise on screen (y down).
    ccw = -sy * 360.0 / h
    rot = cv2.getRotationMatrix2D(centre, ccw, scale)
    aligned = cv2.warpAffine(ga, rot, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    (dx, dy), _ = cv2.phaseCorrelate(aligned, gb, _hann(w, h))
    rot[0, 2] += dx
    rot[1, 2] += dy
    return rot.astype(np.float64)


def estimate_homography(a: np.ndarray, b: np.ndarray, min_inliers: int = 30) -> NDArray[np.float64] | None:
    """Homography a -> b from ORB matches (for pan/tilt); None when too few inliers."""
    cv2.setRNGSeed(12345)
    pa, pb = orb_matches(a, b)
    if len(pa) < min_inliers:
        return None
    hm, inl = cv2.findHomography(pa, pb, cv2.RANSAC, 2.0)
    if hm is None or inl is None or int(inl.sum()) < min_inliers:
        return None
    return np.asarray(hm, dtype=np.float64)


def map_point(hm: np.ndarray, x: float, y: float) -> tuple[float, float]:
    """Apply a 3x3 homography or 2x3 affine matrix to one point."""
    m = np.asarray(hm, dtype=np.float64)
    if m.shape == (2, 3):
        m = np.vstack([m, [0.0, 0.0, 1.0]])
    p = m @ np.array([x, y, 1.0])
    return float(p[0] / p[2]), float(p[1] / p[2])


def region_template(
    img: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, tuple[float, float], tuple[int, int]]:
    """Crop the mask's bounding box: (gray template, uint8 mask, centroid offset in the crop, top-left)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise ValueError("empty mask")
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    tpl = gray(img)[y0:y1, x0:x1].copy()
    tmask = (mask[y0:y1, x0:x1] > 0).astype(np.uint8) * 255
    centroid = (float(xs.mean()) - x0, float(ys.mean()) - y0)
    return tpl, tmask, centroid, (x0, y0)


def _parabolic(r: np.ndarray, x: int, y: int) -> tuple[float, float]:
    def peak(m1: float, c: float, p1: float) -> float:
        denom = m1 - 2.0 * c + p1
        return 0.0 if abs(denom) < 1e-12 else 0.5 * (m1 - p1) / denom

    dx = peak(float(r[y, x - 1]), float(r[y, x]), float(r[y, x + 1])) if 0 < x < r.shape[1] - 1 else 0.0
    dy = peak(float(r[y - 1, x]), float(r[y, x]), float(r[y + 1, x])) if 0 < y < r.shape[0] - 1 else 0.0
    return x + dx, y + dy


def track_region(frame: np.ndarray, first: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Centroid (x, y, top-left origin) of the masked region of ``first`` as found in ``frame``.

    Masked normalised cross-correlation (``matchTemplate`` TM_CCORR_NORMED) with a
    parabolic sub-pixel peak.
    """
    tpl, tmask, centroid, _ = region_template(first, mask)
    r = cv2.matchTemplate(gray(frame), tpl, cv2.TM_CCORR_NORMED, mask=tmask)
    r = np.nan_to_num(r, nan=0.0, posinf=0.0, neginf=0.0)
    _, _, _, (mx, my) = cv2.minMaxLoc(r)
    px, py = _parabolic(r, mx, my)
    return px + centroid[0], py + centroid[1]


def mask_centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.mean()), float(ys.mean())


# -- artefact measures (issue #16) -------------------------------------------------------------


def scene_image(w: int, h: int, seed: int = 3) -> Frame:
    """A photo-like, asymmetric test scene: soft texture, a bright sun upper right, a dark house.

    Softer than :func:`textured_image` (blurred), so a seam or a mirrored copy stands out the
    way it does on a real photo; no straight edge spans the frame.
    """
    img = cv2.GaussianBlur(textured_image(w, h, seed), (0, 0), 1.2)
    unit = min(w, h)
    cv2.circle(img, (int(w * 0.78), int(h * 0.2)), max(3, unit // 9), (255, 235, 120), -1, cv2.LINE_AA)
    # the house leans a little, so that no edge of the picture is a straight row or column
    cx, cy, side = w * 0.28, h * 0.62, unit / 4
    body = cv2.boxPoints(((cx, cy), (side, side * 0.8), 9.0))
    cv2.fillConvexPoly(img, body.astype(np.int32), (60, 30, 20), cv2.LINE_AA)
    roof = np.array([body[1], body[2], (cx + side * 0.1, cy - side * 0.95)])
    cv2.fillConvexPoly(img, roof.astype(np.int32), (150, 20, 20), cv2.LINE_AA)
    return img


def source_coords(hm: np.ndarray, w: int, h: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """For every output pixel of a warp by ``hm`` (input -> output), its position in the input."""
    inv = np.linalg.inv(np.asarray(hm, dtype=np.float64))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    den = inv[2, 0] * xx + inv[2, 1] * yy + inv[2, 2]
    u = (inv[0, 0] * xx + inv[0, 1] * yy + inv[0, 2]) / den
    v = (inv[1, 0] * xx + inv[1, 1] * yy + inv[1, 2]) / den
    bad = den <= 1e-9
    u[bad], v[bad] = -1e6, -1e6
    return u.astype(np.float32), v.astype(np.float32)


def outside_depth(u: np.ndarray, v: np.ndarray, w: int, h: int) -> NDArray[np.float32]:
    """How far (input pixels) each source position lies outside the input picture (0 inside)."""
    d = np.maximum.reduce([-u, u - (w - 1), -v, v - (h - 1), np.zeros_like(u)])
    return np.asarray(d, dtype=np.float32)


def mirror_correlation(frame: np.ndarray, first: np.ndarray, hm: np.ndarray, min_depth: float) -> float | None:
    """How much the revealed area looks like a mirrored (reflected) copy of frame 0.

    The revealed area is the set of output pixels whose input position lies more than
    ``min_depth`` px outside the picture. A mirror fill shows, there, frame 0 reflected at its
    edges (the reflection of that input position). Near an edge any plausible continuation
    has the picture's colours and the same structure along the edge, so neither tells a
    mirror apart; the gradient across the edge does: a mirror flips it, a continuation keeps
    it. Returned: the correlation, over the revealed area, of the across-the-edge gradient of
    the frame with that of the mirrored copy (both blurred alike, since a fill is blurry):
    about 1 for a mirror, about 0 or below for anything else. None when too little is
    revealed to judge.
    """
    h, w = first.shape[:2]
    u, v = source_coords(hm, w, h)
    depth = outside_depth(u, v, w, h)
    revealed = depth > min_depth
    if revealed.sum() < 0.01 * w * h:
        return None
    mirrored = cv2.remap(first, u, v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    sigma = max(1.0, min(w, h) / 40)
    nx = cv2.Sobel(depth, cv2.CV_32F, 1, 0)[revealed]
    ny = cv2.Sobel(depth, cv2.CV_32F, 0, 1)[revealed]
    norm = np.sqrt(nx * nx + ny * ny) + 1e-9

    def across(img: np.ndarray) -> np.ndarray:
        g = cv2.GaussianBlur(gray(img).astype(np.float32), (0, 0), sigma)
        gx, gy = cv2.Sobel(g, cv2.CV_32F, 1, 0)[revealed], cv2.Sobel(g, cv2.CV_32F, 0, 1)[revealed]
        return np.asarray((gx * nx + gy * ny) / norm)

    a, b = across(frame), across(mirrored)
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return 0.0 if den == 0.0 else float((a * b).sum() / den)


def seam_ratio(frame: np.ndarray, hm: np.ndarray) -> float:
    """The largest mean step across one column or row boundary, over the picture's own steps.

    A hard seam (a straight edge between the picture and a fill) is a column or row whose
    step stands far above the frame's own gradients. The reference is the mean step between
    neighbouring pixels of the picture itself in this frame (output pixels whose input
    position lies at least 4 px inside it), so that a smooth fill does not lower it.
    """
    h, w = frame.shape[:2]
    u, v = source_coords(hm, w, h)
    inside = np.minimum(np.minimum(u, (w - 1) - u), np.minimum(v, (h - 1) - v)) >= 4
    g = gray(frame).astype(np.float32)
    dx, dy = np.abs(np.diff(g, axis=1)), np.abs(np.diff(g, axis=0))
    own = 0.5 * (float(dx[inside[:, 1:] & inside[:, :-1]].mean()) + float(dy[inside[1:] & inside[:-1]].mean()))
    return float(max(dx.mean(axis=0).max(), dy.mean(axis=1).max()) / max(1e-6, own))


def gradient_magnitude(img: np.ndarray) -> NDArray[np.float32]:
    g = gray(img).astype(np.float32)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    return np.asarray(cv2.magnitude(gx, gy), dtype=np.float32)


def ring(mask: np.ndarray, inner: int, outer: int) -> NDArray[np.bool_]:
    """Pixels between ``inner`` and ``outer`` px outside ``mask`` (Euclidean distance)."""
    dist = cv2.distanceTransform((~mask.astype(bool)).astype(np.uint8), cv2.DIST_L2, 5)
    return np.asarray((dist > inner) & (dist <= outer))

