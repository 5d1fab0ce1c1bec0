"""First/last-frame interpolation by optical flow."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from stillmotion.media.video import encode_frames, iter_frames, probe_video
from stillmotion.render import interpolate_frames
from tests.render.measure import psnr, psnr_quarter, textured_image

W, H = 480, 270


def scene(dx: float) -> np.ndarray:
    """A textured ellipse (160x100) on a textured background, shifted right by ``dx`` px."""
    bg = textured_image(W, H, seed=1)
    obj = textured_image(160, 100, seed=2)
    m = np.array([[1, 0, 120 + dx], [0, 1, 80]], np.float32)
    sprite = cv2.warpAffine(obj, m, (W, H), flags=cv2.INTER_LINEAR)
    mask = np.zeros((100, 160), np.float32)
    cv2.ellipse(mask, (80, 50), (79, 49), 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    alpha = cv2.warpAffine(mask, m, (W, H), flags=cv2.INTER_LINEAR)[..., None]
    return np.asarray(np.clip(sprite * alpha + bg * (1 - alpha) + 0.5, 0, 255), dtype=np.uint8)


def test_endpoints_exact_and_count() -> None:
    a, b = scene(0), scene(16)
    frames = list(interpolate_frames(a, b, 9))
    assert len(frames) == 9
    assert np.array_equal(frames[0], a) and np.array_equal(frames[-1], b)
    assert all(f.shape == a.shape and f.dtype == np.uint8 for f in frames)
    assert [np.array_equal(f, a) for f in interpolate_frames(a, b, 1)] == [True]
    two = list(interpolate_frames(a, b, 2))
    assert np.array_equal(two[0], a) and np.array_equal(two[1], b)


def test_midframe_follows_motion_better_than_crossfade() -> None:
    a, b, truth = scene(0), scene(24), scene(12)
    mid = list(interpolate_frames(a, b, 3))[1]
    crossfade = cv2.addWeighted(a, 0.5, b, 0.5, 0)
    assert psnr(mid, truth) > psnr(crossfade, truth) + 4
    assert psnr(mid, truth) > 28


def test_deterministic() -> None:
    a, b = scene(0), scene(10)
    x = list(interpolate_frames(a, b, 5))
    y = list(interpolate_frames(a, b, 5))
    assert all(np.array_equal(p, q) for p, q in zip(x, y, strict=True))


def test_unrelated_images_degrade_to_a_blend() -> None:
    a, b = textured_image(W, H, seed=3), textured_image(W, H, seed=4)
    mid = list(interpolate_frames(a, b, 3))[1]
    crossfade = cv2.addWeighted(a, 0.5, b, 0.5, 0)
    assert psnr_quarter(mid, crossfade) > 18


def test_size_mismatch_rejected() -> None:
    with pytest.raises(ValueError, match="same size"):
        interpolate_frames(scene(0), np.zeros((H, W + 2, 3), np.uint8), 5)
    with pytest.raises(ValueError):
        interpolate_frames(scene(0), scene(0), 0)


def test_measured_in_mp4(tmp_path: Path) -> None:
    a, b = scene(0), scene(20)
    path = tmp_path / "morph.mp4"
    encode_frames(interpolate_frames(a, b, 24), path)
    info = probe_video(path)
    assert (info.width, info.height, info.frame_count) == (W, H, 24)
    frames = list(iter_frames(path))
    assert psnr_quarter(frames[0], a) >= 30
    assert psnr_quarter(frames[-1], b) >= 30
    assert psnr_quarter(frames[-1], a) < psnr_quarter(frames[-1], b) - 5
    # the object's position moves monotonically from a's to b's
    scores = [psnr_quarter(f, b) - psnr_quarter(f, a) for f in frames]
    assert scores[0] < 0 < scores[-1]
    assert all(s2 >= s1 - 1.0 for s1, s2 in itertools.pairwise(scores))
