"""animate_image preview: motion words in the prompt pick a camera move."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from stillmotion.render import animate_frames, choose_camera
from stillmotion.render.camera import AXES, camera_phases
from tests.render.measure import textured_image


def nonzero(spec: dict[str, Any]) -> tuple[str, int] | str:
    if spec["type"] != "simple":
        return str(spec["type"])
    items = [(k, v) for k, v in spec["config"].items() if v]
    assert len(items) == 1, spec
    return items[0]


@pytest.mark.parametrize(
    ("prompt", "expected", "word"),
    [
        (None, ("zoom", -3), None),
        ("", ("zoom", -3), None),
        ("a cat sitting on a windowsill", ("zoom", -3), None),
        ("a cat sitting very still, gently", ("zoom", -2), "gently"),
        ("The camera zooms in on the lighthouse", ("zoom", -5), "zooms in"),
        ("slowly zoom in on her face", ("zoom", -3), "zoom in"),
        ("dramatic zoom out over the valley", ("zoom", 8), "zoom out"),
        ("push in towards the door", ("zoom", -5), "push in"),
        ("camera pulls back to reveal the city", ("zoom", 5), "pulls back"),
        ("move closer to the flower", ("zoom", -5), "move closer"),
        ("dolly out", ("zoom", 5), "dolly out"),
        ("zoom", ("zoom", -5), "zoom"),
        ("pan left across the skyline", ("pan", -5), "pan left"),
        ("camera pans to the right", ("pan", 5), "pans to the right"),
        ("tilt up to the sky", ("tilt", 5), "tilt up"),
        ("tilting down to the street", ("tilt", -5), "tilting down"),
        ("the camera rotates slowly", ("roll", -3), "rotates"),
        ("spin clockwise fast", ("roll", -8), "spin"),
        ("turning counter-clockwise", ("roll", 5), "counter-clockwise"),
        ("camera moves left along the wall", ("horizontal", -5), "moves left"),
        ("truck right past the cars", ("horizontal", 5), "truck right"),
        ("the camera rises above the trees", ("vertical", 5), "rises"),
        ("slowly descending into the canyon", ("vertical", -3), "descending"),
        ("crane up", ("vertical", 5), "crane up"),
        ("orbit around the statue", "right_turn_forward", "orbit"),
        ("turn left at the corner", "left_turn_forward", "turn left"),
        ("the drone soars over the sea", "forward_up", "soars"),
        ("the camera retreats from the scene", "down_back", "retreats"),
        # the earliest motion phrase wins
        ("zoom in, then pan right", ("zoom", -5), "zoom in"),
        ("pan right, then zoom in", ("pan", 5), "pan right"),
        # slow and fast together cancel
        ("slow but dramatic zoom in", ("zoom", -5), "zoom in"),
    ],
)
def test_prompt_word_table(prompt: str | None, expected: tuple[str, int] | str, word: str | None) -> None:
    spec, why = choose_camera(prompt)
    assert nonzero(spec) == expected
    camera_phases(spec)  # a valid camera spec
    if spec["type"] == "simple":
        assert set(spec["config"]) == set(AXES)
        assert f"simple {expected[0]} {expected[1]}" in why
    else:
        assert f"preset {expected}" in why
    if word is not None:
        assert f"'{word}'" in why
    else:
        assert "default" in why
    assert "\n" not in why


def test_animate_frames_returns_frames_spec_and_reason() -> None:
    img = textured_image(160, 120)
    frames, spec, why = animate_frames(img, "zoom out slowly", 5)
    assert nonzero(dict(spec)) == ("zoom", 3)
    assert "zoom out" in why
    out = list(frames)
    assert len(out) == 5 and np.array_equal(out[0], img)
    frames2, spec2, why2 = animate_frames(img, "zoom out slowly", 5)
    assert spec2 == spec and why2 == why
    assert all(np.array_equal(a, b) for a, b in zip(out, frames2, strict=True))
