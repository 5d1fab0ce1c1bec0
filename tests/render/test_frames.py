"""Working size, resizing and easing helpers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stillmotion.render import fit_image, working_size
from stillmotion.render.frames import SHORT_SIDE, smoothstep


@pytest.mark.parametrize(
    ("w", "h", "res", "expected"),
    [
        (1920, 1080, "720p", (1280, 720)),
        (1920, 1080, "480p", (854, 480)),
        (1080, 1920, "480p", (480, 854)),
        (1000, 1000, "1080p", (1080, 1080)),
        (4000, 1000, "480p", (1920, 480)),
        (1366, 768, "720p", (1280, 720)),
        (640, 480, "720p", (960, 720)),
        (333, 500, "720p", (720, 1082)),
    ],
)
def test_working_size_table(w: int, h: int, res: str, expected: tuple[int, int]) -> None:
    assert working_size(w, h, res) == expected  # type: ignore[arg-type]


@given(
    st.integers(64, 8000),
    st.integers(64, 8000),
    st.sampled_from(["480p", "720p", "1080p"]),
)
def test_working_size_properties(w: int, h: int, res: str) -> None:
    ow, oh = working_size(w, h, res)  # type: ignore[arg-type]
    assert ow % 2 == 0 and oh % 2 == 0
    assert min(ow, oh) == SHORT_SIDE[res]
    # aspect kept to within the even rounding of the long side
    long_exact = max(w, h) * SHORT_SIDE[res] / min(w, h)
    assert abs(max(ow, oh) - long_exact) <= 1.0 + 1e-9
    # orientation kept, except that a near-square input may round to a square output
    assert (ow >= oh) == (w >= h) or ow == oh


def test_working_size_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        working_size(0, 100, "720p")
    with pytest.raises(ValueError):
        working_size(100, 100, "4k")  # type: ignore[arg-type]


def test_fit_image_exact_size_and_dtype() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (101, 203, 3), dtype=np.uint8)
    for size in [(64, 32), (406, 202), (200, 100), (203, 101)]:
        out = fit_image(img, size)
        assert out.shape == (size[1], size[0], 3)
        assert out.dtype == np.uint8
    same = fit_image(img, (203, 101))
    assert np.array_equal(same, img) and same is not img


def test_fit_image_rejects_non_rgb() -> None:
    with pytest.raises(ValueError):
        fit_image(np.zeros((10, 10), np.uint8), (4, 4))
    with pytest.raises(ValueError):
        fit_image(np.zeros((10, 10, 3), np.float32), (4, 4))


def test_smoothstep() -> None:
    assert smoothstep(0.0) == 0.0
    assert smoothstep(1.0) == 1.0
    assert smoothstep(0.5) == pytest.approx(0.5)
    assert smoothstep(-1.0) == 0.0 and smoothstep(2.0) == 1.0
    values = [smoothstep(i / 20) for i in range(21)]
    assert all(b >= a for a, b in itertools.pairwise(values))
