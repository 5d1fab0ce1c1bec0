"""local/preview honours kling.shots: one camera move per shot with a cut between them."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from stillmotion.media.video import iter_frames
from tests.conftest import SettingsFactory, connect, error_text, structured, wait_done

pytestmark = pytest.mark.anyio

SHOTS = [
    {"prompt": "slow zoom in on the harbour", "duration": 1},
    {"prompt": "pan left across the boats", "duration": 1},
    {"prompt": "tilt up to the sky", "duration": 1},
]


async def test_three_shot_preview_shows_two_cuts(make_settings: SettingsFactory, image_480: Path) -> None:
    args = {
        "image": str(image_480), "prompt": "ignored", "local": {"resolution": "480p"},
        "kling": {"shots": SHOTS, "mode": "pro"},
    }  # fmt: skip
    async with connect(make_settings()) as client:
        job = structured(await client.call_tool("animate_image", args))
        done = await wait_done(client, job["job_id"])
    assert done["status"] == "succeeded", done
    assert done["video"]["frame_count"] == 72 and done["video"]["duration_s"] == pytest.approx(3.0)
    text = " ".join(done["warnings"])
    assert "not its content" in text and "shot 3 (1 s)" in text
    assert "'kling' options (mode) are ignored" in text  # other Kling options still are
    assert "shots" not in text.split("'kling' options")[1].split(")")[0]

    # frame differences on 32x24 thumbnails: a few pixels of camera motion between two frames of a
    # shot barely change them; a cut (the next shot restarts from the still) changes them a lot
    gray = [
        cv2.resize(f, (32, 24), interpolation=cv2.INTER_AREA).astype(np.float32).mean(axis=2)
        for f in iter_frames(Path(done["video"]["path"]))
    ]
    diffs = np.array([np.abs(b - a).mean() for a, b in itertools.pairwise(gray)])
    cuts = sorted(int(i) + 1 for i in np.argsort(diffs)[-2:])
    assert cuts == [24, 48], (cuts, diffs.round(2).tolist())
    others = np.delete(diffs, [23, 47])
    assert diffs[[23, 47]].min() > 3 * others.max(), (diffs[[23, 47]], others.max())


async def test_shot_rules_apply_to_the_preview(make_settings: SettingsFactory, image_480: Path) -> None:
    async with connect(make_settings()) as client:
        text = error_text(
            await client.call_tool("animate_image", {"image": str(image_480), "duration": 5, "kling": {"shots": SHOTS}})
        )
        assert "kling.shots" in text and "sum to 3" in text
        text = error_text(
            await client.call_tool(
                "camera_move",
                {"image": str(image_480), "camera": {"type": "forward_up"}, "kling": {"shots": SHOTS}},
            )
        )
        assert "kling.shots" in text and "animate_image" in text
