"""Quality of a camera-move clip: SSIM of every decoded frame against the ideal warp, and size.

The ideal frame i is the input picture warped by ``camera_homography(camera, t_i)`` with
Lanczos interpolation in floating point (no rounding, no chroma subsampling, no codec). SSIM
(Wang et al. 2004: Gaussian window sigma 1.5, K1 0.01, K2 0.03, L 255) is computed on BT.709
luma of the decoded frame and of the ideal frame, over the whole frame.

``python -m bench.quality [out.mp4]`` renders the bench's clip (5 s 720p ``zoom -5`` on the
textured bench image) with whatever ``stillmotion`` is importable, the way ``local/preview``
does, and prints size and SSIM: run it once with the old code on ``PYTHONPATH`` for the
"before" figures.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

W, H, FPS, SECONDS = 1280, 720, 24, 5
# The bench clip as rendered before issue #16 (commit 14db79a: RGB frames, swscale conversion,
# CRF 23), measured with this module.
BEFORE: dict[str, Any] = {"commit": "14db79a", "size_bytes": 662087.0, "ssim_mean": 0.9707614, "ssim_min": 0.9693933}
CAMERA: dict[str, Any] = {"type": "simple", "config": {"zoom": -5}}


def luma(rgb: np.ndarray) -> np.ndarray:
    f = rgb.astype(np.float32)
    return np.asarray(0.2126 * f[..., 0] + 0.7152 * f[..., 1] + 0.0722 * f[..., 2], dtype=np.float32)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two float32 luma images (0..255)."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x: np.ndarray) -> np.ndarray:
        return np.asarray(cv2.GaussianBlur(x, (11, 11), 1.5))

    mu_a, mu_b = blur(a), blur(b)
    saa = blur(a * a) - mu_a * mu_a
    sbb = blur(b * b) - mu_b * mu_b
    sab = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * sab + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (saa + sbb + c2)
    return float(np.mean(num / den))


def ideal_frame(src: np.ndarray, hm: np.ndarray) -> np.ndarray:
    h, w = src.shape[:2]
    out = cv2.warpPerspective(
        src.astype(np.float32), hm, (w, h), flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REPLICATE
    )
    return luma(np.clip(out, 0, 255))


def clip_quality(video: Path, src: np.ndarray, camera: dict[str, Any], step: int = 4) -> dict[str, float]:
    """Size and SSIM (mean and min over every ``step``-th frame) of ``video`` against the ideal."""
    from stillmotion.media.video import iter_frames
    from stillmotion.render import camera_homography

    h, w = src.shape[:2]
    frames = list(iter_frames(video))
    n = len(frames)
    scores = []
    for i in range(0, n, step):
        hm = camera_homography(camera, 0.0 if n <= 1 else i / (n - 1), w, h)
        scores.append(ssim(luma(frames[i]), ideal_frame(src, hm)))
    return {
        "size_bytes": float(video.stat().st_size),
        "ssim_mean": float(np.mean(scores)),
        "ssim_min": float(np.min(scores)),
        "frames": float(n),
    }


def render_clip(out: Path, src: np.ndarray) -> float:
    """Render and encode the bench clip as ``local/preview`` does; returns wall seconds."""
    from stillmotion.media.video import encode_frames
    from stillmotion.render import camera_frames

    t0 = time.perf_counter()
    try:
        from stillmotion.render import camera_frames_yuv  # type: ignore[attr-defined]

        encode_frames(camera_frames_yuv(src, CAMERA, SECONDS * FPS), out, fps=FPS, frame_format="yuv420p")
    except ImportError:
        encode_frames(camera_frames(src, CAMERA, SECONDS * FPS), out, fps=FPS)
    return time.perf_counter() - t0


def main(argv: list[str]) -> int:
    from tests.render.measure import textured_image

    out = Path(argv[0]) if argv else Path("quality-clip.mp4")
    src = textured_image(W, H, seed=1)
    seconds = render_clip(out, src)
    q = clip_quality(out, src, CAMERA)
    q["render_encode_s"] = seconds
    sys.stdout.write(json.dumps(q, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
